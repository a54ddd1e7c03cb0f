"""Integration: monitor resources in real twistd daemons on loopback (inside a
private network namespace when root), real scripts, real processes, real ICMP.

- a genw whose script fails (a file the test creates makes it exit 1) restarts
  its group, fails it over to the other server, then runs the final action;
- pidw sees the resident process of an asynchronous exec killed and restarts
  the resource;
- clpmonctrl: suspend and resume, dummy failure on and off (the real command,
  its exit codes and effects);
- a hung genw script is killed at the timeout, which counts as an error;
- ipw sees its address stop answering (an nftables drop of ICMP inside the
  lab's namespace) and recover;
- two servers with 500 monitors still exchange their state reports.

Short intervals (1 s checks, 100 ms heartbeats) keep the file fast. The final
action used is 5 (stop the cluster service and reboot): the lab's <osaction>
reboot command only appends a line to its marks file.
"""

import os
import sys

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cpro.testing.lab.common import lab_env
from cpro.testing.lab.loopback import LoopbackCluster, group_current, is_root, run, summary


def monitor_entry(statuses, observer, monitor, server):
    """observer's status entry of monitor on server (None when absent)."""
    for m in statuses[observer]["monitors"]:
        if m["name"] == monitor:
            for entry in m["servers"]:
                if entry["name"] == server:
                    return entry
    return None


def monitor_is(monitor, server, status, observer=None):
    def check(st):
        return monitor_entry(st, observer or server, monitor, server)["status"] == status
    return check


def genw_xml(name, path, group, restart=1, fo=1, action=1, interval=1, timeout=4, servers=()):
    polling = "".join(f'<servers id="{i}"><name>{s}</name></servers>' for i, s in enumerate(servers))
    return (f'<genw name="{name}"><polling><interval>{interval}</interval><timeout>{timeout}</timeout>'
            f'<reconfirmation>0</reconfirmation>{polling}</polling>'
            f'<parameters><path>{path}</path></parameters>'
            f'<relation><type>grp</type><name>{group}</name></relation>'
            f'<emergency><threshold><restart>{restart}</restart><fo>{fo}</fo></threshold>'
            f'<action>{action}</action></emergency></genw>')


def one_group():
    return [{"name": "failover1", "resources": [{"name": "exec1"}]}]


# Start and stop scripts that record the event and factor of each call.
START = '#!/bin/sh\necho "$(date +%s.%N) $CPRO_SERVER_NAME START $CLP_RESOURCENAME $CLP_EVENT" >> MARKS\n'
STOP = '#!/bin/sh\necho "$(date +%s.%N) $CPRO_SERVER_NAME STOP $CLP_RESOURCENAME $CLP_FACTOR" >> MARKS\n'


