"""Tests for the admin line protocol's codec (cpro.protocols.admin): lines to
words, words to requests, payloads to reply bytes. Pure functions, no
transport; the sessions that use them: test_admin_service."""

import json
import types

from twisted.trial import unittest

from cpro.cluster.states import GroupState
from cpro.protocols import admin
from cpro.protocols.admin import (
    CODE_FAILED,
    CODE_INTERNAL,
    CODE_OK,
    CODE_USAGE,
    HELP_LINES,
    AdminError,
    AdminRequest,
    BadLine,
    Line,
    UsageError,
    decode_line,
    error_reply,
    help_reply,
    notice,
    ok_reply,
    parse_request,
    render_text,
)

STATUS = {
    "cluster": {"name": "demo", "status": "Online"},
    "local": "srv1",
    "servers": [{"name": "srv1", "status": "Online", "priority": 0,
                 "heartbeats": [{"name": "lanhb1", "status": "Normal"}]}],
    "groups": [{"name": "failover1", "status": "Online", "current": "srv1", "resources": ["exec1"]}],
    "resources": [{"name": "exec1", "type": "exec", "status": "Online", "current": "srv1",
                   "group": "failover1"}],
    "monitors": [],
}


class PureTests(unittest.SynchronousTestCase):
    def test_no_io_no_reactor(self):
        modules = [v.__name__ for v in vars(admin).values() if isinstance(v, types.ModuleType)]
        self.assertEqual([m for m in modules if m.split(".")[0] in ("twisted", "socket", "os")], [])


class DecodeLineTests(unittest.SynchronousTestCase):
    def test_words(self):
        self.assertEqual(decode_line(b"group stop 'my group' --server=srv1"),
                         Line("group stop 'my group' --server=srv1", False,
                              ("group", "stop", "my group", "--server=srv1")))

    def test_json_prefix(self):
        line = decode_line(b"json status detail\r")
        self.assertEqual((line.json_mode, line.words, line.text), (True, ("status", "detail"), "json status detail"))

    def test_empty_line(self):
        self.assertEqual(decode_line(b"").words, ())
        self.assertEqual(decode_line(b"   \r").words, ())

    def test_bad_lines(self):
        for raw, message, json_mode in [
            (b"status \xff", "line is not valid UTF-8", False),
            (b"json \xff", "line is not valid UTF-8", False),
            (b"group start 'unterminated", "syntax error: No closing quotation", False),
            (b"json group start 'unterminated", "syntax error: No closing quotation", True),
            (b"json", "usage: json VERB [ARGS...]", True),
            (b" json \r", "usage: json VERB [ARGS...]", True),
        ]:
            e = self.assertRaises(BadLine, decode_line, raw)
            self.assertEqual((str(e), e.json_mode), (message, json_mode), raw)
            self.assertIsInstance(e, UsageError)


class ParseTests(unittest.SynchronousTestCase):
    def test_alert_count_is_ascii_digits(self):
        # Found by the fuzzer: int() refused these with ValueError, not UsageError.
        for bad in ("\u00b2", "9" * 5000, "\u0663", " 5", "+5", "5_0"):
            self.assertRaises(UsageError, parse_request, ["alerts", bad])
        self.assertEqual(parse_request(["alerts", "0042"]).count, 42)

    def test_words_of_a_decoded_line(self):
        self.assertEqual(parse_request(decode_line(b"json group move failover1 --server srv2").words),
                         AdminRequest("group", action="move", target="failover1", server="srv2"))

    def test_monitor_grammar(self):
        self.assertEqual(parse_request(["monitor", "dummy", "on", "mon1", "--server", "srv1"]),
                         AdminRequest("monitor", action="dummy", target="mon1", server="srv1", switch=True))
        self.assertEqual(parse_request(["monitor", "recovery", "off"]),
                         AdminRequest("monitor", action="recovery", switch=False))
        for bad in (["monitor"], ["monitor", "recovery", "on", "--server", "srv1"], ["monitor", "dummy", "maybe"]):
            self.assertRaises(UsageError, parse_request, bad)


class ReplyTests(unittest.SynchronousTestCase):
    def test_ok_text_ends_with_ok(self):
        self.assertEqual(ok_reply(False, AdminRequest("cluster", action="start"), {}), b"OK\n")
        out = ok_reply(False, AdminRequest("status"), STATUS).decode()
        self.assertIn("CLUSTER STATUS", out)
        self.assertTrue(out.endswith("\nOK\n"))

    def test_ok_json_is_one_line(self):
        out = ok_reply(True, AdminRequest("status"), dict(STATUS, result="ignored"))
        self.assertEqual(out.count(b"\n"), 1)
        reply = json.loads(out)
        self.assertEqual(reply["result"], {"code": CODE_OK, "message": ""})
        self.assertEqual(reply["groups"], STATUS["groups"])

    def test_json_values(self):
        payload = {"groups": [{"status": GroupState.ONLINE_PENDING}], "servers": ("a",), "x": {1}, "y": 1.5j}
        reply = json.loads(ok_reply(True, AdminRequest("status"), payload))
        self.assertEqual((reply["groups"][0]["status"], reply["servers"], reply["x"], reply["y"]),
                         ("Online Pending", ["a"], [1], "1.5j"))

    def test_payload_not_a_dict(self):
        e = self.assertRaises(TypeError, ok_reply, True, AdminRequest("status"), ["not", "a", "dict"])
        self.assertEqual(str(e), "handler returned list, expected dict")

    def test_operation_text(self):
        request = AdminRequest("cluster", action="stop", all=True)
        payload = {"message": ["first", 2], "servers": [{"name": "srv1", "code": 0, "message": ""},
                                                        {"name": "srv2", "code": 1, "message": "unreachable"}]}
        self.assertEqual(render_text(request, payload),
                         ["first", "2", "Stop srv1 : Command succeeded.", "Stop srv2 : unreachable"])
        self.assertEqual(render_text(request, {"message": "moved\nto srv2"}), ["moved", "to srv2"])

    def test_help(self):
        self.assertEqual(help_reply(False).decode().splitlines(), HELP_LINES + ["OK"])
        self.assertEqual(json.loads(help_reply(True)), {"result": {"code": 0, "message": ""}, "help": HELP_LINES})

    def test_errors(self):
        self.assertEqual(error_reply(False, CODE_USAGE, "usage: quit"), b"ERR usage: quit\n")
        self.assertEqual(json.loads(error_reply(True, CODE_INTERNAL, "internal error: boom")),
                         {"result": {"code": 3, "message": "internal error: boom"}})
        self.assertEqual(error_reply(False, CODE_FAILED, "two\nlines"), b"ERR two lines\n")
        self.assertEqual(error_reply(False, CODE_FAILED, ""), b"ERR error\n")
        self.assertEqual(notice("too many pending requests (max 32)"), b"ERR too many pending requests (max 32)\n")

    def test_admin_error_code(self):
        self.assertEqual(AdminError("refused").code, CODE_FAILED)
        self.assertEqual(AdminError("refused", code=0).code, CODE_FAILED)
        self.assertEqual(AdminError("refused", code=7).code, 7)
