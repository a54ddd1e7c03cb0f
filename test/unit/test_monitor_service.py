"""MonitorService with the real controller, groups and escalation, fake
resources, peers and monitors, on a task.Clock: recovery sequences
(reactivate, fail over, final action, suppression, reset, inactive target),
refusal of racing operator requests, timing 1 gating, suspend/resume, dummy
failure, the recovery switch, status and the monitor requests; event-fed
monitors fed through MonitorService.deliver, recovered by the same path."""

import dataclasses
import json

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from cpro.cluster.controller import ClusterController, OperationError, PeerReport
from cpro.cluster.group import LocalGroup
from cpro.cluster.operations import OperatorRequests
from cpro.cluster.recovery import MonitorFinalAction, RecoveryEscalation, RecoveryStep
from cpro.cluster.states import ClusterServiceState, GroupState, MonitorState, ResourceState
from cpro.cluster.status import cluster_status
from cpro.resources.monitors.base import CheckResult
from cpro.statusview import render_monitors
from cpro.system.process import ProcessResult
from cpro.services.monitors import MonitorService
from cpro.testing.event_monitors import FAKE_EVENT_TYPE, fake_event_plugin
from cpro.testing.fakes import (FakeAlerts, FakeMembership, FakeMonitorTypes, FakeOSActions, FakePeers, FakeResource,
                          make_config, make_monitor)

OK = CheckResult.normal()
BAD = CheckResult.error("service is down")


def peer_report(groups=None, service="Running", version=1, **extra):
    report = {"incarnation": "inc-peer", "version": version, "service": service, "groups": groups or {},
              "resources": {}}
    report.update(extra)
    return report


class Cluster:
    """srv1 (local, master) and srv2 (a peer that reports Running)."""

    def __init__(self, monitors, results=None, servers=("srv1", "srv2"), up=("srv2",), groups=None,
                 peer_service="Running", stagger=0.0):
        self.clock = task.Clock()
        self.config = dataclasses.replace(make_config(servers=servers, groups=groups), monitors=tuple(monitors))
        self.alerts = FakeAlerts()
        self.peers = FakePeers()
        self.os = FakeOSActions()
        self.resources = {}
        local_groups = {}
        for g in self.config.groups:
            rcfgs = {n: self.config.resource(n) for n in g.resources}
            res = {n: FakeResource(n) for n in g.resources}
            self.resources.update(res)
            local_groups[g.name] = LocalGroup(g, rcfgs, res, "srv1", self.alerts,
                                              lambda: self.controller.notify_changed())
        self.controller = ClusterController(self.clock, self.config, "srv1", local_groups, self.peers,
                                            self.alerts, self.os, "inc-local")
        self.membership = FakeMembership(up=up)
        self.controller.membership = self.membership
        self.types = FakeMonitorTypes(results)
        self.types[FAKE_EVENT_TYPE] = fake_event_plugin(self.types.made)
        self.scripts = []
        self.script_result = ProcessResult(pid=1, exit_code=0, signal=None, timed_out=False, duration=0.0)
        self.service = MonitorService(self.clock, self.config, "srv1", self.controller, self.alerts,
                                      "/var/lib/cpro-test", "/var/log/cpro-test", self.os, types=self.types,
                                      run_script=self._run_script, stagger=stagger)
        self.controller.monitors = self.service
        self.controller.on_state_change = self.service.sync
        self.requests = OperatorRequests(self.controller)
        self.peer_service = peer_service

    def _run_script(self, reactor, argv, env=None, timeout=None, log_path=None):
        self.scripts.append((argv, env, timeout, log_path))
        return defer.succeed(self.script_result)

    def start(self):
        if not self.service.running:
            self.service.startService()
        for s in self.config.servers:
            if s.name != "srv1" and s.name in self.membership.up:
                self.controller.peer_report(s.name, peer_report(service=self.peer_service))
        self.controller.start_service()
        return self

    def stop(self):
        return self.service.stopService()

    def monitor(self, name="mon1"):
        return self.types.made[name]

    def runner(self, name="mon1"):
        return self.service.runners[name]

    def rm(self):
        return self.alerts.ids("rm")

    def rm_message(self, event_id):
        """The text of the first rm alert with that id."""
        return next(a[3] for a in self.alerts.alerts if a[:2] == ("rm", event_id))

    def group_state(self, name="failover1"):
        return self.controller.groups[name].state

    def answer_peer_call(self, result=None):
        server, op, args, d = self.peers.calls[-1]
        d.callback(result or {"message": "ok"})
        return server, op, args


class ServiceTestCase(SynchronousTestCase):
    def cluster(self, monitors, **kw):
        c = Cluster(monitors, **kw)
        self.addCleanup(self._stopped, c)
        return c

    def _stopped(self, c):
        self.successResultOf(c.stop())
        for call in c.clock.getDelayedCalls():  # the controller's timers are not ours
            self.assertNotEqual(getattr(call.func, "__self__", None), c.service)
        self.assertEqual([call for call in c.clock.getDelayedCalls()
                          if "monitor" in repr(call.func).lower()], [])


