"""An in-memory cluster: every server's real decision parts on one task.Clock.

Each server runs a real L{ClusterController} with a real L{Membership}, a
real L{PartitionResolution} and real L{LocalGroup}s over fake resources,
wired as L{cpro.services.node.ClusterNode} wires them. What the real daemon
does with sockets is played by the cluster itself:

  - heartbeats: every server sends a beat to every peer on every shared path
    each heartbeat interval, and an extra round on each state change; a beat
    carries the sender's incarnation and placement version, and the receiver
    fetches the sender's state report when that version is newer than its
    copy (as C{ClusterNode._on_beat} does);
  - the internal channel (an L{IPeerChannel} per server): requests, their
    answers with the answering server's report piggy-backed, and pushed state
    reports, all JSON round-tripped; reports are exchanged both ways when a
    link comes up (a server starts, a partition heals);
  - everything crosses the network after C{delay} seconds, through the
    clock: nothing is delivered synchronously, so no server re-enters another.

Faults: L{InMemoryCluster.crash} (SIGKILL of the daemon; what it held is
released, as the supervisor's leftovers clean-up does), L{restart},
L{partition} (links between sides cut on some or every path, the internal
channel included), L{heal}, and L{stall} (a SIGSTOPped daemon: none of its
timers run and nothing it receives is handled until it wakes; then its late
timers run first and its queued input after, as a reactor does).

The checker (L{Invariants}) runs after every clock step of L{advance}: no
group may run (have an active resource) on two live servers at once. Tests
of a partition without resolvers, where both sides rightly take the group
until the heal, turn C{strict} off and look at the recorded episodes.

Differences from the real daemon, on purpose: a request to a peer without a
connection fails at once (the real link waits up to 10 s for it to come
up); a crashed daemon's resources are released at the moment of the crash;
every configuration is the same (no digest check); monitors are not run.
"""

import json
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from cpro import alertcatalog as catalog
from cpro.cluster.controller import ClusterController, MembershipEvents, OperationError
from cpro.cluster.group import LocalGroup
from cpro.cluster.membership import Membership
from cpro.cluster.operations import OperatorRequests
from cpro.cluster.partition import PartitionResolution
from cpro.cluster.placement import holders_from_view
from cpro.interfaces import IAlertSink, IOSActions, IPeerChannel
from cpro.protocols.heartbeat import Incarnation
from cpro.testing.fakes import FakeForcedStop, FakeNPResolver, FakeResource

log = Logger()

INTERNAL = "internal"  # the internal channel, as a path name for partition()
DOWN = "Down"  # service() of a server whose daemon does not run


@dataclass(frozen=True)
class Alert:
    time: float
    server: str
    module: str
    event_id: int
    level: str
    message: str


@dataclass(frozen=True)
class Mark:
    """A resource action, as the lab's exec scripts mark them."""

    time: float
    server: str
    action: str  # START or STOP
    resource: str
    event: str  # CLP_EVENT: START, FAILOVER, ...


@dataclass(frozen=True)
class OSAction:
    time: float
    server: str
    action: str  # shutdown, reboot
    reason: str


@dataclass
class DoubleActivation:
    """A group running on several live servers from `since` until `until` (None: still)."""

    group: str
    servers: tuple
    since: float
    until: float = None


class InvariantViolation(AssertionError):
    pass


def _wire(value):
    """What crosses the internal channel: JSON, as AMP's JSON arguments."""
    return json.loads(json.dumps(value))


# -- the parts of one server -----------------------------------------------------


class _ServerClock:
    """The shared clock as one daemon sees it: its timers die with it and wait while it is stalled."""

    def __init__(self, clock, server):
        self._clock = clock
        self._server = server
        self._calls = []

    def seconds(self):
        return self._clock.seconds()

    def callLater(self, delay, f, *args, **kw):
        call = self._clock.callLater(delay, self._server.run_timer, f, args, kw)
        if len(self._calls) > 64:
            self._calls = [c for c in self._calls if c.active()]
        self._calls.append(call)
        return call

    def cancel_all(self):
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []


