"""Integration: the network-namespace cluster lab (cpro.testing.lab.netns) itself.

Topology reachability, that every fault drops what it says and heal
restores it, that a powered-off server has no process left, that real
daemons run in the namespaces, and that nothing of a lab remains after
destroy, after a failing test, after an interrupted run and after a
crashed one. Root only (namespaces, nftables).
"""

import json
import os
import signal
import sys
import textwrap

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from cpro.config import load_config
from cpro.testing.lab import poweroff
from cpro.testing.lab.common import LabProcess, group_current, is_root, lab_env, run, tool
from test.integration import REPO_ROOT
from cpro.testing.lab.netns import PREFIX, NetnsLab, cleanup_stale, lab_namespaces


def pid_alive(pid):
    """True if pid runs (a zombie is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def pid_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


class LabTestCase(unittest.TestCase):
    timeout = 60

    def setUp(self):
        if not is_root():
            raise unittest.SkipTest("needs root: builds network namespaces, veths, bridges and nftables rules")

    def tearDown(self):
        # One reactor turn after each test: works around trial losing the
        # SIGCHLD handler when a test ends while the reactor is starting.
        return task.deferLater(reactor, 0, lambda: None)

    @defer.inlineCallbacks
    def make_lab(self, **kw):
        lab = NetnsLab(reactor, self.mktemp(), **kw)
        self.addCleanup(lab.destroy)
        yield lab.create()
        return lab

    @defer.inlineCallbacks
    def reach(self, lab, checks):
        """{(source host, target host, dev): answered} for one ping each, all at once."""
        results = yield defer.gatherResults(
            [lab.ping(src, lab.address(dst, dev), timeout=0.4) for src, dst, dev in checks])
        return dict(zip(checks, results))

    @defer.inlineCallbacks
    def assert_reach(self, lab, expected):
        got = yield self.reach(lab, list(expected))
        wrong = {k: got[k] for k in expected if got[k] != expected[k]}
        self.assertEqual(wrong, {}, "pings answered (True) or not, differing from the expectation")

    @defer.inlineCallbacks
    def carrier(self, lab, host, dev):
        code, out = yield lab.run(host, [tool("ip"), "-j", "link", "show", "dev", dev])
        self.assertEqual(code, 0, out)
        return "LOWER_UP" in json.loads(out)[0]["flags"]


class TopologyTests(LabTestCase):
    @defer.inlineCallbacks
    def test_hosts_reach_each_other_on_their_lans_only(self):
        lab = yield self.make_lab(servers=2, extra_hosts=("target",))
        self.assertEqual(lab.address("srv2", "eth0"), "192.168.100.2")
        self.assertEqual(lab.address("srv2"), "10.0.0.2")
        self.assertEqual(lab.address("client"), "10.0.0.200")
        self.assertEqual(lab.address("target"), "10.0.0.201")
        yield self.assert_reach(lab, {
            ("client", "srv1", "eth1"): True, ("client", "srv2", "eth1"): True,
            ("srv1", "srv2", "eth0"): True, ("srv2", "srv1", "eth0"): True,
            ("srv1", "srv2", "eth1"): True, ("srv1", "target", "eth1"): True,
            # The interconnect is private to the servers.
            ("client", "srv1", "eth0"): False,
        })
        # The client learnt srv1's public MAC; each server's public address is on eth1.
        mac = yield lab.neighbour("client", lab.address("srv1"))
        self.assertEqual(mac, lab.mac("srv1", "eth1"))
        self.assertIsNone((yield lab.neighbour("client", "10.0.0.150")))
        self.assertEqual((yield lab.addresses("srv1")), ["10.0.0.1"])
        self.assertEqual((yield lab.addresses("srv1", "eth0")), ["192.168.100.1"])
        # Every name is the lab's own.
        self.assertEqual(sorted(n for n in lab_namespaces() if lab.id in n), sorted(lab.namespaces()))

    @defer.inlineCallbacks
    def test_spawned_process_runs_in_its_host(self):
        lab = yield self.make_lab(servers=1)
        proc = lab.spawn("srv1", ["sh", "-c", "ip -4 -o address show dev eth1; sleep 30"])
        self.assertTrue(isinstance(proc, LabProcess))
        code, out = yield lab.run("client", ["ip", "-4", "-o", "address", "show"])
        self.assertIn("10.0.0.200/24", out)
        # The spawned shell may not have printed yet on a loaded machine: wait for it.
        for _ in range(200):
            if b"10.0.0.1/24" in proc.output:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertIn(proc.pid, poweroff.namespace_pids(lab.netns("srv1")))
        code = yield proc.kill()
        self.assertIsNone(code)
        self.assertEqual(proc.signal, signal.SIGKILL)
        self.assertIn(b"10.0.0.1/24", proc.output)
        code, out = yield lab.run("srv1", ["sleep", "5"], timeout=0.2)
        self.assertEqual(code, 128 + signal.SIGKILL)

    @defer.inlineCallbacks
    def test_client_connects_to_a_service_in_a_server(self):
        lab = yield self.make_lab(servers=1)
        service = lab.serve("srv1", 8080)
        for _ in range(100):
            reply = yield lab.client_connect(lab.address("srv1"), 8080)
            if reply is not None:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(reply, "srv1")
        self.assertIsNone((yield lab.client_connect(lab.address("srv1"), 8081)))
        yield service.kill()


class FaultTests(LabTestCase):
    @defer.inlineCallbacks
    def test_each_fault_drops_what_it_says_and_heal_restores(self):
        lab = yield self.make_lab(servers=3)
        everything = {
            ("srv1", "srv2", "eth0"): True, ("srv2", "srv1", "eth0"): True, ("srv2", "srv3", "eth0"): True,
            ("client", "srv1", "eth1"): True, ("srv2", "srv1", "eth1"): True, ("client", "srv2", "eth1"): True,
        }
        yield self.assert_reach(lab, everything)

        yield lab.block_interconnect("srv1")
        yield self.assert_reach(lab, {**everything, ("srv1", "srv2", "eth0"): False,
                                      ("srv2", "srv1", "eth0"): False})
        # Silent: the daemon's NIC keeps its carrier.
        self.assertTrue((yield self.carrier(lab, "srv1", "eth0")))
        yield lab.heal("srv1")
        yield self.assert_reach(lab, everything)

        yield lab.block_public("srv1")
        yield self.assert_reach(lab, {**everything, ("client", "srv1", "eth1"): False,
                                      ("srv2", "srv1", "eth1"): False})
        yield lab.heal("srv1", "eth1")
        yield self.assert_reach(lab, everything)

        yield lab.block_link("srv2", "eth0")
        yield self.assert_reach(lab, {**everything, ("srv1", "srv2", "eth0"): False,
                                      ("srv2", "srv1", "eth0"): False, ("srv2", "srv3", "eth0"): False})
        yield lab.heal_all()
        yield self.assert_reach(lab, everything)

        yield lab.block_interconnect()
        yield self.assert_reach(lab, {**everything, ("srv1", "srv2", "eth0"): False,
                                      ("srv2", "srv1", "eth0"): False, ("srv2", "srv3", "eth0"): False})
        yield lab.heal_all()
        yield self.assert_reach(lab, everything)

        yield lab.isolate("srv1")
        self.assertEqual(set(lab.faults), {("srv1", "eth0"), ("srv1", "eth1")})
        yield self.assert_reach(lab, {**everything, ("srv1", "srv2", "eth0"): False,
                                      ("srv2", "srv1", "eth0"): False, ("client", "srv1", "eth1"): False,
                                      ("srv2", "srv1", "eth1"): False})
        yield lab.heal_all()
        self.assertEqual(lab.faults, {})
        yield self.assert_reach(lab, everything)

        lossy = {**everything, ("client", "srv2", "eth1"): False, ("srv2", "srv1", "eth1"): False}
        yield lab.block_public("srv2", loss=100)
        yield self.assert_reach(lab, lossy)
        yield lab.block_public("srv2", loss=99.9)
        yield self.assert_reach(lab, lossy)
        yield lab.heal_all()
        yield self.assert_reach(lab, everything)

    @defer.inlineCallbacks
    def test_one_way_blocks(self):
        lab = yield self.make_lab(servers=1)
        # Frames to srv1 dropped: the client's ARP request never arrives.
        yield lab.block_public("srv1", direction="in")
        self.assertFalse((yield lab.ping("client", "10.0.0.1", timeout=0.3)))
        self.assertIsNone((yield lab.neighbour("srv1", "10.0.0.200")))
        yield lab.heal_all()
        yield lab.flush_neighbours("client")
        # Frames from srv1 dropped: the request arrives (srv1 learns the client), the reply does not.
        yield lab.block_public("srv1", direction="out")
        self.assertFalse((yield lab.ping("client", "10.0.0.1", timeout=0.3)))
        self.assertEqual((yield lab.neighbour("srv1", "10.0.0.200")), lab.mac("client"))
        yield lab.heal_all()
        yield lab.flush_neighbours("client")
        self.assertTrue((yield lab.ping("client", "10.0.0.1")))

    @defer.inlineCallbacks
    def test_server_down_kills_every_process_and_cuts_links_until_power_on(self):
        lab = yield self.make_lab(servers=2)
        # Processes the lab started and one it did not know of (a grandchild).
        single = lab.spawn("srv1", ["sleep", "3600"])
        family = lab.spawn("srv1", ["sh", "-c", "sleep 3600 & echo $!; wait"])
        other = lab.spawn("srv2", ["sleep", "3600"])
        code, out = yield lab.run("srv1", ["ip", "address", "add", "10.0.0.100/24", "dev", "eth1"])
        self.assertEqual(code, 0, out)
        self.assertTrue((yield lab.ping("client", "10.0.0.100")))
        yield task.deferLater(reactor, 0.1, lambda: None)
        grandchild = int(family.output.split()[0])
        self.assertTrue(pid_alive(grandchild))

        killed = yield lab.server_down("srv1")
        self.assertTrue({single.pid, family.pid, grandchild} <= set(killed))
        self.assertEqual(poweroff.namespace_pids(lab.netns("srv1")), [])
        self.assertFalse(pid_alive(grandchild))
        self.assertTrue(single.ended.called and family.ended.called)
        self.assertFalse(other.ended.called)
        self.assertIn("srv1", lab.powered_off)
        # A dead machine: no answer on any link, its floating address gone with it.
        yield self.assert_reach(lab, {("client", "srv1", "eth1"): False, ("srv2", "srv1", "eth0"): False,
                                      ("client", "srv2", "eth1"): True})
        self.assertFalse((yield self.carrier(lab, "srv1", "eth1")))
        self.assertTrue((yield self.carrier(lab, "srv2", "eth1")))
        self.assertEqual((yield lab.addresses("srv1")), ["10.0.0.1"])

        yield lab.power_on("srv1")
        self.assertNotIn("srv1", lab.powered_off)
        # Our pings left unresolved neighbour entries that would hold new packets for seconds.
        yield lab.flush_neighbours("client")
        yield lab.flush_neighbours("srv2")
        yield self.assert_reach(lab, {("client", "srv1", "eth1"): True, ("srv2", "srv1", "eth0"): True})
        self.assertFalse((yield lab.ping("client", "10.0.0.100", timeout=0.3)))
        yield other.kill()

    @defer.inlineCallbacks
    def test_poweroff_command_powers_off_only_its_own_namespace(self):
        lab = yield self.make_lab(servers=2)
        victim = lab.spawn("srv1", ["sleep", "3600"])
        other = lab.spawn("srv2", ["sleep", "3600"])
        # Outside the lab's hosts it refuses and touches nothing.
        code, out = yield run(reactor, [lab.poweroff_command_path], env={"CPRO_ACTION": "shutdown"})
        self.assertEqual(code, 2, out)
        self.assertFalse(victim.ended.called)
        # Inside srv1, as a daemon runs its OS action (minimal environment).
        code, out = yield lab.run("srv1", [lab.poweroff_command_path], env={"CPRO_ACTION": "shutdown"})
        self.assertEqual(code, 0, out)
        yield victim.ended
        self.assertEqual([(h, a) for _, h, a in lab.poweroffs()], [("srv1", "shutdown")])
        self.assertEqual(poweroff.namespace_pids(lab.netns("srv1")), [])
        self.assertFalse(other.ended.called)
        self.assertFalse((yield lab.ping("client", "10.0.0.1", timeout=0.3)))
        yield other.kill()


class DaemonTests(LabTestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_two_daemons_in_namespaces_see_each_other(self):
        lab = yield self.make_lab(servers=2)
        config, _ = load_config(lab.config_path)
        self.assertEqual(config.os_actions.shutdown, (lab.poweroff_command_path,))
        yield lab.start_all()

        def all_paths(state):
            def check(st):
                return all(s["status"] == "Online" and all(hb["status"] == state for hb in s["heartbeats"])
                           for n in lab.names for s in st[n]["servers"])
            return check

        yield lab.wait_until(all_paths("Normal"), timeout=15, what="both servers Online, every path Normal")
        for name in lab.names:
            self.assertIn(lab.pid(name), poweroff.namespace_pids(lab.netns(name)))

        # The daemon notices a silent interconnect cut: lanhb1 (eth0) fails, lanhb2 (eth1) carries on.
        yield lab.block_interconnect("srv1")

        def lanhb1(state):
            def check(st):
                seen = {hb["name"]: hb["status"] for s in st["srv2"]["servers"] if s["name"] == "srv1"
                        for hb in s["heartbeats"]}
                return seen == {"lanhb1": state, "lanhb2": "Normal"}
            return check

        yield lab.wait_until(lanhb1("Error"), timeout=10, what="srv2 sees lanhb1 of srv1 in error")
        yield lab.heal_all()
        yield lab.wait_until(lanhb1("Normal"), timeout=10, what="lanhb1 back to Normal")

        # A stall is a stopped process; resume continues it.
        pid = lab.pid("srv2")
        lab.stall("srv2")
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(pid_state(pid), "T")
        lab.resume("srv2")
        yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertNotEqual(pid_state(pid), "T")

        # A crash kills the daemon only: the host and its addresses stay.
        yield lab.daemon_crash("srv2")
        yield lab.wait_until(lambda st: {s["name"]: s["status"] for s in st["srv1"]["servers"]}["srv2"] == "Offline",
                             names=["srv1"], timeout=10, what="srv1 sees srv2 Offline")
        self.assertTrue((yield lab.ping("client", lab.address("srv2"))))

    @defer.inlineCallbacks
    def test_floating_ip_from_config_fragments_follows_a_server_down(self):
        group = ('<group name="failover1"><resource name="fip@fip1"/>'
                 '<policy name="srv1"><order>0</order></policy><policy name="srv2"><order>1</order></policy>'
                 '<start>1</start></group>')
        fip = '<types name="fip"/><fip name="fip1"><parameters><ip>10.0.0.100</ip></parameters></fip>'
        lab = yield self.make_lab(servers=2, root_xml=group, resource_xml=fip)
        yield lab.start_all()
        yield lab.wait_until(lambda st: all(group_current(st, "failover1", n) == "srv1" for n in lab.names),
                             timeout=20, what="failover1 on srv1")
        self.assertEqual((yield lab.holders("10.0.0.100")), ["srv1"])
        self.assertEqual((yield lab.addresses("srv1")), ["10.0.0.1", "10.0.0.100"])
        self.assertTrue((yield lab.ping("client", "10.0.0.100")))
        self.assertEqual((yield lab.neighbour("client", "10.0.0.100")), lab.mac("srv1"))

        yield lab.server_down("srv1")
        yield lab.wait_until(lambda st: group_current(st, "failover1", "srv2") == "srv2", names=["srv2"],
                             timeout=20, what="failover1 on srv2")
        self.assertEqual((yield lab.holders("10.0.0.100")), ["srv2"])
        self.assertTrue((yield lab.ping("client", "10.0.0.100")))
        self.assertEqual((yield lab.neighbour("client", "10.0.0.100")), lab.mac("srv2"))


FAILING_CASE = """
import json, os
from twisted.internet import defer, reactor
from twisted.trial import unittest
from cpro.testing.lab.netns import NetnsLab

