"""The witness heartbeat (kind "witnesshb"), and the witness as a network
partition resolver.

Each beat, L{WitnessHeartbeatPath} reports this server to the witness server
(L{cpro.protocols.witness}) and reads the answer: the witness's view of every
server of the cluster and how long ago it last heard each. A peer the witness
heard within the heartbeat timeout is alive on this path
(C{context.on_alive(path, peer, incarnation, age)}), even when no other path
reaches it. At most one request is in flight: while the witness is slow the
beats are skipped (and counted), not queued.

L{WitnessResolver} asks the witness again when peers are lost: this server
is on the healthy side only if the witness answers now and hears none of the
lost peers any more (a lost peer the witness still hears means the cut is
between us and it only, or we are the side cut off: nothing is proven).

A server uses the path only if its device@<device> has info "1". Otherwise
the factory still returns a path, which sends nothing and says so once:
the heartbeat service builds every configured path on every server, and a
server that does not use the witness is a valid configuration, not an error.
"""

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cpro.cluster.partition import Verdict
from cpro.config.heartbeats import HeartbeatKindSchema
from cpro.config.partition import read_http_target
from cpro.interfaces import IHeartbeatPath, INPResolver
from cpro.plugins import HEARTBEAT_KINDS, NP_RESOLVERS
from cpro.protocols import witness as wp
from cpro.protocols.keyring import accepted_keys, signing_key
from cpro.services.heartbeat.base import HeartbeatConfigError
from cpro.services.partition.base import ResolverSchema
from cpro.system.httpclient import HttpClient, HttpRequestError

log = Logger()

COUNTERS = (
    "sent",  # reports sent
    "answered",  # views received and accepted
    "errors",  # no answer: connection refused, timeout, TLS
    "refused",  # the witness answered with an error code (403, 404, 409, 5xx, ...)
    "malformed_answers",  # an answer that is not a view of this cluster
    "unauthenticated_answers",  # a view whose signature does not match the cluster key
    "skipped_busy",  # beats skipped because the previous report was still in flight
    "alive",  # on_alive calls made
)


# The highest sequence number a refusal may move this path's counter to:
# half the range, so that 2**63 reports still fit above it.
MAX_ADOPTED_SEQ = 2**63



def _verify_any(keys, message, signature):
    """wp.verify with any of keys (during a key rotation, the old and the new)."""
    for key in keys[:-1]:
        try:
            return wp.verify(key, message, signature)
        except wp.BadSignature:
            pass
    return wp.verify(keys[-1], message, signature)

class WitnessUnavailable(Exception):
    """The witness gave no usable view; the message says why."""