class MonitorTestCase(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def make_cluster(self, groups=(), monitors="", servers=2, **kw):
        lab = LoopbackCluster(reactor, self.mktemp(), servers=servers, groups=groups, **kw)
        self.lab = lab
        self.addCleanup(lab.destroy)
        for g in groups:
            for r in g["resources"]:
                # MARKS in a script stands for the lab's marks file.
                r["start"] = r.get("start", START).replace("MARKS", lab.marks_path())
                r["stop"] = r.get("stop", STOP).replace("MARKS", lab.marks_path())
        lab.monitor_xml = monitors(lab) if callable(monitors) else monitors
        yield lab.create()
        return lab

    def tearDown(self):
        # One reactor turn after each test: trial's SIGCHLD quirk with spawned processes.
        return task.deferLater(reactor, 0, lambda: None)

    def flag(self, name):
        """Path of a file the test creates to make a script fail."""
        return os.path.join(self.lab.workdir, "flags", name)

    def set_flag(self, name, on=True):
        path = self.flag(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if on:
            open(path, "w").close()
        elif os.path.exists(path):
            os.unlink(path)

    def script(self, lab, name, text):
        return lab._script(name, text)

    @defer.inlineCallbacks
    def alerts(self, server, count=300):
        reply = yield self.lab.admin(server, f"alerts {count}")
        return [a for a in reply["alerts"] if a["server"] == server]

    def rm_ids(self, alerts, monitor=None):
        return [a["id"] for a in alerts if a["module"] == "rm" and (monitor is None or monitor in a["message"])]

    @defer.inlineCallbacks
    def command(self, server, name, *args):
        """Run the real clp command name against server's admin socket: (exit code, output)."""
        argv = [sys.executable, "-m", f"cpro.cli.{name}", "--admin", self.lab.admin_endpoint(server), *args]
        result = yield run(reactor, argv, env=lab_env())
        return result

    def starts_and_stops(self):
        return [(m[1], m[2], m[4]) for m in self.lab.marks() if m[2] in ("START", "STOP")]


class GenwEscalationTests(MonitorTestCase):
    @defer.inlineCallbacks
    def test_failing_genw_restarts_fails_over_then_takes_the_final_action(self):
        def monitors(lab):
            path = self.script(lab, "genw1.sh", f'#!/bin/sh\n[ -e {lab.workdir}/flags/fail-$CLP_SERVERNAME ] '
                                                f'&& exit 1\nexit 0\n')
            return genw_xml("genw1", path, "failover1", restart=1, fo=1, action=5)

        lab = yield self.make_cluster(groups=one_group(), monitors=monitors)
        yield lab.start_all()
        yield lab.wait_until(lambda st: group_current(st, "failover1", "srv2") == "srv1"
                             and monitor_is("genw1", "srv1", "Normal")(st)
                             and monitor_is("genw1", "srv2", "Normal")(st), what="group on srv1, genw1 Normal")
        self.set_flag("fail-srv1")
        self.set_flag("fail-srv2")
        # srv1: restart, fail over to srv2; srv2: restart, fail over back; srv1: final action.
        st = yield lab.wait_until(
            lambda st: any(m[2] == "OSACTION" for m in lab.marks())
            and st["srv2"]["servers"][0]["status"] == "Offline", names=["srv2"], timeout=40,
            what="srv1's final action")
        self.assertEqual(self.starts_and_stops(), [
            ("srv1", "START", "START"),
            ("srv1", "STOP", "GROUPRESTART"), ("srv1", "START", "START"),
            ("srv1", "STOP", "GROUPFAILOVER"), ("srv2", "START", "FAILOVER"),
            ("srv2", "STOP", "GROUPRESTART"), ("srv2", "START", "START"),
            ("srv2", "STOP", "GROUPFAILOVER"), ("srv1", "START", "FAILOVER"),
            ("srv1", "STOP", "CLUSTERSHUTDOWN"),
        ])
        self.assertEqual([(m[1], m[2], m[3]) for m in lab.marks() if m[2] == "OSACTION"],
                         [("srv1", "OSACTION", "reboot")])
        # srv2 sees srv1 gone and the group stopped (the final action keeps the failed group where it is).
        self.assertEqual(summary(st)["srv2"]["groups"], {"failover1": "/Offline"})
        entry = monitor_entry(st, "srv2", "genw1", "srv2")
        self.assertEqual((entry["status"], entry["restarts"], entry["failovers"]), ("Error", 1, 1))
        srv1 = yield self.alerts("srv1")
        # One error episode per server (the monitor stays in Error between the steps): one rm 9 each.
        self.assertEqual([i for i in self.rm_ids(srv1, "genw1") if i in (9, 13, 14, 17)], [9, 13, 14, 17])
        self.assertTrue(any(a["module"] == "pm" and a["id"] == 90 and "reboot" in a["message"] for a in srv1))
        srv2 = yield self.alerts("srv2")
        self.assertEqual([i for i in self.rm_ids(srv2, "genw1") if i in (9, 13, 14)], [9, 13, 14])
        code, out = yield self.command("srv2", "clpstat", "-m")
        self.assertEqual(code, 0, out)
        self.assertIn("Monitor0 [genw1 : Error]", out)
        self.assertIn("restarts 1", out)
        self.assertIn("exited with code 1", out)


class PidwTests(MonitorTestCase):
    @defer.inlineCallbacks
    def test_killed_async_exec_process_is_detected_and_the_resource_restarted(self):
        resident = ('#!/bin/sh\necho "$(date +%s.%N) $CPRO_SERVER_NAME START $CLP_RESOURCENAME $CLP_EVENT $$" '
                    '>> MARKS\nexec sleep 600\n')
        monitors = ('<pidw name="pidw1"><polling><interval>1</interval><timeout>3</timeout></polling>'
                    '<target>exec1</target><relation><type>rsc</type><name>exec1</name></relation>'
                    '<emergency><threshold><restart>1</restart><fo>0</fo></threshold></emergency></pidw>')
        lab = yield self.make_cluster(monitors=monitors, groups=[{"name": "failover1", "resources": [
            {"name": "exec1", "sync": False, "start": resident}]}])
        yield lab.start_all()
        yield lab.wait_until(monitor_is("pidw1", "srv1", "Normal"), names=["srv1"], what="pidw1 Normal on srv1")
        st = yield lab.status_all(["srv2"])
        self.assertEqual(monitor_entry(st, "srv2", "pidw1", "srv2")["status"], "Offline")  # not active there
        [first] = [int(m[5]) for m in lab.marks() if m[2] == "START"]
        os.kill(first, 9)
        yield lab.wait_until(lambda st: len([m for m in lab.marks() if m[2] == "START"]) == 2
                             and monitor_is("pidw1", "srv1", "Normal")(st), names=["srv1"], timeout=15,
                             what="exec1 restarted and pidw1 Normal again")
        starts = [m for m in lab.marks() if m[2] == "START"]
        second = int(starts[1][5])
        self.assertNotEqual(second, first)
        self.assertEqual([(m[1], m[4]) for m in starts], [("srv1", "START"), ("srv1", "START")])
        self.assertTrue(os.path.exists(f"/proc/{second}"))
        self.assertEqual([(m[1], m[4]) for m in lab.marks() if m[2] == "STOP"], [("srv1", "RESOURCERESTART")])
        alerts = yield self.alerts("srv1")
        errors = [a["message"] for a in alerts if a["module"] == "rm" and a["id"] == 9]
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("exec1", errors[0])
        self.assertIn(13, self.rm_ids(alerts, "pidw1"))
        self.assertEqual([a["id"] for a in alerts if a["module"] == "rc" and a["id"] in (80, 81, 82)], [80, 81])
        st = yield lab.status_all(["srv1"])
        entry = monitor_entry(st, "srv1", "pidw1", "srv1")
        self.assertEqual((entry["restarts"], entry["failovers"]), (0, 0))  # back to normal: counters reset
        self.assertEqual(summary(st)["srv1"]["groups"], {"failover1": "srv1/Online"})


def failing_genw(test, restart=1, fo=0, action=1, servers=()):
    """monitors(lab) for make_cluster: genw1 on group failover1, failing while flags/fail-SERVER exists."""
    def monitors(lab):
        path = test.script(lab, "genw1.sh", f'#!/bin/sh\n[ -e {lab.workdir}/flags/fail-$CLP_SERVERNAME ] '
                                            f'&& exit 1\nexit 0\n')
        return genw_xml("genw1", path, "failover1", restart=restart, fo=fo, action=action, servers=servers)
    return monitors


class ClpmonctrlTests(MonitorTestCase):
    @defer.inlineCallbacks
    def start_with_genw(self, **kw):
        lab = yield self.make_cluster(groups=one_group(), monitors=failing_genw(self, **kw))
        yield lab.start_all()
        yield lab.wait_until(lambda st: group_current(st, "failover1", "srv1") == "srv1"
                             and monitor_is("genw1", "srv1", "Normal")(st), names=["srv1"],
                             what="group on srv1, genw1 Normal")
        return lab

    @defer.inlineCallbacks
    def test_suspend_holds_the_checks_and_resume_checks_at_once(self):
        lab = yield self.start_with_genw()
        code, out = yield self.command("srv1", "clpmonctrl", "-s", "-m", "genw1")
        self.assertEqual(code, 0, out)
        st = yield lab.status_all(["srv1"])
        entry = monitor_entry(st, "srv1", "genw1", "srv1")
        self.assertEqual((entry["status"], entry["suspended"]), ("Suspend", True))
        code, out = yield self.command("srv1", "clpstat", "-m")
        self.assertEqual(code, 0, out)
        self.assertIn("Monitor0 [genw1 : Normal]", out)  # srv2 still checks
        self.assertRegex(out, r"server0 \[o\] : Suspend")

        self.set_flag("fail-srv1")
        yield task.deferLater(reactor, 2.5, lambda: None)  # two intervals: nothing may happen
        st = yield lab.status_all(["srv1"])
        self.assertEqual(monitor_entry(st, "srv1", "genw1", "srv1")["status"], "Suspend")
        self.assertEqual([m for m in self.starts_and_stops() if m[1] == "STOP"], [])

        resumed_at = reactor.seconds()
        code, out = yield self.command("srv1", "clpmonctrl", "-r", "-m", "genw1")
        self.assertEqual(code, 0, out)
        yield lab.wait_until(lambda st: ("srv1", "STOP", "GROUPRESTART") in self.starts_and_stops(),
                             names=["srv1"], timeout=10, what="the group restarted")
        self.assertLess(reactor.seconds() - resumed_at, 2.0)  # checked at once, not after an interval
        self.set_flag("fail-srv1", False)
        st = yield lab.wait_until(monitor_is("genw1", "srv1", "Normal"), names=["srv1"], timeout=10)
        self.assertEqual(monitor_entry(st, "srv1", "genw1", "srv1")["suspended"], False)
        alerts = yield self.alerts("srv1")
        ids = [i for i in self.rm_ids(alerts, "genw1") if i in (29, 30, 9, 13, 26)]
        self.assertEqual(ids, [29, 30, 9, 13, 26])

        # Errors: an unknown monitor (exit 1), dummy failure on without -m (usage, exit 2).
        code, out = yield self.command("srv1", "clpmonctrl", "-s", "-m", "nosuch")
        self.assertEqual(code, 1, out)
        self.assertIn("no such monitor: nosuch", out)
        code, out = yield self.command("srv1", "clpmonctrl", "-n")
        self.assertEqual(code, 2, out)

    @defer.inlineCallbacks
    def test_suspend_all_on_another_server_and_a_monitor_that_does_not_run_there(self):
        lab = yield self.start_with_genw(servers=("srv1",))
        code, out = yield self.command("srv1", "clpmonctrl", "-s", "-m", "genw1", "-h", "srv2")
        self.assertEqual(code, 1, out)
        self.assertIn("does not run on srv2", out)
        code, out = yield self.command("srv2", "clpmonctrl", "-s", "-h", "srv1")
        self.assertEqual(code, 0, out)
        st = yield lab.wait_until(monitor_is("genw1", "srv1", "Suspend", observer="srv2"), names=["srv2"],
                                  what="srv2 sees genw1 suspended on srv1")
        self.assertEqual(monitor_entry(st, "srv2", "genw1", "srv2")["status"], "Offline")
        code, out = yield self.command("srv1", "clpmonctrl", "-r")
        self.assertEqual(code, 0, out)
        yield lab.wait_until(monitor_is("genw1", "srv1", "Normal"), names=["srv1"])
        alerts = yield self.alerts("srv1")
        self.assertEqual([a["id"] for a in alerts if a["module"] == "rm" and a["id"] in (31, 32)], [31, 32])

    @defer.inlineCallbacks
    def test_dummy_failure_runs_the_recovery_and_ends_when_turned_off(self):
        lab = yield self.start_with_genw(restart=1, fo=0, action=1)
        code, out = yield self.command("srv1", "clpmonctrl", "-n", "-m", "genw1")
        self.assertEqual(code, 0, out)
        st = yield lab.wait_until(lambda st: ("srv1", "STOP", "GROUPRESTART") in self.starts_and_stops()
                                  and monitor_entry(st, "srv1", "genw1", "srv1")["final_action_done"],
                                  names=["srv1"], timeout=10, what="restart, then the final action (none)")
        entry = monitor_entry(st, "srv1", "genw1", "srv1")
        self.assertEqual((entry["status"], entry["error"], entry["dummy"], entry["restarts"]),
                         ("Error", "dummy failure", True, 1))
        self.assertEqual(summary(st)["srv1"]["groups"], {"failover1": "srv1/Online"})  # none: left in place
        code, out = yield self.command("srv1", "clpmonctrl", "-v", "-m", "genw1")
        self.assertEqual(code, 0, out)
        self.assertIn("Dummy Failure  : on", out)
        self.assertIn("Restart Count  : 1", out)
        self.assertIn("Final Action   : executed", out)

        code, out = yield self.command("srv1", "clpmonctrl", "-o", "-m", "genw1")
        self.assertEqual(code, 0, out)
        st = yield lab.wait_until(monitor_is("genw1", "srv1", "Normal"), names=["srv1"], timeout=5)
        entry = monitor_entry(st, "srv1", "genw1", "srv1")
        self.assertEqual((entry["dummy"], entry["restarts"], entry["final_action_done"]), (False, 0, False))
        alerts = yield self.alerts("srv1")
        self.assertEqual([i for i in self.rm_ids(alerts, "genw1") if i in (180, 9, 13, 181, 26)],
                         [180, 9, 13, 181, 26])
        self.assertEqual(self.starts_and_stops(), [("srv1", "START", "START"), ("srv1", "STOP", "GROUPRESTART"),
                                                   ("srv1", "START", "START")])


class IpwTests(MonitorTestCase):
    @defer.inlineCallbacks
    def test_unreachable_address_is_detected_and_its_return_too(self):
        if not is_root():
            raise unittest.SkipTest("needs root: drops ICMP with nftables inside the lab's private namespace")
        target = "127.0.3.9"  # loopback: answers until the drop rule below
        monitors = (f'<ipw name="ipw1"><polling><interval>1</interval><timeout>2</timeout></polling>'
                    f'<parameters><list id="0"><ip>{target}</ip></list></parameters>'
                    f'<relation><type>grp</type><name>failover1</name></relation>'
                    f'<emergency><threshold><restart>0</restart><fo>0</fo></threshold></emergency></ipw>')
        lab = yield self.make_cluster(groups=one_group(), monitors=monitors)
        yield lab.start_all()
        st = yield lab.wait_until(monitor_is("ipw1", "srv1", "Normal"), names=["srv1"], what="ipw1 Normal")
        yield lab.nft("add", "table", "inet", "cpromon")
        yield lab.nft("add", "chain", "inet", "cpromon", "input",
                      "{ type filter hook input priority 0 ; policy accept ; }")
        yield lab.nft("add", "rule", "inet", "cpromon", "input", "ip", "daddr", target,
                      "icmp", "type", "echo-request", "drop")
        blocked_at = reactor.seconds()
        st = yield lab.wait_until(monitor_is("ipw1", "srv1", "Error"), names=["srv1"], timeout=10,
                                  what="ipw1 Error")
        self.assertLess(reactor.seconds() - blocked_at, 4.5)  # interval + reply wait, with margin
        entry = monitor_entry(st, "srv1", "ipw1", "srv1")
        self.assertIn(f"no reply from any address: {target}: no reply within 1 s", entry["error"])
        code, out = yield self.command("srv1", "clpstat", "-m")
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"Monitor0 \[ipw1 : (Error|Caution)\]")
        self.assertIn(f"last error: no reply from any address: {target}", out)
        yield lab.nft("delete", "table", "inet", "cpromon")
        yield lab.wait_until(monitor_is("ipw1", "srv1", "Normal"), names=["srv1"], timeout=10,
                             what="ipw1 Normal again")
        alerts = yield self.alerts("srv1")
        self.assertEqual([i for i in self.rm_ids(alerts, "ipw1") if i in (9, 26)], [9, 26])
        self.assertEqual(self.starts_and_stops(), [("srv1", "START", "START")])  # thresholds 0, action none


class GenwTimeoutTests(MonitorTestCase):
    @defer.inlineCallbacks
    def test_hung_script_is_killed_at_the_timeout_and_counts_as_an_error(self):
        def monitors(lab):
            path = self.script(lab, "genw1.sh", f'#!/bin/sh\nif [ -e {lab.workdir}/flags/hang ]; then\n'
                                                f'  echo $$ >> {lab.workdir}/hung.pids\n  sleep 600\nfi\nexit 0\n')
            return genw_xml("genw1", path, "failover1", restart=1, fo=0, action=1, timeout=2,
                            servers=("srv1",))
        lab = yield self.make_cluster(groups=one_group(), monitors=monitors)
        yield lab.start_all()
        yield lab.wait_until(monitor_is("genw1", "srv1", "Normal"), names=["srv1"], what="genw1 Normal")
        self.set_flag("hang")
        st = yield lab.wait_until(lambda st: ("srv1", "STOP", "GROUPRESTART") in self.starts_and_stops(),
                                  names=["srv1"], timeout=15, what="the group restarted after a timeout")
        entry = monitor_entry(st, "srv1", "genw1", "srv1")
        self.assertEqual(entry["status"], "Error")
        self.assertEqual(entry["error"], "Timeout (2 s)")
        with open(os.path.join(lab.workdir, "hung.pids")) as f:
            pids = [int(line) for line in f]
        self.assertGreaterEqual(len(pids), 1)  # reconfirmation 0: the first timeout is confirmed
        yield task.deferLater(reactor, 0.5, lambda: None)
        self.assertEqual([p for p in pids if os.path.exists(f"/proc/{p}")], [], "a hung script still runs")
        self.set_flag("hang", False)
        yield lab.wait_until(monitor_is("genw1", "srv1", "Normal"), names=["srv1"], timeout=10)
        alerts = yield self.alerts("srv1")
        self.assertEqual([i for i in self.rm_ids(alerts, "genw1") if i in (9, 13, 26)], [9, 13, 26])


class ManyMonitorsTests(MonitorTestCase):
    @defer.inlineCallbacks
    def test_two_servers_with_500_monitors_see_each_other_and_their_monitors(self):
        # The state reports carry every monitor's status; they must still fit in one internal message.
        monitors = '<types name="psw"/>' + "".join(
            f'<psw name="psw{i}"><polling><interval>5</interval></polling>'
            f'<parameters><processname>*</processname></parameters>'
            f'<relation><type>grp</type><name>failover1</name></relation></psw>' for i in range(500))
        lab = yield self.make_cluster(groups=one_group(), monitors=monitors)
        yield lab.start_all()

        def all_normal(st):
            return all(monitor_entry(st, o, f"psw{i}", s)["status"] == "Normal"
                       for o in lab.names for s in lab.names for i in range(500))

        st = yield lab.wait_until(lambda st: group_current(st, "failover1", "srv2") == "srv1" and all_normal(st),
                                  timeout=30, step=0.5, what="the group placed and every monitor Normal on both")
        self.assertEqual(summary(st)["srv2"]["servers"], {"srv1": "Online", "srv2": "Online"})
