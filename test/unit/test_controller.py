"""Cluster controller decisions with a Clock and fakes: startup sync,
auto start, failover on server down, escalation, double activation,
failback, suspend, operator requests."""

import dataclasses

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from cpro.cluster.controller import ClusterController, OperationError
from cpro.cluster.group import LocalGroup
from cpro.cluster.operations import OperatorRequests
from cpro.cluster.states import ClusterServiceState, GroupState
from cpro.cluster.status import cluster_status
from cpro.interfaces import IAlertSink, IGroupResource, IOSActions, IPeerChannel
from cpro.testing.fakes import FakeAlerts, FakeMembership, FakeOSActions, FakePeers, FakeResource, make_config


def running_report(groups=None, service="Running", version=1, incarnation="inc-peer"):
    return {"incarnation": incarnation, "version": version, "service": service,
            "groups": groups or {}, "resources": {}}


class Harness:
    def __init__(self, local="srv2", servers=("srv1", "srv2"), groups=None, up=("srv1",), **kw):
        self.clock = task.Clock()
        self.config = make_config(servers=servers, groups=groups, **kw)
        self.alerts = FakeAlerts()
        self.peers = FakePeers()
        self.os = FakeOSActions()
        self.resources = {}
        local_groups = {}
        for g in self.config.groups:
            rcfgs = {n: self.config.resource(n) for n in g.resources}
            res = {n: FakeResource(n) for n in g.resources}
            self.resources.update(res)
            local_groups[g.name] = LocalGroup(g, rcfgs, res, local, self.alerts,
                                              lambda: self.controller.notify_changed())
        self.controller = ClusterController(self.clock, self.config, local, local_groups, self.peers,
                                            self.alerts, self.os, "inc-local")
        self.membership = FakeMembership(up=up)
        self.controller.membership = self.membership
        self.requests = OperatorRequests(self.controller)

    def running(self, peer_groups=None):
        """Start the service with every peer reporting Running."""
        for s in self.config.servers:
            if s.name != self.controller.local:
                self.controller.peer_report(s.name, running_report(peer_groups.get(s.name) if peer_groups else None))
        self.controller.start_service()
        return self


class FakesTests(SynchronousTestCase):
    def test_fakes_provide_interfaces(self):
        verifyObject(IGroupResource, FakeResource("r"))
        verifyObject(IAlertSink, FakeAlerts())
        verifyObject(IPeerChannel, FakePeers())
        verifyObject(IOSActions, FakeOSActions())


