"""The cluster controller: decides what the local server does with groups.

Inputs are events (membership changes, peers' state reports, operator
requests, forwarded requests from peers); outputs are actions on local groups
and requests to peers through an IPeerChannel. It does no I/O itself and
takes its clock and collaborators by injection, so the decisions are unit
tested with a task.Clock and fakes.

Ground rules that keep a group from ever running twice:
- a server starts a group only when no live server holds it in its view;
- when a server goes down, each survivor computes the same target from the
  same ordered policy, and only the target starts the group;
- when two servers are found holding the same group (after a heal), the one
  lower in the group's policy stops it.
"""

from dataclasses import dataclass, field
from typing import Optional

from twisted.internet import defer
from twisted.logger import Logger

from cpro import alertcatalog as catalog
from cpro.cluster import placement
from cpro.cluster.errors import OperationError  # noqa: F401  (re-exported)
from cpro.cluster.escalation import ActivationEscalation, FinalAction
from cpro.cluster.monitoractions import MonitorRecoveryActions
from cpro.cluster.partition import Outcome
from cpro.cluster.states import ClusterServiceState, GroupState, MonitorState, PathState
from cpro.config.partition import NP_ACTIONS as NP_ACTION_WORDS

log = Logger()

# Servers in these service states may be given groups.
TAKING_GROUPS = (ClusterServiceState.RUNNING.value, ClusterServiceState.STARTING.value)


@dataclass
class PeerReport:
    """What a peer last told us about itself."""

    incarnation: str = ""
    version: int = -1
    service: str = ClusterServiceState.STOPPED.value
    groups: dict = field(default_factory=dict)  # group -> GroupState value
    resources: dict = field(default_factory=dict)  # resource -> ResourceState value
    monitors: dict = field(default_factory=dict)  # monitor -> status dict (see _monitor_entry)
    monitor_recovery: bool = True  # recovery actions of monitors enabled on that server
    recovering: dict = field(default_factory=dict)  # group -> monitor whose recovery sequence runs
    config_generation: Optional[int] = None  # the peer's configuration generation, if it said

    @classmethod
    def from_dict(cls, d):
        """From the wire; a state word this version does not know becomes Unknown.

        @raise ValueError: d is not a state report."""
        if not isinstance(d, dict):
            raise ValueError("a state report must be an object")
        try:
            return cls._from_dict(d)
        except (TypeError, ValueError, AttributeError, OverflowError) as e:
            raise ValueError(f"malformed state report ({type(e).__name__})") from None

    @classmethod
    def _from_dict(cls, d):
        known = {s.value for s in GroupState}
        version = d.get("version", -1)
        if type(version) is not int:
            raise ValueError("version")
        return cls(incarnation=str(d.get("incarnation", "")), version=version,
                   service=str(d.get("service", ClusterServiceState.STOPPED.value)),
                   groups={str(k): (str(v) if str(v) in known else GroupState.UNKNOWN.value)
                           for k, v in dict(d.get("groups", {})).items()},
                   resources={str(k): str(v) for k, v in dict(d.get("resources", {})).items()},
                   monitors={str(k): _monitor_entry(v) for k, v in _dict(d.get("monitors")).items()},
                   monitor_recovery=bool(d.get("monitor_recovery", True)),
                   recovering={str(k): str(v) for k, v in _dict(d.get("recovering")).items()},
                   config_generation=_generation(d.get("config")))


def _dict(value):
    return value if isinstance(value, dict) else {}


def _generation(value):
    generation = _dict(value).get("generation")
    return generation if type(generation) is int and 0 <= generation < 2**63 else None