class _MarkedResource(FakeResource):
    def __init__(self, name, server, cluster):
        super().__init__(name)
        self._server = server
        self._cluster = cluster

    def activate(self, context):
        self._cluster._mark(self._server, "START", self.name, context.event)
        return super().activate(context)

    def deactivate(self, context):
        self._cluster._mark(self._server, "STOP", self.name, context.event)
        return super().deactivate(context)


@implementer(IAlertSink)
class _Alerts:
    def __init__(self, cluster, server):
        self._cluster = cluster
        self._server = server

    def emit(self, module, event_id, level, message, **details):
        self._cluster._alerts.append(Alert(self._cluster.clock.seconds(), self._server, module, event_id,
                                           getattr(level, "value", level), message))


@implementer(IOSActions)
class _OSActions:
    """Records the action; shutdown powers the server off, reboot also starts it again."""

    def __init__(self, cluster, server):
        self._cluster = cluster
        self._server = server

    def run(self, action, reason):
        self._cluster._os_actions.append(OSAction(self._cluster.clock.seconds(), self._server, action, reason))
        self._cluster._later(0, self._cluster._power_action, self._server, action)
        return defer.succeed(None)


@implementer(IPeerChannel)
class _PeerChannel:
    """One daemon's internal channel (what cpro.services.internal does on the wire)."""

    def __init__(self, cluster, server):
        self._cluster = cluster
        self._server = server

    def call(self, server, op, **args):
        if self._cluster.config.server(server) is None:
            return defer.fail(OperationError(f"no such server: {server}"))
        d = self._cluster._request(self._server, server, op, args)

        def unwrap(answer):
            if answer.get("report") is not None:
                self._server.controller.peer_report(server, answer["report"])
            return answer["result"]

        return d.addCallback(unwrap)

    def broadcast_state(self, report):
        for peer in self.connected_servers():
            self._cluster._push(self._server, peer, report)

    def connected_servers(self):
        return [s.name for s in self._cluster.config.servers
                if s.name != self._server.name and self._cluster.connected(self._server.name, s.name)]