class StartupTests(SynchronousTestCase):
    def test_waits_for_peers_then_home_server_starts_group(self):
        h = Harness(local="srv1", up=("srv2",))
        h.controller.start_service()
        self.assertEqual(h.controller.service, ClusterServiceState.STARTING)
        self.assertFalse(h.resources["exec1"].active)
        h.controller.peer_report("srv2", running_report(service="Starting"))
        self.assertEqual(h.controller.service, ClusterServiceState.RUNNING)
        self.assertTrue(h.resources["exec1"].active)
        self.assertEqual(h.resources["exec1"].calls[0][1].event, "START")
        self.assertTrue(h.resources["exec1"].calls[0][1].home)

    def test_standby_does_not_start_group(self):
        h = Harness(local="srv2", up=("srv1",)).running()
        self.assertEqual(h.controller.service, ClusterServiceState.RUNNING)
        self.assertFalse(h.resources["exec1"].active)

    def test_rejoining_server_does_not_take_running_group(self):
        h = Harness(local="srv1", up=("srv2",)).running({"srv2": {"failover1": "Online"}})
        self.assertFalse(h.resources["exec1"].calls)
        self.assertEqual(cluster_status(h.controller)["groups"][0]["current"], "srv2")

    def test_sync_wait_expires_and_lone_server_starts(self):
        h = Harness(local="srv2", up=())
        h.controller.start_service()
        h.clock.advance(29)
        self.assertEqual(h.controller.service, ClusterServiceState.STARTING)
        h.clock.advance(1)
        self.assertEqual(h.controller.service, ClusterServiceState.RUNNING)
        self.assertTrue(h.resources["exec1"].active)
        self.assertEqual(h.resources["exec1"].calls[0][1].home, False)
        self.assertIn(7, h.alerts.ids("nm"))
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_lone_non_master_also_waits_for_the_master_up_to_cfwait(self):
        h = Harness(local="srv2", up=())
        h.config = h.controller.config = dataclasses.replace(h.config, config_download_wait=60.0)
        h.controller.start_service()
        h.clock.advance(30)
        self.assertEqual(h.controller.service, ClusterServiceState.STARTING)
        h.clock.advance(30)
        self.assertEqual(h.controller.service, ClusterServiceState.RUNNING)
        self.assertIn(11, h.alerts.ids("pm"))
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_master_report_ends_the_wait_for_the_master(self):
        h = Harness(local="srv2", servers=("srv1", "srv2", "srv3"), up=("srv1",))
        h.config = h.controller.config = dataclasses.replace(h.config, config_download_wait=60.0)
        h.controller.start_service()
        h.controller.peer_report("srv1", running_report())
        h.clock.advance(30)  # syncwait over; srv3 missing, master checked
        self.assertEqual(h.controller.service, ClusterServiceState.RUNNING)
        self.assertNotIn(11, h.alerts.ids("pm"))
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_manual_start_group_not_started(self):
        h = Harness(local="srv1", up=("srv2",), groups=[{"name": "g", "resources": ["r"], "start_auto": False}])
        h.running()
        self.assertFalse(h.resources["r"].calls)


class FailoverTests(SynchronousTestCase):
    def test_server_down_fails_over_to_next_server(self):
        h = Harness(local="srv2", up=("srv1",)).running({"srv1": {"failover1": "Online"}})
        self.assertFalse(h.resources["exec1"].active)
        h.membership.up.discard("srv1")
        h.controller.server_down("srv1")
        self.assertTrue(h.resources["exec1"].active)
        self.assertEqual(h.resources["exec1"].calls[0][1].event, "FAILOVER")
        self.assertIn(60, h.alerts.ids("rc"))

    def test_only_target_starts_group_among_three(self):
        servers = ("srv1", "srv2", "srv3")
        started = {}
        for local in ("srv2", "srv3"):
            others = tuple(s for s in servers if s != local)
            h = Harness(local=local, servers=servers, up=others).running({"srv1": {"failover1": "Online"}})
            h.membership.up.discard("srv1")
            h.controller.server_down("srv1")
            started[local] = h.resources["exec1"].active
        self.assertEqual(started, {"srv2": True, "srv3": False})

    def test_orphan_whose_target_died_is_placed_again(self):
        servers = ("srv1", "srv2", "srv3")
        groups = [{"name": "g1", "resources": ["r1"], "policy": ("srv1", "srv2", "srv3")},
                  {"name": "g2", "resources": ["r2"], "policy": ("srv2", "srv1", "srv3")}]
        h = Harness(local="srv3", servers=servers, groups=groups, up=("srv1", "srv2"))
        h.running({"srv1": {"g1": "Online"}, "srv2": {"g2": "Online"}})
        h.membership.up.discard("srv2")
        h.controller.server_down("srv2")  # g2's target is srv1...
        self.assertFalse(h.resources["r2"].active)
        h.membership.up.discard("srv1")
        h.controller.server_down("srv1")  # ...which died before taking it
        self.assertTrue(h.resources["r1"].active)
        self.assertTrue(h.resources["r2"].active)

    def test_orphan_forgotten_once_its_target_holds_it(self):
        servers = ("srv1", "srv2", "srv3")
        h = Harness(local="srv3", servers=servers, up=("srv1", "srv2"))
        h.running({"srv1": {"failover1": "Online"}})
        h.membership.up.discard("srv1")
        h.controller.server_down("srv1")
        h.controller.peer_report("srv2", running_report({"failover1": "Online"}, version=7))
        h.membership.up.discard("srv2")
        h.controller.server_down("srv2")  # srv2 held it: failed over from srv2, once
        self.assertEqual(len(h.resources["exec1"].calls), 1)

    def test_manual_failover_group_not_moved(self):
        h = Harness(local="srv2", up=("srv1",), groups=[{"name": "g", "resources": ["r"], "failover_auto": False}])
        h.running({"srv1": {"g": "Online"}})
        h.membership.up.discard("srv1")
        h.controller.server_down("srv1")
        self.assertFalse(h.resources["r"].active)

    def test_suspended_cluster_does_not_fail_over(self):
        h = Harness(local="srv2", up=("srv1",)).running({"srv1": {"failover1": "Online"}})
        h.controller.suspend()
        h.membership.up.discard("srv1")
        h.controller.server_down("srv1")
        self.assertFalse(h.resources["exec1"].active)
        self.assertRaises(OperationError, h.controller.suspend)
        h.controller.resume()
        self.assertTrue(h.resources["exec1"].active)

    def test_exclusion_sends_second_group_elsewhere(self):
        servers = ("srv1", "srv2", "srv3")
        groups = [{"name": "g1", "resources": ["r1"], "exclusive": 1, "policy": ("srv1", "srv2", "srv3")},
                  {"name": "g2", "resources": ["r2"], "exclusive": 1, "policy": ("srv2", "srv3", "srv1")}]
        # srv2 runs g2; srv1 (running g1) dies: g1 must avoid srv2 and go to srv3.
        h = Harness(local="srv3", servers=servers, groups=groups, up=("srv1", "srv2"))
        h.controller.peer_report("srv1", running_report({"g1": "Online"}))
        h.controller.peer_report("srv2", running_report({"g2": "Online"}))
        h.controller.start_service()
        h.membership.up.discard("srv1")
        h.controller.server_down("srv1")
        self.assertTrue(h.resources["r1"].active)
        self.assertFalse(h.resources["r2"].active)