class EscalationUnitTests(SynchronousTestCase):
    def escalation(self, **kw):
        return RecoveryEscalation(make_monitor(**kw).recovery)

    def test_restart_then_failover_then_final_then_exhausted(self):
        e = self.escalation(restart_threshold=2, failover_threshold=1, final_action=3)
        steps = [e.decide(True, True).step for _ in range(5)]
        self.assertEqual(steps, [RecoveryStep.RESTART, RecoveryStep.RESTART, RecoveryStep.FAILOVER,
                                 RecoveryStep.FINAL_ACTION, RecoveryStep.EXHAUSTED])
        self.assertTrue(e.reset())
        self.assertEqual(e.decide(True, True).step, RecoveryStep.RESTART)

    def test_no_failover_target_goes_to_the_final_action(self):
        e = self.escalation(restart_threshold=0, failover_threshold=3, final_action=2)
        decision = e.decide(False, True)
        self.assertEqual((decision.step, decision.final_action),
                         (RecoveryStep.FINAL_ACTION, MonitorFinalAction.STOP_GROUP))

    def test_final_action_suppressed_without_other_running_server(self):
        e = self.escalation(final_action=4)
        self.assertTrue(e.decide(False, False).suppressed)
        e = self.escalation(final_action=1)  # 'no operation' has nothing to suppress
        self.assertFalse(e.decide(False, False).suppressed)

    def test_local_server_target_has_only_the_final_action(self):
        e = self.escalation(kind="cls", recovery_target="LocalServer", restart_threshold=3, failover_threshold=3,
                            final_action=5)
        decision = e.decide(True, True)
        self.assertEqual((decision.step, decision.final_action),
                         (RecoveryStep.FINAL_ACTION, MonitorFinalAction.STOP_SERVICE_AND_REBOOT))

    def test_unknown_action_code_is_no_operation(self):
        self.assertIs(MonitorFinalAction.from_code(9), MonitorFinalAction.NONE)
        self.assertIs(MonitorFinalAction.from_code(16), MonitorFinalAction.STOP_RESOURCE)


class GroupRecoveryTests(ServiceTestCase):
    def test_reactivate_twice_fail_over_once_then_target_not_active(self):
        c = self.cluster([make_monitor(restart_threshold=2, failover_threshold=1, final_action=3)],
                         results={"mon1": [BAD] * 10}).start()
        self.assertEqual(c.group_state(), GroupState.ONLINE)
        exec1 = c.resources["exec1"]
        c.clock.advance(0)  # first error: reactivation 1
        self.assertEqual(c.rm().count(13), 1)
        self.assertEqual([(call, ctx.factor) for call, ctx in exec1.calls[1:]],
                         [("deactivate", "GROUPRESTART"), ("activate", "")])
        self.assertEqual(c.group_state(), GroupState.ONLINE)
        self.assertEqual(c.controller.recovery_in_progress("failover1"), ("srv1", "mon1"))
        c.clock.advance(10)  # reactivation 2
        self.assertEqual(c.rm().count(13), 2)
        c.clock.advance(10)  # failover to srv2
        self.assertEqual(c.group_state(), GroupState.OFFLINE)
        self.assertEqual(exec1.calls[-1][1].factor, "GROUPFAILOVER")
        server, op, args = c.answer_peer_call()
        self.assertEqual((server, op, args), ("srv2", "group_start_local", {"group": "failover1",
                                                                          "event": "FAILOVER"}))
        self.assertIn(14, c.rm())
        self.assertIsNone(c.controller.recovery_in_progress("failover1"))
        c.controller.peer_report("srv2", peer_report({"failover1": "Online"}, version=2))
        c.clock.advance(10)  # still failing here, but the group is gone: nothing to recover
        c.clock.advance(10)
        self.assertEqual(c.rm().count(25), 1)
        self.assertEqual(c.os.actions, [])
        self.assertEqual(c.controller.service, ClusterServiceState.RUNNING)
        status = c.service.report()["monitors"]["mon1"]
        self.assertEqual((status["restarts"], status["failovers"], status["status"]), (2, 1, "Error"))

    def test_failover_counter_bounds_the_ping_pong(self):
        c = self.cluster([make_monitor(restart_threshold=0, failover_threshold=1, final_action=2)],
                         results={"mon1": [BAD] * 10}).start()
        c.clock.advance(0)
        c.answer_peer_call()  # failed over to srv2
        c.controller.peer_report("srv2", peer_report({"failover1": "Online"}, version=2))
        # srv2 fails it back (its own monitor's failover): it starts here again.
        c.controller.peer_report("srv2", peer_report({"failover1": "Offline"}, version=3))
        self.successResultOf(c.controller.start_group_local("failover1", "FAILOVER"))
        self.assertEqual(c.group_state(), GroupState.ONLINE)
        c.clock.advance(10)  # failover threshold used on this server: final action (stop group)
        self.assertEqual(c.group_state(), GroupState.OFFLINE)
        self.assertIn(12, c.rm())
        self.assertEqual(len(c.peers.calls), 1)

    def test_reset_when_the_monitor_returns_to_normal(self):
        c = self.cluster([make_monitor(restart_threshold=1, final_action=2)],
                         results={"mon1": [BAD, OK, BAD]}).start()
        c.clock.advance(0)  # reactivation
        c.clock.advance(10)  # normal: counters reset, sequence over
        self.assertIn(26, c.rm())
        self.assertEqual(c.service.escalations["mon1"].restarts, 0)
        self.assertIsNone(c.controller.recovery_in_progress("failover1"))
        c.clock.advance(10)  # a new episode starts with a reactivation again
        self.assertEqual(c.rm().count(13), 2)
        self.assertEqual(c.group_state(), GroupState.ONLINE)

    def test_final_action_stop_cluster_service_and_shutdown(self):
        c = self.cluster([make_monitor(restart_threshold=0, failover_threshold=0, final_action=4,
                                       script="/opt/pre.sh", script_before_final=True)],
                         results={"mon1": [BAD]}).start()
        c.clock.advance(0)
        self.assertEqual(c.controller.service, ClusterServiceState.STOPPED)
        self.assertEqual(c.os.actions, [("shutdown", "final action of monitor mon1")])
        self.assertIn(16, c.rm())
        self.assertEqual(c.runner().state, MonitorState.STOPPED)
        argv, env, timeout, log_path = c.scripts[0]
        self.assertEqual(argv, ["/opt/pre.sh"])
        self.assertEqual((env["CLP_ACTION"], env["CLP_MONITORNAME"]), ("FINALACTION", "mon1"))
        self.assertEqual(log_path, "/var/log/cpro-test/mon1.recovery.log")
        self.assertEqual(c.rm()[c.rm().index(41):][:2], [41, 42])
        self.assertEqual(c.controller.local_report()["recovering"], {})

    def test_final_action_suppressed_when_no_other_server_runs(self):
        c = self.cluster([make_monitor(final_action=3)], results={"mon1": [BAD] * 3}, peer_service="Stopped")
        c.start()
        c.clock.advance(30)  # startup sync wait: srv2 never runs
        self.assertEqual(c.controller.service, ClusterServiceState.RUNNING)
        c.clock.advance(0)
        self.assertIn(200, c.rm())
        self.assertEqual(c.rm_message(200), "Since there is no other normally running server, the final action"
                                            "(stop cluster service) for an error detection of monitor resource "
                                            "mon1 was suppressed.")
        self.assertEqual(c.controller.service, ClusterServiceState.RUNNING)
        self.assertEqual(c.group_state(), GroupState.ONLINE)
        c.clock.advance(10)
        c.clock.advance(10)
        self.assertEqual(c.rm().count(100), 1)  # taken once per episode

    def test_script_before_reactivation_and_a_failing_one(self):
        c = self.cluster([make_monitor(restart_threshold=2, script="/opt/pre.sh", script_before_restart=True)],
                         results={"mon1": [BAD, BAD]}).start()
        c.clock.advance(0)
        env = c.scripts[0][1]
        self.assertEqual((env["CLP_ACTION"], env["CLP_RESTARTCOUNT"], env["CLP_FAILOVERCOUNT"]),
                         ("RESTART", "1", "0"))
        self.assertEqual(c.scripts[0][2], 5.0)
        c.script_result = ProcessResult(pid=2, exit_code=3, signal=None, timed_out=False, duration=0.0)
        c.clock.advance(10)
        self.assertIn(46, c.rm())
        self.assertEqual(c.rm().count(13), 2)  # the reactivation went on