@implementer(IHeartbeatPath)
class WitnessHeartbeatPath:
    """One witness heartbeat resource.

    @param context: the L{cpro.services.heartbeat.base.HeartbeatContext}.
    @param heartbeat: the L{cpro.config.model.HeartbeatConfig} (kind witnesshb).
    @param client: an L{HttpClient} for the witness (tests); built from
        C{heartbeat.witness} when None.
    @raise HeartbeatConfigError: not a witnesshb, or no witness target.
    """

    kind = "witnesshb"

    def __init__(self, context, heartbeat, client=None):
        if heartbeat.kind != self.kind:
            raise HeartbeatConfigError(f"{heartbeat.name}: not a witness heartbeat ({heartbeat.kind})")
        if heartbeat.witness is None:
            raise HeartbeatConfigError(f"{heartbeat.name}: no witness server (host, port) configured")
        self.name = heartbeat.name
        self.target = heartbeat.witness
        self._context = context
        self._reactor = context.reactor
        self._cluster = context.config.name
        self._key = context.key  # bytes or a Keyring
        self._local = context.local
        try:
            wp.format_incarnation(context.incarnation)
        except (wp.Malformed, AttributeError):
            raise HeartbeatConfigError(
                f"{heartbeat.name}: incarnation {context.incarnation!r} cannot be reported") from None
        self.used = _uses(context.me(), heartbeat.device)
        # Peers on this path: those that use the witness too.
        self.peers = frozenset(s.name for s in context.peers() if _uses(s, heartbeat.device))
        self._client = client if client is not None else HttpClient(
            context.reactor, self.target, persistent=True, max_body=wp.MAX_VIEW)
        self.url = self._client.base_url
        # Sequence numbers start from the wall clock in ms, so that a path
        # rebuilt within the same incarnation (a reload) continues above the
        # numbers the witness has already seen.
        self._seq = int(self._reactor.seconds() * 1000)
        self._running = False
        self._in_flight = None
        self._waiters = []
        self._latest = None
        self._problem = None  # why the last exchange failed, None when it worked
        self._counters = dict.fromkeys(COUNTERS, 0)

    # -- IHeartbeatPath ----------------------------------------------------------

    def start_listening(self):
        """Start reporting at the next beat (nothing to open). Idempotent."""
        if self._running:
            return
        self._running = True
        if self.used:
            log.info("heartbeat path {path} (witnesshb): witness {url}", path=self.name, url=self.url)
        else:
            log.info("heartbeat path {path} (witnesshb): not used by {server} (its device info "
                     "is not 1)", path=self.name, server=self._local)

    def stop_listening(self):
        """Stop reporting, drop a request in flight, close the connection. A Deferred."""
        self._running = False
        if self._in_flight is not None:
            self._in_flight.cancel()
        d = self._client.close()
        d.addErrback(lambda f: None)
        return d

    def send_beat(self, digest):
        """Report to the witness (unless a report is still in flight). Never raises."""
        if not (self.used and self._running):
            return
        if self._in_flight is not None:
            self._counters["skipped_busy"] += 1
            return
        try:
            self._report()
        except Exception:
            log.failure("heartbeat path {path}: cannot report to the witness", path=self.name)

    def counters(self):
        return dict(self._counters)

    def forget(self, server):
        """Nothing to forget: the witness's view carries no replay state here."""

    # -- views -------------------------------------------------------------------

    def latest_view(self):
        """The last L{wp.View} received (its C{received} on the reactor's clock), or None."""
        return self._latest

    def fresh_view(self):
        """A cancellable Deferred firing the view of the next answer of the witness.

        Sends a report now, or waits for the one in flight (sent less than
        the target's timeout ago). Fails with L{WitnessUnavailable} when the
        witness gives no usable answer or the path is not in use.
        """
        if not self.used:
            return defer.fail(WitnessUnavailable(f"{self._local} does not use {self.name}"))
        if not self._running:
            return defer.fail(WitnessUnavailable(f"{self.name} is stopped"))
        waiter = defer.Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        self._waiters.append(waiter)
        if self._in_flight is None:
            try:
                self._report()
            except Exception as e:
                self._waiters.remove(waiter)
                log.failure("heartbeat path {path}: cannot report to the witness", path=self.name)
                return defer.fail(WitnessUnavailable(f"cannot report: {e}"))
        return waiter

    # -- one exchange ------------------------------------------------------------

    def _report(self):
        self._seq += 1
        seq = self._seq
        report = wp.Report(self._cluster, self._local, self._context.incarnation, seq,
                           self._reactor.seconds())
        path, body = wp.encode_report(report)
        headers = {
            b"Content-Type": b"application/json",
            wp.SIGNATURE_HEADER.encode(): wp.sign(
                signing_key(self._key), wp.request_message(b"POST", path, body)).encode(),
        }
        started = self._reactor.seconds()
        self._counters["sent"] += 1
        d = self._in_flight = self._client.request(b"POST", path, headers, body)
        d.addCallback(self._read_answer, path, seq)
        d.addBoth(self._finished, started)
        d.addErrback(lambda f: log.failure("heartbeat path {path}: error handling the witness's "
                                           "answer", f, path=self.name))

    def _read_answer(self, answer, path, seq):
        if answer.code != 200:
            message, last_seq = wp.decode_refusal(answer.body)
            self._counters["refused"] += 1
            if answer.code == 409 and last_seq is not None and \
                    self._seq <= last_seq < MAX_ADOPTED_SEQ:
                # Our counter went back: continue above the witness's. A
                # refusal is not signed: a number near the end of the range
                # would leave no room to number the next reports.
                self._seq = last_seq
            raise WitnessUnavailable(f"the witness refused the report: {answer.code} {message}")
        signature = answer.header(wp.SIGNATURE_HEADER_BYTES)  # bytes: never decoded here
        if signature is not None:
            # A witness with keys signs its views; one without keys does not.
            try:
                _verify_any(accepted_keys(self._key), wp.answer_message(path, answer.body), signature)
            except wp.BadSignature as e:
                self._counters["unauthenticated_answers"] += 1
                raise WitnessUnavailable(f"bad view signature ({e}): another witness or key?")
        try:
            view = wp.decode_view(answer.body, self._cluster)
            if view.seq != seq:
                raise wp.Malformed(f"answers report {view.seq}, not {seq}")
        except wp.Malformed as e:
            self._counters["malformed_answers"] += 1
            raise WitnessUnavailable(f"malformed answer: {e}")
        self._counters["answered"] += 1
        return view

    def _finished(self, result, started):
        self._in_flight = None
        now = self._reactor.seconds()
        if isinstance(result, Failure):
            if not self._running and result.check(defer.CancelledError):
                result = Failure(WitnessUnavailable(f"{self.name} stopped"))
            else:
                result = Failure(WitnessUnavailable(self._failure_reason(result)))
                self._set_problem(str(result.value))
        else:
            result = wp.View(result.cluster, result.servers, result.seq, received=now)
            self._latest = result
            self._set_problem(None)
            # The ages are the witness's when it answered, somewhere in the
            # round trip: adding the round trip errs on the side of "older".
            self._report_alive(result, now - started)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(result) if not isinstance(result, Failure) else waiter.errback(result)
        return None

    def _failure_reason(self, failure):
        if failure.check(WitnessUnavailable):
            return str(failure.value)
        if failure.check(HttpRequestError):
            self._counters["errors"] += 1
            return str(failure.value)
        if failure.check(defer.CancelledError):
            self._counters["errors"] += 1
            return "request cancelled"
        self._counters["errors"] += 1
        log.failure("heartbeat path {path}: unexpected error", failure, path=self.name)
        return failure.getErrorMessage()

    def _report_alive(self, view, round_trip):
        timeout = self._context.timeout
        for peer in sorted(self.peers):
            sighting = view.sighting(peer)
            if sighting is None:
                continue
            age = sighting.age + max(0.0, round_trip)
            if age >= timeout:
                continue
            self._counters["alive"] += 1
            try:
                self._context.on_alive(self.name, peer, sighting.incarnation, age)
            except Exception:
                log.failure("heartbeat path {path}: on_alive failed", path=self.name)

    def _set_problem(self, problem):
        # Logged once per change: a witness down for an hour is one line,
        # and one more when it is back.
        if problem == self._problem:
            return
        previous, self._problem = self._problem, problem
        if problem is None:
            log.info("heartbeat path {path}: the witness {url} answers again",
                     path=self.name, url=self.url)
        elif previous is None:
            log.warn("heartbeat path {path}: no view from the witness {url}: {problem}",
                     path=self.name, url=self.url, problem=problem)
        else:
            log.warn("heartbeat path {path}: still no view from the witness {url}: {problem}",
                     path=self.name, url=self.url, problem=problem)

    @property
    def problem(self):
        """Why the last exchange with the witness failed; None when it worked."""
        return self._problem


