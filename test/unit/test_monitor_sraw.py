"""Tests for the sraw monitor: thresholds held for a duration, on a fake clock and a fake sampler."""

import os

import psutil
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cpro.system.runners import run_inline
from cpro.resources.monitors._thresholds import Unreadable
from cpro.resources.monitors.base import CheckStatus
from cpro.resources.monitors.sraw import SystemResourceMonitor, SystemSampler

from test.unit.monitor_contract import MonitorContractMixin, make_environment, make_monitor_config

NOTHING = {"cpu": 0, "memory": 0, "swap": 0, "openfiles": 0, "processes": 0, "threads": 0}


class FakeSampler:
    """Returns whatever the test put in .values; counts the calls."""

    def __init__(self, values=None):
        self.values = dict(values or {})
        self.calls = 0

    def sample(self):
        self.calls += 1
        return dict(self.values)


def make_sraw(clock, sampler=None, run_in_thread=run_inline, **params):
    merged = dict(NOTHING, duration=100.0)
    merged.update(params)
    config = make_monitor_config("sraw", merged)
    return SystemResourceMonitor(clock, config, config.params, make_environment(),
                                 sampler=sampler, run_in_thread=run_in_thread)


class ContractTests(MonitorContractMixin, unittest.TestCase):
    monitor_type = "sraw"

    def setUp(self):
        self.clock = task.Clock()

    def contract_reactor(self):
        return self.clock

    def make_monitor(self):
        return make_sraw(self.clock, FakeSampler({"cpu": 10.0, "memory": 20.0}), cpu=90, memory=90)

    def make_pending_monitor(self):
        # A sample stuck in its thread (a hung statvfs): never answers.
        self.stuck = []

        def never(fn, *args):
            d = defer.Deferred()
            self.stuck.append(d)
            return d

        return make_sraw(self.clock, FakeSampler(), run_in_thread=never, cpu=90)


class DurationTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.sampler = FakeSampler()

    def check_at(self, monitor, when, **values):
        self.clock.advance(when - self.clock.seconds())
        self.sampler.values.update(values)
        return self.successResultOf(monitor.check())

    def test_over_for_the_duration_is_an_error(self):
        monitor = make_sraw(self.clock, self.sampler, cpu=90)
        self.assertEqual(self.check_at(monitor, 0, cpu=50.0).status, CheckStatus.NORMAL)
        result = self.check_at(monitor, 10, cpu=95.0)
        self.assertEqual(result.status, CheckStatus.WARNING)
        self.assertEqual(result.message, "cpu 95.0% over 90% for 0 s (error after 100 s)")
        result = self.check_at(monitor, 60, cpu=96.0)
        self.assertEqual(result.status, CheckStatus.WARNING)
        self.assertEqual(result.message, "cpu 96.0% over 90% for 50 s (error after 100 s)")
        self.assertEqual(self.check_at(monitor, 109, cpu=95.0).status, CheckStatus.WARNING)
        result = self.check_at(monitor, 110, cpu=97.0)
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "cpu 97.0% over 90% for 100 s")
        self.assertEqual(self.check_at(monitor, 170, cpu=99.0).status, CheckStatus.ERROR)

    def test_one_sample_under_restarts_the_count(self):
        monitor = make_sraw(self.clock, self.sampler, memory=80)
        self.check_at(monitor, 0, memory=85.0)
        self.assertEqual(self.check_at(monitor, 90, memory=85.0).status, CheckStatus.WARNING)
        result = self.check_at(monitor, 95, memory=80.0)  # at the limit is not over it
        self.assertEqual(result.status, CheckStatus.NORMAL)
        self.assertEqual(result.message, "memory 80.0%")
        self.assertEqual(self.check_at(monitor, 100, memory=85.0).status, CheckStatus.WARNING)
        self.assertEqual(self.check_at(monitor, 199, memory=85.0).status, CheckStatus.WARNING)
        self.assertEqual(self.check_at(monitor, 200, memory=85.0).status, CheckStatus.ERROR)

    def test_counts_and_disks(self):
        monitor = make_sraw(self.clock, self.sampler, openfiles=1000, processes=500, threads=2000,
                            disks=(("/srv", 90), ("/var", 95)))
        values = {"openfiles": 1200, "processes": 100, "threads": 100,
                  ("disk", "/srv"): 91.5, ("disk", "/var"): 50.0}
        self.assertEqual(self.check_at(monitor, 0).status, CheckStatus.NORMAL)  # nothing read yet
        self.sampler.values.update(values)
        result = self.check_at(monitor, 10)
        self.assertEqual(result.status, CheckStatus.WARNING)
        self.assertEqual(result.message, "open files 1200 over 1000 for 0 s (error after 100 s); "
                                         "disk /srv 91.5% over 90% for 0 s (error after 100 s)")
        result = self.check_at(monitor, 110)
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message,
                         "open files 1200 over 1000 for 100 s; disk /srv 91.5% over 90% for 100 s")

    def test_worst_status_wins_and_names_only_those(self):
        monitor = make_sraw(self.clock, self.sampler, cpu=90, swap=50)
        self.check_at(monitor, 0, cpu=95.0, swap=10.0)
        result = self.check_at(monitor, 60, cpu=95.0, swap=60.0)
        self.assertEqual(result.status, CheckStatus.WARNING)
        self.assertEqual(result.message, "cpu 95.0% over 90% for 60 s (error after 100 s); "
                                         "swap 60.0% over 50% for 0 s (error after 100 s)")
        result = self.check_at(monitor, 100, cpu=95.0, swap=60.0)
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "cpu 95.0% over 90% for 100 s")

    def test_unreadable_value_is_an_error_at_once(self):
        monitor = make_sraw(self.clock, self.sampler, disks=(("/mnt/gone", 90),))
        self.sampler.values[("disk", "/mnt/gone")] = Unreadable("No such file or directory")
        result = self.check_at(monitor, 0)
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "cannot read disk /mnt/gone: No such file or directory")

    def test_missing_value_is_normal(self):
        # The first CPU sample has no interval to measure over yet.
        monitor = make_sraw(self.clock, self.sampler, cpu=90)
        self.sampler.values["cpu"] = None
        self.assertEqual(self.check_at(monitor, 0).status, CheckStatus.NORMAL)

    def test_zero_thresholds_are_not_sampled(self):
        monitor = make_sraw(self.clock, None, cpu=0, memory=75, processes=10,
                            disks=(("/", 0), ("/tmp", 80)))
        sampler = monitor._sampler
        self.assertEqual(sampler.measures, ("memory", "processes"))
        self.assertEqual(sampler.disk_paths, ("/tmp",))

    def test_stop_forgets_the_time_over(self):
        monitor = make_sraw(self.clock, self.sampler, cpu=90)
        self.check_at(monitor, 0, cpu=95.0)
        monitor.stop()
        monitor.start()
        self.assertEqual(self.check_at(monitor, 100, cpu=95.0).status, CheckStatus.WARNING)

    def test_describe(self):
        monitor = make_sraw(self.clock, self.sampler, cpu=90, memory=90)
        self.check_at(monitor, 5, cpu=95.0, memory=30.0)
        self.assertEqual(monitor.describe(), {"cpu": 95.0, "cpu over since": 5.0, "memory": 30.0})

    def test_a_stuck_sample_is_not_started_twice(self):
        runs = []

        def held(fn, *args):
            runs.append(defer.Deferred())
            return runs[-1]

        monitor = make_sraw(self.clock, self.sampler, run_in_thread=held, cpu=90)
        first = monitor.check()
        first.cancel()  # the engine's timeout
        self.failureResultOf(first, defer.CancelledError)
        second = monitor.check()
        self.assertEqual(len(runs), 1)
        self.sampler.values["cpu"] = 5.0
        runs[0].callback({"cpu": 5.0})
        self.assertEqual(self.successResultOf(second).status, CheckStatus.NORMAL)