class ResourceRecoveryTests(ServiceTestCase):
    def test_resource_restart_then_failover_when_reactivation_fails(self):
        c = self.cluster([make_monitor(kind="rsc", recovery_target="exec1", restart_threshold=1,
                                       failover_threshold=1)], results={"mon1": [BAD]}).start()
        exec1 = c.resources["exec1"]
        exec1.fail_activations = 1
        c.clock.advance(0)
        self.assertEqual([(call, ctx.factor) for call, ctx in exec1.calls[1:3]],
                         [("deactivate", "RESOURCERESTART"), ("activate", "")])
        self.assertIn(19, c.rm())  # reactivation failed: on to the failover at once
        self.assertEqual(c.group_state(), GroupState.OFFLINE)
        self.assertEqual(c.answer_peer_call()[1], "group_start_local")
        self.assertIn(14, c.rm())

    def test_final_action_stop_resource(self):
        groups = [{"name": "failover1", "resources": ["exec1", "exec2"]}]
        c = self.cluster([make_monitor(kind="rsc", recovery_target="exec1", final_action=16)],
                         results={"mon1": [BAD]}, groups=groups).start()
        c.clock.advance(0)
        self.assertEqual(c.controller.groups["failover1"].resource_states["exec1"], ResourceState.OFFLINE)
        self.assertEqual(c.rm_message(12), "Recovery target exec1 has stopped because an error was detected in "
                                           "monitoring mon1.")
        self.assertTrue(c.resources["exec2"].active)  # the other resources keep running
        self.assertEqual(c.group_state(), GroupState.ONLINE_FAILURE)

    def test_inactive_target_is_not_recovered(self):
        groups = [{"name": "failover1", "resources": ["exec1"], "start_auto": False}]
        c = self.cluster([make_monitor(kind="rsc", recovery_target="exec1", restart_threshold=3)],
                         results={"mon1": [BAD, BAD]}, groups=groups).start()
        c.clock.advance(0)
        c.clock.advance(10)
        self.assertEqual(c.rm().count(25), 1)
        self.assertIn("Recovery will not be executed since the recovery target exec1 is not active.",
                      c.alerts.messages())
        self.assertEqual(c.resources["exec1"].calls, [])
        self.assertIsNone(c.controller.recovery_in_progress("failover1"))


