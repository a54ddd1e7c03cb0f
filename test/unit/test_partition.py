"""Network-partition resolution and forced stop decisions (cpro.cluster.partition),
and how the controller acts on them, on a Clock."""

import dataclasses

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cpro.cluster.partition import Outcome, PartitionResolution, Verdict
from cpro.config.model import ForcedStopConfig, NetworkPartitionConfig
from cpro.interfaces import IForcedStop, INPResolver
from cpro.testing.fakes import FakeAlerts
from cpro.cluster.states import ClusterServiceState
from test.unit.test_controller import Harness, running_report


@implementer(INPResolver)
class FakeResolver:
    kind = "pingnp"

    def __init__(self, name="pingnp1", timeout=1.0, answer=None):
        self.name = name
        self.timeout = timeout
        self.answer = answer  # a Verdict to fire at once, or None to hold
        self.checks = []  # (lost, Deferred)
        self.cancelled = 0

    def check(self, lost):
        d = defer.Deferred(lambda _: setattr(self, "cancelled", self.cancelled + 1))
        self.checks.append((lost, d))
        if self.answer is not None:
            d.callback(self.answer)
        return d


@implementer(IForcedStop)
class FakeForcedStop:
    method = "bmc"

    def __init__(self):
        self.stops = []  # (server, Deferred)
        self.identified = []

    def stop_server(self, server):
        d = defer.Deferred()
        self.stops.append((server, d))
        return d

    def identify(self, server, seconds):
        self.identified.append((server, seconds))
        return defer.succeed(None)


HEALTHY = Verdict(True, "10.0.0.254 answered in 0.3 ms")
ISOLATED = Verdict(False, "10.0.0.254: no reply within 1 s")


class Resolution:
    def __init__(self, resolvers=(), forced_stop=None, **fs):
        self.clock = task.Clock()
        self.alerts = FakeAlerts()
        self.fs_config = ForcedStopConfig(enabled=forced_stop is not None, **fs)
        self.machine = PartitionResolution(self.clock, "srv2", resolvers, forced_stop,
                                           NetworkPartitionConfig(release_grace=0.5), self.fs_config, 0.1,
                                           self.alerts)
        self.outcomes = {}

    def resolve(self, server):
        self.machine.resolve(server).addCallback(lambda o: self.outcomes.__setitem__(server, o))