def _uses(server, device_id):
    device = server.device(device_id) if server is not None else None
    return device is not None and device.info.strip() == "1"


def _read_config(report, node):
    return {"witness": read_http_target(report, node, "witness server")}


# Only the servers whose witness device says 1 are on the path.
SCHEMA = HeartbeatKindSchema(device_type="witness", opt_in=True, read=_read_config)


@HEARTBEAT_KINDS.register("witnesshb", schema=SCHEMA)
def witness_path(context, heartbeat):
    return WitnessHeartbeatPath(context, heartbeat)


@implementer(INPResolver)
class WitnessResolver:
    """The witness as a network-partition resolver (kind "witness").

    @param path: the L{WitnessHeartbeatPath} whose witness is asked.
    @param hb_timeout: the heartbeat timeout, s: a lost peer the witness
        heard more recently than this is still alive for the witness.
    """

    kind = "witness"

    def __init__(self, path, hb_timeout):
        self.path = path
        self.name = path.name
        self.timeout = float(path.target.timeout)
        self._hb_timeout = float(hb_timeout)

    def check(self, lost):
        """A cancellable Deferred firing a L{Verdict}; healthy only if the
        witness answers now and hears none of C{lost}."""
        url = self.path.url
        lost = sorted(lost)
        d = self.path.fresh_view()

        def judge(view):
            heard = []
            for server in lost:
                sighting = view.sighting(server)
                if sighting is not None and sighting.age < self._hb_timeout:
                    heard.append(f"{server} ({sighting.age:.1f} s ago)")
            if heard:
                return Verdict(False, f"the witness {url} still hears " + ", ".join(heard))
            return Verdict(True, f"the witness {url} answered and does not hear "
                                 + (", ".join(lost) or "any lost server"))

        def failed(failure):
            if failure.check(defer.CancelledError):
                return failure  # the engine's own timeout: it says so itself
            return Verdict(False, f"the witness {url} gave no view: {failure.getErrorMessage()}")

        d.addCallbacks(judge, failed)
        return d


@NP_RESOLVERS.register(WitnessResolver.kind, schema=ResolverSchema(order=30))
def witness_resolvers(context):
    """The witness of each witness heartbeat this server uses, when <cluster><networkpartition>
    <witness><use> is on."""
    if not context.config.network_partition.use_witness:
        return []
    return [WitnessResolver(path, context.config.hb_timeout) for path in context.heartbeat_paths
            if path.kind == WitnessHeartbeatPath.kind and path.used]
