"""Tests for the clpstat text views (cpro.statusview)."""

import copy
import time

from twisted.trial import unittest

from cpro import statusview

STATUS = {
    "cluster": {"name": "demo", "status": "Online"},
    "local": "srv1",
    "servers": [
        {"name": "srv1", "status": "Online", "priority": 0,
         "heartbeats": [{"name": "lanhb1", "status": "Normal"},
                        {"name": "lankhb1", "status": "Error", "type": "lankhb"}]},
        {"name": "srv2", "status": "Offline", "priority": 1,
         "heartbeats": [{"name": "lanhb1", "status": "Unknown"}]},
    ],
    "groups": [
        {"name": "failover1", "status": "Online", "current": "srv1", "resources": ["exec1"]},
        {"name": "failover2", "status": "Offline", "current": "", "resources": ["exec2"]},
    ],
    "resources": [
        {"name": "exec1", "type": "exec", "status": "Online", "current": "srv1", "group": "failover1"},
        {"name": "exec2", "type": "exec", "status": "Offline", "current": "", "group": "failover2"},
    ],
    "monitors": [
        {"name": "userw", "type": "userw", "status": "Normal",
         "servers": [{"name": "srv1", "status": "Normal"}, {"name": "srv2", "status": "Offline"}]},
    ],
}


def line_with(text, needle):
    matches = [line for line in text.splitlines() if needle in line]
    assert len(matches) == 1, (needle, matches)
    return matches[0]


class StatusTests(unittest.SynchronousTestCase):
    def test_layout(self):
        out = statusview.render_status(STATUS)
        lines = out.splitlines()
        self.assertEqual(lines[0], " ========================  CLUSTER STATUS  ===========================")
        self.assertEqual(lines[1], "  Cluster : demo")
        self.assertEqual(lines[2], "  <server>")
        self.assertEqual(lines[-1], " " + "=" * 69)
        self.assertEqual(line_with(out, "srv1 ."), "   *srv1 ...........: Online")
        self.assertEqual(line_with(out, "srv2 ."), "    srv2 ...........: Offline")
        self.assertEqual(line_with(out, "lankhb1"),
                         "      lankhb1       : Error            Kernel Mode LAN Heartbeat")
        self.assertEqual(line_with(out, "failover1"), "    failover1 ......: Online")
        self.assertEqual(line_with(out, "exec1"), "      exec1         : Online")
        self.assertEqual(line_with(out, "userw"), "    userw           : Normal")
        self.assertEqual([line for line in lines if "current" in line],
                         ["      current       : srv1", "      current       : None"])
        self.assertEqual([line.strip() for line in lines if line.strip().startswith("<")],
                         ["<server>", "<group>", "<monitor>"])
        # Heartbeats of srv1 come between srv1 and srv2.
        order = [i for i, line in enumerate(lines) if "srv1 ." in line or "srv2 ." in line or "lankhb1" in line]
        self.assertEqual(len(order), 3)
        self.assertIn("LAN Heartbeat", lines[order[0] + 1])

    def test_colon_column_aligned(self):
        out = statusview.render_status(STATUS)
        body = [line for line in out.splitlines()[3:-1] if not line.strip().startswith("<")]
        self.assertEqual({line.index(":") for line in body}, {20})

    def test_long_names_widen_the_column(self):
        payload = copy.deepcopy(STATUS)
        payload["groups"][0]["name"] = "a-very-long-failover-group-name"
        out = statusview.render_status(payload)
        body = [line for line in out.splitlines()[3:-1] if not line.strip().startswith("<")]
        columns = {line.index(" :") + 1 if " : " in line else line.index(":") for line in body}
        self.assertEqual(len(columns), 1)
        self.assertIn("    a-very-long-failover-group-name .: Online", out)

    def test_empty_payload(self):
        out = statusview.render_status({})
        self.assertIn("CLUSTER STATUS", out)
        self.assertIn("<group>", out)

    def test_missing_status_is_unknown(self):
        out = statusview.render_status({"servers": [{"name": "srv1"}], "local": "srv1"})
        self.assertIn("*srv1 ...........: Unknown", out)

    def test_detail(self):
        out = statusview.render_detail(STATUS)
        self.assertIn("  Status  : Online", out)
        self.assertIn("priority 0", line_with(out, "srv1 ."))
        self.assertIn("priority 1", line_with(out, "srv2 ."))
        self.assertIn("[exec] on srv1", line_with(out, "exec1"))
        self.assertNotIn(" on ", line_with(out, "exec2"))
        self.assertIn("srv2=Offline", line_with(out, "userw"))
        self.assertEqual(out, statusview.render_status(STATUS, detail=True))