class PartitionResolutionTests(SynchronousTestCase):
    def test_fakes_provide_interfaces(self):
        verifyObject(INPResolver, FakeResolver())
        verifyObject(IForcedStop, FakeForcedStop())

    def test_nothing_configured_is_inactive(self):
        r = Resolution()
        self.assertFalse(r.machine.active)
        self.assertEqual(r.machine.takeover_delay, 0.0)

    def test_healthy_side_waits_for_the_isolated_side_to_release(self):
        resolver = FakeResolver(timeout=1.0, answer=HEALTHY)
        r = Resolution([resolver])
        self.assertAlmostEqual(r.machine.takeover_delay, 1.0 + 0.1 + 0.5)
        r.resolve("srv1")
        self.assertEqual(resolver.checks[0][0], frozenset({"srv1"}))
        r.clock.advance(1.59)
        self.assertEqual(r.outcomes, {})
        r.clock.advance(0.02)
        self.assertEqual(r.outcomes, {"srv1": Outcome.FAILOVER})
        self.assertIn(32, r.alerts.ids("nm"))
        self.assertEqual(r.clock.getDelayedCalls(), [])

    def test_one_unhealthy_resolver_means_isolated(self):
        r = Resolution([FakeResolver("pingnp1", answer=HEALTHY), FakeResolver("httpnp1", answer=ISOLATED)])
        r.resolve("srv1")
        self.assertEqual(r.outcomes, {"srv1": Outcome.ISOLATED})
        status = r.machine.status()["resolvers"]
        self.assertTrue(status["pingnp1"]["healthy"])
        self.assertFalse(status["httpnp1"]["healthy"])
        self.assertIn("no reply", status["httpnp1"]["reason"])

    def test_a_silent_resolver_is_cancelled_at_its_timeout(self):
        resolver = FakeResolver(timeout=1.0)
        r = Resolution([resolver])
        r.resolve("srv1")
        r.clock.advance(0.99)
        self.assertEqual(r.outcomes, {})
        r.clock.advance(0.02)
        self.assertEqual(r.outcomes, {"srv1": Outcome.ISOLATED})
        self.assertEqual(resolver.cancelled, 1)
        self.assertIn("no answer within 1 s", r.machine.status()["resolvers"]["pingnp1"]["reason"])

    def test_a_failing_resolver_cannot_prove_health(self):
        resolver = FakeResolver()
        r = Resolution([resolver])
        r.resolve("srv1")
        resolver.checks[0][1].errback(OSError("no ICMP socket"))
        self.assertEqual(r.outcomes, {"srv1": Outcome.ISOLATED})

    def test_servers_lost_together_share_one_resolution(self):
        resolver = FakeResolver()
        r = Resolution([resolver])
        r.resolve("srv1")
        r.resolve("srv3")
        self.assertEqual(len(resolver.checks), 1)
        resolver.checks[0][1].callback(ISOLATED)
        self.assertEqual(r.outcomes, {"srv1": Outcome.ISOLATED, "srv3": Outcome.ISOLATED})

    def test_heard_again_during_the_wait_cancels(self):
        r = Resolution([FakeResolver(answer=HEALTHY)])
        r.resolve("srv1")
        r.clock.advance(0.5)
        r.machine.cancel("srv1")
        self.assertEqual(r.outcomes, {"srv1": Outcome.CANCELLED})
        self.assertEqual(r.clock.getDelayedCalls(), [])

    def test_forced_stop_proves_the_peer_down_and_ends_the_wait(self):
        fence = FakeForcedStop()
        r = Resolution([FakeResolver(answer=HEALTHY)], fence)
        r.resolve("srv1")
        self.assertEqual([s for s, _ in fence.stops], ["srv1"])
        self.assertEqual(r.outcomes, {})
        fence.stops[0][1].callback(None)
        self.assertEqual(r.outcomes, {"srv1": Outcome.FAILOVER})
        self.assertEqual(r.alerts.ids("nm"), [32, 40, 41])
        self.assertEqual(r.clock.getDelayedCalls(), [])

    def test_forced_stop_runs_after_resolution_only_on_the_healthy_side(self):
        fence = FakeForcedStop()
        r = Resolution([FakeResolver(answer=ISOLATED)], fence)
        r.resolve("srv1")
        self.assertEqual(fence.stops, [])
        self.assertEqual(r.outcomes, {"srv1": Outcome.ISOLATED})

    def test_failed_forced_stop_suppresses_the_failover(self):
        fence = FakeForcedStop()
        r = Resolution([], fence, identify_on_failure=True, identify_seconds=30)
        r.resolve("srv1")
        fence.stops[0][1].errback(RuntimeError("BMC 192.168.0.1 did not answer"))
        self.assertEqual(r.outcomes, {"srv1": Outcome.SUPPRESSED})
        self.assertEqual(r.alerts.ids("nm"), [40, 42, 43])
        self.assertIn("BMC 192.168.0.1 did not answer", r.alerts.messages()[1])
        self.assertEqual(fence.identified, [("srv1", 30)])
        self.assertEqual(r.machine.status()["suppressed"], ["srv1"])

    def test_forced_stop_timeout_without_suppression_falls_back_to_the_wait(self):
        fence = FakeForcedStop()
        r = Resolution([FakeResolver(timeout=1.0, answer=HEALTHY)], fence, timeout=3.0,
                       suppress_failover_on_failure=False)
        r.resolve("srv1")
        r.clock.advance(3.0)  # the forced stop timed out; the takeover wait (1.6 s) is over too
        self.assertEqual(r.outcomes, {"srv1": Outcome.FAILOVER})
        self.assertIn("no confirmation within 3 s", r.alerts.messages()[2])

    def test_forced_stop_without_resolvers(self):
        fence = FakeForcedStop()
        r = Resolution([], fence)
        self.assertTrue(r.machine.active)
        r.resolve("srv1")
        fence.stops[0][1].callback(None)
        self.assertEqual(r.outcomes, {"srv1": Outcome.FAILOVER})

    def test_stop_cancels_everything(self):
        r = Resolution([FakeResolver()])
        r.resolve("srv1")
        r.machine.stop()
        self.assertEqual(r.outcomes, {"srv1": Outcome.CANCELLED})
        self.assertEqual(r.clock.getDelayedCalls(), [])


