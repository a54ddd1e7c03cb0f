"""The monitor operations end to end on the client side: the admin 'monitor'
grammar, clpmonctrl against a real admin socket with a fake handler, and the
clpstat -m rendering."""

import io
import json
import shutil
import tempfile

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from cpro import statusview
from cpro.cli import clpmonctrl, clpstat
from cpro.protocols.admin import AdminError, AdminRequest, UsageError, parse_request
from cpro.services.admin import listen_admin
from cpro.testing.fakes import FakeAdminHandler

STATUS = {
    "cluster": {"name": "demo", "status": "Online"},
    "local": "srv1",
    "servers": [{"name": "srv1", "status": "Online", "priority": 0, "heartbeats": []},
                {"name": "srv2", "status": "Online", "priority": 1, "heartbeats": []}],
    "groups": [],
    "resources": [],
    "monitors": [
        {"name": "pidw1", "type": "pidw", "status": "Caution", "servers": [
            {"name": "srv1", "status": "Error", "duration": 0.0123, "error": "process 4242 has gone",
             "retries": 0, "restarts": 1, "failovers": 0, "final_action_done": False, "dummy": True,
             "suspended": False},
            {"name": "srv2", "status": "Normal", "duration": 0.5, "error": ""}]},
        {"name": "genw1", "type": "genw", "status": "Offline", "servers": [
            {"name": "srv1", "status": "Offline"}, {"name": "srv2", "status": "Offline"}]},
    ],
    "monitor_recovery": {"srv1": True, "srv2": False},
}


class GrammarTests(unittest.SynchronousTestCase):
    def parse(self, line):
        return parse_request(line.split())

    def test_monitor_requests(self):
        self.assertEqual(self.parse("monitor suspend"), AdminRequest("monitor", action="suspend"))
        self.assertEqual(self.parse("monitor resume pidw1 --server srv2"),
                         AdminRequest("monitor", action="resume", target="pidw1", server="srv2"))
        self.assertEqual(self.parse("monitor clear pidw1"), AdminRequest("monitor", action="clear", target="pidw1"))
        self.assertEqual(self.parse("monitor dummy on pidw1"),
                         AdminRequest("monitor", action="dummy", target="pidw1", switch=True))
        self.assertEqual(self.parse("monitor dummy off"), AdminRequest("monitor", action="dummy", switch=False))
        self.assertEqual(self.parse("monitor recovery off"),
                         AdminRequest("monitor", action="recovery", switch=False))

    def test_bad_monitor_requests(self):
        for line in ("monitor", "monitor halt", "monitor suspend a b", "monitor dummy maybe pidw1",
                     "monitor dummy", "monitor recovery", "monitor recovery on --server srv1",
                     "monitor suspend --all"):
            with self.assertRaises(UsageError, msg=line) as caught:
                self.parse(line)
            self.assertIn("monitor suspend|resume|clear", str(caught.exception))


class RenderTests(unittest.SynchronousTestCase):
    def test_monitor_view_shows_state_duration_counters_and_last_error(self):
        out = statusview.render_monitors(STATUS)
        lines = out.splitlines()
        self.assertIn("  Recovery action : disabled on srv2", lines)
        self.assertIn("  Monitor0 [pidw1 : Caution]", lines)
        self.assertIn("    server0 [o] : Error            check 0.012 s  restarts 1  dummy failure", lines)
        self.assertIn("                  last error: process 4242 has gone", lines)
        self.assertIn("    server1 [o] : Normal           check 0.500 s", lines)
        self.assertIn("    server0 [o] : Offline", lines)

    def test_old_payloads_still_render(self):
        out = statusview.render_monitors({"servers": [{"name": "srv1", "status": "Online"}],
                                          "monitors": [{"name": "m", "status": "Normal",
                                                        "servers": [{"name": "srv1", "status": "Normal"}]}]})
        self.assertIn("    server0 [o] : Normal", out.splitlines())