class EscalationTests(SynchronousTestCase):
    def test_retry_then_success(self):
        h = Harness(local="srv1", up=("srv2",), groups=[{"name": "g", "resources": [{"name": "r", "act_retry": 2}]}])
        h.resources["r"].fail_activations = 2
        h.running()
        self.assertTrue(h.resources["r"].active)
        self.assertEqual(len([c for c in h.resources["r"].calls if c[0] == "activate"]), 3)

    def test_failure_fails_over_to_next_server(self):
        h = Harness(local="srv1", up=("srv2",), groups=[{"name": "g", "resources": ["a", {"name": "r", "act_fo": 1}]}])
        h.resources["r"].fail_activations = 1
        h.running()
        self.assertFalse(h.resources["a"].active, "resources started before the failure are stopped")
        self.assertEqual(h.controller.groups["g"].state, GroupState.OFFLINE)
        server, op, args, _ = h.peers.calls[-1]
        self.assertEqual((server, op, args["event"]), ("srv2", "group_start_local", "FAILOVER"))

    def test_threshold_exhausted_runs_final_action(self):
        h = Harness(local="srv1", up=("srv2",),
                    groups=[{"name": "g", "resources": [{"name": "r", "act_fo": 0, "act_action": 5}]}])
        h.resources["r"].fail_activations = 5
        h.running()
        self.assertEqual([a[0] for a in h.os.actions], ["reboot"])
        self.assertEqual(h.controller.service, ClusterServiceState.STOPPED)
        self.assertFalse(h.peers.calls)

    def test_final_action_stop_group(self):
        h = Harness(local="srv1", up=("srv2",),
                    groups=[{"name": "g", "resources": ["a", {"name": "r", "act_fo": 0, "act_action": 2}]}])
        h.resources["r"].fail_activations = 1
        h.running()
        self.assertEqual(h.controller.groups["g"].state, GroupState.OFFLINE)
        self.assertFalse(h.resources["a"].active)
        self.assertEqual(h.os.actions, [])

    def test_failover_counter_per_server(self):
        h = Harness(local="srv1", up=("srv2",), groups=[{"name": "g", "resources": [{"name": "r", "act_fo": 1}]}])
        h.resources["r"].fail_activations = 10
        h.running()
        self.assertEqual(len(h.peers.calls), 1)
        # It comes back from srv2 (which failed too): now the threshold is used up here.
        h.controller.start_group_local("g", "FAILOVER").addErrback(lambda f: f.trap(OperationError))
        self.assertEqual(len(h.peers.calls), 1)
        self.assertEqual(h.controller.groups["g"].state, GroupState.ONLINE_FAILURE)