class RefusalTests(ServiceTestCase):
    def test_racing_requests_refused_until_the_final_action(self):
        c = self.cluster([make_monitor(restart_threshold=1, final_action=2)], results={"mon1": [BAD, BAD]})
        c.start()
        c.clock.advance(0)  # reactivated: the sequence runs until the final action
        for attempt in (lambda: c.requests.group_stop("failover1"), lambda: c.requests.group_move("failover1"), lambda: c.requests.group_start("failover1"),
                        lambda: c.requests.cluster("stop"), lambda: c.requests.cluster("suspend"),
                        lambda: c.controller.cluster_local("restart")):
            failure = self.failureResultOf(attempt(), OperationError)
            self.assertIn("monitor mon1 is recovering group failover1", str(failure.value))
        result = self.successResultOf(c.requests.group_stop())  # every group: this one is left alone
        self.assertEqual(result["message"], "group failover1 skipped: monitor mon1 is recovering it on srv1")
        self.assertEqual(c.group_state(), GroupState.ONLINE)
        c.clock.advance(10)  # final action: stop group
        self.assertEqual(c.group_state(), GroupState.OFFLINE)
        self.assertIsNone(c.controller.recovery_in_progress("failover1"))
        result = self.successResultOf(c.requests.group_start("failover1"))
        self.assertIn("started", result["message"])
        self.assertEqual(c.group_state(), GroupState.ONLINE)

    def test_a_peers_recovery_is_respected(self):
        c = self.cluster([make_monitor()]).start()
        c.controller.peer_report("srv2", peer_report(version=5, recovering={"failover1": "mon1"}))
        failure = self.failureResultOf(c.requests.group_move("failover1"), OperationError)
        self.assertIn("on srv2", str(failure.value))
        self.failureResultOf(c.requests.cluster("stop", all_servers=True), OperationError)
        self.successResultOf(c.requests.cluster("suspend"))  # only this server: nothing runs here


class TimingTests(ServiceTestCase):
    def test_timing_1_monitors_only_while_the_target_is_online(self):
        groups = [{"name": "failover1", "resources": ["exec1"], "start_auto": False}]
        c = self.cluster([make_monitor(timing=1, target="exec1", first_wait=5.0)], groups=groups).start()
        self.assertEqual(c.runner().state, MonitorState.STOPPED)
        c.clock.advance(100)
        self.assertEqual(c.monitor().checks, 0)
        self.successResultOf(c.requests.group_start("failover1"))
        self.assertEqual(c.runner().state, MonitorState.UNKNOWN)
        c.clock.advance(5)
        self.assertEqual(c.monitor().checks, 1)
        self.successResultOf(c.requests.group_stop("failover1"))
        self.assertEqual(c.runner().state, MonitorState.STOPPED)
        self.assertEqual(c.monitor().stops, 1)
        c.clock.advance(100)
        self.assertEqual(c.monitor().checks, 1)

    def test_monitors_run_only_while_the_cluster_service_runs(self):
        c = self.cluster([make_monitor()])
        c.service.startService()
        self.assertEqual(c.runner().state, MonitorState.STOPPED)
        c.start()
        c.clock.advance(0)
        self.assertEqual(c.runner().state, MonitorState.NORMAL)
        c.controller.suspend()
        self.assertEqual(c.runner().state, MonitorState.SUSPENDED)
        c.clock.advance(100)
        self.assertEqual(c.monitor().checks, 1)
        c.controller.resume()
        c.clock.advance(0)
        self.assertEqual(c.monitor().checks, 2)
        d = c.controller.stop_service()
        self.assertEqual(c.runner().state, MonitorState.STOPPED)
        self.assertEqual(c.answer_peer_call()[1], "group_start_local")  # the group moves to srv2
        self.successResultOf(d)

    def test_a_monitor_of_other_servers_does_not_run_here(self):
        c = self.cluster([make_monitor(servers=("srv2",))]).start()
        self.assertEqual(c.service.runners, {})
        failure = self.failureResultOf(c.requests.monitor("suspend", "mon1"), OperationError)
        self.assertEqual(str(failure.value), "monitor mon1 does not run on srv1")


class StateReportSizeTests(ServiceTestCase):
    """The monitors' part of the state report stays small enough for one internal message."""

    def test_defaults_are_left_out_and_filled_in_by_the_peer(self):
        c = self.cluster([make_monitor(), make_monitor(name="mon2")], results={"mon2": [BAD]}).start()
        c.clock.advance(0)
        self.successResultOf(c.requests.monitor("suspend", "mon1"))
        full = c.service.report()["monitors"]
        compact = c.service.report(compact=True)["monitors"]
        self.assertEqual(compact["mon1"], {"status": "Suspend", "duration": 0.0, "suspended": True})
        self.assertEqual(compact["mon2"]["error"], "service is down")
        self.assertNotIn("retries", compact["mon2"])
        parsed = PeerReport.from_dict(c.controller.local_report()).monitors
        self.assertEqual(parsed, full)

    def test_five_hundred_monitors_fit_in_one_message(self):
        from cpro.protocols.internal import MAX_JSON

        names = [f"genw{i}" for i in range(500)]
        c = self.cluster([make_monitor(name=n) for n in names]).start()
        c.clock.advance(0)
        report = c.controller.local_report()
        self.assertEqual(len(report["monitors"]), 500)
        self.assertLess(len(json.dumps(report, separators=(",", ":"))), MAX_JSON)
        self.assertEqual(PeerReport.from_dict(report).monitors["genw7"]["status"], "Normal")

    def test_over_budget_errors_then_durations_then_normal_entries_go(self):
        c = self.cluster([make_monitor()]).start()
        monitors = {f"m{i}": {"status": "Error" if i < 2 else "Normal", "duration": 0.5, "error": "x" * 100}
                    for i in range(10)}
        self.assertEqual(c.service._compact(monitors, budget=10000), monitors)
        self.assertEqual(c.service._compact(monitors, budget=500)["m0"], {"status": "Error", "duration": 0.5})
        self.assertEqual(c.service._compact(monitors, budget=250)["m0"], {"status": "Error"})
        self.assertEqual(c.service._compact(monitors, budget=100), {"m0": {"status": "Error"},
                                                                    "m1": {"status": "Error"}})
        self.assertEqual(c.service._compact(monitors, budget=10), {})


