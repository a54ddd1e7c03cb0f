"""Tests for the genw monitor: real scripts on the real reactor (they are cheap)."""

import os

from twisted.internet import defer, reactor, task

from cpro.resources.monitors.base import CheckStatus
from cpro.resources.monitors.genw import CustomMonitor

from test.unit.monitor_contract import MonitorContractMixin, make_environment, make_monitor_config
from test.unit.test_process import ProcessTestCase, is_gone, read_when_present, wait_gone, write_script


@defer.inlineCallbacks
def check_until(monitor, status, limit=2.0):
    """Check every 20 ms until the result has status (or the limit passes); return the last result."""
    waited = 0.0
    while True:
        result = yield monitor.check()
        if result.status == status or waited >= limit:
            return result
        yield task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


class GenwTestCase(ProcessTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def script(self, body, name="genw.sh"):
        return write_script(self.dir, name, body)

    def monitor(self, path, **params):
        params = {"path": path, "sync": 1, "normalval": 0, "waitmonstart": 0, **params}
        config = make_monitor_config("genw", params)
        monitor = CustomMonitor(reactor, config, config.params, make_environment(local="srv1"), kill_grace=0.3)
        self.addCleanup(lambda: defer.maybeDeferred(monitor.stop))
        return monitor


class SyncContractTests(MonitorContractMixin, GenwTestCase):
    monitor_type = "genw"

    def make_monitor(self):
        return self.monitor("/bin/true")

    def make_pending_monitor(self):
        # sh with a sleep child: the cancel must end the whole process group.
        return self.monitor(self.script("sleep 30; exit 0"))


class AsyncContractTests(MonitorContractMixin, GenwTestCase):
    monitor_type = "genw"

    def make_monitor(self):
        return self.monitor(self.script("exec sleep 30"), sync=0)


class SyncTests(GenwTestCase):
    @defer.inlineCallbacks
    def test_exit_code_other_than_normal_value_is_error(self):
        result = yield self.monitor("/bin/false").check()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "custom monitor script /bin/false exited with code 1 (normal value 0)")

    @defer.inlineCallbacks
    def test_normal_value_is_configurable(self):
        monitor = self.monitor("/bin/false", normalval=1)
        result = yield monitor.check()
        self.assertEqual(result.status, CheckStatus.NORMAL)
        self.assertEqual(monitor.describe(), {"path": "/bin/false", "sync": True, "last_exit": 1})
        result = yield self.monitor("/bin/true", normalval=1).check()
        self.assertEqual(result.status, CheckStatus.ERROR)

    @defer.inlineCallbacks
    def test_killed_by_signal_is_error(self):
        path = self.script("kill -KILL $$")
        result = yield self.monitor(path).check()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, f"custom monitor script {path} was killed by signal 9 (SIGKILL)")

    @defer.inlineCallbacks
    def test_missing_script_is_error(self):
        path = os.path.join(self.dir, "missing.sh")
        result = yield self.monitor(path).check()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, f"custom monitor script: cannot run {path}: no such file")

    @defer.inlineCallbacks
    def test_environment_and_user_log(self):
        out = os.path.join(self.dir, "env")
        userlog = os.path.join(self.dir, "genw.log")
        path = self.script(f"env > {out}.tmp; mv {out}.tmp {out}; echo hello from genw")
        result = yield self.monitor(path, userlog=userlog).check()
        self.assertEqual(result.status, CheckStatus.NORMAL)
        with open(out) as f:
            env = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
        self.assertEqual(env["CLP_MONITORNAME"], "genw1")
        self.assertEqual(env["CLP_SERVERNAME"], "srv1")
        self.assertEqual(env["CLP_SCRIPT_PATH"], self.dir)
        self.assertNotIn("HOME", env)  # nothing inherited from the daemon
        with open(userlog) as f:
            self.assertIn("hello from genw\n", f.read())

    @defer.inlineCallbacks
    def test_stop_cancels_a_running_check_and_kills_the_script(self):
        pidfile = os.path.join(self.dir, "pid")
        monitor = self.monitor(self.script(f"echo $$ > {pidfile}; exec sleep 30"))
        yield monitor.start()
        d = monitor.check()
        pid = int((yield read_when_present(pidfile)))
        monitor.stop()
        yield self.assertFailure(d, defer.CancelledError)
        self.assertTrue((yield wait_gone(pid)))


class AsyncTests(GenwTestCase):
    @defer.inlineCallbacks
    def test_resident_script_runs_until_stop(self):
        pidfile = os.path.join(self.dir, "pid")
        monitor = self.monitor(self.script(f"echo $$ > {pidfile}; exec sleep 30"), sync=0)
        self.assertIsNone(monitor.start())
        pid = int((yield read_when_present(pidfile)))
        self.assertEqual(monitor.describe()["pid"], pid)
        result = yield monitor.check()
        self.assertEqual(result.status, CheckStatus.NORMAL)
        yield monitor.stop()
        self.assertTrue(is_gone(pid))
        self.assertIsNone(monitor.describe()["pid"])
        result = yield monitor.check()
        self.assertEqual((result.status, result.message), (CheckStatus.ERROR, "monitoring has not been started"))

    @defer.inlineCallbacks
    def test_ended_script_is_error_then_started_again(self):
        count = os.path.join(self.dir, "count")
        path = self.script(f"echo run >> {count}; exit 3")
        monitor = self.monitor(path, sync=0)
        monitor.start()
        result = yield check_until(monitor, CheckStatus.ERROR)
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertRegex(result.message, rf"^resident custom monitor script {path} \(pid \d+\) exited with code 3$")
        self.assertEqual(monitor.describe()["last_exit"], 3)
        # Started again by that check: a second run is recorded.
        waited = 0.0
        while waited < 2.0:
            with open(count) as f:
                if len(f.read().splitlines()) >= 2:
                    break
            yield task.deferLater(reactor, 0.02, lambda: None)
            waited += 0.02
        with open(count) as f:
            self.assertGreaterEqual(len(f.read().splitlines()), 2)

    @defer.inlineCallbacks
    def test_normal_during_waitmonstart(self):
        pidfile = os.path.join(self.dir, "pid")
        monitor = self.monitor(self.script(f"echo $$ > {pidfile}; exit 3"), sync=0, waitmonstart=60)
        monitor.start()
        pid = int((yield read_when_present(pidfile)))
        yield wait_gone(pid)
        result = yield check_until(monitor, CheckStatus.ERROR, limit=0.3)
        self.assertEqual(result.status, CheckStatus.NORMAL)
        self.assertEqual(result.message, "waiting for the monitor start wait (waitmonstart) to pass")

    @defer.inlineCallbacks
    def test_script_that_cannot_start_is_error(self):
        path = os.path.join(self.dir, "missing.sh")
        monitor = self.monitor(path, sync=0)
        monitor.start()
        result = yield monitor.check()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, f"custom monitor script could not be started: cannot run {path}: no such file")

    @defer.inlineCallbacks
    def test_stop_kills_the_whole_group(self):
        pidfile = os.path.join(self.dir, "pids")
        # The child ignores SIGTERM: stop must escalate to SIGKILL for the group.
        path = self.script(f"sh -c 'trap \"\" TERM; echo $$ >> {pidfile}; sleep 30' & wait")
        monitor = self.monitor(path, sync=0)
        monitor.start()
        child = int((yield read_when_present(pidfile)))
        yield monitor.stop()
        self.assertTrue((yield wait_gone(child)))