class DoubleActivationTests(SynchronousTestCase):
    def test_lower_priority_holder_stops(self):
        h = Harness(local="srv2", up=("srv1",)).running({"srv1": {"failover1": "Online"}})
        h.membership.up.discard("srv1")
        h.controller.server_down("srv1")  # partition: srv2 takes over
        self.assertTrue(h.resources["exec1"].active)
        h.membership.up.add("srv1")  # heal: srv1 still has it
        h.controller.peer_report("srv1", running_report({"failover1": "Online"}, version=5))
        self.assertIn(92, h.alerts.ids("rc"))
        self.assertFalse(h.resources["exec1"].active)
        self.assertEqual(h.controller.groups["failover1"].state, GroupState.OFFLINE)

    def test_higher_priority_holder_keeps_group(self):
        h = Harness(local="srv1", up=("srv2",)).running()
        self.assertTrue(h.resources["exec1"].active)
        h.controller.peer_report("srv2", running_report({"failover1": "Online"}, version=5))
        self.assertIn(92, h.alerts.ids("rc"))
        self.assertTrue(h.resources["exec1"].active)


class FailbackTests(SynchronousTestCase):
    def test_auto_failback_moves_group_home(self):
        h = Harness(local="srv2", up=(), groups=[{"name": "g", "resources": ["r"], "failback_auto": True}])
        h.controller.start_service()
        h.clock.advance(30)
        self.assertTrue(h.resources["r"].active)
        h.membership.up.add("srv1")
        h.controller.peer_report("srv1", running_report(service="Running"))
        self.assertFalse(h.resources["r"].active)
        server, op, args, _ = h.peers.calls[-1]
        self.assertEqual((server, op, args["group"]), ("srv1", "group_start_local", "g"))

    def test_manual_failback_stays(self):
        h = Harness(local="srv2", up=())
        h.controller.start_service()
        h.clock.advance(30)
        h.membership.up.add("srv1")
        h.controller.peer_report("srv1", running_report(service="Running"))
        self.assertTrue(h.resources["exec1"].active)


class OperatorTests(SynchronousTestCase):
    def test_move_stops_here_and_starts_there(self):
        h = Harness(local="srv1", up=("srv2",)).running()
        d = h.requests.group_move("failover1", "srv2")
        self.assertFalse(h.resources["exec1"].active)
        server, op, args, pending = h.peers.calls[-1]
        self.assertEqual((server, op), ("srv2", "group_start_local"))
        pending.callback({"message": "ok"})
        self.assertIn("moved", self.successResultOf(d)["message"])

    def test_start_refused_when_active_elsewhere(self):
        h = Harness(local="srv1", up=("srv2",)).running({"srv2": {"failover1": "Online"}})
        f = self.failureResultOf(h.requests.group_start("failover1"), OperationError)
        self.assertIn("already active on srv2", str(f.value))

    def test_unknown_group_and_server(self):
        h = Harness(local="srv1", up=("srv2",)).running()
        self.failureResultOf(defer.maybeDeferred(h.requests.group_stop, "nope"), OperationError)
        self.failureResultOf(defer.maybeDeferred(h.requests.group_start, "failover1", "srv9"), OperationError)

    def test_stop_service_moves_groups(self):
        h = Harness(local="srv1", up=("srv2",)).running()
        self.assertTrue(h.resources["exec1"].active)
        h.controller.stop_service(move_groups=True)
        self.assertFalse(h.resources["exec1"].active)
        self.assertEqual(h.controller.service, ClusterServiceState.STOPPED)
        self.assertEqual(h.peers.calls[-1][:2], ("srv2", "group_start_local"))

    def test_status_shapes(self):
        h = Harness(local="srv1", up=("srv2",)).running()
        st = cluster_status(h.controller)
        self.assertEqual(st["cluster"]["status"], "Online")
        self.assertEqual([s["name"] for s in st["servers"]], ["srv1", "srv2"])
        self.assertEqual(st["groups"][0], {"name": "failover1", "status": "Online", "current": "srv1",
                                           "resources": ["exec1"]})
        self.assertEqual(st["resources"][0]["status"], "Online")