class StaggerTests(ServiceTestCase):
    """Monitors that start or resume together check stagger seconds apart, not all at once."""

    def checks(self, c, names):
        return [c.monitor(n).checks for n in names]

    def test_monitors_starting_together_are_spread(self):
        names = ["mon1", "mon2", "mon3"]
        c = self.cluster([make_monitor(name=n, interval=10.0) for n in names], stagger=0.5).start()
        c.clock.advance(0)
        self.assertEqual(self.checks(c, names), [1, 0, 0])
        c.clock.advance(0.5)
        self.assertEqual(self.checks(c, names), [1, 1, 0])
        c.clock.advance(0.5)
        self.assertEqual(self.checks(c, names), [1, 1, 1])
        c.clock.advance(10)  # each follows its own previous check: still spread
        self.assertEqual(self.checks(c, names), [2, 2, 2])
        c.clock.advance(0.4)
        self.assertEqual(self.checks(c, names), [2, 2, 2])

    def test_offsets_wrap_around_the_interval(self):
        names = ["mon1", "mon2", "mon3"]
        c = self.cluster([make_monitor(name=n, interval=1.0) for n in names], stagger=0.5).start()
        c.clock.advance(0)
        self.assertEqual(self.checks(c, names), [1, 0, 1])  # mon3: 1.0 s modulo the 1 s interval

    def test_resume_of_one_is_at_once_resume_of_all_is_spread(self):
        names = ["mon1", "mon2"]
        c = self.cluster([make_monitor(name=n) for n in names], stagger=0.5).start()
        c.clock.advance(1)
        self.successResultOf(c.requests.monitor("suspend"))
        self.successResultOf(c.requests.monitor("resume", "mon2"))
        c.clock.advance(0)
        self.assertEqual(self.checks(c, names), [1, 2])
        self.successResultOf(c.requests.monitor("suspend", "mon2"))
        self.successResultOf(c.requests.monitor("resume"))
        c.clock.advance(0)
        self.assertEqual(self.checks(c, names), [2, 2])
        c.clock.advance(0.5)
        self.assertEqual(self.checks(c, names), [2, 3])

    def test_cluster_resume_is_spread(self):
        names = ["mon1", "mon2"]
        c = self.cluster([make_monitor(name=n) for n in names], stagger=0.5).start()
        c.clock.advance(1)
        c.controller.suspend()
        c.controller.resume()
        c.clock.advance(0)
        self.assertEqual(self.checks(c, names), [2, 1])
        c.clock.advance(0.5)
        self.assertEqual(self.checks(c, names), [2, 2])


class OperationTests(ServiceTestCase):
    def test_suspend_and_resume_one_and_all(self):
        c = self.cluster([make_monitor(), make_monitor(name="mon2")]).start()
        c.clock.advance(0)
        self.successResultOf(c.requests.monitor("suspend", "mon1"))
        self.assertEqual(c.runner().state, MonitorState.SUSPENDED)
        self.assertEqual(c.runner("mon2").state, MonitorState.NORMAL)
        self.assertEqual(c.rm()[-1], 29)
        result = self.successResultOf(c.requests.monitor("suspend", "mon1"))
        self.assertIn("already", result["message"])
        self.successResultOf(c.requests.monitor("suspend"))
        self.assertEqual(c.rm()[-1], 31)
        self.assertEqual(c.runner("mon2").state, MonitorState.SUSPENDED)
        c.clock.advance(100)
        self.assertEqual((c.monitor().checks, c.monitor("mon2").checks), (1, 1))
        self.successResultOf(c.requests.monitor("resume"))
        self.assertEqual(c.rm()[-1], 32)
        c.clock.advance(0)
        self.assertEqual((c.monitor().checks, c.monitor("mon2").checks), (2, 2))
        status = cluster_status(c.controller)["monitors"][0]["servers"][0]
        self.assertEqual(status["name"], "srv1")
        self.assertEqual(status["suspended"], False)

    def test_dummy_failure_rehearses_the_recovery(self):
        c = self.cluster([make_monitor(restart_threshold=1)]).start()
        c.clock.advance(0)
        self.successResultOf(c.requests.monitor("dummy", "mon1", on=True))
        self.assertEqual(c.rm()[-1], 180)
        c.clock.advance(10)
        self.assertEqual(c.monitor().checks, 1)  # not run
        self.assertEqual(c.runner().last_error, "dummy failure")
        self.assertEqual(c.rm().count(13), 1)
        self.successResultOf(c.requests.monitor("dummy", "mon1", on=False))
        self.assertEqual(c.rm()[-1], 181)
        c.clock.advance(10)
        self.assertEqual(c.runner().state, MonitorState.NORMAL)
        self.assertEqual(c.service.escalations["mon1"].restarts, 0)

    def test_dummy_failure_of_an_unknown_monitor_is_refused(self):
        c = self.cluster([make_monitor()]).start()
        self.failureResultOf(c.requests.monitor("dummy", "nosuch", on=True), OperationError)
        self.failureResultOf(defer.maybeDeferred(c.service.operate, {"action": "dummy", "monitor": "nosuch",
                                                                     "on": True}), OperationError)
        self.assertEqual(c.rm()[-1], 184)

    def test_recovery_switch_disables_actions_not_detection(self):
        c = self.cluster([make_monitor(restart_threshold=3)], results={"mon1": [BAD, BAD]}).start()
        d = c.requests.monitor("recovery", on=False)
        # srv1 here; srv2 through the peer channel.
        self.assertEqual(c.peers.calls[-1][:3], ("srv2", "monitor_local", {"action": "recovery", "on": False}))
        c.answer_peer_call()
        result = self.successResultOf(d)
        self.assertEqual(result["servers"][1], {"name": "srv2", "code": 0, "message": "Command succeeded."})
        self.assertEqual(c.rm()[-1], 190)
        self.assertEqual(result["servers"][0], {"name": "srv1", "code": 0, "message": "Command succeeded."})
        c.clock.advance(0)
        self.assertEqual(c.runner().state, MonitorState.ERROR)
        self.assertIn(192, c.rm())
        self.assertNotIn(13, c.rm())
        self.assertFalse(cluster_status(c.controller)["monitor_recovery"]["srv1"])
        c.service.operate({"action": "recovery", "on": True})
        self.assertEqual(c.rm()[-1], 191)
        c.clock.advance(10)
        self.assertIn(13, c.rm())

    def test_timeout_without_recovery(self):
        c = self.cluster([make_monitor(restart_threshold=3, timeout_recover=False)],
                         results={"mon1": ["hang"]}).start()
        c.clock.advance(0)
        c.clock.advance(5)
        self.assertEqual(c.monitor().cancelled, 1)
        self.assertIn(193, c.rm())
        self.assertNotIn(13, c.rm())

    def test_timeout_with_recovery(self):
        c = self.cluster([make_monitor(restart_threshold=3, timeout_recover=True)],
                         results={"mon1": ["hang"]}).start()
        c.clock.advance(0)
        c.clock.advance(5)
        self.assertIn(13, c.rm())

    def test_clear_resets_the_counters(self):
        c = self.cluster([make_monitor(restart_threshold=1)], results={"mon1": [BAD]}).start()
        c.clock.advance(0)
        self.assertEqual(c.service.escalations["mon1"].restarts, 1)
        self.successResultOf(c.requests.monitor("clear", "mon1"))
        self.assertEqual(c.service.escalations["mon1"].restarts, 0)
        self.assertIsNone(c.controller.recovery_in_progress("failover1"))

    def test_request_for_another_server_goes_through_the_peer_channel(self):
        c = self.cluster([make_monitor()]).start()
        d = c.requests.monitor("suspend", "mon1", server="srv2")
        self.assertEqual(c.peers.calls[-1][:3], ("srv2", "monitor_local",
                                                 {"action": "suspend", "monitor": "mon1", "on": None}))
        c.answer_peer_call({"message": "monitor mon1 suspended on srv2"})
        self.assertEqual(self.successResultOf(d)["message"], "monitor mon1 suspended on srv2")
        self.failureResultOf(c.requests.monitor("suspend", "mon1", server="srv9"), OperationError)
        self.failureResultOf(c.requests.monitor("bogus"), OperationError)


