"""Tests for the psw monitor: the test's own `sleep` processes, found with psutil."""

import os

import psutil
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cpro.system.runners import run_inline
from cpro.resources.monitors.base import CheckStatus
from cpro.resources.monitors.psw import (
    ProcessEntry,
    ProcessNameMonitor,
    ProcessTable,
    matches,
    scan_processes,
    shared_process_table,
)
from cpro.system.process import spawn_resident

from test.unit.monitor_contract import HeldRunner, MonitorContractMixin, make_environment, make_monitor_config
from test.unit.test_process import ProcessTestCase


def cmdline(pid):
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return None


def monitor(processname, processnum=1, table=None, clock=reactor):
    config = make_monitor_config("psw", {"processname": processname, "processnum": processnum})
    return ProcessNameMonitor(clock, config, config.params, make_environment(), process_table=table)


class PswTestCase(ProcessTestCase):
    def setUp(self):
        # A number no other test or program is likely to sleep for.
        self.seconds = f"{3000 + os.getpid() % 1000}.{len(self.id()) % 10}"

    @defer.inlineCallbacks
    def sleepers(self, count):
        """Start count `sleep` processes; fires their pids once each has exec'd sleep."""
        pids = []
        for _ in range(count):
            process = spawn_resident(reactor, ["sleep", self.seconds], {}, None)
            self.addCleanup(process.terminate, 0.3)
            pids.append(process.pid)
        waited = 0.0
        while waited < 2.0 and any(cmdline(pid) != ["sleep", self.seconds] for pid in pids):
            yield task.deferLater(reactor, 0.01, lambda: None)
            waited += 0.01
        return pids

    def table(self):
        return ProcessTable(reactor, run_inline)


class ContractTests(MonitorContractMixin, PswTestCase):
    monitor_type = "psw"

    def setUp(self):
        super().setUp()
        return self.sleepers(1)

    def make_monitor(self):
        return monitor(f"sleep {self.seconds}", table=self.table())

    def make_pending_monitor(self):
        self.held = HeldRunner()
        return monitor("sleep", table=ProcessTable(reactor, self.held))

    def assert_nothing_left(self, monitor):
        # The abandoned scan may still finish: nobody is waiting for it any more.
        self.assertEqual(len(self.held.calls), 1)
        self.held.release()


class RealProcessTests(PswTestCase):
    @defer.inlineCallbacks
    def test_count_against_processnum(self):
        yield self.sleepers(2)
        result = yield monitor(f"sleep {self.seconds}", 2, self.table()).check()
        self.assertEqual(result.status, CheckStatus.NORMAL, result.message)
        self.assertEqual(result.message, f"2 process(es) named 'sleep {self.seconds}' running")
        m = monitor(f"sleep {self.seconds}", 3, self.table())
        result = yield m.check()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, f"2 process(es) named 'sleep {self.seconds}' running, fewer than 3")
        self.assertEqual(m.describe(), {"processname": f"sleep {self.seconds}", "processnum": 3, "count": 2})

    @defer.inlineCallbacks
    def test_none_running_is_error(self):
        result = yield monitor(f"sleep {self.seconds}", 1, self.table()).check()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertTrue(result.message.startswith("0 process(es) named"))

    @defer.inlineCallbacks
    def test_wildcard_and_name(self):
        yield self.sleepers(2)
        result = yield monitor(f"sleep {self.seconds[:3]}*", 2, self.table()).check()
        self.assertEqual(result.status, CheckStatus.NORMAL, result.message)
        result = yield monitor("sleep", 2, self.table()).check()  # the process name
        self.assertEqual(result.status, CheckStatus.NORMAL, result.message)
        result = yield monitor(f"sleep {self.seconds[:3]}", 1, self.table()).check()  # no '*': exact only
        self.assertEqual(result.status, CheckStatus.ERROR)

    @defer.inlineCallbacks
    def test_scan_in_the_reactor_thread_pool(self):
        yield self.sleepers(1)
        table = shared_process_table(reactor)
        self.assertIs(shared_process_table(reactor), table)
        result = yield monitor(f"sleep {self.seconds}", 1).check()
        self.assertEqual(result.status, CheckStatus.NORMAL, result.message)

    @defer.inlineCallbacks
    def test_scan_entries(self):
        (pid,) = yield self.sleepers(1)
        entries = {e.pid: e for e in scan_processes()}
        self.assertEqual(entries[pid], ProcessEntry(pid, "sleep", f"sleep {self.seconds}"))
        self.assertEqual(entries[os.getpid()].pid, os.getpid())


class MatchTests(unittest.SynchronousTestCase):
    def test_matches(self):
        nginx = ProcessEntry(10, "nginx", "/usr/sbin/nginx -g daemon off;")
        kthread = ProcessEntry(2, "kthreadd", "[kthreadd]")
        self.assertTrue(matches("/usr/sbin/nginx -g daemon off;", nginx))
        self.assertTrue(matches("nginx", nginx))
        self.assertTrue(matches("/usr/sbin/nginx*", nginx))
        self.assertTrue(matches("ngi*", nginx))
        self.assertFalse(matches("/usr/sbin/nginx", nginx))
        self.assertFalse(matches("*nginx", nginx))
        self.assertTrue(matches("[kthreadd]", kthread))


class SharedTableTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.scans = 0
        self.entries = (ProcessEntry(1, "init", "/sbin/init"), ProcessEntry(7, "app", "/opt/app/bin/app -d"))

    def scan(self):
        self.scans += 1
        return self.entries

    def test_recent_scan_serves_every_monitor(self):
        table = ProcessTable(self.clock, run_inline, scan=self.scan, max_age=1.0)
        monitors = [monitor("/opt/app/bin/app*", 1, table, self.clock) for _ in range(50)]
        results = [self.successResultOf(m.check()) for m in monitors]
        self.assertEqual({r.status for r in results}, {CheckStatus.NORMAL})
        self.assertEqual(self.scans, 1)
        self.clock.advance(1.5)
        self.successResultOf(monitors[0].check())
        self.assertEqual(self.scans, 2)

    def test_checks_during_a_scan_share_it(self):
        held = HeldRunner()
        table = ProcessTable(self.clock, held, scan=self.scan)
        first = monitor("app", 1, table, self.clock).check()
        second = monitor("init", 2, table, self.clock).check()
        self.assertEqual(len(held.calls), 1)
        self.assertNoResult(first)
        held.release()
        self.assertEqual(self.successResultOf(first).status, CheckStatus.NORMAL)
        self.assertEqual(self.successResultOf(second).status, CheckStatus.ERROR)
        self.assertEqual(self.scans, 1)

    def test_cancelled_check_does_not_disturb_the_others(self):
        held = HeldRunner()
        table = ProcessTable(self.clock, held, scan=self.scan)
        first = monitor("app", 1, table, self.clock).check()
        second = monitor("app", 1, table, self.clock).check()
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        held.release()
        self.assertEqual(self.successResultOf(second).status, CheckStatus.NORMAL)

    def test_failed_scan_fails_the_check(self):
        def broken():
            raise OSError("procfs went away")

        table = ProcessTable(self.clock, run_inline, scan=broken)
        failure = self.failureResultOf(monitor("app", 1, table, self.clock).check(), OSError)
        self.assertEqual(str(failure.value), "procfs went away")
