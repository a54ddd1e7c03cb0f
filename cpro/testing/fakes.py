"""Fakes shipped with the package, for unit tests of cpro and of code built on it.

Each fake provides the same interface as the real part (checked with
verifyObject in the tests) and records what it was asked to do.
"""

from twisted.internet import defer
from zope.interface import implementer

from cpro.cluster.partition import Verdict
from cpro.cluster.states import PathState
from cpro.config.model import (ClusterConfig, Device, ExecParams, GroupConfig, HeartbeatConfig,
                               MonitorConfig, MonitorRecovery, OSActionCommands, Ports, ResourceConfig,
                               ServerConfig)
from cpro.interfaces import (IAlertSink, IForcedStop, IGroupResource, IHeartbeatPath, IMonitor, INPResolver,
                             IOSActions, IPeerChannel)
from cpro.interfaces import IAdminHandler
from cpro.resources.base import ResourceError
from cpro.resources.monitors.base import CheckResult


def make_config(servers=("srv1", "srv2"), groups=None, paths=1, hb_interval=0.1, hb_timeout=0.5,
                sync_wait=30.0, key=b"test-key", name="testcluster"):
    """A ClusterConfig built directly from the model (no XML).

    @param groups: list of dicts: name, policy (tuple), resources (list of
        names or dicts with name, act_retry, act_fo, act_action, deact_action),
        start_auto, failover_auto, failback_auto, exclusive.
    """
    server_cfgs = []
    for i, s in enumerate(servers):
        devices = tuple(Device(id=p, type="lan", info=f"127.0.{p}.{i + 1}") for p in range(paths))
        server_cfgs.append(ServerConfig(name=s, priority=i, devices=devices, ports=Ports(),
                                        address=f"127.0.0.{i + 1}"))
    heartbeats = tuple(HeartbeatConfig(name=f"lanhb{p + 1}", kind="lanhb", priority=p, device=p)
                       for p in range(paths))
    if groups is None:
        groups = [{"name": "failover1", "resources": ["exec1"]}]
    group_cfgs, resource_cfgs = [], []
    for gid, g in enumerate(groups):
        names = []
        for r in g.get("resources", []):
            r = {"name": r} if isinstance(r, str) else r
            names.append(r["name"])
            resource_cfgs.append(ResourceConfig(
                name=r["name"], type="exec", group=g["name"], depends=None,
                act_retry=r.get("act_retry", 0), act_fo=r.get("act_fo", 1),
                act_action=r.get("act_action", 1), deact_retry=r.get("deact_retry", 0),
                deact_action=r.get("deact_action", 1),
                params=ExecParams(start_path="/bin/true", stop_path=None, start_sync=True, stop_sync=True,
                                  start_timeout=10, stop_timeout=10, userlog=None)))
        group_cfgs.append(GroupConfig(
            name=g["name"], gid=gid, policy=tuple(g.get("policy", servers)),
            start_auto=g.get("start_auto", True), failover_auto=g.get("failover_auto", True),
            failback_auto=g.get("failback_auto", False), exclusive=g.get("exclusive", 0),
            resources=tuple(names)))
    return ClusterConfig(
        name=name, key=key, hb_interval=hb_interval, hb_timeout=hb_timeout,
        startup_sync_wait=sync_wait, config_download_wait=10.0, ports=Ports(),
        servers=tuple(server_cfgs), heartbeats=heartbeats, groups=tuple(group_cfgs),
        resources=tuple(resource_cfgs), os_actions=OSActionCommands(shutdown=("true",), reboot=("true",)),
        digest="0" * 64)


@implementer(IGroupResource)
class FakeResource:
    """A resource whose activation fails the next `fail_activations` times."""

    type = "exec"

    def __init__(self, name, fail_activations=0, fail_deactivations=0):
        self.name = name
        self.fail_activations = fail_activations
        self.fail_deactivations = fail_deactivations
        self.active = False
        self.calls = []  # ('activate'|'deactivate', context)
        self.pending = None  # set to a Deferred to make the next call wait on it

    def _maybe_wait(self):
        d, self.pending = self.pending, None
        return d if d is not None else defer.succeed(None)

    def activate(self, context):
        self.calls.append(("activate", context))

        def go(_):
            if self.fail_activations > 0:
                self.fail_activations -= 1
                raise ResourceError(f"{self.name}: start script exited with code 1")
            self.active = True

        return self._maybe_wait().addCallback(go)

    def deactivate(self, context):
        self.calls.append(("deactivate", context))

        def go(_):
            if self.fail_deactivations > 0:
                self.fail_deactivations -= 1
                raise ResourceError(f"{self.name}: stop script exited with code 1")
            self.active = False

        return self._maybe_wait().addCallback(go)

    def describe(self):
        return {"active": self.active}