class StatusTests(ServiceTestCase):
    def test_status_per_server_from_local_runners_and_peer_reports(self):
        c = self.cluster([make_monitor(), make_monitor(name="mon2", servers=("srv1",))],
                         results={"mon1": [("after", 2, BAD)]}).start()
        c.clock.advance(0)
        c.clock.advance(2)
        report = c.controller.local_report()
        self.assertEqual(report["monitors"]["mon1"]["status"], "Error")
        self.assertEqual(report["monitors"]["mon1"]["duration"], 2)
        self.assertTrue(report["monitor_recovery"])
        c.controller.peer_report("srv2", peer_report(version=9, monitors={
            "mon1": {"status": "Normal", "duration": 0.5, "error": "", "restarts": 0},
            "mon9": "garbage"}))
        monitors = {m["name"]: m for m in cluster_status(c.controller)["monitors"]}
        mon1 = monitors["mon1"]
        self.assertEqual(mon1["status"], "Caution")
        self.assertEqual([(s["name"], s["status"]) for s in mon1["servers"]],
                         [("srv1", "Error"), ("srv2", "Normal")])
        self.assertEqual(mon1["servers"][0]["error"], "service is down")
        self.assertEqual(mon1["servers"][1]["duration"], 0.5)
        self.assertEqual([(s["name"], s["status"]) for s in monitors["mon2"]["servers"]],
                         [("srv1", "Normal"), ("srv2", "Offline")])
        c.membership.up.discard("srv2")
        self.assertEqual(cluster_status(c.controller)["monitors"][0]["servers"][1]["status"], "Offline")

    def test_peer_report_is_parsed_defensively(self):
        report = PeerReport.from_dict(peer_report(monitors={"m": {"status": "Exploded", "duration": "x",
                                                                  "retries": "7", "dummy": 1}},
                                                  recovering=["not", "a", "dict"]))
        self.assertEqual(report.monitors["m"]["status"], "Unknown")
        self.assertIsNone(report.monitors["m"]["duration"])
        self.assertEqual(report.monitors["m"]["retries"], 0)
        self.assertTrue(report.monitors["m"]["dummy"])
        self.assertEqual(report.recovering, {})

    def test_unavailable_type_is_reported_not_fatal(self):
        c = self.cluster([make_monitor(type="nosuchw")]).start()
        self.assertIn(6, c.rm())
        entry = c.service.report()["monitors"]["mon1"]
        self.assertEqual((entry["status"], entry["error"]), ("Error", "monitor type nosuchw is not available"))
        self.failureResultOf(c.requests.monitor("suspend", "mon1"), OperationError)

    def test_environment_and_reactor_lag(self):
        c = self.cluster([make_monitor()]).start()
        env = c.monitor().env
        self.assertIs(env.resource("exec1"), c.resources["exec1"])
        self.assertIsNone(env.resource("nosuch"))
        c.clock.advance(0)
        self.assertEqual(env.monitor_state("mon1"), MonitorState.NORMAL)
        self.assertEqual((env.local, env.hb_timeout), ("srv1", c.config.hb_timeout))
        c.clock.advance(1)
        self.assertEqual(env.reactor_lag(), 0)
        c.clock.advance(3.5)  # a stall: the sample due at 2 runs at 4.5
        self.assertEqual(env.reactor_lag(), 2.5)

    def test_reactor_lag_of_every_late_sample(self):
        # Each sample 0.3 s late: every one of them reads 0.3 s, not only the first.
        c = self.cluster([make_monitor()]).start()
        c.clock.advance(0.3)
        for _ in range(4):
            c.clock.advance(1.0)
            self.assertAlmostEqual(c.service.lag, 0.3)
        report = c.service.lag_report()
        self.assertEqual((report["count"], report["window"], report["interval_s"]), (4, 4, 1.0))
        self.assertEqual((report["p50_ms"], report["p99_ms"], report["max_ms"], report["last_ms"]),
                         (300.0, 300.0, 300.0, 300.0))
        self.assertEqual(report["recent_ms"], [300.0] * 4)
        c.clock.advance(0.7)  # on time again
        report = c.service.lag_report()
        self.assertEqual((report["last_ms"], report["p50_ms"], report["max_ms"]), (0.0, 300.0, 300.0))
        c.service.stopService()
        self.assertEqual(c.clock.getDelayedCalls(), [])

    def test_lag_samples_keep_to_their_grid(self):
        c = self.cluster([make_monitor()]).start()
        c.clock.advance(3.5)  # a stall: the sample due at 1 runs at 3.5; those of 2 and 3 are skipped
        self.assertEqual(c.service.lag, 2.5)
        c.clock.advance(0.5)  # the next one keeps to the grid: due at 4, on time
        self.assertEqual((c.service.lag, c.service.lag_report()["count"]), (0.0, 2))
        c.service.stopService()

    def test_lag_report_before_any_sample(self):
        c = self.cluster([make_monitor()]).start()
        report = c.service.lag_report()
        self.assertEqual((report["count"], report["p99_ms"], report["max_ms"], report["recent_ms"]),
                         (0, None, None, []))


