"""Tests for cpro.resources.exec: real start/stop scripts on the real reactor."""

import os
import signal

from twisted.internet import defer, reactor
from zope.interface.verify import verifyObject

from cpro.config.model import ExecParams, ResourceConfig
from cpro.interfaces import IGroupResource
from cpro.resources.base import ActionContext, ResourceError
from cpro.resources.exec import ExecResource
from cpro.system.process import DEFAULT_PATH

from test.unit.test_process import ProcessTestCase, is_gone, read_when_present, wait_gone, write_script


def make_config(start, stop=None, sync=True, start_timeout=5.0, stop_timeout=5.0, userlog=None, name="exec1"):
    return ResourceConfig(
        name=name,
        type="exec",
        group="failover1",
        depends=None,
        act_retry=0,
        act_fo=1,
        act_action=1,
        deact_retry=0,
        deact_action=4,
        params=ExecParams(
            start_path=start,
            stop_path=stop,
            start_sync=sync,
            stop_sync=True,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            userlog=userlog,
        ),
    )


def read_env(path):
    with open(path) as f:
        return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)


def count_lines(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return len(f.read().splitlines())


START = ActionContext(event="START", group="failover1", server="srv1", home=True)


class ExecResourceTests(ProcessTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.scripts = os.path.join(self.dir, "scripts", "failover1", "exec1")
        self.logs = os.path.join(self.dir, "log")
        os.makedirs(self.scripts)
        os.makedirs(self.logs)

    def script(self, name, body, mode=0o755):
        return write_script(self.scripts, name, body, mode)

    def resource(self, start, stop=None, **kw):
        base_env = kw.pop("base_env", None)
        return ExecResource(reactor, make_config(start, stop, **kw), self.logs, base_env=base_env, kill_grace=0.3)

    def out(self, name):
        return os.path.join(self.dir, name)

    def test_provides_interface(self):
        res = self.resource(self.script("start.sh", "exit 0"))
        self.assertTrue(verifyObject(IGroupResource, res))
        self.assertEqual((res.name, res.type), ("exec1", "exec"))
        self.assertEqual(res.describe(), {"pid": None, "log": os.path.join(self.logs, "exec1.log"), "last_exit": None})

    # synchronous start

    @defer.inlineCallbacks
    def test_sync_start_success_and_environment(self):
        env_file = self.out("start.env")
        res = self.resource(self.script("start.sh", f"env > {env_file}\necho started"), base_env={"LANG": "C"})
        context = ActionContext(
            event="FAILOVER",
            group="failover1",
            server="srv2",
            home=False,
            factor="GROUPFAILOVER",
            disk="FAILURE",
            extra_env={"CLP_PRIORITY": "2", "CLP_EVENT": "ignored"},
        )
        self.assertIsNone((yield res.activate(context)))
        env = read_env(env_file)
        self.assertEqual(env["CLP_EVENT"], "FAILOVER")
        self.assertEqual(env["CLP_SERVER"], "OTHER")
        self.assertEqual(env["CLP_GROUPNAME"], "failover1")
        self.assertEqual(env["CLP_RESOURCENAME"], "exec1")
        self.assertEqual(env["CLP_FACTOR"], "GROUPFAILOVER")
        self.assertEqual(env["CLP_DISK"], "FAILURE")
        self.assertEqual(env["CLP_SCRIPT_PATH"], self.scripts)
        self.assertEqual(env["CPRO_SERVER_NAME"], "srv2")
        self.assertEqual(env["CLP_PRIORITY"], "2")
        self.assertEqual(env["LANG"], "C")
        self.assertEqual(env["PATH"], DEFAULT_PATH)
        self.assertNotIn("CLP_PID", env)
        self.assertEqual(res.describe()["last_exit"], 0)
        with open(res.log_path) as f:
            self.assertIn("started\n", f.read())

    @defer.inlineCallbacks
    def test_home_server(self):
        env_file = self.out("start.env")
        res = self.resource(self.script("start.sh", f"env > {env_file}"))
        yield res.activate(START)
        env = read_env(env_file)
        self.assertEqual((env["CLP_SERVER"], env["CLP_EVENT"], env["CLP_DISK"]), ("HOME", "START", "SUCCESS"))

    @defer.inlineCallbacks
    def test_sync_start_failure_names_exit_code(self):
        path = self.script("start.sh", "echo broken >&2\nexit 3")
        res = self.resource(path)
        err = yield self.assertFailure(res.activate(START), ResourceError)
        self.assertEqual(str(err), f"start script {path} exited with code 3")
        self.assertEqual(res.describe()["last_exit"], 3)
        with open(res.log_path) as f:
            self.assertIn("broken\n", f.read())

    @defer.inlineCallbacks
    def test_sync_start_killed_by_signal(self):
        path = self.script("start.sh", "kill -KILL $$")
        err = yield self.assertFailure(self.resource(path).activate(START), ResourceError)
        self.assertIn(path, str(err))
        self.assertIn(f"signal {int(signal.SIGKILL)} (SIGKILL)", str(err))

    @defer.inlineCallbacks
    def test_sync_start_timeout_kills_process_group(self):
        gc_file = self.out("grandchild")
        path = self.script("start.sh", f"sleep 30 &\necho $! > {gc_file}\nsleep 30")
        res = self.resource(path, start_timeout=0.3)
        err = yield self.assertFailure(res.activate(START), ResourceError)
        self.assertEqual(str(err), f"start script {path} timed out after 0.3 s (process group killed)")
        grandchild = int((yield read_when_present(gc_file)))
        self.assertTrue((yield wait_gone(grandchild)), f"grandchild {grandchild} survived the timeout")

    @defer.inlineCallbacks
    def test_missing_start_script(self):
        path = os.path.join(self.scripts, "absent.sh")
        err = yield self.assertFailure(self.resource(path).activate(START), ResourceError)
        self.assertIn(path, str(err))
        self.assertIn("no such file", str(err))

    @defer.inlineCallbacks
    def test_missing_async_start_script(self):
        path = os.path.join(self.scripts, "absent.sh")
        res = self.resource(path, sync=False)
        err = yield self.assertFailure(res.activate(START), ResourceError)
        self.assertIn(path, str(err))
        self.assertIsNone(res.pid)

    @defer.inlineCallbacks
    def test_not_executable_start_script(self):
        path = self.script("start.sh", "exit 0", mode=0o644)
        err = yield self.assertFailure(self.resource(path).activate(START), ResourceError)
        self.assertIn(path, str(err))
        self.assertIn("not executable", str(err))

    @defer.inlineCallbacks
    def test_too_many_variables(self):
        runs = self.out("runs")
        base_env = {f"V{i}": "x" for i in range(250)}
        res = self.resource(self.script("start.sh", f"echo run >> {runs}"), base_env=base_env)
        err = yield self.assertFailure(res.activate(START), ResourceError)
        # 250 + 8 standard variables + PATH
        self.assertIn("259 variables", str(err))
        self.assertIn("255", str(err))
        self.assertEqual(count_lines(runs), 0)

    @defer.inlineCallbacks
    def test_variable_limit_is_inclusive(self):
        runs = self.out("runs")
        base_env = {f"V{i}": "x" for i in range(246)}
        yield self.resource(self.script("start.sh", f"echo run >> {runs}"), base_env=base_env).activate(START)
        self.assertEqual(count_lines(runs), 1)

    @defer.inlineCallbacks
    def test_userlog(self):
        userlog = self.out("user.log")
        res = self.resource(self.script("start.sh", "echo hello"), self.script("stop.sh", "echo bye"), userlog=userlog)
        self.assertEqual(res.log_path, userlog)
        yield res.activate(START)
        yield res.deactivate(START)
        with open(userlog) as f:
            text = f.read()
        self.assertLess(text.index("hello\n"), text.index("bye\n"))
        self.assertFalse(os.path.exists(os.path.join(self.logs, "exec1.log")))

    @defer.inlineCallbacks
    def test_log_directory_created(self):
        userlog = self.out("new/dir/exec1.log")
        res = self.resource(self.script("start.sh", "echo hello"), userlog=userlog)
        yield res.activate(START)
        with open(userlog) as f:
            self.assertIn("hello\n", f.read())

    # idempotency and the stop script

    @defer.inlineCallbacks
    def test_sync_idempotent(self):
        starts, stops = self.out("starts"), self.out("stops")
        res = self.resource(self.script("start.sh", f"echo x >> {starts}"), self.script("stop.sh", f"echo x >> {stops}"))
        yield res.activate(START)
        yield res.activate(START)
        self.assertEqual(count_lines(starts), 1)
        yield res.deactivate(START)
        yield res.deactivate(START)
        self.assertEqual(count_lines(stops), 1)
        yield res.activate(START)
        self.assertEqual(count_lines(starts), 2)

    @defer.inlineCallbacks
    def test_concurrent_activations_run_once(self):
        starts = self.out("starts")
        res = self.resource(self.script("start.sh", f"echo x >> {starts}"))
        yield defer.gatherResults([res.activate(START), res.activate(START)])
        self.assertEqual(count_lines(starts), 1)

    @defer.inlineCallbacks
    def test_deactivate_without_activate_runs_stop(self):
        """After a daemon restart the service may be up: the stop script runs."""
        env_file = self.out("stop.env")
        res = self.resource(self.script("start.sh", "exit 0"), self.script("stop.sh", f"env > {env_file}"))
        yield res.deactivate(START)
        env = read_env(env_file)
        self.assertEqual(env["CLP_EVENT"], "START")
        self.assertEqual(env["CLP_RESOURCENAME"], "exec1")
        self.assertNotIn("CLP_PID", env)

    @defer.inlineCallbacks
    def test_deactivate_without_stop_script(self):
        res = self.resource(self.script("start.sh", "exit 0"))
        yield res.activate(START)
        self.assertIsNone((yield res.deactivate(START)))

    @defer.inlineCallbacks
    def test_stop_failure_is_retried(self):
        stops = self.out("stops")
        path = self.script("stop.sh", f"echo x >> {stops}\nexit 2")
        res = self.resource(self.script("start.sh", "exit 0"), path)
        yield res.activate(START)
        err = yield self.assertFailure(res.deactivate(START), ResourceError)
        self.assertEqual(str(err), f"stop script {path} exited with code 2")
        yield self.assertFailure(res.deactivate(START), ResourceError)
        self.assertEqual(count_lines(stops), 2)

    @defer.inlineCallbacks
    def test_stop_timeout(self):
        path = self.script("stop.sh", "sleep 30")
        res = self.resource(self.script("start.sh", "exit 0"), path, stop_timeout=0.2)
        err = yield self.assertFailure(res.deactivate(START), ResourceError)
        self.assertEqual(str(err), f"stop script {path} timed out after 0.2 s (process group killed)")

    @defer.inlineCallbacks
    def test_failed_start_then_deactivate_runs_stop(self):
        stops = self.out("stops")
        res = self.resource(self.script("start.sh", "exit 1"), self.script("stop.sh", f"echo x >> {stops}"))
        yield self.assertFailure(res.activate(START), ResourceError)
        yield res.deactivate(START)
        self.assertEqual(count_lines(stops), 1)

    # asynchronous start

    @defer.inlineCallbacks
    def test_async_start_and_stop(self):
        pid_file, gc_file, env_file = self.out("pid"), self.out("grandchild"), self.out("stop.env")
        start = self.script("start.sh", f"sleep 30 &\necho $! > {gc_file}\necho $$ > {pid_file}\nenv > {pid_file}.env\nsleep 30")
        stop = self.script("stop.sh", f"env > {env_file}")
        res = self.resource(start, stop, sync=False)
        self.assertIsNone((yield res.activate(START)))
        pid = res.pid
        self.assertIsNotNone(pid)
        self.assertEqual(int((yield read_when_present(pid_file))), pid)
        grandchild = int((yield read_when_present(gc_file)))
        yield read_when_present(pid_file + ".env")
        self.assertNotIn("CLP_PID", read_env(pid_file + ".env"))
        self.assertFalse(is_gone(pid))
        self.assertEqual(res.describe()["pid"], pid)

        # Idempotent: no second copy.
        yield res.activate(START)
        self.assertEqual(res.pid, pid)

        yield res.deactivate(START)
        env = read_env(env_file)
        self.assertEqual(env["CLP_PID"], str(pid))
        self.assertEqual(env["CLP_GROUPNAME"], "failover1")
        self.assertIsNone(res.pid)
        self.assertTrue((yield wait_gone(pid)))
        self.assertTrue((yield wait_gone(grandchild)))
        self.assertEqual(res.describe()["last_exit"], 0)  # the stop script's

    @defer.inlineCallbacks
    def test_async_start_that_exits_quickly(self):
        res = self.resource(self.script("start.sh", "exit 5"), sync=False)
        yield res.activate(START)
        result = yield res._resident.ended
        self.assertEqual(result.exit_code, 5)
        self.assertIsNone(res.pid)
        self.assertEqual(res.describe()["last_exit"], 5)

    @defer.inlineCallbacks
    def test_async_restarted_after_exit(self):
        starts = self.out("starts")
        res = self.resource(self.script("start.sh", f"echo x >> {starts}"), sync=False)
        yield res.activate(START)
        yield res._resident.ended
        yield res.activate(START)
        yield res._resident.ended
        self.assertEqual(count_lines(starts), 2)

    @defer.inlineCallbacks
    def test_async_deactivate_without_stop_script(self):
        pid_file = self.out("pid")
        res = self.resource(self.script("start.sh", f"echo $$ > {pid_file}\nexec sleep 30"), sync=False)
        yield res.activate(START)
        pid = res.pid
        yield read_when_present(pid_file)
        yield res.deactivate(START)
        self.assertIsNone(res.pid)
        self.assertTrue((yield wait_gone(pid)))
        # deactivate again: nothing left to do
        yield res.deactivate(START)
