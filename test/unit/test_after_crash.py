"""The controller after a crash of the previous daemon: it rejoins without
auto-starting groups, once; failover and operator requests still work."""

from twisted.trial.unittest import SynchronousTestCase

from cpro.cluster.states import ClusterServiceState

from test.unit.test_controller import Harness, running_report

REASON = "the previous cluster daemon ended abnormally"


class SkipAutoStartTests(SynchronousTestCase):
    def test_home_server_does_not_start_its_group_after_a_crash(self):
        h = Harness(local="srv1", up=("srv2",))
        h.controller.skip_auto_start_once(REASON)
        h.running()
        self.assertEqual(h.controller.service, ClusterServiceState.RUNNING)
        self.assertEqual(h.resources["exec1"].calls, [])
        self.assertIn(22, h.alerts.ids("pm"))
        self.assertTrue(any(REASON in m and "clpgrp -s" in m for m in h.alerts.messages()))

    def test_lone_server_after_sync_wait_starts_groups_as_usual(self):
        # No live peer can be failing its old groups over: an ordinary start.
        h = Harness(local="srv2", up=())
        h.controller.skip_auto_start_once(REASON)
        h.controller.start_service()
        h.clock.advance(300)
        self.assertEqual(h.controller.service, ClusterServiceState.RUNNING)
        self.assertTrue(h.resources["exec1"].active)
        self.assertIn(23, h.alerts.ids("pm"))
        self.assertNotIn(22, h.alerts.ids("pm"))

    def test_peer_dying_while_we_start_has_its_groups_failed_over_at_the_end_of_sync(self):
        h = Harness(local="srv2", up=("srv1",))
        h.controller.skip_auto_start_once(REASON)
        h.controller.peer_report("srv1", running_report({"failover1": "Online"}))
        h.controller.start_service()
        # srv1 (the master) reported, so the sync ended at once; start over
        # with a peer that dies while we are still starting.
        h2 = Harness(local="srv2", servers=("srv1", "srv2", "srv3"), up=("srv1", "srv3"))
        h2.controller.skip_auto_start_once(REASON)
        h2.controller.peer_report("srv1", running_report({"failover1": "Online"}))
        h2.controller.start_service()
        self.assertEqual(h2.controller.service, ClusterServiceState.STARTING)  # srv3 has not reported
        h2.membership.up.discard("srv1")
        h2.controller.server_down("srv1")
        self.assertFalse(h2.resources["exec1"].active)  # not while starting
        h2.clock.advance(300)  # the sync wait ends without srv3 ... which is up but silent
        self.assertEqual(h2.controller.service, ClusterServiceState.RUNNING)
        self.assertTrue(h2.resources["exec1"].active)
        self.assertEqual(h2.resources["exec1"].calls[0][1].event, "FAILOVER")

    def test_failover_of_orphans_still_works(self):
        h = Harness(local="srv2", up=("srv1",))
        h.controller.skip_auto_start_once(REASON)
        h.running({"srv1": {"failover1": "Online"}})
        h.membership.up.discard("srv1")
        h.controller.server_down("srv1")
        self.assertTrue(h.resources["exec1"].active)
        self.assertEqual(h.resources["exec1"].calls[0][1].event, "FAILOVER")

    def test_operator_can_start_the_group(self):
        h = Harness(local="srv1", up=("srv2",))
        h.controller.skip_auto_start_once(REASON)
        h.running()
        self.successResultOf(h.requests.group_start("failover1"))
        self.assertTrue(h.resources["exec1"].active)

    def test_only_once(self):
        h = Harness(local="srv1", up=("srv2",))
        h.controller.skip_auto_start_once(REASON)
        h.running()
        self.successResultOf(h.controller.stop_service(move_groups=False))
        h.controller.peer_report("srv2", running_report(version=2))
        h.controller.start_service()
        self.assertTrue(h.resources["exec1"].active)
        self.assertEqual(h.alerts.ids("pm").count(22), 1)
