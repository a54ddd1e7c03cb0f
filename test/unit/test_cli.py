"""Tests for the clp* commands against a real admin socket served by this process.

The admin port (cpro.services.admin) listens on a UNIX socket in a temporary
directory with a fake handler; the commands run in a thread (they are
blocking clients) or as a separate process.
"""

import io
import json
import os
import shutil
import stat
import sys
import tempfile

from twisted.internet import defer, reactor, threads, utils
from twisted.trial import unittest

from cpro.cli import clpcl, clpgrp, clprsc, clpstat, common
from cpro.protocols.admin import AdminError
from cpro.services.admin import listen_admin
from cpro.testing.fakes import FakeAdminHandler

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STATUS = {
    "cluster": {"name": "demo", "status": "Online"},
    "local": "srv1",
    "servers": [
        {"name": "srv1", "status": "Online", "priority": 0,
         "heartbeats": [{"name": "lanhb1", "status": "Normal"}]},
        {"name": "srv2", "status": "Online", "priority": 1,
         "heartbeats": [{"name": "lanhb1", "status": "Normal"}]},
    ],
    "groups": [
        {"name": "failover1", "status": "Online", "current": "srv1", "resources": ["exec1"]},
        {"name": "failover2", "status": "Offline", "current": "", "resources": []},
    ],
    "resources": [{"name": "exec1", "type": "exec", "status": "Online", "current": "srv1",
                   "group": "failover1"}],
    "monitors": [],
}


ALERTS = [{"time": 1700000000.0, "server": "srv2", "module": "nm", "id": 1, "level": "INFO",
           "message": "Server srv2 has started."}]


def FakeHandler():
    return FakeAdminHandler(STATUS, ALERTS)