class Case(unittest.TestCase):
    @defer.inlineCallbacks
    def test_it(self):
        lab = NetnsLab(reactor, self.mktemp(), servers=2)
        self.addCleanup(lab.destroy)
        yield lab.create()
        pids = [lab.spawn(h, ["sleep", "3600"]).pid for h in lab.hosts]
        yield lab.isolate("srv1")
        with open(os.environ["LAB_RECORD"], "w") as f:
            json.dump({"id": lab.id, "pids": pids, "ns": lab.namespaces()}, f)
        if os.environ["LAB_HOW"] == "hang":
            yield defer.Deferred()
        raise AssertionError("this test fails on purpose")
"""


class CleanupTests(LabTestCase):
    timeout = 60

    @defer.inlineCallbacks
    def snapshot(self):
        """What of a lab could leak into the root namespace: interfaces, nft tables."""
        code, tables = yield run(reactor, [tool("nft"), "list", "tables"])
        return {"links": sorted(os.listdir("/sys/class/net")), "nft": sorted(tables.splitlines())}

    def assert_gone(self, namespaces, pids, identities=()):
        self.assertEqual([ns for ns in namespaces if os.path.exists(os.path.join(poweroff.NETNS_DIR, ns))], [])
        self.assertEqual([p for p in pids if pid_alive(p)], [])
        if identities:
            left = [e for e in os.listdir("/proc") if e.isdigit() and poweroff.process_netns(e) in identities]
            self.assertEqual(left, [])

    @defer.inlineCallbacks
    def test_destroy_removes_everything(self):
        before = yield self.snapshot()
        lab = NetnsLab(reactor, self.mktemp(), servers=2, extra_hosts=("witness",))
        yield lab.create()
        identities = {poweroff.netns_identity(ns) for ns in lab.namespaces()}
        procs = [lab.spawn(h, ["sleep", "3600"]) for h in lab.hosts]
        yield lab.isolate("srv1")
        yield lab.block_interconnect()
        yield lab.destroy()
        self.assertTrue(all(p.ended.called for p in procs))
        self.assert_gone(lab.namespaces(), [p.pid for p in procs if p.pid], identities)
        self.assertEqual((yield self.snapshot()), before)
        yield lab.destroy()  # idempotent

    def run_case(self, how):
        """Run FAILING_CASE in its own trial; returns (LabProcess, record path)."""
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        with open(os.path.join(workdir, "lab_failing_case.py"), "w") as f:
            f.write(textwrap.dedent(FAILING_CASE))
        record = os.path.join(workdir, "record.json")
        env = lab_env({"LAB_RECORD": record, "LAB_HOW": how})
        env["PYTHONPATH"] = workdir + os.pathsep + env["PYTHONPATH"]
        proc = LabProcess(os.path.join(workdir, "trial.out"))
        argv = [sys.executable, "-m", "twisted.trial", "--temp-directory", os.path.join(workdir, "_trial"),
                "lab_failing_case"]
        reactor.spawnProcess(proc, argv[0], argv, env=env, path=workdir)
        self.addCleanup(proc.kill)
        return proc, record, workdir

    @defer.inlineCallbacks
    def wait_for_file(self, path, proc):
        for _ in range(400):
            if os.path.exists(path) and os.path.getsize(path):
                yield task.deferLater(reactor, 0.05, lambda: None)
                with open(path) as f:
                    return json.load(f)
            if proc.ended.called:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"the lab in the subprocess did not come up (exit {proc.exit_code})")

    @defer.inlineCallbacks
    def test_nothing_remains_after_a_failing_test(self):
        proc, record, workdir = self.run_case("raise")
        code = yield proc.ended
        with open(os.path.join(workdir, "trial.out")) as f:
            out = f.read()
        self.assertEqual(code, 1, out)
        self.assertIn("this test fails on purpose", out)
        with open(record) as f:
            lab = json.load(f)
        self.assert_gone(lab["ns"], lab["pids"])

    @defer.inlineCallbacks
    def test_nothing_remains_after_an_interrupted_run(self):
        proc, record, _ = self.run_case("hang")
        lab = yield self.wait_for_file(record, proc)
        self.assertTrue(all(pid_alive(p) for p in lab["pids"]))
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        yield proc.ended
        self.assert_gone(lab["ns"], lab["pids"])

    @defer.inlineCallbacks
    def test_cleanup_stale_removes_the_labs_of_dead_processes_only(self):
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        out = os.path.join(workdir, "hold.json")
        proc = LabProcess(out)
        argv = [sys.executable, "-m", "cpro.testing.lab.netns", "hold", "--servers", "1", "--sleepers",
                "--workdir", workdir]
        reactor.spawnProcess(proc, argv[0], argv, env=lab_env(), path=REPO_ROOT)
        self.addCleanup(proc.kill)
        mine = yield self.make_lab(servers=1)
        lab = yield self.wait_for_file(out, proc)
        pids = poweroff.namespace_pids(lab["hosts"]["srv1"]["netns"])
        self.assertTrue(pids)
        # A live owner: its lab is left alone.
        self.assertEqual([n for n in (yield threads.deferToThread(cleanup_stale)) if lab["id"] in n], [])
        yield proc.kill()  # the owner dies without cleaning up
        self.assertTrue(all(os.path.exists(os.path.join(poweroff.NETNS_DIR, ns)) for ns in lab["namespaces"]))
        removed = yield threads.deferToThread(cleanup_stale)
        self.assertEqual(sorted(n for n in removed if lab["id"] in n), sorted(lab["namespaces"]))
        self.assert_gone(lab["namespaces"], pids)
        # This process's lab is untouched.
        self.assertTrue(all(n.startswith(PREFIX) and os.path.exists(os.path.join(poweroff.NETNS_DIR, n))
                            for n in mine.namespaces()))