@implementer(IAlertSink)
class FakeAlerts:
    def __init__(self):
        self.alerts = []  # (module, event_id, level, message)

    def emit(self, module, event_id, level, message, **details):
        self.alerts.append((module, event_id, getattr(level, "value", level), message))

    def ids(self, module):
        return [a[1] for a in self.alerts if a[0] == module]

    def messages(self):
        return [a[3] for a in self.alerts]


@implementer(IPeerChannel)
class FakePeers:
    """Records calls; tests answer them by firing the Deferreds in .pending."""

    def __init__(self):
        self.calls = []  # (server, op, args, Deferred)
        self.broadcasts = []

    def call(self, server, op, **args):
        d = defer.Deferred()
        self.calls.append((server, op, args, d))
        return d

    def broadcast_state(self, state):
        self.broadcasts.append(state)

    def connected_servers(self):
        return []


@implementer(IOSActions)
class FakeOSActions:
    def __init__(self):
        self.actions = []

    def run(self, action, reason):
        self.actions.append((action, reason))
        return defer.succeed(None)


class FakeMembership:
    """Which peers are up; tests flip them."""

    def __init__(self, up=(), paths=("lanhb1",)):
        self.up = set(up)
        self.paths = paths

    def is_up(self, server):
        return server in self.up

    def path_states(self, server):
        state = PathState.NORMAL if server in self.up else PathState.ERROR
        return {p: state for p in self.paths}


@implementer(IAdminHandler)
class FakeAdminHandler:
    """Records admin requests; answers status and alerts from the payloads it
    was given, or with what a test queues in .responses (a dict, a Deferred,
    or an exception to raise)."""

    def __init__(self, status, alerts):
        self.status = status
        self.alerts = alerts
        self.requests = []
        self.responses = []

    def execute(self, request):
        self.requests.append(request)
        if self.responses:
            response = self.responses.pop(0)
            if isinstance(response, BaseException):
                raise response
            return response
        if request.verb == "status":
            return dict(self.status)
        if request.verb == "alerts":
            return {"alerts": list(self.alerts)}
        return {}


def make_monitor(name="mon1", type="fake", interval=10.0, timeout=5.0, retry=0, first_wait=0.0, timing=0,
                 target=None, servers=None, delay_warning=80, timeout_retry=False, timeout_recover=False,
                 kind="grp", recovery_target="failover1", restart_threshold=0, failover_threshold=0,
                 final_action=1, script=None, script_before_restart=False, script_before_failover=False,
                 script_before_final=False, script_timeout=5.0, params=None):
    """A MonitorConfig built directly from the model (no XML); defaults: check every
    10 s, timeout 5 s, no retry, recovery target group failover1, final action none."""
    recovery = MonitorRecovery(kind=kind, target=recovery_target, restart_threshold=restart_threshold,
                               failover_threshold=failover_threshold, final_action=final_action,
                               script=script, script_before_restart=script_before_restart,
                               script_before_failover=script_before_failover,
                               script_before_final=script_before_final, script_timeout=script_timeout)
    return MonitorConfig(name=name, type=type, interval=interval, timeout=timeout, retry=retry,
                         first_wait=first_wait, timing=timing, target=target,
                         servers=tuple(servers) if servers is not None else None,
                         delay_warning=delay_warning, timeout_retry=timeout_retry,
                         timeout_recover=timeout_recover, recovery=recovery, params=dict(params or {}))


@implementer(IMonitor)
class FakeMonitor:
    """A monitor whose checks answer from a script of results.

    Each check takes the next item of .results (then .default, normal):
      - a CheckResult: answered at once;
      - an Exception instance: the check fails with it;
      - a Deferred: returned as it is (the test fires it);
      - ("after", seconds, item): answered after seconds on .clock;
      - "hang": never answers (the engine's timeout cancels it).
    Cancelling a check counts in .cancelled (a type kills its processes there).
    The constructor matches the registry's: FakeMonitor(reactor, config, params, env).
    """

    type = "fake"

    def __init__(self, reactor, config, params=None, env=None, results=()):
        self.clock = reactor
        self.config = config
        self.name = config.name
        self.params = params
        self.env = env
        self.results = list(results)
        self.default = CheckResult.normal()
        self.checks = 0
        self.cancelled = 0
        self.starts = 0
        self.stops = 0
        self.fail_start = None  # an Exception to fail the next start() with

    def start(self):
        self.starts += 1
        error, self.fail_start = self.fail_start, None
        if error is not None:
            return defer.fail(error)
        return None

    def stop(self):
        self.stops += 1
        return defer.succeed(None)

    def check(self):
        self.checks += 1
        item = self.results.pop(0) if self.results else self.default
        return self._answer(item)

    def _answer(self, item):
        if isinstance(item, CheckResult):
            return defer.succeed(item)
        if isinstance(item, defer.Deferred):
            return item
        if isinstance(item, BaseException):
            return defer.fail(item)
        if item == "hang":
            return defer.Deferred(lambda d: self._count_cancel())
        if isinstance(item, tuple) and item and item[0] == "after":
            _, seconds, inner = item
            d = defer.Deferred(lambda d: (call.cancel(), self._count_cancel()))
            call = self.clock.callLater(seconds, lambda: self._answer(inner).chainDeferred(d))
            return d
        raise ValueError(f"FakeMonitor cannot answer with {item!r}")

    def _count_cancel(self):
        self.cancelled += 1

    def describe(self):
        return {"checks": self.checks}


