"""Tests for the pidw monitor: a real asynchronous exec resource and its resident script."""

import os
import signal

from twisted.internet import defer, reactor, task

from cpro.resources.base import ActionContext
from cpro.resources.exec import ExecResource
from cpro.resources.monitors.base import CheckStatus
from cpro.resources.monitors.pidw import PidMonitor
from cpro.system.process import read_proc_stat

from test.unit.monitor_contract import MonitorContractMixin, make_environment, make_monitor_config
from test.unit.test_exec import make_config as make_exec_config
from test.unit.test_process import ProcessTestCase, wait_gone, write_script

START = ActionContext(event="START", group="failover1", server="srv1", home=True)


class Resident:
    """A resource exposing resident() as ExecResource does."""

    def __init__(self, identity):
        self.identity = identity

    def resident(self):
        return self.identity


class PidOnly:
    """A resource with only a `pid` attribute (no start time)."""

    def __init__(self, pid):
        self.pid = pid


class PidwTestCase(ProcessTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.resources = {}

    def monitor(self, target="exec1", **kw):
        config = make_monitor_config("pidw", {}, target=target)
        env = make_environment(resource=self.resources.get)
        return PidMonitor(reactor, config, config.params, env, **kw)

    @defer.inlineCallbacks
    def async_exec(self):
        """A real exec resource activated asynchronously: its start script stays resident."""
        start = write_script(self.dir, "start.sh", "exec sleep 30")
        resource = ExecResource(reactor, make_exec_config(start, sync=False), self.dir, kill_grace=0.3)
        yield resource.activate(START)
        self.addCleanup(resource.deactivate, START)
        self.resources["exec1"] = resource
        return resource


class ContractTests(MonitorContractMixin, PidwTestCase):
    monitor_type = "pidw"

    def make_monitor(self):
        # This test process itself: alive, with its real start time.
        self.resources["exec1"] = Resident((os.getpid(), read_proc_stat(os.getpid())[1]))
        return self.monitor()


class RealExecTests(PidwTestCase):
    @defer.inlineCallbacks
    def test_resident_script_alive_then_killed(self):
        resource = yield self.async_exec()
        pid, start_time = resource.resident()
        self.assertEqual(start_time, read_proc_stat(pid)[1])
        monitor = self.monitor()
        result = yield monitor.check()
        self.assertEqual(result.status, CheckStatus.NORMAL, result.message)
        self.assertEqual(monitor.describe(), {"target": "exec1", "pid": pid})

        os.kill(pid, signal.SIGKILL)
        yield wait_gone(pid)
        waited = 0.0
        while resource.resident() is not None and waited < 2.0:  # until the reactor has reaped it
            yield task.deferLater(reactor, 0.02, lambda: None)
            waited += 0.02
        result = yield monitor.check()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "exec1 has no running asynchronous start script")

    @defer.inlineCallbacks
    def test_pid_reuse_is_detected_by_start_time(self):
        resource = yield self.async_exec()
        pid, start_time = resource.resident()
        # The real process, but the script we started is said to have started
        # earlier: the pid now names another process.
        self.resources["exec1"] = Resident((pid, start_time - 1))
        result = yield self.monitor().check()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(
            result.message,
            f"process {pid} of exec1 has ended: pid {pid} now belongs to another process"
            f" (started at tick {start_time}, the script at tick {start_time - 1})",
        )

    @defer.inlineCallbacks
    def test_synchronous_or_inactive_exec_has_no_resident(self):
        start = write_script(self.dir, "start.sh", "exit 0")
        resource = ExecResource(reactor, make_exec_config(start, sync=True), self.dir)
        self.resources["exec1"] = resource
        result = yield self.monitor().check()
        self.assertEqual((result.status, result.message), (CheckStatus.ERROR, "exec1 has no running asynchronous start script"))
        yield resource.activate(START)
        result = yield self.monitor().check()
        self.assertEqual(result.status, CheckStatus.ERROR)


class FakeStatTests(PidwTestCase):
    def stat(self, *answers):
        answers = list(answers)
        return lambda pid: answers.pop(0)

    @defer.inlineCallbacks
    def test_missing_process(self):
        self.resources["exec1"] = Resident((4242, 100))
        result = yield self.monitor(read_stat=self.stat(None)).check()
        self.assertEqual((result.status, result.message), (CheckStatus.ERROR, "process 4242 of exec1 does not exist"))

    @defer.inlineCallbacks
    def test_zombie_is_error(self):
        self.resources["exec1"] = Resident((4242, 100))
        result = yield self.monitor(read_stat=self.stat(("Z", 100))).check()
        self.assertEqual((result.status, result.message), (CheckStatus.ERROR, "process 4242 of exec1 has exited (state Z)"))

    @defer.inlineCallbacks
    def test_without_start_time_the_first_seen_is_kept(self):
        self.resources["exec1"] = PidOnly(4242)
        monitor = self.monitor(read_stat=self.stat(("S", 100), ("S", 100), ("S", 555)))
        self.assertEqual((yield monitor.check()).status, CheckStatus.NORMAL)
        self.assertEqual((yield monitor.check()).status, CheckStatus.NORMAL)
        result = yield monitor.check()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertIn("now belongs to another process", result.message)

    @defer.inlineCallbacks
    def test_target_missing_or_not_configured(self):
        result = yield self.monitor().check()
        self.assertEqual((result.status, result.message), (CheckStatus.ERROR, "target resource exec1 does not exist on this server"))
        result = yield self.monitor(target=None).check()
        self.assertEqual((result.status, result.message), (CheckStatus.ERROR, "no target exec resource is configured"))
