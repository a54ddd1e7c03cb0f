"""The BMC heartbeat (kind "bmchb"): liveness proven through the servers' BMCs (IPMI over LAN, IPv4).

Each server keeps a token on its own BMC up to date and reads its peers'
BMCs; no packet travels between the servers themselves, so the path still
works when every interconnect between them is cut but the management LAN
is not.

The token is the BMC's IPMI watchdog timer, always with timer action
"none" (the BMC never resets, powers off or interrupts a server for cpro)
and timer use "OEM":

- beat (L{BmcHeartbeatPath.send_beat}): Set Watchdog Timer with an initial
  countdown comfortably longer than the heartbeat timeout, then Reset
  Watchdog Timer. The countdown's low part changes at every beat
  (C{base + seq % SPAN}, in 100 ms units).
- read, at every beat, of each peer's BMC (Get Watchdog Timer):
  - a running timer (real BMCs count down even with action none):
    C{age = initial - present} is how long ago the peer last beat;
  - a stopped timer whose countdown value differs from the previous read:
    the peer beat since that read, so it was alive at most C{now - previous
    read} ago. Needed because OpenIPMI's ipmi_sim (the lab's BMC) never
    starts a timer whose action is none, and does not report the present
    countdown;
  - a timer not of use OEM: something else owns the watchdog; no evidence.
  A peer seen alive less than the heartbeat timeout ago is reported with
  C{context.on_alive(path, peer, None, age)}: a BMC cannot tell which run of
  the daemon beat, so the incarnation is None (it keeps an up server up but
  does not bring a down one up).

At most one request per BMC is in flight (L{BmcClient.busy}): while a BMC
is slow or dead, beats and reads are skipped and counted, so a dead BMC
holds one pool thread, not one per beat. Errors are counted, logged when
they start and stop and at the 1st, 10th, 100th... occurrence, and never
raised into the reactor. A server without a BMC is skipped (logged once).
"""

import math

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from cpro.config.heartbeats import HeartbeatKindSchema
from cpro.interfaces import IHeartbeatPath
from cpro.plugins import HEARTBEAT_KINDS
from cpro.system.ipmi import MAX_COUNTDOWN, WATCHDOG_USE_OEM, BmcClient
from cpro.protocols.ratelog import worth_logging
from cpro.services.heartbeat.base import HeartbeatConfigError

log = Logger()

KIND = "bmchb"
# Distinct countdown values cycled through by the beats (100 ms units).
SPAN = 64
# The countdown is at least twice the heartbeat timeout and 10 s more than it.
MIN_MARGIN = 10.0
# IPMI requests through pyghmi stall for up to a second, longer on a busy server.
MIN_HEARTBEAT_TIMEOUT_MS = 5000

COUNTERS = (
    "sent",  # beats written to the local BMC
    "send_errors",  # beats the local BMC refused or did not answer
    "received",  # peer watchdog timers read
    "receive_errors",  # reads that failed (BMC unreachable, refused, malformed)
    "skipped_busy",  # beats or reads skipped because the BMC was still busy
    "not_armed",  # reads of a timer not set by cpro (use not OEM)
    "alive",  # on_alive calls made
)


def countdown_base(timeout):
    """The initial countdown (100 ms units) below the per-beat variation, for a heartbeat timeout in s."""
    seconds = max(2.0 * timeout, timeout + MIN_MARGIN)
    return min(MAX_COUNTDOWN - SPAN, int(math.ceil(seconds * 10)))


class _Peer:
    __slots__ = ("name", "client", "token", "last_read", "heard_at", "in_flight", "problem", "errors")

    def __init__(self, name, client):
        self.name = name
        self.client = client
        self.token = None  # countdown value seen at the last read
        self.last_read = None  # reactor time when the last successful read started
        self.heard_at = None  # reactor time the peer was last known alive
        self.in_flight = None
        self.problem = None
        self.errors = 0