class InMemoryServer:
    """One run (incarnation) of a server's daemon; a restart builds a new one."""

    def __init__(self, cluster, name, incarnation):
        config = cluster.config
        self.cluster = cluster
        self.name = name
        self.config = config
        self.incarnation = incarnation
        self.clock = _ServerClock(cluster.clock, self)
        self.alive = True
        self.stalled = False
        self._late_timers = []  # (f, args, kw) that came due during a stall
        self._unread = []  # deliveries that arrived during a stall
        self._fetching = set()
        self.alerts = _Alerts(cluster, name)
        self.os_actions = _OSActions(cluster, name)
        self.peers = _PeerChannel(cluster, self)
        self.resources = {}
        groups = {}
        for g in config.groups:
            rcfgs = {n: config.resource(n) for n in g.resources}
            resources = {n: _MarkedResource(n, name, cluster) for n in g.resources}
            self.resources.update(resources)
            groups[g.name] = LocalGroup(g, rcfgs, resources, name, self.alerts,
                                        lambda: self.controller.notify_changed())
        self.controller = ClusterController(self.clock, config, name, groups, self.peers, self.alerts,
                                            self.os_actions, str(incarnation))
        self.controller.on_state_change = self._state_changed
        peers = [s.name for s in config.servers if s.name != name]
        self.paths = {p: config.shared_paths(name, p) for p in peers}
        self.membership = Membership(self.clock, name, peers, self.paths, config.hb_timeout,
                                     MembershipEvents(self.controller, self.refresh), incarnation)
        self.controller.membership = self.membership
        resolvers = cluster.resolvers.get(name, {})
        fencing = cluster.forced_stops.get(name)
        for part in list(resolvers.values()) + [fencing]:
            if part is not None:
                part.clock = self.clock  # the fakes outlive a run of the daemon
        self.controller.partition = PartitionResolution(
            self.clock, name, list(resolvers.values()), fencing, config.network_partition,
            config.forced_stop, config.hb_interval, self.alerts)
        self.controller.on_network_partition = self._network_partition_action

    # -- life ------------------------------------------------------------------

    def start(self, autostart=True, after_crash=False):
        """As ClusterNode.startService: heartbeats, NP checks, then the cluster service."""
        if after_crash:
            self.controller.skip_auto_start_once("the previous cluster daemon ended abnormally")
        self._heartbeat()
        self.controller.partition.start_checks(self.config.network_partition.check_interval)
        if autostart:
            self.controller.start_service()

    def crash(self):
        self.alive = False
        self.clock.cancel_all()
        self._late_timers, self._unread = [], []
        for resource in self.resources.values():
            resource.active = False  # the supervisor removed the leftovers

    def run_timer(self, f, args, kw):
        if not self.alive:
            return
        if self.stalled:
            self._late_timers.append((f, args, kw))
            return
        f(*args, **kw)

    def receive(self, handle):
        """Something arrived: handled now, after the stall, or never (daemon gone)."""
        if not self.alive:
            return False
        if self.stalled:
            self._unread.append(handle)
        else:
            handle()
        return True

    def wake(self):
        """The stall is over: the late timers first, then the queued input."""
        self.stalled = False
        late, self._late_timers = self._late_timers, []
        for f, args, kw in late:
            if self.alive:
                f(*args, **kw)
        unread, self._unread = self._unread, []
        for handle in unread:
            if self.alive:
                handle()

    # -- heartbeats -------------------------------------------------------------

    def _heartbeat(self):
        self.beat_round()
        self.clock.callLater(self.config.hb_interval, self._heartbeat)

    def beat_round(self):
        digest = (self.controller.version, self.controller.service.value)
        for peer, paths in self.paths.items():
            for path in paths:
                self.cluster._send_beat(self, peer, path, digest)

    def on_beat(self, sender, path, incarnation, digest):
        """As ClusterNode._on_beat."""
        self.membership.beat(sender, path, incarnation)
        placement, _service = digest
        if self.controller.peer_digest(sender, str(incarnation), placement) and sender not in self._fetching:
            self._fetching.add(sender)
            self.refresh(sender).addBoth(lambda _: self._fetching.discard(sender))

    # -- internal channel --------------------------------------------------------

    def refresh(self, server):
        """Fetch a peer's state report now (InternalService.refresh)."""
        if not self.cluster.connected(self.name, server):
            return defer.succeed(None)
        d = self.cluster._request(self, server, "get_state", {})
        d.addCallback(lambda answer: self.controller.peer_report(server, answer["result"]))
        d.addErrback(lambda f: log.info("state fetch from {p} failed: {e}", p=server, e=f.getErrorMessage()))
        return d

    def push_state(self, sender, report):
        try:
            self.controller.peer_report(sender, report)
        except ValueError as e:
            log.warn("state report from {p} dropped: {e}", p=sender, e=e)

    def _state_changed(self):
        """As ClusterNode._state_changed: push the report, send a beat round now."""
        if self.alive:
            self.peers.broadcast_state(self.controller.local_report())
            self.beat_round()

    @defer.inlineCallbacks
    def _network_partition_action(self, action):
        """As ClusterNode._network_partition_action: release at once, stop the
        service, then the OS action."""
        for resource in self.resources.values():
            resource.active = False
        self.alerts.emit(*catalog.EMERGENCY_RELEASE.format(server=self.name, summary="its fake resources released"))
        try:
            yield self.controller.stop_service(move_groups=False)
        except Exception:
            log.failure("stopping the cluster service after a network partition")
        if action == 2:
            yield self.os_actions.run("shutdown", "network partition")
        elif action == 3:
            yield self.os_actions.run("reboot", "network partition")

    # -- queries -----------------------------------------------------------------

    def runs(self, group):
        """True if some resource of group is active here."""
        return self.alive and any(self.resources[r].active for r in self.config.group(group).resources)


# -- the cluster ----------------------------------------------------------------------


class _Request:
    __slots__ = ("caller", "target", "deferred", "done")

    def __init__(self, caller, target):
        self.caller = caller
        self.target = target
        self.deferred = defer.Deferred()
        self.done = False