class AdminHandlerTests(ServiceTestCase):
    """The daemon's admin handler routes 'monitor' requests and shows monitors in 'status'."""

    def handler(self, c):
        from types import SimpleNamespace

        from cpro.services.admin import AdminHandler

        node = SimpleNamespace(controller=c.controller, heartbeat=SimpleNamespace(counters=lambda: {}))
        return AdminHandler(node)

    def test_monitor_verbs_and_status(self):
        from cpro.protocols.admin import AdminError, AdminRequest

        c = self.cluster([make_monitor()]).start()
        c.clock.advance(0)
        handler = self.handler(c)
        result = self.successResultOf(handler.execute(AdminRequest("monitor", action="suspend", target="mon1")))
        self.assertEqual(result, {"message": "monitor mon1 suspended on srv1"})
        status = handler.execute(AdminRequest("status"))
        self.assertEqual(status["monitors"][0]["servers"][0]["status"], "Suspend")
        self.assertEqual(status["monitor_recovery"], {"srv1": True, "srv2": True})
        self.assertEqual(status["reactor_lag"], c.service.lag_report())
        self.successResultOf(handler.execute(AdminRequest("monitor", action="dummy", target="mon1", switch=True)))
        self.assertTrue(c.runner().dummy)
        failure = self.failureResultOf(handler.execute(AdminRequest("monitor", action="resume", target="nosuch")),
                                       AdminError)
        self.assertEqual(failure.value.message, "no such monitor: nosuch")


class LocalServerRecoveryTests(ServiceTestCase):
    def test_local_server_target_goes_straight_to_the_final_action(self):
        c = self.cluster([make_monitor(kind="cls", recovery_target="LocalServer", restart_threshold=3,
                                       failover_threshold=3, final_action=5)], results={"mon1": [BAD]}).start()
        c.clock.advance(0)
        self.assertNotIn(13, c.rm())
        self.assertIn(17, c.rm())
        self.assertEqual(c.controller.service, ClusterServiceState.STOPPED)
        self.assertEqual(c.os.actions, [])  # not before the groups have moved
        self.assertEqual(c.answer_peer_call()[:2], ("srv2", "group_start_local"))  # failover1 moves to srv2
        self.assertEqual(c.os.actions, [("reboot", "final action of monitor mon1")])


class FailbackTests(ServiceTestCase):
    def test_no_failback_while_a_recovery_sequence_runs(self):
        groups = [{"name": "failover1", "resources": ["exec1"], "policy": ("srv2", "srv1"), "failback_auto": True}]
        c = self.cluster([make_monitor(restart_threshold=2)], results={"mon1": [BAD]}, groups=groups,
                         up=()).start()
        c.clock.advance(30)  # alone: srv1 starts failover1 although srv2 is its home
        self.assertEqual(c.group_state(), GroupState.ONLINE)
        self.assertEqual(c.rm().count(13), 1)  # reactivated: the sequence runs
        c.membership.up.add("srv2")
        c.controller.peer_report("srv2", peer_report())
        self.assertEqual(c.group_state(), GroupState.ONLINE)  # not moved home under the monitor's feet
        self.assertEqual(c.peers.calls, [])


def event_monitor(name="ev1", **kw):
    """An event-fed monitor (FakeEventMonitor) recovering group failover1."""
    return make_monitor(name=name, type=FAKE_EVENT_TYPE, **kw)


