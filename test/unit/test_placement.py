"""Placement decisions: policy order, liveness, normal and complete exclusion,
failover plans, activation-failure targets and failback."""

from twisted.trial.unittest import SynchronousTestCase

from cpro.cluster import placement
from cpro.cluster.states import GroupState
from cpro.testing.fakes import make_config

SERVERS = ("srv1", "srv2", "srv3")


def groups(*specs):
    config = make_config(servers=SERVERS, groups=[
        {"name": name, "policy": policy, "exclusive": exclusive, "resources": [f"r-{name}"]}
        for name, policy, exclusive in specs])
    return {g.name: g for g in config.groups}


class ChooseServerTests(SynchronousTestCase):
    def test_first_live_server_of_the_policy(self):
        g = groups(("g", ("srv2", "srv1", "srv3"), 0))
        self.assertEqual(placement.choose_server(g["g"], {"srv1", "srv2", "srv3"}, {}, g), "srv2")
        self.assertEqual(placement.choose_server(g["g"], {"srv1", "srv3"}, {}, g), "srv1")
        self.assertIsNone(placement.choose_server(g["g"], set(), {}, g))

    def test_normal_exclusion_prefers_a_free_server_but_shares_if_it_must(self):
        g = groups(("a", SERVERS, 1), ("b", SERVERS, 1), ("c", SERVERS, 0))
        self.assertEqual(placement.choose_server(g["b"], set(SERVERS), {"a": "srv1"}, g), "srv2")
        self.assertEqual(placement.choose_server(g["b"], {"srv1"}, {"a": "srv1"}, g), "srv1")
        # A group without exclusion ignores it.
        self.assertEqual(placement.choose_server(g["c"], set(SERVERS), {"a": "srv1"}, g), "srv1")

    def test_complete_exclusion_never_shares(self):
        g = groups(("a", SERVERS, 2), ("b", SERVERS, 2), ("n", SERVERS, 1))
        self.assertEqual(placement.choose_server(g["b"], {"srv1", "srv3"}, {"a": "srv1"}, g), "srv3")
        self.assertIsNone(placement.choose_server(g["b"], {"srv1"}, {"a": "srv1"}, g))
        # Different kinds of exclusion do not exclude each other.
        self.assertEqual(placement.choose_server(g["n"], {"srv1"}, {"a": "srv1"}, g), "srv1")

    def test_skip(self):
        g = groups(("g", SERVERS, 0))
        self.assertEqual(placement.choose_server(g["g"], set(SERVERS), {}, g, skip=("srv1",)), "srv2")


class PlanTests(SynchronousTestCase):
    def test_plan_in_gid_order_sees_earlier_choices(self):
        g = groups(("a", ("srv1", "srv2", "srv3"), 1), ("b", ("srv1", "srv2", "srv3"), 1))
        plan = placement.plan_failover("srv1", ["b", "a"], {"srv2", "srv3"}, {"a": "srv1", "b": "srv1"}, g)
        self.assertEqual(plan, [("a", "srv2"), ("b", "srv3")])

    def test_no_destination(self):
        g = groups(("a", ("srv1",), 0))
        self.assertEqual(placement.plan_failover("srv1", ["a"], {"srv2"}, {"a": "srv1"}, g), [("a", None)])

    def test_next_server_wraps_around_the_policy(self):
        g = groups(("g", SERVERS, 0))
        live = set(SERVERS)
        self.assertEqual(placement.next_server(g["g"], "srv1", live, {}, g), "srv2")
        self.assertEqual(placement.next_server(g["g"], "srv2", live, {}, g), "srv3")
        self.assertEqual(placement.next_server(g["g"], "srv3", live, {}, g), "srv1")
        self.assertEqual(placement.next_server(g["g"], "srv2", {"srv1", "srv2"}, {}, g), "srv1")
        self.assertIsNone(placement.next_server(g["g"], "srv2", {"srv2"}, {}, g))

    def test_failback_only_to_a_higher_priority_server(self):
        g = groups(("g", SERVERS, 0))
        self.assertEqual(placement.failback_target(g["g"], "srv2", set(SERVERS), {"g": "srv2"}, g), "srv1")
        self.assertIsNone(placement.failback_target(g["g"], "srv2", {"srv2", "srv3"}, {"g": "srv2"}, g))
        self.assertIsNone(placement.failback_target(g["g"], "srv1", set(SERVERS), {"g": "srv1"}, g))

    def test_holders_from_view(self):
        view = {"srv1": {"a": GroupState.ONLINE.value, "b": GroupState.OFFLINE.value},
                "srv2": {"b": GroupState.OFFLINE_FAILURE.value}}
        self.assertEqual(placement.holders_from_view(view), {"a": "srv1", "b": "srv2"})
        self.assertEqual(placement.policy_rank(groups(("g", ("srv2", "srv1"), 0))["g"], "srv3"), 2)