class Invariants:
    """Checked after every clock step: no group runs on two live servers at once."""

    def __init__(self, cluster):
        self._cluster = cluster
        self.strict = True  # raise InvariantViolation at the first double activation
        self.doubles = []  # DoubleActivation episodes
        self._open = {}  # group -> open DoubleActivation

    def check(self):
        now = self._cluster.clock.seconds()
        for group in self._cluster.config.groups:
            servers = tuple(self._cluster.holders(group.name))
            episode = self._open.get(group.name)
            if episode is not None and episode.servers != servers:
                episode.until = now
                del self._open[group.name]
                episode = None
            if len(servers) > 1 and episode is None:
                episode = self._open[group.name] = DoubleActivation(group.name, servers, now)
                self.doubles.append(episode)
                if self.strict:
                    raise InvariantViolation(f"at {now:.3f} s group {group.name} runs on {', '.join(servers)}")


class InMemoryCluster:
    """Every configured server, its faults and the network between them, on one clock.

    @param config: a ClusterConfig (L{cpro.testing.fakes.make_config}).
    @param clock: a task.Clock, shared by every server.
    @param delay: seconds any message takes between two servers.
    @param resolvers: names of NP resolvers every server runs
        (L{FakeNPResolver}s, healthy until a test says otherwise; see
        L{resolver}).
    @param resolver_timeout: their timeout, s.
    @param power_actions: an OS shutdown powers the server off and a reboot
        restarts its daemon after C{reboot_time}; when False they are only
        recorded (as the lab's harmless commands).
    """

    def __init__(self, config, clock, delay=0.001, resolvers=(), resolver_timeout=0.3, power_actions=True):
        self.config = config
        self.clock = clock
        self.delay = delay
        self.names = [s.name for s in config.servers]
        self.servers = {}  # name -> InMemoryServer of the running (or last) daemon
        self.resolvers = {n: {r: FakeNPResolver(clock, r, timeout=resolver_timeout) for r in resolvers}
                          for n in self.names}
        self.forced_stops = {}
        if config.forced_stop.enabled:
            self.forced_stops = {n: FakeForcedStop(clock, on_stop=self.crash) for n in self.names}
        self.invariants = Invariants(self)
        self.power_actions = power_actions
        self.reboot_time = 2.0  # s from an OS reboot to the daemon's start
        self._faults = {}  # (server, resource) -> (activations, deactivations) failing in its next daemon
        self._alerts = []
        self._os_actions = []
        self._marks = []
        self._cuts = set()  # (frozenset({a, b}), path)
        self._requests = []
        self._network = []  # DelayedCalls of messages in flight
        self._generation = 0

    # -- operations ---------------------------------------------------------------

    def start(self, *names, autostart=True, after_crash=False):
        """Start the daemons of names (every server not running if none given).

        @param after_crash: the daemon finds a crash note: it rejoins
            without auto-starting groups.
        """
        for name in names or [n for n in self.names if not self.is_running(n)]:
            if self.is_running(name):
                raise ValueError(f"{name} is already running")
            self._generation += 1
            incarnation = Incarnation(started_ns=int(self.clock.seconds() * 1e9),
                                      nonce=f"{self._generation:08d}")
            server = self.servers[name] = InMemoryServer(self, name, incarnation)
            for who, resource in [k for k in self._faults if k[0] == name]:
                self._apply_fault(server, resource, *self._faults.pop((who, resource)))
            for peer in self.names:
                if peer != name and self.connected(name, peer):
                    self._link_up(name, peer)
            server.start(autostart=autostart, after_crash=after_crash)
        self.invariants.check()

    def fail_resource(self, server, resource, activations=0, deactivations=0):
        """The next activations (deactivations) of resource on server fail: in
        the running daemon, or else in the next one started."""
        if self.is_running(server):
            self._apply_fault(self.servers[server], resource, activations, deactivations)
        else:
            self._faults[(server, resource)] = (activations, deactivations)

    @staticmethod
    def _apply_fault(server, resource, activations, deactivations):
        server.resources[resource].fail_activations = activations
        server.resources[resource].fail_deactivations = deactivations

    def crash(self, name):
        """SIGKILL the daemon of name (its resources are released)."""
        server = self.servers.get(name)
        if server is None or not server.alive:
            return
        server.crash()
        for request in list(self._requests):
            if request.target is server:
                self._lost(request)
            elif request.caller is server:
                self._drop(request)

    def restart(self, name, after_crash=False):
        self.crash(name)
        self.start(name, after_crash=after_crash)

    def partition(self, *sides, paths=None):
        """Cut the links between servers on different sides.

        @param sides: lists of server names; a server on no side keeps its links.
        @param paths: heartbeat path names and/or L{INTERNAL}; every path and
            the internal channel by default.
        """
        paths = list(paths) if paths is not None else [hb.name for hb in self.config.heartbeats] + [INTERNAL]
        for i, side in enumerate(sides):
            for other in sides[i + 1:]:
                for a in side:
                    for b in other:
                        self._cuts.update((frozenset((a, b)), p) for p in paths)
        for request in list(self._requests):
            if not self.connected(request.caller.name, request.target.name):
                self._lost(request)

    def heal(self):
        """Every link works again; links of the internal channel that come back exchange reports."""
        cut = [(a, b) for i, a in enumerate(self.names) for b in self.names[i + 1:]
               if (frozenset((a, b)), INTERNAL) in self._cuts]
        self._cuts.clear()
        for a, b in cut:
            if self.connected(a, b):
                self._link_up(a, b)

    def stall(self, name, seconds):
        """SIGSTOP the daemon of name for seconds, then SIGCONT."""
        server = self.servers[name]
        server.stalled = True
        self._later(seconds, server.wake)

    def advance(self, seconds):
        """Run the cluster for seconds, checking the invariants after every clock step."""
        self._run(self.clock.seconds() + seconds)

    def run_until(self, predicate, timeout, what="the condition"):
        """Run until predicate() is true (checked after every step); the time it became so.

        @raise AssertionError: not within timeout seconds."""
        end = self.clock.seconds() + timeout
        if not predicate():
            self._run(end, predicate)
        if not predicate():
            raise AssertionError(f"{what}: not true within {timeout:g} s")
        return self.clock.seconds()

    def stop(self):
        """Every daemon gone, nothing left in flight (for a test's clean-up)."""
        for name in self.names:
            self.crash(name)
        for call in self._network:
            if call.active():
                call.cancel()
        self._network = []
        for request in self._requests:
            request.done = True
        self._requests = []

    # -- queries ---------------------------------------------------------------------

    def server(self, name):
        return self.servers[name]

    def controller(self, name):
        return self.servers[name].controller

    def operator(self, name):
        """OperatorRequests on name's controller: what clpgrp, clpcl... ask there."""
        return OperatorRequests(self.servers[name].controller)

    def resolver(self, server, name):
        return self.resolvers[server][name]

    def is_running(self, name):
        server = self.servers.get(name)
        return server is not None and server.alive

    def service(self, name):
        """The cluster service state word of name, or L{DOWN}."""
        return self.servers[name].controller.service.value if self.is_running(name) else DOWN

    def holders(self, group):
        """The live servers where some resource of group is active (the truth)."""
        return sorted(n for n, s in self.servers.items() if s.runs(group))

    def holder(self, group):
        """The one server running group, or None.

        @raise InvariantViolation: it runs on several."""
        servers = self.holders(group)
        if len(servers) > 1:
            raise InvariantViolation(f"group {group} runs on {', '.join(servers)}")
        return servers[0] if servers else None

    def seen_holder(self, observer, group):
        """Where observer's controller believes group runs (None: nowhere)."""
        return holders_from_view(self.servers[observer].controller.view()).get(group)

    def alerts(self, server=None, module=None, event_id=None):
        return [a for a in self._alerts if (server is None or a.server == server)
                and (module is None or a.module == module) and (event_id is None or a.event_id == event_id)]

    def os_actions(self, server=None):
        return [a for a in self._os_actions if server is None or a.server == server]

    def marks(self, action=None):
        return [m for m in self._marks if action is None or m.action == action]

    # -- the network ------------------------------------------------------------------

    def connected(self, a, b):
        """True if the internal channel links a and b (both daemons run, no cut)."""
        return self.is_running(a) and self.is_running(b) and (frozenset((a, b)), INTERNAL) not in self._cuts

    def _cut(self, a, b, path):
        return (frozenset((a, b)), path) in self._cuts

    def _later(self, delay, f, *args):
        if len(self._network) > 256:
            self._network = [c for c in self._network if c.active()]
        call = self.clock.callLater(delay, f, *args)
        self._network.append(call)
        return call

    def _send_beat(self, sender, peer, path, digest):
        self._later(self.delay, self._beat_arrives, sender.name, sender.incarnation, peer, path, digest)

    def _beat_arrives(self, sender, incarnation, peer, path, digest):
        target = self.servers.get(peer)
        if target is not None and not self._cut(sender, peer, path):
            target.receive(lambda: target.on_beat(sender, path, incarnation, digest))

    def _link_up(self, a, b):
        """As InternalService.link_up on both ends: each pushes its report."""
        self._push(self.servers[a], b, self.servers[a].controller.local_report())
        self._push(self.servers[b], a, self.servers[b].controller.local_report())

    def _push(self, sender, peer, report):
        self._later(self.delay, self._report_arrives, sender, peer, _wire(report))

    def _report_arrives(self, sender, peer, report):
        if self.servers.get(sender.name) is sender and self.connected(sender.name, peer):
            target = self.servers[peer]
            target.receive(lambda: target.push_state(sender.name, report))

    def _request(self, caller, peer, op, args):
        if not self.connected(caller.name, peer):
            return defer.fail(OperationError(f"no connection to server {peer}"))
        request = _Request(caller, self.servers[peer])
        self._requests.append(request)
        self._later(self.delay, self._request_arrives, request, op, _wire(args))
        return request.deferred

    def _request_arrives(self, request, op, args):
        if request.done:
            return
        if not request.target.receive(lambda: self._handle(request, op, args)):
            self._lost(request)

    def _handle(self, request, op, args):
        """As the responder of wire.Call: the result and the report after it, or a refusal."""
        target = request.target
        d = defer.maybeDeferred(target.controller.handle_call, op, args)

        def answered(result):
            return {"result": _wire(result or {}), "report": _wire(target.controller.local_report())}

        def refused(f):
            if f.check(OperationError, KeyError, ValueError):
                return OperationError(str(f.value))
            log.failure("request {op} to {p} failed", f, op=op, p=target.name)
            return OperationError(f"internal error: {f.value}")

        d.addCallbacks(answered, refused)
        d.addCallback(lambda answer: self._later(self.delay, self._answer_arrives, request, answer))

    def _answer_arrives(self, request, answer):
        if request.done:
            return
        if not self.connected(request.caller.name, request.target.name) \
                or self.servers.get(request.target.name) is not request.target:
            self._lost(request)
            return
        self._drop(request)  # answered: a break from now on is not this request's

        def settle():
            if isinstance(answer, Exception):
                request.deferred.errback(answer)
            else:
                request.deferred.callback(answer)

        request.caller.receive(settle)

    def _lost(self, request):
        """The connection broke under a request: the caller learns it after the delay."""
        if request.done:
            return
        self._drop(request)
        error = OperationError(f"request to {request.target.name} failed: connection lost")
        self._later(self.delay, lambda: request.caller.receive(lambda: request.deferred.errback(error)))

    def _drop(self, request):
        request.done = True
        if request in self._requests:
            self._requests.remove(request)

    # -- the rest ----------------------------------------------------------------------

    def _mark(self, server, action, resource, event):
        self._marks.append(Mark(self.clock.seconds(), server, action, resource, event))

    def _power_action(self, server, action):
        """A shutdown powers the server off; a reboot starts its daemon again after reboot_time."""
        if not self.power_actions or action not in ("shutdown", "reboot") or not self.is_running(server):
            return
        self.crash(server)
        if action == "reboot":
            self._later(self.reboot_time, self._boot, server)

    def _boot(self, server):
        if not self.is_running(server):  # unless a test started it first
            self.start(server)

    def _run(self, end, until=None):
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls()]
            step = min(due) if due else None
            if step is None or step > end:
                break
            # Set the time exactly: rightNow + (step - rightNow) may fall short of step.
            self.clock.rightNow = max(self.clock.rightNow, step)
            self.clock.advance(0)
            self.invariants.check()
            if until is not None and until():
                return
        self.clock.rightNow = max(self.clock.rightNow, end)
        self.clock.advance(0)
        self.invariants.check()