class CLITestBase(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        # Short directory: AF_UNIX paths are limited to 107 bytes.
        self.dir = tempfile.mkdtemp(prefix="cpro-cli-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "run", "cpro.sock")
        self.endpoint = f"unix:{self.path}"
        self.handler = FakeHandler()
        self.port = yield listen_admin(reactor, self.endpoint, self.handler)
        self.addCleanup(self.port.stopListening)

    @defer.inlineCallbacks
    def run_command(self, module, *argv, admin=True):
        """Run module.main(argv) in a thread; returns (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        args = list(argv) + (["--admin", self.endpoint] if admin else [])
        code = yield threads.deferToThread(module.main, args, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()


class ClpstatTests(CLITestBase):
    def test_socket_is_root_only(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.path)).st_mode), 0o700)

    @defer.inlineCallbacks
    def test_default_view(self):
        code, out, err = yield self.run_command(clpstat)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("CLUSTER STATUS", out)
        self.assertIn("   *srv1 ...........: Online", out)
        self.assertIn("      current       : None", out)
        self.assertEqual(self.handler.requests[0].verb, "status")

    @defer.inlineCallbacks
    def test_views(self):
        code, out, _ = yield self.run_command(clpstat, "-g")
        self.assertEqual(code, 0)
        self.assertIn("server0 [o] : failover1[o]", out)
        code, out, _ = yield self.run_command(clpstat, "-n")
        self.assertIn("[on server1 : Online]", out)
        code, out, _ = yield self.run_command(clpstat, "--detail")
        self.assertIn("priority 1", out)

    @defer.inlineCallbacks
    def test_json(self):
        code, out, _ = yield self.run_command(clpstat, "--json")
        self.assertEqual(code, 0)
        payload = json.loads(out)
        self.assertNotIn("result", payload)
        self.assertEqual(payload["cluster"], {"name": "demo", "status": "Online"})
        self.assertEqual([g["name"] for g in payload["groups"]], ["failover1", "failover2"])
        for key in ("servers", "resources", "monitors"):
            self.assertIn(key, payload)

    @defer.inlineCallbacks
    def test_alerts(self):
        code, out, _ = yield self.run_command(clpstat, "--alerts")
        self.assertEqual(code, 0)
        self.assertIn("Server srv2 has started.", out)
        code, out, _ = yield self.run_command(clpstat, "--alerts", "7", "--json")
        self.assertEqual(json.loads(out)["alerts"][0]["id"], 1)
        self.assertEqual([r.count for r in self.handler.requests], [100, 7])

    @defer.inlineCallbacks
    def test_usage_errors(self):
        code, _, err = yield self.run_command(clpstat, "-g", "-n")
        self.assertEqual(code, 2)
        self.assertIn("not allowed with argument", err)
        code, _, err = yield self.run_command(clpstat, "--alerts", "0")
        self.assertEqual(code, 2)
        self.assertEqual(self.handler.requests, [])

    @defer.inlineCallbacks
    def test_help(self):
        code, out, _ = yield self.run_command(clpstat, "--help")
        self.assertEqual(code, 0)
        self.assertIn("--alerts", out)

    @defer.inlineCallbacks
    def test_daemon_failure(self):
        self.handler.responses.append(AdminError("the cluster is stopping"))
        code, out, err = yield self.run_command(clpstat)
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, "clpstat: the cluster is stopping\n")

    @defer.inlineCallbacks
    def test_environment_endpoint(self):
        old = os.environ.get(common.ENV_ADMIN)
        os.environ[common.ENV_ADMIN] = self.path  # a plain path works too
        self.addCleanup(lambda: os.environ.pop(common.ENV_ADMIN) if old is None
                        else os.environ.__setitem__(common.ENV_ADMIN, old))
        code, out, _ = yield self.run_command(clpstat, admin=False)
        self.assertEqual(code, 0)
        self.assertIn("CLUSTER STATUS", out)

    @defer.inlineCallbacks
    def test_no_reply_in_time(self):
        pending = defer.Deferred()
        self.handler.responses.append(pending)
        code, _, err = yield self.run_command(clpstat, "--timeout", "0.2")
        self.assertEqual(code, 3)
        self.assertIn("no reply from the cpro daemon", err)
        pending.callback({})

    @defer.inlineCallbacks
    def test_as_a_process(self):
        env = dict(os.environ, PYTHONPATH=REPO)
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, ["-m", "cpro.cli.clpstat", "-g", "--admin", self.endpoint],
            env=env, path=REPO)
        self.assertEqual(code, 0, err)
        self.assertIn(b"failover1[o]", out)


class UnreachableTests(unittest.SynchronousTestCase):
    def test_missing_socket(self):
        path = os.path.join(tempfile.gettempdir(), "cpro-missing-dir", "cpro.sock")
        err = io.StringIO()
        code = clpstat.main(["--admin", f"unix:{path}"], stdout=io.StringIO(), stderr=err)
        self.assertEqual(code, 3)
        self.assertEqual(
            err.getvalue(),
            f"clpstat: cannot reach the cpro daemon at unix:{path}: No such file or directory"
            " (is it running? use --admin)\n")

    def test_refused_tcp(self):
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        err = io.StringIO()
        code = clpcl.main(["-s", "--admin", f"tcp:127.0.0.1:{port}"], stdout=io.StringIO(), stderr=err)
        self.assertEqual(code, 3)
        self.assertIn("Connection refused", err.getvalue())

    def test_bad_endpoint(self):
        err = io.StringIO()
        self.assertEqual(clpstat.main(["--admin", "http://x"], stdout=io.StringIO(), stderr=err), 2)
        self.assertIn("not unix:PATH", err.getvalue())

    def test_parse_endpoint(self):
        import socket

        self.assertEqual(common.parse_endpoint("unix:/run/x.sock"), (socket.AF_UNIX, "/run/x.sock"))
        self.assertEqual(common.parse_endpoint("/run/x.sock"), (socket.AF_UNIX, "/run/x.sock"))
        self.assertEqual(common.parse_endpoint("tcp:127.0.0.1:29099"), (socket.AF_INET, ("127.0.0.1", 29099)))
        self.assertEqual(common.parse_endpoint("tcp:[::1]:29099"), (socket.AF_INET6, ("::1", 29099)))
        for bad in ("tcp:127.0.0.1", "tcp::1", "tcp:h:99999", "unix:", "ssl:1"):
            self.assertRaises(ValueError, common.parse_endpoint, bad)

    def test_default_endpoint(self):
        old = os.environ.pop(common.ENV_ADMIN, None)
        if old is not None:
            self.addCleanup(os.environ.__setitem__, common.ENV_ADMIN, old)
        self.assertEqual(common.default_endpoint(), "unix:/run/cpro/cpro.sock")


class UsageTests(unittest.SynchronousTestCase):
    """Usage errors never reach the daemon (no --admin needed)."""

    def check(self, module, argv, needle):
        err = io.StringIO()
        code = module.main(argv, stdout=io.StringIO(), stderr=err)
        self.assertEqual(code, 2, err.getvalue())
        self.assertIn(needle, err.getvalue())

    def test_usage(self):
        self.check(clpcl, [], "one of the arguments")
        self.check(clpcl, ["-s", "-t"], "not allowed")
        self.check(clpgrp, [], "one of the arguments")
        self.check(clpgrp, ["-s", "g", "-a", "srv2"], "-a SERVER is the move destination")
        self.check(clpgrp, ["-m", "g", "-a", "srv2", "-h", "srv3"], "different servers")
        self.check(clprsc, ["-s"], "expected one argument")
        self.check(clprsc, [], "one of the arguments")
        self.check(clpstat, ["--bogus"], "unrecognized arguments")


class ClpclTests(CLITestBase):
    @defer.inlineCallbacks
    def test_start(self):
        code, out, err = yield self.run_command(clpcl, "-s")
        self.assertEqual((code, out, err), (0, "Command succeeded.\n", ""))
        [request] = self.handler.requests
        self.assertEqual((request.verb, request.action, request.all), ("cluster", "start", False))

    @defer.inlineCallbacks
    def test_actions(self):
        for flags, action in ((["-t", "-a"], "stop"), (["-r"], "restart"),
                              (["--suspend", "-a"], "suspend"), (["--resume"], "resume")):
            code, _, _ = yield self.run_command(clpcl, *flags)
            self.assertEqual(code, 0)
            self.assertEqual(self.handler.requests[-1].action, action)
            self.assertEqual(self.handler.requests[-1].all, "-a" in flags)

    @defer.inlineCallbacks
    def test_per_server_lines(self):
        self.handler.responses.append({"servers": [{"name": "srv1", "code": 0, "message": ""},
                                                   {"name": "srv2", "code": 0, "message": ""}]})
        code, out, _ = yield self.run_command(clpcl, "-s", "-a")
        self.assertEqual(code, 0)
        self.assertEqual(out, "Start srv1 : Command succeeded.\nStart srv2 : Command succeeded.\n")

    @defer.inlineCallbacks
    def test_partial_failure(self):
        self.handler.responses.append({"servers": [{"name": "srv1", "code": 0, "message": ""},
                                                   {"name": "srv2", "code": 1, "message": "unreachable"}]})
        code, out, _ = yield self.run_command(clpcl, "-t", "-a")
        self.assertEqual(code, 1)
        self.assertIn("Stop srv2 : unreachable", out)

    @defer.inlineCallbacks
    def test_refused(self):
        self.handler.responses.append(AdminError("a group recovery is in progress"))
        code, out, err = yield self.run_command(clpcl, "--suspend")
        self.assertEqual((code, out), (1, ""))
        self.assertIn("a group recovery is in progress", err)


class ClpgrpTests(CLITestBase):
    @defer.inlineCallbacks
    def test_start_group_on_host(self):
        code, out, _ = yield self.run_command(clpgrp, "-s", "failover1", "-h", "srv2")
        self.assertEqual((code, out), (0, "Command succeeded.\n"))
        r = self.handler.requests[-1]
        self.assertEqual((r.verb, r.action, r.target, r.server), ("group", "start", "failover1", "srv2"))

    @defer.inlineCallbacks
    def test_all_groups(self):
        code, _, _ = yield self.run_command(clpgrp, "-t")
        self.assertEqual(code, 0)
        r = self.handler.requests[-1]
        self.assertEqual((r.action, r.target, r.server), ("stop", None, None))

    @defer.inlineCallbacks
    def test_move_destination(self):
        for flag in ("-a", "-h"):
            code, _, _ = yield self.run_command(clpgrp, "-m", "failover1", flag, "srv2")
            self.assertEqual(code, 0)
            r = self.handler.requests[-1]
            self.assertEqual((r.action, r.target, r.server), ("move", "failover1", "srv2"))
        code, _, _ = yield self.run_command(clpgrp, "-m", "failover 1")
        self.assertEqual(self.handler.requests[-1].target, "failover 1")

    @defer.inlineCallbacks
    def test_failure(self):
        self.handler.responses.append(AdminError("no appropriate destination for failover1"))
        code, _, err = yield self.run_command(clpgrp, "-m", "failover1")
        self.assertEqual(code, 1)
        self.assertEqual(err, "clpgrp: no appropriate destination for failover1\n")

    @defer.inlineCallbacks
    def test_where(self):
        code, out, _ = yield self.run_command(clpgrp, "-n", "failover1")
        self.assertEqual((code, out), (0, "srv1\n"))
        code, out, _ = yield self.run_command(clpgrp, "-n", "failover2")
        self.assertEqual((code, out), (0, ""))
        code, _, err = yield self.run_command(clpgrp, "-n", "nope")
        self.assertEqual(code, 1)
        self.assertIn("no group named 'nope'", err)


class ClprscTests(CLITestBase):
    @defer.inlineCallbacks
    def test_start_and_stop(self):
        code, out, _ = yield self.run_command(clprsc, "-s", "exec1")
        self.assertEqual((code, out), (0, "Command succeeded.\n"))
        code, _, _ = yield self.run_command(clprsc, "-t", "exec1", "-h", "srv2")
        self.assertEqual(code, 0)
        self.assertEqual([(r.verb, r.action, r.target, r.server) for r in self.handler.requests],
                         [("resource", "start", "exec1", None), ("resource", "stop", "exec1", "srv2")])

    @defer.inlineCallbacks
    def test_refused(self):
        self.handler.responses.append(AdminError("no resource named exec9"))
        code, _, err = yield self.run_command(clprsc, "-s", "exec9")
        self.assertEqual(code, 1)
        self.assertIn("no resource named exec9", err)
