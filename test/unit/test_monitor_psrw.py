"""Tests for the psrw monitor: per-process thresholds held for a duration."""

import os
import shutil

import psutil
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cpro.system.runners import run_inline, thread_runner
from cpro.resources.monitors.base import CheckStatus
from cpro.resources.monitors.psrw import ProcessResourceMonitor, ProcessSampler
from cpro.resources.monitors.psw import ProcessEntry, ProcessTable
from cpro.system.process import spawn_resident

from test.unit.monitor_contract import MonitorContractMixin, make_environment, make_monitor_config
from test.unit.test_process import ProcessTestCase

NOTHING = {"cpu": 0, "memory": 0, "openfiles": 0, "threads": 0}


class FakeSampler:
    """Returns the part of .found ({(pid, start time): {measure: value}}) for the pids asked."""

    def __init__(self, found=None):
        self.found = dict(found or {})
        self.asked = []

    def sample(self, pids):
        self.asked.append(tuple(pids))
        return {key: dict(values) for key, values in self.found.items() if key[0] in pids}


class FakeTable:
    """psw's process table: every process of the sampler is an httpd, plus an sshd."""

    def __init__(self, sampler):
        self.sampler = sampler

    def snapshot(self):
        entries = [ProcessEntry(pid, "httpd", "/usr/sbin/httpd -k start")
                   for pid, _ in self.sampler.found]
        return defer.succeed(tuple(entries) + (ProcessEntry(1, "sshd", "/usr/sbin/sshd -D"),))


def make_psrw(clock, sampler=None, run_in_thread=run_inline, processname="httpd", table=None,
              **params):
    merged = dict(NOTHING, processname=processname, duration=100.0)
    merged.update(params)
    config = make_monitor_config("psrw", merged)
    if table is None and sampler is not None:
        table = FakeTable(sampler)
    return ProcessResourceMonitor(clock, config, config.params, make_environment(),
                                  sampler=sampler, run_in_thread=run_in_thread,
                                  process_table=table)


class ContractTests(MonitorContractMixin, unittest.TestCase):
    monitor_type = "psrw"

    def setUp(self):
        self.clock = task.Clock()

    def contract_reactor(self):
        return self.clock

    def make_monitor(self):
        return make_psrw(self.clock, FakeSampler({(10, 1.0): {"cpu": 5.0}}), cpu=90)

    def make_pending_monitor(self):
        return make_psrw(self.clock, FakeSampler({(10, 1.0): {"cpu": 5.0}}),
                         run_in_thread=lambda fn: defer.Deferred(), cpu=90)


class DurationTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.sampler = FakeSampler()

    def check_at(self, monitor, when):
        self.clock.advance(when - self.clock.seconds())
        return self.successResultOf(monitor.check())

    def test_each_process_has_its_own_duration(self):
        monitor = make_psrw(self.clock, self.sampler, threads=100, openfiles=1000)
        self.sampler.found = {(10, 1.0): {"threads": 150, "openfiles": 10},
                              (11, 1.0): {"threads": 20, "openfiles": 10}}
        result = self.check_at(monitor, 0)
        self.assertEqual(result.status, CheckStatus.WARNING)
        self.assertEqual(result.message, "httpd[10] threads 150 over 100 for 0 s (error after 100 s)")
        self.sampler.found[(11, 1.0)]["openfiles"] = 2000
        self.check_at(monitor, 40)
        result = self.check_at(monitor, 100)
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "httpd[10] threads 150 over 100 for 100 s")
        self.assertEqual(monitor.describe(), {"processname": "httpd", "processes": 2,
                                              "over threshold": ["httpd[10] threads",
                                                                 "httpd[11] open files"]})
        self.sampler.found[(10, 1.0)]["threads"] = 50
        result = self.check_at(monitor, 100 + 50 - 10)  # pid 11 over since 40: 100 s later
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "httpd[11] open files 2000 over 1000 for 100 s")

    def test_warning_before_the_duration(self):
        monitor = make_psrw(self.clock, self.sampler, cpu=80, memory=50)
        self.sampler.found = {(10, 1.0): {"cpu": 120.0, "memory": 10.0}}
        self.check_at(monitor, 0)
        result = self.check_at(monitor, 50)
        self.assertEqual(result.status, CheckStatus.WARNING)
        self.assertEqual(result.message, "httpd[10] cpu 120.0% over 80% for 50 s (error after 100 s)")

    def test_a_reused_pid_starts_afresh(self):
        monitor = make_psrw(self.clock, self.sampler, cpu=80)
        self.sampler.found = {(10, 1.0): {"cpu": 99.0}}
        self.check_at(monitor, 0)
        self.sampler.found = {(10, 7.0): {"cpu": 99.0}}  # same pid, another process
        self.assertEqual(self.check_at(monitor, 100).status, CheckStatus.WARNING)
        self.assertEqual(self.check_at(monitor, 200).status, CheckStatus.ERROR)

    def test_no_process_is_normal(self):
        monitor = make_psrw(self.clock, self.sampler, cpu=80)
        result = self.check_at(monitor, 0)
        self.assertEqual(result.status, CheckStatus.NORMAL)
        self.assertEqual(result.message, "no process named httpd")
        self.sampler.found = {(10, 1.0): {"cpu": 1.0}, (12, 1.0): {"cpu": None}}
        result = self.check_at(monitor, 1)
        self.assertEqual(result.message, "2 process(es) named httpd within thresholds")

    def test_process_gone_is_forgotten(self):
        monitor = make_psrw(self.clock, self.sampler, cpu=80)
        self.sampler.found = {(10, 1.0): {"cpu": 99.0}}
        self.check_at(monitor, 0)
        self.sampler.found = {}
        self.check_at(monitor, 50)
        self.sampler.found = {(10, 1.0): {"cpu": 99.0}}
        self.assertEqual(self.check_at(monitor, 100).status, CheckStatus.WARNING)

    def test_sampler_asks_only_watched_measures(self):
        monitor = make_psrw(self.clock, None, table=FakeTable(self.sampler), cpu=0, memory=10,
                            threads=5)
        self.assertEqual(monitor._sampler.measures, ("memory", "threads"))

    def test_samples_only_matching_processes(self):
        self.sampler.found = {(10, 1.0): {"cpu": 1.0}, (11, 1.0): {"cpu": 1.0}}
        for pattern, pids in (("httpd", (10, 11)), ("/usr/sbin/httpd*", (10, 11)),
                              ("/usr/sbin/httpd", ()), ("sshd", (1,))):
            monitor = make_psrw(self.clock, self.sampler, processname=pattern, cpu=80)
            self.check_at(monitor, 0)
            self.assertEqual(self.sampler.asked[-1], pids, pattern)


