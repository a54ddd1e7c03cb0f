"""The monitor service: runs the monitors of the local server and carries out their recovery.

One L{MonitorRunner} per monitor that runs here (``polling/servers``), built
from the monitor type registry. The service

- starts the runners while the cluster service is Running (held while it is
  Suspended, stopped otherwise) and, for ``timing`` 1, only while the target
  resource is Online here (L{sync}, called on every state change);
- turns each confirmed error into the next recovery step decided by the
  monitor's L{RecoveryEscalation} (reactivate, fail over, final action) and
  asks the controller to carry it out, with the optional script before each
  step, the recovery-in-progress mark on the group, and the alerts;
- serves the operator requests (suspend/resume, dummy failure, clear counters,
  the cluster-wide switch that disables recovery actions) and the status;
- hands the events of event-fed monitors (schema C{event_fed}: SNMP traps,
  clprexec notices) to their runners (L{deliver}), the same engine as polled
  checks;
- measures the reactor's lag for userw (L{reactor_lag}) and keeps the recent
  samples for the status (L{lag_report}).

Recovery scripts run through L{cpro.system.process.run_command} with this
environment (no shell): CLP_MONITORNAME, CLP_ACTION (RESTART before a
reactivation, FAILOVER before a failover, FINALACTION before the final
action), CLP_RESTARTCOUNT, CLP_FAILOVERCOUNT (counts including the step
about to run), CLP_VERSION_FULL, CLP_VERSION_MAJOR, CLP_OSNAME, CLP_OSVER,
CPRO_SERVER_NAME, CPRO_RECOVERY_TARGET and PATH.
"""

import collections
import json
import math
import os
import platform

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from cpro import __version__, plugins
from cpro import alertcatalog as catalog
from cpro.cluster.controller import OperationError
from cpro.cluster.monitoring import BY_CLUSTER, BY_OPERATOR, EventInlet, MonitorRunner
from cpro.cluster.recovery import MonitorFinalAction, RecoveryEscalation, RecoveryStep
from cpro.cluster.states import ClusterServiceState, MonitorState
from cpro.resources.monitors.base import MonitorEnvironment
from cpro.system.process import DEFAULT_PATH, run_command

log = Logger()

LAG_INTERVAL = 1.0  # s between reactor-lag samples
# s between the first checks of monitors that start or resume together. Each
# next check follows its own previous one, so monitors started together would
# check together forever: 100 genw at once block the reactor for ~80 ms of
# process spawning every interval. Spread, they cost ~1 ms each, 10 ms apart.
STAGGER = 0.01
LAG_WINDOW = 900  # samples kept for the status (15 minutes at LAG_INTERVAL)
LAG_RECENT = 60  # newest samples listed in the status
REPORT_ERROR_CHARS = 200  # of a monitor's last error in the state report
# Bytes of JSON the monitors may take in one state report: the whole report
# travels in one internal message of at most 60000 bytes, and one too large
# is not sent at all (the peers then know nothing of this server's groups).
REPORT_BUDGET = 30000
# Status fields a peer fills in when the state report leaves them out.
_PEER_DEFAULTS = {"error": "", "duration": None, "retries": 0, "restarts": 0, "failovers": 0,
                  "suspended": False, "dummy": False, "final_action_done": False, "recovering": False,
                  "last_event": None}
_NO_DEFAULT = object()