class OtherViewTests(unittest.SynchronousTestCase):
    def test_groupmap(self):
        out = statusview.render_groupmap(STATUS)
        self.assertIn("GROUPMAP INFORMATION", out)
        self.assertIn("  Cluster : demo", out)
        self.assertIn("   *server0 : srv1", out)
        self.assertIn("    server1 : srv2", out)
        self.assertIn("    server0 [o] : failover1[o]", out)
        self.assertIn("    server1 [x] :", out)
        self.assertNotIn("failover2", out)  # stopped: runs nowhere

    def test_groupmap_several_groups_and_states(self):
        payload = copy.deepcopy(STATUS)
        payload["groups"][1].update(current="srv1", status="Online Failure")
        out = statusview.render_groupmap(payload)
        self.assertIn("server0 [o] : failover1[o]  failover2[e]", out)

    def test_heartbeats(self):
        out = statusview.render_heartbeats(STATUS)
        self.assertIn("HEARTBEAT RESOURCE STATUS", out)
        self.assertIn("[on server0 : Online]", out)
        self.assertIn("[on server1 : Offline]", out)
        self.assertIn("HB0 : lanhb1", out)
        self.assertIn("HB1 : lankhb1", out)
        after = out.split("[on server1 : Offline]")[1]
        self.assertIn("Unknown", line_with(after, "lanhb1"))

    def test_monitors(self):
        out = statusview.render_monitors(STATUS)
        line = line_with(out, "Monitor0")
        self.assertIn("Monitor", line)
        self.assertTrue(line.endswith("Normal]"))
        self.assertIn("server1 [x] : Offline", out)

    def test_alerts(self):
        when = time.mktime((2024, 1, 20, 16, 34, 51, 0, 0, -1)) + 0.571
        out = statusview.render_alerts({"alerts": [
            {"time": when, "server": "srv1", "module": "rc", "id": 92, "level": "ERROR",
             "message": "Group failover1 has started on more than one server."},
            {"time": when + 1, "server": "server-two", "module": "nm", "id": 2, "level": "INFO",
             "message": "two\nlines"},
        ]})
        lines = out.splitlines()
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[0].startswith("Time"))
        self.assertTrue(lines[1].startswith("2024/01/20 16:34:51.571  srv1 "))
        self.assertRegex(lines[1], r"ERROR\s+rc\s+92  Group failover1 has started")
        self.assertTrue(lines[2].endswith("two lines"))

    def test_no_alerts(self):
        self.assertEqual(statusview.render_alerts({"alerts": []}), "(no alerts)\n")

    def test_operation(self):
        self.assertEqual(statusview.render_operation({}, "Start"), "Command succeeded.\n")
        payload = {"servers": [{"name": "srv1", "code": 0, "message": ""},
                               {"name": "srv2", "code": 1, "message": "not reachable"}]}
        self.assertEqual(statusview.render_operation(payload, "Start"),
                         "Start srv1 : Command succeeded.\nStart srv2 : not reachable\n")
        self.assertTrue(statusview.operation_failed(payload))
        self.assertFalse(statusview.operation_failed({}))


class PacketCounterTests(unittest.SynchronousTestCase):
    def test_heartbeat_view_shows_dropped_packets(self):
        payload = {"cluster": {"name": "c", "status": "Online"}, "local": "srv1",
                   "servers": [{"name": "srv1", "status": "Online", "heartbeats": [{"name": "lanhb1", "status": "Normal"}]}],
                   "counters": {"lanhb1": {"received": 12, "accepted": 9, "malformed": 2, "unauthenticated": 1,
                                           "foreign": 0}}}
        text = statusview.render_heartbeats(payload)
        self.assertIn("lanhb1        : received 12, accepted 9, malformed 2, unauthenticated 1", text)
        self.assertNotIn("foreign", text)

    def test_every_kind_of_path_shows_its_own_counters(self):
        payload = {"cluster": {"name": "c", "status": "Online"}, "local": "srv1", "servers": [],
                   "counters": {"diskhb1": {"written": 40, "accepted": 38, "torn": 1, "wrong_slot": 0},
                                "comhb1": {"received": 0, "accepted": 0}}}
        text = statusview.render_heartbeats(payload)
        self.assertIn("diskhb1       : written 40, accepted 38, torn 1\n", text)
        self.assertIn("comhb1        : nothing yet", text)