class EventFedMonitorTests(ServiceTestCase):
    def test_error_events_escalate_through_the_same_recovery(self):
        c = self.cluster([event_monitor(retry=1, restart_threshold=1, failover_threshold=1, final_action=2)]).start()
        self.assertEqual(c.runner("ev1").state, MonitorState.NORMAL)
        self.assertEqual(c.monitor("ev1").starts, 1)
        c.clock.advance(100)
        self.assertEqual(c.rm(), [1])  # never polled: nothing happens without events
        exec1 = c.resources["exec1"]
        self.assertTrue(c.service.deliver("ev1", BAD))
        self.assertNotIn(13, c.rm())  # one error of two
        self.assertTrue(c.service.deliver("ev1", BAD))
        self.assertEqual(c.rm().count(9), 1)
        self.assertEqual(c.rm().count(13), 1)  # reactivated
        self.assertEqual([(call, ctx.factor) for call, ctx in exec1.calls[1:]],
                         [("deactivate", "GROUPRESTART"), ("activate", "")])
        # No next check will prove the group healthy: the step ends the sequence.
        self.assertIsNone(c.controller.recovery_in_progress("failover1"))
        self.assertEqual(c.runner("ev1").state, MonitorState.ERROR)
        self.assertTrue(c.monitor("ev1").receive(BAD))  # the type's own report: the same engine
        self.assertTrue(c.service.deliver("ev1", BAD))
        self.assertEqual(c.group_state(), GroupState.OFFLINE)  # failed over
        self.assertEqual(c.answer_peer_call()[1], "group_start_local")
        self.assertIn(14, c.rm())
        status = c.service.report()["monitors"]["ev1"]
        self.assertEqual((status["restarts"], status["failovers"], status["status"]), (1, 1, "Error"))

    def test_a_normal_event_clears_the_error_and_resets_the_counters(self):
        c = self.cluster([event_monitor(restart_threshold=1, final_action=2)]).start()
        c.service.deliver("ev1", BAD)
        self.assertEqual(c.service.escalations["ev1"].restarts, 1)
        self.assertTrue(c.service.deliver("ev1", CheckResult.normal("cleared")))
        self.assertEqual(c.runner("ev1").state, MonitorState.NORMAL)
        self.assertEqual(c.rm()[-1], 26)
        self.assertEqual(c.service.escalations["ev1"].restarts, 0)
        c.service.deliver("ev1", BAD)  # a new episode starts with a reactivation again
        self.assertEqual(c.rm().count(13), 2)
        self.assertEqual(c.group_state(), GroupState.ONLINE)

    def test_what_deliver_does_not_take(self):
        c = self.cluster([event_monitor(), make_monitor()]).start()
        self.assertFalse(c.service.deliver("nosuch", BAD))
        self.assertFalse(c.service.deliver("mon1", BAD))  # a polled monitor takes no events
        self.successResultOf(c.requests.monitor("suspend", "ev1"))
        self.assertFalse(c.service.deliver("ev1", BAD))
        self.assertEqual(c.runner("ev1").state, MonitorState.SUSPENDED)
        self.successResultOf(c.requests.monitor("resume", "ev1"))
        self.assertTrue(c.service.deliver("ev1", OK))
        self.successResultOf(c.requests.cluster("suspend"))
        self.assertFalse(c.service.deliver("ev1", BAD))
        self.assertEqual([m.name for m in c.service.event_monitors()], ["ev1"])
        self.assertEqual(c.service.event_monitors("mrw"), [])
        self.assertNotIn(9, c.rm())

    def test_dummy_failure_rehearses_the_recovery(self):
        c = self.cluster([event_monitor(restart_threshold=1)]).start()
        self.successResultOf(c.requests.monitor("dummy", "ev1", on=True))
        c.clock.advance(0)
        self.assertEqual(c.runner("ev1").last_error, "dummy failure")
        self.assertEqual(c.rm().count(13), 1)
        self.assertFalse(c.service.deliver("ev1", OK))  # real events wait for the end of it
        self.successResultOf(c.requests.monitor("dummy", "ev1", on=False))
        self.assertEqual(c.runner("ev1").state, MonitorState.NORMAL)
        self.assertEqual(c.service.escalations["ev1"].restarts, 0)

    def test_status_shows_and_reports_the_last_event(self):
        c = self.cluster([event_monitor(retry=3), make_monitor()]).start()
        c.clock.advance(1700000000)
        c.service.deliver("ev1", BAD)
        local = c.service.report()["monitors"]
        self.assertEqual((local["ev1"]["last_event"], local["ev1"]["retries"]), (1700000000, 1))
        self.assertNotIn("last_event", local["mon1"])
        compact = c.controller.local_report()["monitors"]
        self.assertEqual(compact["ev1"]["last_event"], 1700000000)
        peer = PeerReport.from_dict(peer_report(monitors=json.loads(json.dumps(compact))))
        self.assertEqual(peer.monitors["ev1"]["last_event"], 1700000000.0)
        self.assertNotIn("last_event", peer.monitors["mon1"])
        self.assertEqual(PeerReport.from_dict(peer_report(monitors={"ev1": {"last_event": "x"}}))
                         .monitors["ev1"].get("last_event"), None)
        text = render_monitors(cluster_status(c.controller))
        self.assertIn("last event ", text)

    def test_a_replaced_monitor_reports_to_no_one(self):
        c = self.cluster([event_monitor()]).start()
        old = c.monitor("ev1")
        config = dataclasses.replace(c.config, monitors=(event_monitor(restart_threshold=2),))
        self.assertEqual(c.service.reconfigure(config), ([], [], ["ev1"]))
        self.assertEqual(old.stops, 1)
        self.assertFalse(old.receive(BAD))
        self.assertTrue(c.monitor("ev1").receive(OK))
        self.assertEqual(c.runner("ev1").state, MonitorState.NORMAL)
