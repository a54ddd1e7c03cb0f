"""Tests for the mtw monitor: thresholds over the states of member monitors."""

from twisted.internet import task
from twisted.trial import unittest

from cpro.cluster.states import MonitorState
from cpro.resources.monitors.base import CheckStatus
from cpro.resources.monitors.mtw import MultiTargetMonitor

from test.unit.monitor_contract import MonitorContractMixin, make_environment, make_monitor_config

N, W, E = MonitorState.NORMAL, MonitorState.WARNING, MonitorState.ERROR


def make_mtw(states, members=None, **params):
    """An mtw over `states` ({member: MonitorState}); params as clp.conf's."""
    params.setdefault("members", tuple(members if members is not None else states))
    config = make_monitor_config("mtw", params)
    env = make_environment(monitor_state=states.get)
    return MultiTargetMonitor(task.Clock(), config, config.params, env)


class ContractTests(MonitorContractMixin, unittest.TestCase):
    monitor_type = "mtw"

    def make_monitor(self):
        return make_mtw({"a": N, "b": N})


class ThresholdTests(unittest.SynchronousTestCase):
    def status(self, monitor):
        return self.successResultOf(monitor.check())

    def test_all_normal(self):
        result = self.status(make_mtw({"a": N, "b": N, "c": N}, errorthreshold=2))
        self.assertEqual(result.status, CheckStatus.NORMAL)
        self.assertEqual(result.message, "0 of 3 counted members in error")

    def test_error_at_error_threshold(self):
        states = {"a": E, "b": N, "c": E}
        result = self.status(make_mtw(states, errorthreshold=2, warnthreshold=1))
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertIn("a, c", result.message)
        self.assertIn("error threshold 2 reached", result.message)

    def test_warning_below_error_threshold(self):
        result = self.status(make_mtw({"a": E, "b": N, "c": N}, errorthreshold=2, warnthreshold=1))
        self.assertEqual(result.status, CheckStatus.WARNING)
        self.assertIn("warning threshold 1 reached", result.message)

    def test_warnthreshold_zero_never_warns(self):
        result = self.status(make_mtw({"a": E, "b": N}, errorthreshold=2, warnthreshold=0))
        self.assertEqual(result.status, CheckStatus.NORMAL)

    def test_members_in_warning_are_not_counted(self):
        result = self.status(make_mtw({"a": W, "b": W}, errorthreshold=1, warnthreshold=1))
        self.assertEqual(result.status, CheckStatus.NORMAL)
        self.assertIn("in warning: a, b", result.message)

    def test_default_error_threshold_is_every_member(self):
        monitor = make_mtw({"a": E, "b": E, "c": N})
        self.assertEqual(monitor.error_threshold, 3)
        self.assertEqual(self.status(monitor).status, CheckStatus.WARNING)  # warnthreshold 1
        monitor = make_mtw({"a": E, "b": E, "c": E})
        self.assertEqual(self.status(monitor).status, CheckStatus.ERROR)

    def test_suspended_stopped_and_unknown_members_are_not_counted(self):
        states = {"a": E, "b": MonitorState.SUSPENDED, "c": MonitorState.STOPPED,
                  "d": MonitorState.UNKNOWN}
        result = self.status(make_mtw(states, members=("a", "b", "c", "d", "gone"),
                                      errorthreshold=2, warnthreshold=0))
        self.assertEqual(result.status, CheckStatus.NORMAL)
        self.assertEqual(result.message, "1 of 1 counted members in error (a)")

    def test_follows_member_changes_between_checks(self):
        states = {"a": N, "b": N}
        monitor = make_mtw(states, errorthreshold=2, warnthreshold=1)
        self.assertEqual(self.status(monitor).status, CheckStatus.NORMAL)
        states["a"] = E
        self.assertEqual(self.status(monitor).status, CheckStatus.WARNING)
        states["b"] = E
        self.assertEqual(self.status(monitor).status, CheckStatus.ERROR)
        states["a"] = MonitorState.SUSPENDED
        self.assertEqual(self.status(monitor).status, CheckStatus.WARNING)

    def test_describe_names_member_states(self):
        monitor = make_mtw({"a": E, "b": N}, errorthreshold=2)
        self.status(monitor)
        self.assertEqual(monitor.describe(), {"members": {"a": "Error", "b": "Normal"},
                                              "errorthreshold": 2, "warnthreshold": 1})