# Alert ids (module rm) of the script before each step: started, completed, failed.
_SCRIPT_ALERTS = {
    "RESTART": (catalog.SCRIPT_BEFORE_REACTIVATION_STARTED, catalog.SCRIPT_BEFORE_REACTIVATION_COMPLETED,
                catalog.SCRIPT_BEFORE_REACTIVATION_FAILED),
    "FAILOVER": (catalog.SCRIPT_BEFORE_FAILOVER_STARTED, catalog.SCRIPT_BEFORE_FAILOVER_COMPLETED,
                 catalog.SCRIPT_BEFORE_FAILOVER_FAILED),
    "FINALACTION": (catalog.SCRIPT_BEFORE_FINAL_ACTION_STARTED, catalog.SCRIPT_BEFORE_FINAL_ACTION_COMPLETED,
                    catalog.SCRIPT_BEFORE_FINAL_ACTION_FAILED),
}
# Final actions: alert before (the service may stop), after success, after failure.
_FINAL_ALERTS = {
    MonitorFinalAction.STOP_GROUP: (None, catalog.RECOVERY_TARGET_STOPPED, catalog.TARGET_STOP_FAILED),
    MonitorFinalAction.STOP_RESOURCE: (None, catalog.RECOVERY_TARGET_STOPPED, catalog.TARGET_STOP_FAILED),
    MonitorFinalAction.STOP_CLUSTER_SERVICE: (catalog.CLUSTER_STOP_REQUIRED, None, catalog.CLUSTER_STOP_FAILED),
    MonitorFinalAction.STOP_SERVICE_AND_SHUTDOWN: (catalog.SHUTDOWN_REQUIRED, None, catalog.SHUTDOWN_FAILED),
    MonitorFinalAction.STOP_SERVICE_AND_REBOOT: (catalog.REBOOT_REQUIRED, None, catalog.REBOOT_FAILED),
}


class _RegisteredTypes:
    """type name -> monitor L{plugins.Plugin}, from L{cpro.plugins.MONITOR_TYPES}; a type
    that cannot be loaded is logged and left out (its monitors are reported as
    not set up), not fatal."""

    def get(self, name):
        try:
            return plugins.MONITOR_TYPES.get(name)
        except plugins.UnknownType:
            return None
        except Exception:
            log.failure("monitor type {name} cannot be loaded", name=name)
            return None