class RestartTests(SynchronousTestCase):
    def test_new_incarnation_report_fails_over_old_groups(self):
        h = Harness(local="srv2", up=("srv1",)).running({"srv1": {"failover1": "Online"}})
        h.controller.peer_report("srv1", running_report({}, service="Starting", incarnation="inc-new", version=0))
        self.assertTrue(h.resources["exec1"].active)
        self.assertEqual(h.resources["exec1"].calls[0][1].event, "FAILOVER")
        # The heartbeat's restart notice afterwards does not fail over twice.
        h.controller.server_restarted("srv1", "inc-peer", "inc-new")
        self.assertEqual(len(h.resources["exec1"].calls), 1)

    def test_restart_notice_then_report(self):
        h = Harness(local="srv2", up=("srv1",)).running({"srv1": {"failover1": "Online"}})
        h.controller.server_restarted("srv1", "inc-peer", "inc-new")
        self.assertTrue(h.resources["exec1"].active)
        h.controller.peer_report("srv1", running_report({}, service="Starting", incarnation="inc-new", version=0))
        self.assertEqual(len(h.resources["exec1"].calls), 1)


class DeactivationTests(SynchronousTestCase):
    def running_group(self, **resource):
        h = Harness(local="srv1", up=("srv2",), groups=[{"name": "g", "resources": ["a", {"name": "r", **resource}]}])
        h.running()
        self.assertTrue(h.resources["r"].active)
        return h

    def test_retry_then_stopped(self):
        h = self.running_group(deact_retry=1)
        h.resources["r"].fail_deactivations = 1
        self.successResultOf(h.requests.group_stop("g"))
        self.assertEqual(h.controller.groups["g"].state, GroupState.OFFLINE)

    def test_failure_leaves_the_group_held_and_never_started_elsewhere(self):
        h = self.running_group(deact_action=1)
        h.resources["r"].fail_deactivations = 1
        self.failureResultOf(h.requests.group_stop("g"), OperationError)
        self.assertEqual(h.controller.groups["g"].state, GroupState.OFFLINE_FAILURE)
        self.assertTrue(h.resources["a"].active, "stopping stops at the failed resource")
        self.assertEqual(h.controller.holders_of("g"), ["srv1"])
        self.assertIn(22, h.alerts.ids("rc"))

    def test_continue_past_a_failure(self):
        h = self.running_group(deact_action=0)
        h.resources["r"].fail_deactivations = 1
        self.failureResultOf(h.requests.group_stop("g"), OperationError)
        self.assertFalse(h.resources["a"].active)
        self.assertEqual(h.controller.groups["g"].state, GroupState.OFFLINE_FAILURE)

    def test_final_action_shutdown(self):
        h = self.running_group(deact_action=4)
        h.resources["r"].fail_deactivations = 1
        self.failureResultOf(h.requests.group_stop("g"), OperationError)
        self.assertEqual([a[0] for a in h.os.actions], ["shutdown"])
        self.assertEqual(h.controller.service, ClusterServiceState.STOPPED)