@implementer(IHeartbeatPath)
class BmcHeartbeatPath:
    """One bmchb heartbeat resource.

    @param context: the L{cpro.services.heartbeat.base.HeartbeatContext}.
    @param heartbeat: the L{cpro.config.model.HeartbeatConfig} (kind bmchb).
    @param client_factory: C{factory(bmc_config, timeout)} -> L{BmcClient}
        (tests); by default a BmcClient on C{context.runner} and the reactor.
    """

    kind = KIND

    def __init__(self, context, heartbeat, client_factory=None):
        if heartbeat.kind != KIND:
            raise HeartbeatConfigError(f"{heartbeat.name}: not a BMC heartbeat ({heartbeat.kind})")
        self.name = heartbeat.name
        self._context = context
        self._reactor = context.reactor
        self._timeout = float(context.timeout)
        if client_factory is None:
            def client_factory(bmc, timeout):
                return BmcClient(context.runner, bmc, timeout, clock=context.reactor)
        # A request may take two beat intervals, never less than 2 s: an
        # RMCP+ login is a few round trips, and pyghmi retries a request
        # whose answer it missed after 0.5 to 1 s.
        request_timeout = max(2.0, min(float(context.interval) * 2, self._timeout))
        self.countdown_base = countdown_base(self._timeout)
        me = context.me()
        if me is None:
            raise HeartbeatConfigError(f"{self.name}: server {context.local} is not in the configuration")
        self._own = client_factory(me.bmc, request_timeout) if me.bmc is not None else None
        self._own_in_flight = None
        self._own_problem = None
        self._own_errors = 0
        self._peers = {}
        self.skipped = []  # servers without a BMC (none of their liveness shows on this path)
        for server in context.peers():
            if server.bmc is None:
                self.skipped.append(server.name)
                continue
            self._peers[server.name] = _Peer(server.name, client_factory(server.bmc, request_timeout))
        self._seq = 0
        self._running = False
        self._counters = dict.fromkeys(COUNTERS, 0)

    # -- IHeartbeatPath ----------------------------------------------------------

    def start_listening(self):
        """Start beating and reading at the next beat (nothing to open). Idempotent."""
        if self._running:
            return
        self._running = True
        if self._own is None:
            log.warn("heartbeat path {path} (bmchb): {server} has no BMC configured; its peers "
                     "cannot see it on this path", path=self.name, server=self._context.local)
        else:
            log.info("heartbeat path {path} (bmchb): beating on the BMC at {address}",
                     path=self.name, address=self._own.address)
        for name in self.skipped:
            log.warn("heartbeat path {path} (bmchb): {server} has no BMC configured; it is not "
                     "watched on this path", path=self.name, server=name)
        for peer in self._peers.values():
            log.info("heartbeat path {path} (bmchb): watching {server} through its BMC at {address}",
                     path=self.name, server=peer.name, address=peer.client.address)

    def stop_listening(self):
        """Stop; requests in flight are abandoned. A Deferred (already fired)."""
        self._running = False
        pending = [self._own_in_flight] + [p.in_flight for p in self._peers.values()]
        for d in pending:
            if d is not None:
                d.cancel()
        return defer.succeed(None)

    def send_beat(self, digest):
        """Beat on the local BMC and read every peer's BMC. Never raises."""
        if not self._running:
            return
        try:
            self._beat()
        except Exception:
            log.failure("heartbeat path {path}: cannot beat on the BMC", path=self.name)
        for peer in self._peers.values():
            try:
                self._read(peer)
            except Exception:
                log.failure("heartbeat path {path}: cannot read {server}'s BMC", path=self.name,
                            server=peer.name)

    def counters(self):
        return dict(self._counters)

    def forget(self, server):
        """Start afresh with C{server}: nothing seen before counts any more."""
        peer = self._peers.get(server)
        if peer is not None:
            peer.token = peer.last_read = peer.heard_at = None

    # -- status ------------------------------------------------------------------------

    def peers(self):
        """{server name: BMC address} of the peers watched on this path."""
        return {p.name: p.client.address for p in self._peers.values()}

    def last_heard(self, server):
        """Reactor time C{server} was last known alive on this path, or None."""
        peer = self._peers.get(server)
        return None if peer is None else peer.heard_at

    # -- beating -----------------------------------------------------------------------

    def _beat(self):
        if self._own is None:
            return
        if self._own_in_flight is not None or self._own.busy:
            self._counters["skipped_busy"] += 1
            return
        self._seq += 1
        token = self.countdown_base + self._seq % SPAN
        d = self._own_in_flight = self._own.watchdog_beat(token)
        d.addCallbacks(self._beat_done, self._beat_failed)
        d.addErrback(lambda f: log.failure("heartbeat path {path}: beat bookkeeping", f, path=self.name))

    def _beat_done(self, _):
        self._own_in_flight = None
        self._counters["sent"] += 1
        if self._own_problem is not None:
            self._own_problem = None
            log.info("heartbeat path {path}: beating on the BMC at {address} works again",
                     path=self.name, address=self._own.address)

    def _beat_failed(self, failure):
        self._own_in_flight = None
        if not self._running:
            return
        self._counters["send_errors"] += 1
        self._own_errors += 1
        problem = failure.getErrorMessage()
        if problem != self._own_problem or worth_logging(self._own_errors):
            log.warn("heartbeat path {path}: cannot beat on this server's BMC: {problem} "
                     "({count} failed beats so far)", path=self.name, problem=problem,
                     count=self._own_errors)
        self._own_problem = problem

    # -- reading the peers -----------------------------------------------------------------

    def _read(self, peer):
        if peer.in_flight is not None or peer.client.busy:
            self._counters["skipped_busy"] += 1
            return
        started = self._reactor.seconds()
        d = peer.in_flight = peer.client.watchdog_state()
        d.addCallbacks(self._read_done, self._read_failed, callbackArgs=(peer, started),
                       errbackArgs=(peer,))
        d.addErrback(lambda f: log.failure("heartbeat path {path}: reading {server}'s BMC", f,
                                           path=self.name, server=peer.name))

    def _read_done(self, state, peer, started):
        peer.in_flight = None
        if not self._running:
            return
        now = self._reactor.seconds()
        self._counters["received"] += 1
        if peer.problem is not None:
            peer.problem = None
            log.info("heartbeat path {path}: {server}'s BMC answers again", path=self.name,
                     server=peer.name)
        previous_token, previous_read = peer.token, peer.last_read
        peer.token, peer.last_read = state.initial_tenths, started
        if state.use != WATCHDOG_USE_OEM:
            self._counters["not_armed"] += 1
            if state.running and worth_logging(self._counters["not_armed"]):
                log.warn("heartbeat path {path}: {server}'s BMC watchdog runs for timer use {use}, "
                         "not cpro's: is another watchdog user on that server?", path=self.name,
                         server=peer.name, use=state.use)
            return
        if state.running and state.present_tenths is not None:
            elapsed = max(0, state.initial_tenths - state.present_tenths) / 10.0
            heard_at = now - elapsed
        elif previous_token is not None and state.initial_tenths != previous_token:
            # The peer beat after our previous read: count from that read,
            # the earliest moment it can have been.
            heard_at = previous_read
        else:
            heard_at = None
        if heard_at is not None and (peer.heard_at is None or heard_at > peer.heard_at):
            peer.heard_at = heard_at
        if peer.heard_at is None:
            return
        age = max(0.0, now - peer.heard_at)
        if age < self._timeout:
            self._counters["alive"] += 1
            try:
                self._context.on_alive(self.name, peer.name, None, age)
            except Exception:
                log.failure("heartbeat path {path}: on_alive failed", path=self.name)

    def _read_failed(self, failure, peer):
        peer.in_flight = None
        if not self._running:
            return
        self._counters["receive_errors"] += 1
        peer.errors += 1
        problem = failure.getErrorMessage()
        if problem != peer.problem or worth_logging(peer.errors):
            log.warn("heartbeat path {path}: cannot read {server}'s BMC: {problem} "
                     "({count} failed reads so far)", path=self.name, server=peer.name,
                     problem=problem, count=peer.errors)
        peer.problem = problem


def _check_timeout(report, hb, cluster):
    timeout_ms = cluster.hb_timeout
    if timeout_ms is None or timeout_ms >= MIN_HEARTBEAT_TIMEOUT_MS:
        return
    report.warning(hb.path, f"heartbeat {hb.name} goes through BMCs, whose IPMI requests can "
                            f"stall for seconds, but the heartbeat timeout is {timeout_ms} ms: "
                            f"use at least {MIN_HEARTBEAT_TIMEOUT_MS} ms "
                            f"(cluster/heartbeat/timeout) or it may declare live servers down")


SCHEMA = HeartbeatKindSchema(device_type="bmc", check_cluster=_check_timeout)


@HEARTBEAT_KINDS.register(KIND, schema=SCHEMA)
def bmc_path(context, heartbeat):
    return BmcHeartbeatPath(context, heartbeat)