class MonitorService(service.Service):
    name = "monitors"

    def __init__(self, reactor, config, local, controller, alerts, state_dir, log_dir, os_actions=None,
                 types=None, run_script=run_command, lag_interval=LAG_INTERVAL, stagger=STAGGER):
        """
        @param controller: the L{cpro.cluster.controller.ClusterController}.
        @param types: a mapping with get(type name) -> a L{plugins.Plugin}
            (factory and schema) or a bare factory (a polled type), None when
            unknown (default: L{cpro.plugins.MONITOR_TYPES}).
        @param run_script: L{run_command} (tests inject a fake).
        @param stagger: seconds between the first checks of monitors that start
            or resume together (the Nth one waits N * stagger, modulo its interval).
        """
        self.reactor = reactor
        self.config = config
        self.local = local
        self.controller = controller
        self.alerts = alerts
        self.log_dir = log_dir
        self.run_script = run_script
        self.lag_interval = lag_interval
        self.stagger = stagger
        self.recovery_enabled = True
        self.lag = 0.0
        self.runners = {}  # monitor name -> MonitorRunner, for the monitors of this server
        self.escalations = {}  # monitor name -> RecoveryEscalation
        self.broken = {}  # monitor name -> why it could not be set up here
        self._acting = set()  # monitors whose recovery step is being carried out
        self._stopping = set()  # Deferreds of runners being stopped
        self._syncing = False
        self._sync_again = False
        self._lag_call = None
        self._lag_expected = None
        self._lag_samples = collections.deque(maxlen=LAG_WINDOW)
        self._lag_count = 0
        self._report_trimmed = False
        self.env = MonitorEnvironment(local, state_dir, log_dir, resource=self.resource,
                                      monitor_state=self.monitor_state, hb_interval=config.hb_interval,
                                      hb_timeout=config.hb_timeout, reactor_lag=self.reactor_lag,
                                      os_actions=os_actions, os_action_commands=config.os_actions)
        self._types = types if types is not None else _RegisteredTypes()
        for m in config.monitors:
            if m.runs_on(local):
                self._build(m)

    def _build(self, m):
        """The runner of monitor m (or why it cannot run, in broken)."""
        entry = self._types.get(m.type)
        if entry is None:
            self.broken[m.name] = f"monitor type {m.type} is not available"
            return
        if isinstance(entry, plugins.Plugin):
            factory, event_fed = entry.factory, bool(entry.schema is not None and entry.schema.event_fed)
        else:
            factory, event_fed = entry, False
        # An event-fed type gets its report callback before its runner exists.
        inlet = EventInlet() if event_fed else None
        extra = {"report": inlet} if event_fed else {}
        try:
            monitor = factory(self.reactor, m, m.params_on(self.local), self.env, **extra)
        except Exception as e:  # a type refusing its parameters must not stop the daemon
            self.broken[m.name] = f"{m.type}: {e}"
            return
        runner = MonitorRunner(self.reactor, m, monitor, self.alerts, on_error=self._on_error,
                               on_normal=self._on_normal, on_change=self._changed, event_fed=event_fed)
        if inlet is not None:
            inlet.connect(runner)
        self.runners[m.name] = runner
        self.escalations[m.name] = RecoveryEscalation(m.recovery)

    def reconfigure(self, config):
        """Run the monitors of a new configuration (live reconfiguration):
        monitors removed or changed stop, new and changed ones start as the
        cluster state allows; the others keep running with their counters.
        Returns (added, removed, changed) monitor names."""
        old = {m.name: m for m in self.config.monitors if m.runs_on(self.local)}
        new = {m.name: m for m in config.monitors if m.runs_on(self.local)}
        self.config = config
        self.env.hb_interval, self.env.hb_timeout = config.hb_interval, config.hb_timeout
        self.env.os_action_commands = config.os_actions
        changed = sorted(n for n in old.keys() & new.keys() if old[n] != new[n])
        removed = sorted(old.keys() - new.keys())
        added = sorted(new.keys() - old.keys())
        for name in removed + changed:
            runner = self.runners.pop(name, None)
            if runner is not None:
                self._stop_runner(runner)
            self.escalations.pop(name, None)
            self.broken.pop(name, None)
        for name in added + changed:
            self._build(new[name])
            if name in self.broken and self.running:
                self.alerts.emit(*catalog.MONITOR_CONFIG_INVALID.format(monitor=name, reason=self.broken[name]))
        self.sync()
        self.controller.notify_changed()
        return added, removed, changed

    # -- lifecycle ---------------------------------------------------------

    def startService(self):
        super().startService()
        for name, why in sorted(self.broken.items()):
            self.alerts.emit(*catalog.MONITOR_CONFIG_INVALID.format(monitor=name, reason=why))
        self._schedule_lag(self.reactor.seconds() + self.lag_interval)
        self.sync()

    def stopService(self):
        super().stopService()
        if self._lag_call is not None and self._lag_call.active():
            self._lag_call.cancel()
        self._lag_call = None
        for runner in self.runners.values():
            self._stop_runner(runner)
        return defer.DeferredList(list(self._stopping))

    def _stop_runner(self, runner):
        if not runner.running:
            return
        d = runner.stop()
        if not d.called:
            self._stopping.add(d)
            d.addBoth(lambda _: self._stopping.discard(d))
        if runner.name not in self._acting:
            # Stopped while no step of its own runs (the group left, the cluster
            # stops): its recovery sequence here is over.
            self._end_sequence(runner.config)

    def sync(self):
        """Start, hold or stop each runner for the cluster service state and its target."""
        if not self.running:
            return
        if self._syncing:
            self._sync_again = True  # a runner's change led back here: go round once more
            return
        self._syncing = True
        try:
            self._sync_again = True
            while self._sync_again:
                self._sync_again = False
                self._sync_once()
        finally:
            self._syncing = False

    def _offset(self, n, runner):
        """Delay of the first check of the nth runner (from 0) starting in one go."""
        interval = runner.config.interval
        return (n * self.stagger) % interval if self.stagger > 0 and interval > 0 else 0.0

    def _sync_once(self):
        service = self.controller.service
        live = service in (ClusterServiceState.RUNNING, ClusterServiceState.SUSPENDED)
        starting = 0  # runners whose checks begin in this pass: spread them
        for name in sorted(self.runners):
            runner = self.runners[name]
            m = runner.config
            if service is ClusterServiceState.SUSPENDED:
                runner.suspend(BY_CLUSTER, alert=False)
            elif runner.resume(BY_CLUSTER, alert=False, offset=self._offset(starting, runner)):
                starting += 1
            gated = m.timing == 1 and m.target and not self.controller.resource_online(m.target)
            if live and not gated:
                if not runner.running:
                    runner.start(offset=self._offset(starting, runner))
                    starting += 1
            else:
                self._stop_runner(runner)

    def _changed(self):
        self.controller.notify_changed()

    # -- what monitors may look at -----------------------------------------------

    def resource(self, name):
        """The local IGroupResource object named name (MonitorEnvironment.resource)."""
        for group in self.controller.groups.values():
            found = group.resource(name)
            if found is not None:
                return found
        return None

    def monitor_state(self, name):
        runner = self.runners.get(name)
        return runner.state if runner is not None else None

    def _schedule_lag(self, due):
        # Samples keep to a fixed grid, so they fall evenly over whatever
        # periodic work the daemon does; one that ran late is measured against
        # its own slot (slots missed during a stall are skipped).
        now = self.reactor.seconds()
        if due <= now:
            due += math.ceil((now - due) / self.lag_interval + 1e-9) * self.lag_interval
        self._lag_expected = due
        self._lag_call = self.reactor.callLater(due - now, self._measure_lag)

    def _measure_lag(self):
        self._lag_call = None
        self.lag = max(0.0, self.reactor.seconds() - self._lag_expected)
        self._lag_samples.append(self.lag)
        self._lag_count += 1
        self._schedule_lag(self._lag_expected + self.lag_interval)

    def lag_report(self):
        """Reactor lag over the last samples, in ms: {"interval_s", "count" (samples
        since start), "window" (samples below), "last_ms", "p50_ms", "p99_ms",
        "max_ms", "recent_ms" (the newest LAG_RECENT, oldest first)}."""
        samples = list(self._lag_samples)
        ordered = sorted(samples)

        def rank(p):  # nearest rank
            return round(ordered[max(1, math.ceil(p / 100.0 * len(ordered))) - 1] * 1000, 3) if ordered else None

        return {"interval_s": self.lag_interval, "count": self._lag_count, "window": len(samples),
                "last_ms": round(samples[-1] * 1000, 3) if samples else None,
                "p50_ms": rank(50), "p99_ms": rank(99),
                "max_ms": round(ordered[-1] * 1000, 3) if ordered else None,
                "recent_ms": [round(v * 1000, 3) for v in samples[-LAG_RECENT:]]}

    def reactor_lag(self):
        """Seconds the reactor was late on its last sample, or is late now if later."""
        if self._lag_expected is None:
            return self.lag
        return max(self.lag, self.reactor.seconds() - self._lag_expected)

    # -- recovery ------------------------------------------------------------------

    def _target(self, m):
        """(group, resource) of a monitor's recovery target; group None for LocalServer."""
        rec = m.recovery
        if rec.kind == "rsc":
            rcfg = self.config.resource(rec.target)
            return (rcfg.group if rcfg is not None else None), rec.target
        if rec.kind == "grp":
            return rec.target, None
        return None, None

    def _target_active(self, m, group, resource):
        kind = m.recovery.kind
        if kind == "rsc":
            return self.controller.resource_active(resource)
        if kind == "grp":
            return self.controller.group_active(group)
        return True

    def _end_sequence(self, m):
        group, _ = self._target(m)
        if group is not None:
            self.controller.end_recovery(group, m.name)

    def _on_normal(self, runner):
        if self.escalations[runner.name].reset():
            log.info("monitor {m}: back to normal, recovery counters reset", m=runner.name)
            self._changed()
        self._end_sequence(runner.config)

    @defer.inlineCallbacks
    def _on_error(self, runner, result, timed_out):
        m = runner.config
        if timed_out and not m.timeout_recover:
            self.alerts.emit(*catalog.RECOVERY_IGNORED_TIMEOUT.format(monitor=m.name))
            return
        if not self.recovery_enabled:
            self.alerts.emit(*catalog.RECOVERY_IGNORED_DISABLED.format(monitor=m.name))
            return
        if self.controller.service is not ClusterServiceState.RUNNING:
            return
        self._acting.add(m.name)
        try:
            yield self._recover(m)
        finally:
            self._acting.discard(m.name)
            if not runner.running or runner.event_fed:
                # An event-fed monitor has no next check to prove the target
                # healthy again: its sequence ends with each step, and the next
                # error report begins the next one.
                self._end_sequence(m)
            self._changed()

    @defer.inlineCallbacks
    def _recover(self, m):
        rec = m.recovery
        esc = self.escalations[m.name]
        group, resource = self._target(m)
        if rec.kind == "rsc" and group is None:
            self.alerts.emit(*catalog.RECOVERY_GROUP_UNKNOWN.format(target=rec.target))
            return
        while True:
            if not self._target_active(m, group, resource):
                if not esc.not_active_alerted:
                    esc.not_active_alerted = True
                    self.alerts.emit(*catalog.RECOVERY_TARGET_NOT_ACTIVE.format(target=rec.target))
                self._end_sequence(m)
                return
            available = group is not None and self.controller.failover_target(group) is not None
            decision = esc.decide(available, self.controller.others_running())
            if decision.step is RecoveryStep.EXHAUSTED:
                if not esc.exhausted_alerted:
                    esc.exhausted_alerted = True
                    self.alerts.emit(*catalog.RESTART_COUNT_EXCEEDED.format(
                        maximum=rec.restart_threshold, monitor=m.name))
                return
            if group is not None:
                self.controller.begin_recovery(group, m.name)
            log.info("monitor {m}: recovery step {step}", m=m.name, step=decision.step.value)
            done = yield self._carry_out(m, decision, group, resource, esc)
            if done or decision.step is not RecoveryStep.RESTART:
                return
            # A failed reactivation goes on to the next step at once.

    @defer.inlineCallbacks
    def _carry_out(self, m, decision, group, resource, esc):
        """Run one step. Returns True when it was carried out."""
        c = self.controller
        target = m.recovery.target
        if decision.step is RecoveryStep.RESTART:
            yield self._script(m, m.recovery.script_before_restart, "RESTART", esc)
            try:
                if m.recovery.kind == "rsc":
                    yield c.restart_resource_for_monitor(resource, m.name)
                else:
                    yield c.restart_group_for_monitor(group, m.name)
            except Exception as e:
                self.alerts.emit(*catalog.RECOVERY_RESTART_FAILED.format(target=target, monitor=m.name, error=e))
                return False
            self.alerts.emit(*catalog.RECOVERY_TARGET_RESTARTED.format(target=target, monitor=m.name))
            return True
        if decision.step is RecoveryStep.FAILOVER:
            yield self._script(m, m.recovery.script_before_failover, "FAILOVER", esc)
            try:
                server = yield c.failover_group_for_monitor(group, m.name)
            except Exception as e:
                self.alerts.emit(*catalog.RECOVERY_FAILOVER_FAILED.format(target=target, monitor=m.name, error=e))
                if not c.group_active(group):
                    self._end_sequence(m)
                return False
            self.alerts.emit(*catalog.RECOVERY_TARGET_FAILED_OVER.format(target=target, server=server, monitor=m.name))
            self._end_sequence(m)  # the group left this server
            return True
        action = decision.final_action
        try:
            if decision.suppressed:
                self.alerts.emit(*catalog.FINAL_ACTION_SUPPRESSED.format(action=action.words, monitor=m.name))
                return True
            if action is MonitorFinalAction.NONE:
                log.info("monitor {m}: final action is no operation", m=m.name)
                return True
            yield self._script(m, m.recovery.script_before_final, "FINALACTION", esc)
            before, after, failed = _FINAL_ALERTS[action]
            if before is not None:
                self.alerts.emit(*before.format(monitor=m.name))
            try:
                yield c.final_action_for_monitor(action, m.name, group=group, resource=resource)
            except Exception as e:
                self.alerts.emit(*failed.format(action=action.words, target=target, monitor=m.name, error=e))
                return True
            if after is not None:
                stopped = resource if action is MonitorFinalAction.STOP_RESOURCE else (group or target)
                self.alerts.emit(*after.format(target=stopped, monitor=m.name))
            return True
        finally:
            # The operator may act on the group again after the final action.
            self._end_sequence(m)

    @defer.inlineCallbacks
    def _script(self, m, wanted, action, esc):
        """The script before a step; its failure is reported and the step goes on."""
        path = m.recovery.script
        if not wanted or not path:
            return
        started, completed, failed = _SCRIPT_ALERTS[action]
        self.alerts.emit(*started.format(monitor=m.name))
        env = {
            "CLP_MONITORNAME": m.name,
            "CLP_ACTION": action,
            "CLP_RESTARTCOUNT": str(esc.restarts),
            "CLP_FAILOVERCOUNT": str(esc.failovers),
            "CLP_VERSION_FULL": __version__,
            "CLP_VERSION_MAJOR": __version__.split(".")[0],
            "CLP_OSNAME": platform.system(),
            "CLP_OSVER": platform.release(),
            "CPRO_SERVER_NAME": self.local,
            "CPRO_RECOVERY_TARGET": m.recovery.target,
            "PATH": DEFAULT_PATH,
        }
        try:
            result = yield self.run_script(self.reactor, [path], env=env, timeout=m.recovery.script_timeout,
                                           log_path=os.path.join(self.log_dir, f"{m.name}.recovery.log"))
        except Exception as e:
            self.alerts.emit(*failed.format(monitor=m.name, error=e))
            return
        if result.succeeded:
            self.alerts.emit(*completed.format(monitor=m.name))
        else:
            self.alerts.emit(*failed.format(monitor=m.name, error=f"it {result.describe()}"))

    # -- events ------------------------------------------------------------------

    def deliver(self, name, result):
        """An event for the event-fed monitor name arrived (an SNMP trap, a clprexec
        notice): hand its L{cpro.resources.monitors.base.CheckResult} to the monitor's
        runner, as the type's own report callback does.

        @return: whether it was taken: False for a monitor that does not run
            here, is polled, stopped or suspended, in a dummy failure or
            recovering, or that does not let this result clear its error.
        """
        runner = self.runners.get(name)
        if runner is None or not runner.event_fed:
            return False
        return runner.report(result)

    def event_monitors(self, mtype=None):
        """The L{cpro.config.model.MonitorConfig}s of the event-fed monitors that
        run here (of type mtype), by name: where a receiver looks for the
        monitors an event is for (the category and keyword of an mrw)."""
        return [r.config for n, r in sorted(self.runners.items())
                if r.event_fed and (mtype is None or r.config.type == mtype)]

    # -- operator requests ---------------------------------------------------------

    def operate(self, args):
        """Serve a 'monitor_local' request: {"action", "monitor"?, "on"?}. Returns a result dict."""
        action = args.get("action")
        name = args.get("monitor")
        if action == "suspend":
            return self.suspend(name)
        if action == "resume":
            return self.resume(name)
        if action == "dummy":
            return self.set_dummy(name, bool(args.get("on")))
        if action == "clear":
            return self.clear(name)
        if action == "recovery":
            return self.set_recovery(bool(args.get("on")))
        raise OperationError(f"unknown monitor action: {action}")

    def _select(self, name):
        if name is None:
            return [self.runners[n] for n in sorted(self.runners)]
        if name in self.runners:
            return [self.runners[name]]
        if name in self.broken:
            raise OperationError(f"monitor {name} could not be set up on {self.local}: {self.broken[name]}")
        if self.config.monitor(name) is not None:
            raise OperationError(f"monitor {name} does not run on {self.local}")
        raise OperationError(f"no such monitor: {name}")

    def _done(self, changed, verb, name):
        what = f"monitor {name}" if name else "all monitors"
        if name and not changed:
            return {"message": f"{what} already {verb} on {self.local}"}
        return {"message": f"{what} {verb} on {self.local}"}

    def suspend(self, name=None):
        runners = self._select(name)
        changed = [r for r in runners if r.suspend(BY_OPERATOR, alert=name is not None)]
        if name is None:
            self.alerts.emit(*catalog.ALL_MONITORS_SUSPENDED.format())
        return self._done(changed, "suspended", name)

    def resume(self, name=None):
        runners = self._select(name)
        changed = [r for i, r in enumerate(runners)
                   if r.resume(BY_OPERATOR, alert=name is not None, offset=self._offset(i, r))]
        if name is None:
            self.alerts.emit(*catalog.ALL_MONITORS_RESUMED.format())
        return self._done(changed, "resumed", name)

    def set_dummy(self, name, on):
        try:
            runners = self._select(name)
        except OperationError:
            refused = catalog.DUMMY_FAILURE_ENABLE_FAILED if on else catalog.DUMMY_FAILURE_DISABLE_FAILED
            self.alerts.emit(*refused.format(monitor=name))
            raise
        changed = [r for r in runners if r.set_dummy(on)]
        words = "enabled" if on else "disabled"
        if name is None:
            everywhere = catalog.DUMMY_FAILURE_ALL_ENABLED if on else catalog.DUMMY_FAILURE_ALL_DISABLED
            self.alerts.emit(*everywhere.format())
        elif changed:
            one = catalog.DUMMY_FAILURE_ENABLED if on else catalog.DUMMY_FAILURE_DISABLED
            self.alerts.emit(*one.format(monitor=name))
        return self._done(changed, f"dummy failure {words}", name)

    def clear(self, name=None):
        """Reset the recovery counters (clpmonctrl -c)."""
        runners = self._select(name)
        for runner in runners:
            self.escalations[runner.name].reset()
            self._end_sequence(runner.config)
        self._changed()
        return self._done(runners, "recovery counters cleared", name)

    def set_recovery(self, on):
        """The cluster-wide switch (applied on each server): recovery actions on or off."""
        if self.recovery_enabled is not on:
            self.recovery_enabled = on
            if on:
                self.alerts.emit(*catalog.RECOVERY_ACTIONS_ENABLED.format())
            else:
                self.alerts.emit(*catalog.RECOVERY_ACTIONS_DISABLED.format())
            self._changed()
        return {"message": f"recovery actions of monitors {'enabled' if on else 'disabled'} on {self.local}"}

    # -- status --------------------------------------------------------------------

    def report(self, compact=False):
        """{"monitors": {name: status dict}, "monitor_recovery": bool}: this server's part of
        the status payload and (compact, see L{_compact}) of the state report."""
        monitors = {}
        for name, runner in self.runners.items():
            status = runner.status()
            duration = status["duration"]
            entry = {"status": status["status"],
                     "duration": round(duration, 6) if duration is not None else None,
                     # Bounded: the report travels in one internal message (<60 KB).
                     "error": status["error"][:REPORT_ERROR_CHARS],
                     "retries": status["retries"], "suspended": status["suspended"], "dummy": status["dummy"]}
            if status["event_fed"]:
                entry["last_event"] = status["last_event"]  # clock seconds, None before any
            entry.update(self.escalations[name].counters())
            entry["recovering"] = name in self._acting
            monitors[name] = entry
        for name, why in self.broken.items():
            monitors[name] = {"status": MonitorState.ERROR.value, "error": why[:REPORT_ERROR_CHARS],
                              "duration": None}
        if compact:
            monitors = self._compact(monitors)
        return {"monitors": monitors, "monitor_recovery": self.recovery_enabled}

    def _compact(self, monitors, budget=REPORT_BUDGET):
        """The monitors as peers get them: fields at their default left out (the
        peer fills them in), durations to 0.1 ms; over budget, the error texts
        go, then the durations, then the times of the last events, then (logged)
        the entries of Normal monitors."""
        def small(entry):
            out = {}
            for key, value in entry.items():
                default = _PEER_DEFAULTS.get(key, _NO_DEFAULT)
                if value == default and type(value) is type(default):
                    continue
                out[key] = round(value, 4) if key == "duration" and isinstance(value, float) else value
            return out

        def size(ms):
            return len(json.dumps(ms, separators=(",", ":")))

        out = {name: small(entry) for name, entry in monitors.items()}
        for dropped in ("error", "duration", "last_event"):
            if size(out) <= budget:
                return out
            out = {name: {k: v for k, v in entry.items() if k != dropped} for name, entry in out.items()}
        if size(out) > budget:
            out = {name: entry for name, entry in out.items() if entry.get("status") != MonitorState.NORMAL.value}
            if size(out) > budget:
                out = {}
            if not self._report_trimmed:  # once: it would be logged on every state change
                self._report_trimmed = True
                log.warn("the state report leaves out the status of {n} monitors (too many for one "
                         "message); peers show them as Unknown", n=len(monitors) - len(out))
        return out