def _monitor_entry(value):
    """A peer's status of one monitor, with only the fields and types we show."""
    value = _dict(value)
    known = {s.value for s in MonitorState}
    status = str(value.get("status", MonitorState.UNKNOWN.value))
    entry = {"status": status if status in known else MonitorState.UNKNOWN.value,
             "error": str(value.get("error") or "")[:512]}
    duration = value.get("duration")
    entry["duration"] = float(duration) if isinstance(duration, (int, float)) else None
    last_event = value.get("last_event")  # event-fed monitors only
    if isinstance(last_event, (int, float)) and not isinstance(last_event, bool):
        entry["last_event"] = float(last_event)
    for key in ("retries", "restarts", "failovers"):
        entry[key] = int(value[key]) if isinstance(value.get(key), int) else 0
    for key in ("suspended", "dummy", "final_action_done", "recovering"):
        entry[key] = bool(value.get(key, False))
    return entry


class ClusterController(MonitorRecoveryActions):
    def __init__(self, clock, config, local, groups, peers, alerts, os_actions, incarnation):
        """
        @param groups: group name -> LocalGroup for every group in the configuration.
        @param peers: IPeerChannel.
        @param os_actions: IOSActions.
        """
        self.clock = clock
        self.config = config
        self.local = local
        self.groups = groups
        self.peers = peers
        self.alerts = alerts
        self.os_actions = os_actions
        self.incarnation = incarnation
        self.membership = None  # set by the node before start
        self.service = ClusterServiceState.STOPPED
        self.reports = {}  # peer -> PeerReport (only while the peer is up)
        self.version = 0
        self.escalation = ActivationEscalation()
        self.groups_by_name = {g.name: g for g in config.groups}
        self._sync_deadline = None
        self._master_deadline = None
        self._sync_expired = False
        self._dual_alerted = set()
        self._busy = {}  # group -> description of an operation in progress
        self._after_resume = []  # (server, groups) that went down while suspended
        self._orphans = {}  # group -> the dead server it was on, until a live server holds it
        self._skip_auto_start = None  # why the next end of the startup sync starts no group
        self._recovering = {}  # group -> monitor whose recovery sequence is in progress here
        self.on_state_change = lambda: None  # node hook: push state, send a beat now
        # The local monitor service (cpro.services.monitors.MonitorService), set
        # by the node: its report() goes into local_report, operate(args) serves
        # the 'monitor_local' requests.
        self.monitors = None
        # Network-partition resolution and forced stop between a peer's loss
        # and its failover (cpro.cluster.partition.PartitionResolution), and
        # the node's hook carrying out the NP action: on_network_partition(action)
        # -> Deferred. Both set by the node; None = fail over at once.
        self.partition = None
        self.on_network_partition = None
        self._np_acting = False
        # Requests served by other parts of the node: op -> handler(op, args)
        # (live reconfiguration's config_* requests).
        self.call_handlers = {}
        self.config_generation = 0  # pushes applied to this configuration (cpro.services.reconfig)

    def reconfigure(self, config, groups, generation):
        """Run with a new configuration from now on (live reconfiguration).

        @param groups: group name -> LocalGroup for every group of config
            (unchanged groups keep their object and state).
        """
        self.config = config
        self.groups = groups
        self.groups_by_name = {g.name: g for g in config.groups}
        self.config_generation = generation
        for name in [n for n in self._recovering if n not in groups]:
            del self._recovering[name]
        self.notify_changed()

    # -- views ---------------------------------------------------------------

    def local_report(self):
        resources = {}
        for g in self.groups.values():
            resources.update({n: s.value for n, s in g.resource_states.items()})
        report = {
            "server": self.local,
            "incarnation": self.incarnation,
            "version": self.version,
            "service": self.service.value,
            "groups": {n: g.state.value for n, g in self.groups.items()},
            "resources": resources,
            "recovering": dict(self._recovering),
            "config": {"generation": self.config_generation, "digest": self.config.digest},
        }
        if self.monitors is not None:
            report.update(self.monitors.report(compact=True))
        return report

    def peer_up(self, server):
        return self.membership is not None and self.membership.is_up(server)

    def view(self):
        """server -> {group: GroupState value} for the local server and live peers."""
        v = {self.local: {n: g.state.value for n, g in self.groups.items()}}
        for server, report in self.reports.items():
            if self.peer_up(server):
                v[server] = dict(report.groups)
        return v

    def holders(self):
        return placement.holders_from_view(self.view())

    def holders_of(self, group):
        return sorted((s for s, gs in self.view().items()
                       if GroupState(gs.get(group, "Offline")).holds_resources),
                      key=lambda s: placement.policy_rank(self.groups_by_name[group], s))

    def eligible(self, starting=True):
        """Servers that may be given groups now.

        @param starting: count servers still in their startup synchronisation
            (they start what they are given when it ends: right for auto start,
            too slow for a failover).
        """
        taking = TAKING_GROUPS if starting else (ClusterServiceState.RUNNING.value,)
        out = set()
        if self.service.value in taking:
            out.add(self.local)
        for server, report in self.reports.items():
            if self.peer_up(server) and report.service in taking:
                out.add(server)
        return out

    def notify_changed(self):
        """Local state changed: bump the placement version and tell the node."""
        self.version += 1
        self.on_state_change()

    def alert(self, entry, **fields):
        """Raise the catalogue entry (L{cpro.alertcatalog}) with these fields."""
        self.alerts.emit(*entry.format(**fields))

    # -- cluster service -----------------------------------------------------

    def start_service(self):
        """Begin the startup synchronisation; groups start when it ends."""
        if self.service not in (ClusterServiceState.STOPPED,):
            raise OperationError(f"the cluster service is already {self.service.value.lower()}")
        self._set_service(ClusterServiceState.STARTING)
        self.alert(catalog.DAEMON_STARTING)
        self.alert(catalog.STARTUP_WAITING)
        self._sync_expired = False
        self._np_acting = False  # a new run of the service may act on a new partition
        self._sync_deadline = self.clock.callLater(self.config.startup_sync_wait, self._sync_timeout)
        if self.local != self.config.master.name:
            self._master_deadline = self.clock.callLater(self.config.config_download_wait,
                                                         self._master_timeout)
        self._check_sync()

    def skip_auto_start_once(self, reason):
        """The next end of the startup synchronisation starts no group.

        For a daemon whose previous incarnation crashed: the groups it held
        were failed over by the peers (or wait for the operator), and a
        rejoining server must not grab any. Failover of orphans, failback and
        operator requests work as usual; a later service start auto-starts.
        """
        self._skip_auto_start = reason

    def _set_service(self, new):
        old = self.service
        if old is new:
            return
        self.service = new
        log.info("cluster service: {old} -> {new}", old=old.value, new=new.value)
        self.notify_changed()

    def _peers_reported(self):
        return [s.name for s in self.config.servers
                if s.name != self.local and s.name in self.reports and self.peer_up(s.name)]

    def _check_sync(self):
        if self.service is not ClusterServiceState.STARTING:
            return
        peers = [s.name for s in self.config.servers if s.name != self.local]
        if all(p in self._peers_reported() for p in peers):
            self.alert(catalog.STARTUP_ALL_STARTED)
            self._end_sync()

    def _sync_timeout(self):
        self._sync_deadline = None
        self._sync_expired = True
        self._end_sync_without_everyone()

    def _master_timeout(self):
        """cfwait is over: stop waiting for the master to check our configuration."""
        self._master_deadline = None
        if self.service is ClusterServiceState.STARTING and not self._master_checked():
            self.alert(catalog.CONFIG_NOT_CHECKED, master=self.config.master.name,
                       wait=self.config.config_download_wait)
        self._end_sync_without_everyone()

    def _master_checked(self):
        """Reports only travel on links whose ends run the same configuration."""
        master = self.config.master.name
        return master == self.local or master in self._peers_reported()

    def _end_sync_without_everyone(self):
        """After syncwait, start without the missing servers; a non-master also
        waits (up to cfwait) for the master, which checks its configuration."""
        if self.service is not ClusterServiceState.STARTING or not self._sync_expired:
            return
        if self._master_deadline is not None and not self._master_checked():
            return
        missing = [s.name for s in self.config.servers
                   if s.name != self.local and s.name not in self._peers_reported()]
        self.alert(catalog.STARTUP_WAIT_OVER, wait=self.config.startup_sync_wait, missing=", ".join(missing))
        self._end_sync()

    def _cancel_sync_timers(self):
        for timer in (self._sync_deadline, self._master_deadline):
            if timer is not None and timer.active():
                timer.cancel()
        self._sync_deadline = self._master_deadline = None

    def _end_sync(self):
        self._cancel_sync_timers()
        self._set_service(ClusterServiceState.RUNNING)
        self.alert(catalog.DAEMON_STARTED)
        # Groups of servers that died while we were starting are failed over
        # even when auto start is off: that is placing orphans, not grabbing.
        self._place_orphans()
        if self._skip_auto_start is not None and not self._peers_reported():
            # Alone after the wait: no live peer can be failing our old groups
            # over, so this is an ordinary cluster start.
            self.alert(catalog.AUTO_START_AFTER_UNCLEAN_STOP, server=self.local, reason=self._skip_auto_start)
            self._skip_auto_start = None
        if self._skip_auto_start is not None:
            reason, self._skip_auto_start = self._skip_auto_start, None
            self.alert(catalog.AUTO_START_SKIPPED, server=self.local, reason=reason)
            return
        self._auto_start()

    def _auto_start(self):
        """Start the auto-start groups that nobody holds and whose target is us."""
        holders = self.holders()
        eligible = self.eligible()
        for group in sorted(self.config.groups, key=lambda g: g.gid):
            if not group.start_auto or group.name in holders or group.name in self._orphans:
                continue
            target = placement.choose_server(group, eligible, holders, self.groups_by_name)
            if target is None:
                continue
            holders[group.name] = target
            if target == self.local:
                self._run(self.start_group_local(group.name, "START"), f"start {group.name}")

    @defer.inlineCallbacks
    def stop_service(self, move_groups=True, keep_failed=None):
        """Stop the local cluster service: stop the local groups (moving them to
        the next server unless the whole cluster is stopping)."""
        if self.service in (ClusterServiceState.STOPPED, ClusterServiceState.STOPPING):
            return
        self._cancel_sync_timers()
        self.alert(catalog.DAEMON_STOPPING)
        self._set_service(ClusterServiceState.STOPPING)
        moves = []
        for name in sorted(self.groups, key=lambda n: self.groups_by_name[n].gid):
            group = self.groups[name]
            if not group.state.holds_resources:
                continue
            yield self._locked(name, group.deactivate, "CLUSTERSHUTDOWN")
            if move_groups and name != keep_failed and group.state is GroupState.OFFLINE \
                    and self.groups_by_name[name].failover_auto:
                moves.append(name)
        self._set_service(ClusterServiceState.STOPPED)
        for name in moves:
            target = placement.choose_server(self.groups_by_name[name], self.eligible() - {self.local},
                                             self.holders(), self.groups_by_name)
            if target is None:
                self.alert(catalog.NO_DESTINATION, group=name)
                continue
            self.alert(catalog.FAILOVER_DESTINATION, target=target, group=name,
                       reason=f"cluster service stopped on {self.local}")
            try:
                yield self.peers.call(target, "group_start_local", group=name, event="FAILOVER")
            except Exception as e:
                self.alert(catalog.FAILOVER_START_FAILED, group=name, target=target, error=e)

    def suspend(self):
        if self.service is not ClusterServiceState.RUNNING:
            raise OperationError(f"cannot suspend: the cluster service is {self.service.value.lower()}")
        self._set_service(ClusterServiceState.SUSPENDED)
        self.alert(catalog.SUSPEND_REQUESTED)

    def resume(self):
        if self.service is not ClusterServiceState.SUSPENDED:
            raise OperationError(f"cannot resume: the cluster service is {self.service.value.lower()}")
        self._set_service(ClusterServiceState.RUNNING)
        self.alert(catalog.RESUME_REQUESTED)
        pending, self._after_resume = self._after_resume, []
        for server, held in pending:
            if not self.peer_up(server):
                self._failover_from(server, [g for g in held if g not in self.holders()])
        self._check_dual_activation()

    # -- membership events ---------------------------------------------------

    def server_up(self, server, incarnation):
        self.alert(catalog.SERVER_STARTED, server=server)
        if self.partition is not None:
            self.partition.cancel(server)

    def server_down(self, server):
        self.alert(catalog.SERVER_STOPPED, server=server)
        report = self.reports.pop(server, None)
        held = [g for g, s in (report.groups if report else {}).items()
                if GroupState(s).holds_resources and g in self.groups_by_name]
        if self.partition is not None and self.partition.active and self.service in (
                ClusterServiceState.RUNNING, ClusterServiceState.STARTING):
            # Resolve first: if this server is the one cut off, it must not
            # take the peer's groups; and a fenced peer cannot still run them.
            d = self.partition.resolve(server)
            d.addCallback(self._resolved, server, held)
            d.addErrback(lambda f: log.failure("network partition resolution for {server}", f, server=server))
        else:
            self._failover_from(server, held)
        self._check_sync()

    def _resolved(self, outcome, server, held):
        if outcome is Outcome.FAILOVER:
            if not self.peer_up(server):
                self._failover_from(server, held)
        elif outcome is Outcome.ISOLATED:
            self._network_partitioned(server)

    def _network_partitioned(self, server):
        """This server could not prove it is on the healthy side: protect the
        data. The peers' groups are never taken; the NP action runs once."""
        if self._np_acting:
            return
        self._np_acting = True
        action = self.config.network_partition.action
        words = NP_ACTION_WORDS.get(action, str(action))
        self.alert(catalog.NETWORK_PARTITION, server=server, local=self.local, action=words)
        if action == 0 or self.on_network_partition is None:
            self._np_acting = False
            return
        d = defer.maybeDeferred(self.on_network_partition, action)
        d.addErrback(lambda f: log.failure("network partition action {action}", f, action=action))

    def server_restarted(self, server, old, new):
        """The peer's daemon restarted faster than the heartbeat timeout: what
        its old incarnation held is gone."""
        self.alert(catalog.SERVER_RESTARTED, server=server)
        report = self.reports.get(server)
        if report is not None and report.incarnation != str(new):
            self.reports.pop(server)
            held = [g for g, s in report.groups.items()
                    if GroupState(s).holds_resources and g in self.groups_by_name]
            self._failover_from(server, held)

    def path_state_changed(self, server, path, old, new):
        if new is PathState.ERROR:
            self.alert(catalog.HEARTBEAT_PATH_DOWN, path=path, server=server)
        elif new is PathState.NORMAL and old is PathState.ERROR:
            self.alert(catalog.HEARTBEAT_PATH_UP, path=path, server=server)

    def _failover_from(self, server, held):
        """The groups `held` lost their server: they become orphans until a live
        server reports holding them, and are (re)placed now."""
        if self.service is ClusterServiceState.SUSPENDED and held:
            self.alert(catalog.FAILOVER_AFTER_RESUME, groups=", ".join(held), server=server)
            self._after_resume.append((server, held))
            return
        if self.service not in (ClusterServiceState.RUNNING, ClusterServiceState.STARTING):
            return
        for g in held:
            if self.groups_by_name[g].failover_auto:
                self._orphans[g] = server
            else:
                self.alert(catalog.MANUAL_FAILOVER, group=g)
        if self.service is ClusterServiceState.STARTING:
            return  # placed when the startup synchronisation ends (_end_sync)
        self._place_orphans()

    def _prune_orphans(self):
        holders = self.holders()
        for g in [g for g in self._orphans if g in holders]:
            del self._orphans[g]
        return holders

    def _place_orphans(self):
        """Start here the orphans whose target we are. Re-run on every server
        down, so an orphan whose target died before taking it is placed again."""
        holders = self._prune_orphans()
        if not self._orphans:
            return
        plan = placement.plan_failover(None, list(self._orphans), self.eligible(starting=False), holders,
                                       self.groups_by_name)
        for name, target in plan:
            if target is None:
                self.alert(catalog.NO_DESTINATION, group=name)
            elif target == self.local and name not in self._busy:
                self.alert(catalog.FAILOVER_DESTINATION, target=target, group=name,
                           reason=f"server {self._orphans[name]} down")
                self._run(self.start_group_local(name, "FAILOVER"), f"failover {name}")

    # -- peer reports --------------------------------------------------------

    def peer_report(self, server, data):
        """A peer's state report arrived (pushed or fetched)."""
        if self.config.server(server) is None or server == self.local:
            return
        report = PeerReport.from_dict(data)
        old = self.reports.get(server)
        if old is not None and old.incarnation == report.incarnation and report.version < old.version:
            return  # an older report overtaken by a newer one
        self.reports[server] = report
        if old is not None and old.incarnation != report.incarnation:
            # The peer restarted and its new incarnation reported before a
            # heartbeat told us: what the old one held is gone.
            self.alert(catalog.SERVER_RESTARTED, server=server)
            self._failover_from(server, [g for g, s in old.groups.items()
                                         if GroupState(s).holds_resources and g in self.groups_by_name])
        if not self.peer_up(server):
            return
        self._prune_orphans()
        self._check_sync()
        self._check_dual_activation()
        if report.service == ClusterServiceState.RUNNING.value and (
                old is None or old.service != report.service):
            self._check_failback()

    def peer_digest(self, server, incarnation, version):
        """A heartbeat told us the peer's placement version; True if our copy is stale."""
        report = self.reports.get(server)
        return report is None or report.incarnation != str(incarnation) or report.version < version

    def _check_dual_activation(self):
        if self.service is not ClusterServiceState.RUNNING:
            return
        for name, group in self.groups.items():
            if not group.state.holds_resources:
                self._dual_alerted.discard(name)
                continue
            holders = self.holders_of(name)
            if len(holders) < 2:
                self._dual_alerted.discard(name)
                continue
            if name not in self._dual_alerted:
                self._dual_alerted.add(name)
                self.alert(catalog.DUAL_ACTIVATION, group=name, servers=", ".join(holders))
            if holders[0] != self.local and name not in self._busy:
                self.alert(catalog.DUPLICATE_STOPPING, group=name, server=self.local, holder=holders[0])
                self._run(self.stop_group_local(name, factor="DUALACTIVATION"), f"stop duplicate {name}")

    def _check_failback(self):
        if self.service is not ClusterServiceState.RUNNING:
            return
        eligible = self.eligible()
        holders = self.holders()
        for name, group in self.groups.items():
            cfg = self.groups_by_name[name]
            if not cfg.failback_auto or group.state is not GroupState.ONLINE or name in self._busy \
                    or name in self._recovering:  # a monitor's recovery decides where it goes
                continue
            target = placement.failback_target(cfg, self.local, eligible, holders, self.groups_by_name)
            if target is not None:
                self.alert(catalog.FAILBACK_STARTED, group=name, target=target)
                self._run(self._move_local(name, target), f"failback {name}")

    # -- local group actions -------------------------------------------------

    def _run(self, d, what):
        def report(f):
            if f.check(OperationError):
                log.warn("{what}: {e}", what=what, e=f.value)
            else:
                log.failure("{what} failed", f, what=what)

        d.addErrback(report)
        return d

    def _locked(self, name, fn, *args, **kwargs):
        return self.groups[name].lock.run(fn, *args, **kwargs)

    def require_running(self):
        if self.service is not ClusterServiceState.RUNNING:
            raise OperationError(f"the cluster service on {self.local} is {self.service.value.lower()}")

    def group(self, name):
        if name not in self.groups:
            raise OperationError(f"no such group: {name}")
        return self.groups[name]

    @defer.inlineCallbacks
    def start_group_local(self, name, event="START"):
        """Activate a group here, escalating on failure (retry, fail over, final action)."""
        self.require_running()
        group = self.group(name)
        elsewhere = [s for s in self.holders_of(name) if s != self.local]
        if elsewhere:
            raise OperationError(f"group {name} is already active on {elsewhere[0]}")
        if name in self._busy:
            raise OperationError(f"group {name} is busy: {self._busy[name]}")
        self._busy[name] = "starting"
        try:
            self.alert(catalog.GROUP_STARTING, group=name, event=event)
            eligible_elsewhere = lambda: placement.next_server(  # noqa: E731
                self.groups_by_name[name], self.local, self.eligible(), self.holders(), self.groups_by_name)
            outcome = yield self._locked(
                name, group.activate, event, "", lambda rcfg: self.escalation.decide(
                    rcfg, eligible_elsewhere() is not None))
        finally:
            self._busy.pop(name, None)
        if outcome.ok:
            self.escalation.reset_group(name)
            self.alert(catalog.GROUP_STARTED, group=name)
            self._check_dual_activation()
            return {"message": f"group {name} started on {self.local}"}
        self.alert(catalog.GROUP_START_FAILED, group=name, resource=outcome.resource, error=outcome.error)
        if outcome.failover:
            target = eligible_elsewhere()
            if target is None:
                self.alert(catalog.NO_DESTINATION, group=name)
                raise OperationError(f"group {name} failed on {self.local} and has no other server")
            self.alert(catalog.FAILOVER_DESTINATION, target=target, group=name,
                       reason=f"{outcome.resource} activation failed")
            self._run(self.peers.call(target, "group_start_local", group=name, event="FAILOVER"),
                      f"failover {name} to {target}")
            return {"message": f"group {name} failed on {self.local}; failing over to {target}"}
        if outcome.final_action is not None:
            yield self._final_action(outcome.final_action, name, outcome)
        raise OperationError(f"group {name} failed to start on {self.local}: {outcome.resource}: {outcome.error}")

    @defer.inlineCallbacks
    def _final_action(self, action, group_name, outcome):
        self.alert(catalog.RESOURCE_FINAL_ACTION, resource=outcome.resource, group=group_name, action=action.words)
        if action in (FinalAction.STOP_CLUSTER_SERVICE, FinalAction.STOP_SERVICE_AND_SHUTDOWN,
                      FinalAction.STOP_SERVICE_AND_REBOOT):
            yield self.stop_service(move_groups=True, keep_failed=group_name)
        if action is FinalAction.STOP_SERVICE_AND_SHUTDOWN:
            yield self.os_actions.run("shutdown", f"final action of {outcome.resource}")
        elif action is FinalAction.STOP_SERVICE_AND_REBOOT:
            yield self.os_actions.run("reboot", f"final action of {outcome.resource}")

    @defer.inlineCallbacks
    def stop_group_local(self, name, factor="GROUPSTOP"):
        group = self.group(name)
        if name in self._busy:
            raise OperationError(f"group {name} is busy: {self._busy[name]}")
        self._busy[name] = "stopping"
        try:
            self.alert(catalog.GROUP_STOPPING, group=name)
            outcome = yield self._locked(name, group.deactivate, factor)
        finally:
            self._busy.pop(name, None)
        if not outcome.ok:
            self.alert(catalog.GROUP_STOP_FAILED, group=name, resource=outcome.resource, error=outcome.error)
            if outcome.final_action is not None:
                yield self._final_action(outcome.final_action, name, outcome)
            raise OperationError(f"group {name} failed to stop on {self.local}: {outcome.resource}: {outcome.error}")
        self.alert(catalog.GROUP_STOPPED, group=name)
        return {"message": f"group {name} stopped on {self.local}"}

    @defer.inlineCallbacks
    def _move_local(self, name, target):
        yield self.stop_group_local(name, factor="GROUPMOVE")
        result = yield self.start_there_or_back(name, target, self.local)
        return result

    @defer.inlineCallbacks
    def start_there_or_back(self, name, target, origin):
        """Second half of a move: start on target; if that fails, bring the
        group back on origin so that it does not stay down."""
        try:
            result = yield self.call(target, "group_start_local", group=name, event="START")
            return result
        except Exception as e:
            self.alert(catalog.GROUP_MOVE_FAILED, group=name, target=target, error=e, origin=origin)
            yield self.call(origin, "group_start_local", group=name, event="START")
            raise OperationError(f"group {name} could not start on {target} ({e}); it was started "
                                 f"again on {origin}")

    def _resource_group(self, resource):
        rcfg = self.config.resource(resource)
        if rcfg is None or rcfg.group not in self.groups:
            raise OperationError(f"no such resource: {resource}")
        return self.groups[rcfg.group]

    @defer.inlineCallbacks
    def start_resource_local(self, resource):
        self.require_running()
        group = self._resource_group(resource)
        elsewhere = [s for s in self.holders_of(group.name) if s != self.local]
        if elsewhere:
            raise OperationError(f"group {group.name} of {resource} is active on {elsewhere[0]}")
        outcome = yield self._locked(group.name, group.activate_resource, resource)
        if not outcome.ok:
            raise OperationError(f"resource {resource} failed to start: {outcome.error}")
        return {"message": f"resource {resource} started on {self.local}"}

    @defer.inlineCallbacks
    def stop_resource_local(self, resource):
        group = self._resource_group(resource)
        outcome = yield self._locked(group.name, group.deactivate_resource, resource)
        if not outcome.ok:
            raise OperationError(f"resource {resource} failed to stop: {outcome.error}")
        return {"message": f"resource {resource} stopped on {self.local}"}

    # -- acting on any server --------------------------------------------------

    def check_server(self, server):
        """Refuse a server name that is not in the configuration."""
        if server and self.config.server(server) is None:
            raise OperationError(f"no such server: {server}")
        return server

    def call(self, server, op, **args):
        """Run op on server: locally or through the peer channel."""
        if server == self.local:
            return defer.maybeDeferred(self.handle_call, op, args)
        if not self.peer_up(server):
            return defer.fail(OperationError(f"server {server} is not running"))
        return self.peers.call(server, op, **args)

    @defer.inlineCallbacks
    def cluster_local(self, action, move=True):
        if action in ("stop", "restart", "suspend") and self._recovering:
            group, monitor = sorted(self._recovering.items())[0]
            raise OperationError(f"cannot {action} the cluster service on {self.local}: monitor {monitor} "
                                 f"is recovering group {group}; try again after its final action")
        if action == "start":
            self.start_service()
        elif action == "stop":
            yield self.stop_service(move_groups=move)
        elif action == "restart":
            yield self.stop_service(move_groups=move)
            self.start_service()
        elif action == "suspend":
            self.suspend()
        elif action == "resume":
            self.resume()
        return {"message": "Command succeeded."}

    # -- requests from peers -------------------------------------------------

    def handle_call(self, op, args):
        """Dispatch a request forwarded by a peer (or by ourselves)."""
        if op == "group_start_local":
            return self.start_group_local(args["group"], args.get("event", "START"))
        if op == "group_stop_local":
            return self.stop_group_local(args["group"], args.get("factor", "GROUPSTOP"))
        if op == "resource_start_local":
            return self.start_resource_local(args["resource"])
        if op == "resource_stop_local":
            return self.stop_resource_local(args["resource"])
        if op == "cluster_local":
            return self.cluster_local(args["action"], bool(args.get("move", True)))
        if op == "get_state":
            return self.local_report()
        if op == "monitor_local":
            if self.monitors is None:
                raise OperationError(f"monitors are not available on {self.local}")
            return self.monitors.operate(dict(args))
        handler = self.call_handlers.get(op)
        if handler is not None:
            return handler(op, args)
        raise OperationError(f"unknown request: {op}")


class MembershipEvents:
    """The membership listener of a server: forwards to its controller, and
    asks for the state report of a peer heard (again) through refresh(server)."""

    def __init__(self, controller, refresh):
        self._controller = controller
        self._refresh = refresh

    def path_state_changed(self, server, path, old, new):
        self._controller.path_state_changed(server, path, old, new)

    def server_up(self, server, incarnation):
        self._controller.server_up(server, str(incarnation))
        self._refresh(server)

    def server_down(self, server):
        self._controller.server_down(server)

    def server_restarted(self, server, old, new):
        self._controller.server_restarted(server, str(old), str(new))
        self._refresh(server)