class RoutineCheckTests(SynchronousTestCase):
    def test_routine_checks_report_a_failing_resolver_before_a_partition(self):
        resolver = FakeResolver(answer=HEALTHY)
        r = Resolution([resolver])
        r.machine.start_checks(10.0)
        self.assertEqual([lost for lost, _ in resolver.checks], [frozenset()])
        self.assertTrue(r.machine.status()["resolvers"]["pingnp1"]["healthy"])
        resolver.answer = ISOLATED
        r.clock.advance(10.0)
        self.assertEqual(r.alerts.ids("nm"), [33])
        self.assertIn("would take itself for the cut-off side", r.alerts.messages()[0])
        r.clock.advance(10.0)  # still failing: no new alert
        resolver.answer = HEALTHY
        r.clock.advance(10.0)
        self.assertEqual(r.alerts.ids("nm"), [33, 34])
        r.machine.stop()
        self.assertEqual(r.clock.getDelayedCalls(), [])

    def test_no_routine_check_while_resolving_and_none_overlapping(self):
        resolver = FakeResolver()  # never answers by itself
        r = Resolution([resolver])
        r.resolve("srv1")
        r.machine.start_checks(0.5)
        self.assertEqual(len(resolver.checks), 1)  # the resolution's, not a routine one
        resolver.checks[0][1].callback(HEALTHY)
        r.clock.advance(0.5)
        self.assertEqual(len(resolver.checks), 2)
        r.clock.advance(0.5)  # the routine check is still waiting for its answer
        self.assertEqual(len(resolver.checks), 2)
        r.machine.stop()
        self.assertEqual(resolver.cancelled, 1)
        self.assertEqual(r.clock.getDelayedCalls(), [])

    def test_off_when_the_interval_is_zero(self):
        resolver = FakeResolver(answer=HEALTHY)
        r = Resolution([resolver])
        r.machine.start_checks(0)
        self.assertEqual(resolver.checks, [])


class ControllerPartitionTests(SynchronousTestCase):
    def harness(self, resolvers, forced_stop=None, action=2):
        h = Harness(local="srv2", up=("srv1",))
        h.config = dataclasses.replace(h.config, network_partition=NetworkPartitionConfig(action=action))
        h.controller.config = h.config
        h.controller.partition = PartitionResolution(
            h.clock, "srv2", resolvers, forced_stop, h.config.network_partition,
            ForcedStopConfig(enabled=forced_stop is not None), h.config.hb_interval, h.alerts)
        h.actions = []
        h.controller.on_network_partition = lambda action: h.actions.append(action)
        h.running({"srv1": {"failover1": "Online"}})
        return h

    def lose(self, h, server="srv1"):
        h.membership.up.discard(server)
        h.controller.server_down(server)

    def test_healthy_side_takes_the_groups_after_the_wait(self):
        h = self.harness([FakeResolver(timeout=1.0, answer=HEALTHY)])
        self.lose(h)
        self.assertFalse(h.resources["exec1"].active)
        h.clock.advance(h.controller.partition.takeover_delay)
        self.assertTrue(h.resources["exec1"].active)
        self.assertEqual(h.actions, [])

    def test_isolated_side_takes_the_np_action_and_never_the_groups(self):
        h = self.harness([FakeResolver(answer=ISOLATED)], action=2)
        self.lose(h)
        h.clock.advance(10)
        self.assertFalse(h.resources["exec1"].active)
        self.assertEqual(h.actions, [2])
        self.assertIn(30, h.alerts.ids("nm"))

    def test_np_action_again_after_the_service_restarted(self):
        h = self.harness([FakeResolver(answer=ISOLATED)], action=1)
        self.lose(h)
        h.controller.service = ClusterServiceState.STOPPED  # what the node's action 1 leads to
        h.controller.start_service()
        h.controller.peer_report("srv1", running_report())
        h.membership.up.add("srv1")
        self.lose(h)
        self.assertEqual(h.actions, [1, 1])
        h.clock.advance(60)

    def test_np_action_none_only_alerts(self):
        h = self.harness([FakeResolver(answer=ISOLATED)], action=0)
        self.lose(h)
        self.assertEqual(h.actions, [])
        self.assertFalse(h.resources["exec1"].active)
        self.assertIn(30, h.alerts.ids("nm"))

    def test_peer_back_before_the_wait_ends_keeps_its_groups(self):
        h = self.harness([FakeResolver(answer=HEALTHY)])
        self.lose(h)
        h.membership.up.add("srv1")
        h.controller.server_up("srv1", "inc-peer")
        h.clock.advance(10)
        self.assertFalse(h.resources["exec1"].active)

    def test_suppressed_failover_leaves_the_group_down_here(self):
        fence = FakeForcedStop()
        h = self.harness([], fence)
        self.lose(h)
        fence.stops[0][1].errback(RuntimeError("no route to BMC"))
        h.clock.advance(10)
        self.assertFalse(h.resources["exec1"].active)
        self.assertIn(43, h.alerts.ids("nm"))

    def test_status_reports_the_resolution(self):
        from cpro.cluster.status import cluster_status

        h = self.harness([FakeResolver(answer=HEALTHY)])
        self.lose(h)
        np = cluster_status(h.controller)["network_partition"]
        self.assertEqual(np["resolving"], ["srv1"])
        self.assertTrue(np["resolvers"]["pingnp1"]["healthy"])
        h.clock.advance(10)