class FakeProc:
    def __init__(self, testcase, file_nr="1056\t0\t9223372036854775807\n",
                 loadavg="0.10 0.05 0.01 2/345 12345\n"):
        self.root = testcase.mktemp()
        os.makedirs(os.path.join(self.root, "sys", "fs"))
        with open(os.path.join(self.root, "sys", "fs", "file-nr"), "w") as f:
            f.write(file_nr)
        with open(os.path.join(self.root, "loadavg"), "w") as f:
            f.write(loadavg)


class SystemSamplerTests(unittest.SynchronousTestCase):
    def test_reads_proc_files(self):
        proc = FakeProc(self)
        values = SystemSampler(("openfiles", "threads"), proc=proc.root).sample()
        self.assertEqual(values, {"openfiles": 1056, "threads": 345})

    def test_malformed_proc_file_is_unreadable(self):
        proc = FakeProc(self, loadavg="garbage\n")
        value = SystemSampler(("threads",), proc=proc.root).sample()["threads"]
        self.assertIsInstance(value, Unreadable)

    def test_real_system(self):
        sampler = SystemSampler(("cpu", "memory", "swap", "openfiles", "processes", "threads"),
                                (os.getcwd(), "/nonexistent/sraw"))
        first = sampler.sample()
        self.assertIsNone(first["cpu"])
        values = sampler.sample()
        for key in ("cpu", "memory", "swap", ("disk", os.getcwd())):
            self.assertTrue(0.0 <= values[key] <= 100.0, (key, values[key]))
        self.assertGreater(values["openfiles"], 0)
        self.assertGreaterEqual(values["threads"], values["processes"])
        self.assertAlmostEqual(values["processes"], len(psutil.pids()), delta=50)
        self.assertIsInstance(values[("disk", "/nonexistent/sraw")], Unreadable)


class RealThreadTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_samples_in_the_reactor_thread_pool(self):
        config = make_monitor_config("sraw", dict(NOTHING, memory=100, processes=10_000_000,
                                                  duration=60.0, disks=(("/", 100),)))
        monitor = SystemResourceMonitor(reactor, config, config.params, make_environment())
        result = yield monitor.check()
        self.assertEqual(result.status, CheckStatus.NORMAL, result.message)
        self.assertIn("processes ", result.message)
        self.assertIn("disk / ", result.message)