class FakeMonitorTypes(dict):
    """A type registry for MonitorService tests: 'fake' -> FakeMonitor; .made
    holds the monitors it built, by name, and .results seeds their scripts."""

    def __init__(self, results=None):
        super().__init__(fake=self._make)
        self.made = {}
        self.results = dict(results or {})

    def _make(self, reactor, config, params, env):
        monitor = FakeMonitor(reactor, config, params, env, results=self.results.get(config.name, ()))
        self.made[config.name] = monitor
        return monitor


@implementer(INPResolver)
class FakeNPResolver:
    """A network-partition resolver whose verdict the test sets.

    check() answers after .answer_after seconds on .clock with
    Verdict(.healthy, .reason); with .hang set it never answers (the
    engine's timeout cancels it). .checks records (clock seconds, lost).
    """

    kind = "fake"

    def __init__(self, clock, name="np1", timeout=0.3, healthy=True, answer_after=0.01):
        self.clock = clock
        self.name = name
        self.timeout = timeout
        self.healthy = healthy
        self.reason = ""
        self.answer_after = answer_after
        self.hang = False
        self.checks = []
        self.cancelled = 0

    def check(self, lost):
        self.checks.append((self.clock.seconds(), frozenset(lost)))
        call = None

        def cancel(d):
            self.cancelled += 1
            if call is not None and call.active():
                call.cancel()

        d = defer.Deferred(cancel)
        if not self.hang:
            call = self.clock.callLater(self.answer_after, self._answer, d)
        return d

    def _answer(self, d):
        reason = self.reason or ("the target answered" if self.healthy else "the target did not answer")
        d.callback(Verdict(bool(self.healthy), reason))


@implementer(IForcedStop)
class FakeForcedStop:
    """Fencing that succeeds (or fails with .error) after .takes seconds on
    .clock, calling .on_stop(server) when it succeeds (the in-memory cluster
    powers the server off there). .stops and .identified record the requests."""

    method = "bmc"

    def __init__(self, clock, takes=0.05, error=None, on_stop=None):
        self.clock = clock
        self.takes = takes
        self.error = error  # an Exception to fail every stop_server with, or None
        self.on_stop = on_stop or (lambda server: None)
        self.stops = []  # (clock seconds, server)
        self.identified = []  # (server, seconds)

    def stop_server(self, server):
        self.stops.append((self.clock.seconds(), server))
        call = None

        def done():
            if self.error is not None:
                d.errback(self.error)
            else:
                self.on_stop(server)
                d.callback(None)

        d = defer.Deferred(lambda _: call.cancel() if call is not None and call.active() else None)
        call = self.clock.callLater(self.takes, done)
        return d

    def identify(self, server, seconds):
        self.identified.append((server, seconds))
        return defer.succeed(None)


@implementer(IHeartbeatPath)
class FakeHeartbeatPath:
    """A heartbeat path over nothing: the test makes peers heard.

    send_beat records the digests sent while listening in .sent;
    deliver(packet) hands a packet to on_beat (while listening), alive(...)
    reports a peer alive through on_alive; .forgotten records forget().
    """

    def __init__(self, name="fakehb1", kind="fakehb", on_beat=None, on_alive=None):
        self.name = name
        self.kind = kind
        self.on_beat = on_beat or (lambda path, packet: None)
        self.on_alive = on_alive or (lambda path, server, incarnation, age: None)
        self.listening = False
        self.sent = []
        self.forgotten = []
        self._counters = {"sent": 0, "not_listening": 0, "accepted": 0, "alive": 0}

    def start_listening(self):
        self.listening = True

    def stop_listening(self):
        self.listening = False
        return defer.succeed(None)

    def send_beat(self, digest):
        if not self.listening:
            self._counters["not_listening"] += 1
            return
        self._counters["sent"] += 1
        self.sent.append(digest)

    def counters(self):
        return dict(self._counters)

    def forget(self, server):
        self.forgotten.append(server)

    def deliver(self, packet):
        """A beat from a peer arrives on this path (dropped while not listening)."""
        if self.listening:
            self._counters["accepted"] += 1
            self.on_beat(self.name, packet)

    def alive(self, server, incarnation=None, age=0.0):
        """This path sees server alive age seconds ago."""
        if self.listening:
            self._counters["alive"] += 1
            self.on_alive(self.name, server, incarnation, age)