class RealProcessTests(ProcessTestCase):
    """ProcessSampler on a real child with a name no other process has."""

    @defer.inlineCallbacks
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.name = f"psrw{os.getpid()}"[:15]
        self.path = os.path.join(directory, self.name)
        shutil.copy(shutil.which("sleep"), self.path)
        self.child = spawn_resident(reactor, [self.path, "30"], None, None)
        self.addCleanup(self.child.terminate, 0.2)
        # Not the shared table: its last scan (up to a second old) may predate this child.
        self.table = ProcessTable(reactor, thread_runner(reactor))
        # The child runs setsid first, then execs the copy: wait for the exec.
        for _ in range(100):
            if psutil.Process(self.child.pid).name() == self.name:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)

    def test_sampler_reads_the_process(self):
        sampler = ProcessSampler(("cpu", "memory", "openfiles", "threads"))
        gone = 2**22 + 1  # above pid_max: never a process
        first = sampler.sample([self.child.pid, gone])
        key = (self.child.pid, psutil.Process(self.child.pid).create_time())
        self.assertEqual(list(first), [key])
        self.assertIsNone(first[key]["cpu"])
        values = sampler.sample([self.child.pid])[key]
        self.assertGreaterEqual(values["cpu"], 0.0)
        self.assertLess(values["memory"], 5.0)
        self.assertGreaterEqual(values["openfiles"], 3)
        self.assertEqual(values["threads"], 1)

    @defer.inlineCallbacks
    def test_matches_the_command_line_as_psw_does(self):
        full = f"{self.path} 30"
        for pattern, found in ((full, 1), (self.path + "*", 1), (self.path, 0), (self.name, 1)):
            config = make_monitor_config("psrw", dict(NOTHING, processname=pattern, threads=5))
            monitor = ProcessResourceMonitor(reactor, config, config.params, make_environment(),
                                             process_table=self.table)
            result = yield monitor.check()
            self.assertEqual(result.status, CheckStatus.NORMAL, result.message)
            self.assertEqual(monitor.describe()["processes"], found, pattern)

    @defer.inlineCallbacks
    def test_monitor_in_the_thread_pool(self):
        config = make_monitor_config("psrw", dict(NOTHING, processname=self.name, threads=1,
                                                  duration=1.0))
        monitor = ProcessResourceMonitor(reactor, config, config.params, make_environment(),
                                         process_table=self.table)
        result = yield monitor.check()
        self.assertEqual(result.status, CheckStatus.NORMAL, result.message)
        self.assertEqual(result.message, f"1 process(es) named {self.name} within thresholds")