class CLITests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cpro-mon-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.endpoint = f"unix:{self.dir}/run/cpro.sock"
        self.handler = FakeAdminHandler(STATUS, [])
        self.port = yield listen_admin(reactor, self.endpoint, self.handler)
        self.addCleanup(self.port.stopListening)

    @defer.inlineCallbacks
    def run_command(self, module, *argv):
        out, err = io.StringIO(), io.StringIO()
        code = yield threads.deferToThread(module.main, list(argv) + ["--admin", self.endpoint],
                                           stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def sent(self):
        return [(r.verb, r.action, r.target, r.server, r.switch) for r in self.handler.requests]

    @defer.inlineCallbacks
    def test_suspend_and_resume(self):
        code, out, _ = yield self.run_command(clpmonctrl, "-s", "-m", "pidw1", "-h", "srv2")
        self.assertEqual((code, out), (0, "Command succeeded.\n"))
        code, _, _ = yield self.run_command(clpmonctrl, "-r")
        self.assertEqual(code, 0)
        code, _, _ = yield self.run_command(clpmonctrl, "-c", "-m", "pidw1")
        self.assertEqual(code, 0)
        self.assertEqual(self.sent(), [("monitor", "suspend", "pidw1", "srv2", None),
                                       ("monitor", "resume", None, None, None),
                                       ("monitor", "clear", "pidw1", None, None)])

    @defer.inlineCallbacks
    def test_dummy_failure(self):
        code, _, _ = yield self.run_command(clpmonctrl, "--dummy-failure", "on", "-m", "pidw1")
        self.assertEqual(code, 0)
        code, _, _ = yield self.run_command(clpmonctrl, "-n", "-m", "pidw1", "-h", "srv2")
        self.assertEqual(code, 0)
        code, _, _ = yield self.run_command(clpmonctrl, "-o")
        self.assertEqual(code, 0)
        self.assertEqual(self.sent(), [("monitor", "dummy", "pidw1", None, True),
                                       ("monitor", "dummy", "pidw1", "srv2", True),
                                       ("monitor", "dummy", None, None, False)])

    @defer.inlineCallbacks
    def test_recovery_switch_prints_per_server_results(self):
        self.handler.responses.append({"servers": [{"name": "srv1", "code": 0, "message": "Command succeeded."},
                                                   {"name": "srv2", "code": 1,
                                                    "message": "server is not reachable"}]})
        code, out, _ = yield self.run_command(clpmonctrl, "--recovery", "off")
        self.assertEqual(code, 1)
        self.assertEqual(out, "Recovery off srv1 : Command succeeded.\nRecovery off srv2 : server is not reachable\n")
        self.assertEqual(self.sent(), [("monitor", "recovery", None, None, False)])

    @defer.inlineCallbacks
    def test_usage_errors(self):
        for argv in ([], ["-s", "-r"], ["-n"], ["--recovery", "off", "-m", "pidw1"], ["--dummy-failure", "maybe"],
                     ["-s", "-x"]):
            code, _, err = yield self.run_command(clpmonctrl, *argv)
            self.assertEqual(code, 2, argv)
            self.assertIn("usage", err)
        self.assertEqual(self.handler.requests, [])

    @defer.inlineCallbacks
    def test_refusal_is_exit_1_with_the_message(self):
        self.handler.responses.append(AdminError("monitor pidw1 does not run on srv2"))
        code, out, err = yield self.run_command(clpmonctrl, "-s", "-m", "pidw1", "-h", "srv2")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, "clpmonctrl: monitor pidw1 does not run on srv2\n")

    @defer.inlineCallbacks
    def test_unreachable_daemon_is_exit_3(self):
        out, err = io.StringIO(), io.StringIO()
        code = yield threads.deferToThread(clpmonctrl.main, ["-s", "--admin", f"unix:{self.dir}/none.sock"],
                                           stdout=out, stderr=err)
        self.assertEqual(code, 3)

    @defer.inlineCallbacks
    def test_list(self):
        code, out, _ = yield self.run_command(clpmonctrl, "-v")
        self.assertEqual(code, 0)
        self.assertIn(" Resource Name    : pidw1", out.splitlines())
        self.assertIn("   Status         : Error", out.splitlines())
        self.assertIn("   Last Check     : 0.012 s", out.splitlines())
        self.assertIn("   Restart Count  : 1", out.splitlines())
        self.assertIn("   Last Error     : process 4242 has gone", out.splitlines())
        self.assertEqual(len([line for line in out.splitlines() if "Resource" in line]), 2)
        code, out, _ = yield self.run_command(clpmonctrl, "-v", "-m", "pidw1", "-h", "srv2")
        self.assertIn("   Status         : Normal", out.splitlines())
        self.assertNotIn("genw1", out)
        code, _, err = yield self.run_command(clpmonctrl, "-v", "-m", "nosuch")
        self.assertEqual(code, 1)
        self.assertIn("no such monitor", err)

    @defer.inlineCallbacks
    def test_clpstat_m_and_json(self):
        code, out, _ = yield self.run_command(clpstat, "-m")
        self.assertEqual(code, 0)
        self.assertIn("last error: process 4242 has gone", out)
        code, out, _ = yield self.run_command(clpstat, "--json")
        self.assertEqual(json.loads(out)["monitors"][0]["servers"][0]["duration"], 0.0123)
