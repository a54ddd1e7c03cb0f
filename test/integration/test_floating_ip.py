"""Integration: the floating IP with real daemons in the network-namespace lab (root).

Two servers (srv1 preferred) run a group holding the floating IP 10.0.0.100
(fip1, on eth1 by subnet) and an exec resource (exec1, marker scripts);
every server runs a small TCP service (NetnsLab.serve) that answers with
its name, so the client sees who serves the address. What is checked:

- failover on a server power-off: the address and the client's neighbour
  (ARP) entry move to srv2, within the documented bound;
- a daemon crash under cpro-supervise, with daemon_failure_action restart
  (also with a new daemon slower to start than the heartbeat timeout) and
  shutdown (pm/exec0/recover): the client is served again within the worst
  case of docs/operations.md "When the daemon crashes" (T_hb + T_start for
  these settings; T_start as the new holder's alerts rc 10 -> rc 11 show);
- an address already in use on the LAN: activation fails on srv1 naming the
  address, escalates to srv2 (rc 60), fails there, and the address is never
  added; once the LAN is free the operator starts the group normally;
- srv1 cut from the interconnect (the only heartbeat path) but still on the
  public LAN: srv2's duplicate check refuses the address, and after the
  heal the double-activation rule leaves the group on srv1 alone;
- deactivation after a daemon restart (SIGKILL, no supervisor), restarted
  before and after the peer's heartbeat timeout: the address ends up on at
  most one server and `group stop` removes it everywhere.

Throughout each test a background loop reads every server's addresses
every ~20-50 ms: the address must never be on two servers at once. Each
test's clean-up destroys its lab and checks that no namespace, nft table or
process of it is left, also when the test failed.
"""

import json
import os
import signal
import sys
import time

import psutil
from twisted.internet import defer, reactor, task
from twisted.logger import Logger
from twisted.trial import unittest

from cpro.testing.lab import poweroff
from cpro.testing.lab.common import LabError, group_current, is_root, run, tool
from cpro.testing.lab.netns import NetnsLab, lab_namespaces
from cpro.testing.lab.probe import read_probes

log = Logger()

VIP = "10.0.0.100"
PORT = 8080
INTERVAL_MS = 100
TIMEOUT_MS = 500  # T_hb of the documented bounds
SYNC_WAIT = 5
# The client's view: a connection every PROBE_INTERVAL, each given PROBE_TIMEOUT.
PROBE_INTERVAL = 0.01
PROBE_TIMEOUT = 0.5
# Added to a documented bound: the client notices service one probe late at
# most, and the probe's connection and the process scheduling on a busy
# 2-core machine take a few tens of milliseconds.
CLIENT_SLACK = 0.1
WATCH_STEP = 0.02  # s between two reads of the holders (each read takes ~10-30 ms)

GROUP_XML = ('<group name="failover1"><resource name="fip@fip1"/><resource name="exec@exec1"/>'
             '<policy name="srv1"><order>0</order></policy><policy name="srv2"><order>1</order></policy>'
             '<start>{start}</start><failback>0</failback></group>')
FIP_XML = f'<types name="fip"/><fip name="fip1"><parameters><ip>{VIP}</ip></parameters></fip>'
EXEC_XML = ('<types name="exec"/><exec name="exec1"><parameters><act><path>{start}</path><sync>1</sync></act>'
            '<deact><path>{stop}</path></deact><timeout><start>30</start><stop>30</stop></timeout></parameters>'
            '<deact><action>1</action></deact></exec>')
RECOVER = {"restart": 1, "shutdown": 2}


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_for(predicate, timeout, what, step=0.02):
    """Poll predicate (may return a Deferred) until it is true; its value."""
    deadline = reactor.seconds() + timeout
    while True:
        value = yield defer.maybeDeferred(predicate)
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        yield sleep(step)


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def online_everywhere(group, server, names):
    """Status predicate: every observer in names sees group Online on server."""
    return lambda st: all(group_current(st, group, n) == server for n in names)


def seen_by(statuses, observer, group="failover1"):
    """(current server or '', state) of group in observer's status."""
    for g in statuses[observer]["groups"]:
        if g["name"] == group:
            return g["current"], g["status"]
    raise KeyError(group)


def nowhere(names):
    """Status predicate: no observer in names sees failover1 held anywhere."""
    return lambda st: all(seen_by(st, n) == ("", "Offline") for n in names)


class HolderWatch:
    """Which servers hold an address, read every step seconds in the background.

    samples: [(time, (holders...))]. Each read asks every server's kernel at
    once (`ip -n NS -j -4 address show`), so a sample is one moment give or
    take the ~10 ms a read takes.
    """

    def __init__(self, lab, address, step=WATCH_STEP):
        self.lab = lab
        self.address = address
        self.step = step
        self.samples = []
        self._stopped = False
        self._done = None
        self._result = None

    def start(self):
        self._done = self._loop()
        return self

    @defer.inlineCallbacks
    def _loop(self):
        names = list(self.lab.names)
        while not self._stopped:
            at = time.time()
            held = yield defer.gatherResults([self._holds(n) for n in names], consumeErrors=True)
            self.samples.append((at, tuple(n for n, h in zip(names, held) if h)))
            yield sleep(self.step)

    @defer.inlineCallbacks
    def _holds(self, name):
        for _ in range(5):
            code, out = yield run(reactor, [tool("ip"), "-n", self.lab.netns(name), "-j", "-4", "address", "show"])
            # `ip -n` enters the namespace: a power-off of that host kills it too. Read again.
            if code != 128 + signal.SIGKILL:
                break
        if code != 0:
            raise LabError(f"ip address show in {name}: exit {code}: {out.strip()}")
        return any(a.get("local") == self.address for link in json.loads(out or "[]")
                   for a in link.get("addr_info", []))

    @defer.inlineCallbacks
    def stop(self):
        """Stop polling after one more read that started now (the state at the stop is in);
        fires when the loop has ended, failing if a read failed. Idempotent."""
        if self._done is None:
            return
        at = time.time()
        yield wait_for(lambda: self._done is None or self._done.called
                       or (self.samples and self.samples[-1][0] > at), 5, "the holder watch's last read")
        self._stopped = True
        if self._done is not None:
            d, self._done = self._done, None
            yield d

    def doubles(self):
        return [(t, h) for t, h in self.samples if len(h) > 1]

    def seen(self):
        return sorted({n for _, h in self.samples for n in h})

    def max_gap(self):
        times = [t for t, _ in self.samples]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


class Prober:
    """The client connecting to VIP:PORT every PROBE_INTERVAL (cpro.testing.lab.probe)."""

    def __init__(self, lab):
        self.lab = lab
        self.path = os.path.join(lab.workdir, "probe.log")
        self.process = None

    def start(self):
        self.process = self.lab.spawn(self.lab.client, [
            sys.executable, "-m", "cpro.testing.lab.probe", "probe", "--target", f"{VIP}:{PORT}",
            "--interval", str(PROBE_INTERVAL), "--timeout", str(PROBE_TIMEOUT), "--out", self.path])
        return self

    def rows(self):
        try:
            return read_probes(self.path)
        except FileNotFoundError:
            return []

    def served_by(self, server, after=0.0):
        """Start time of the first probe after `after` that server answered, or None."""
        return next((t for t, ok, who in self.rows() if ok and who == server and t > after), None)

    def stop(self):
        return self.process.stop(reactor, 5) if self.process else defer.succeed(None)


class FloatingIPTestCase(unittest.TestCase):
    timeout = 60

    def setUp(self):
        if not is_root():
            raise unittest.SkipTest("needs root: builds network namespaces, veths, bridges and nftables "
                                    "rules for the lab and runs the daemons in them")

    def tearDown(self):
        # One reactor turn after each test: works around trial losing the
        # SIGCHLD handler when a test ends while the reactor is starting.
        return task.deferLater(reactor, 0, lambda: None)

    # -- the lab -------------------------------------------------------------

    @defer.inlineCallbacks
    def make_lab(self, recover=None, start_auto=True, timeout_ms=TIMEOUT_MS, **kw):
        code, tables = yield run(reactor, [tool("nft"), "list", "tables"])
        self.assertEqual(code, 0, tables)
        workdir = os.path.abspath(self.mktemp())
        scripts = os.path.join(workdir, "scripts")
        os.makedirs(scripts)
        lab = NetnsLab(reactor, workdir, servers=2, interval_ms=INTERVAL_MS, timeout_ms=timeout_ms,
                       sync_wait=SYNC_WAIT, **kw)
        paths = {}
        for what in ("start", "stop"):
            paths[what] = os.path.join(scripts, f"exec1-{what}.sh")
            with open(paths[what], "w") as f:
                f.write(f'#!/bin/sh\necho "$(date +%s.%N) $CPRO_SERVER_NAME {what.upper()} exec1 $CLP_EVENT" '
                        f'>> {lab.marks_path()}\n')
            os.chmod(paths[what], 0o755)
        lab.root_xml = GROUP_XML.format(start=int(start_auto)) + (
            f"<pm><exec0><recover>{RECOVER[recover]}</recover></exec0></pm>" if recover else "")
        lab.resource_xml = FIP_XML + EXEC_XML.format(**paths)
        self.addCleanup(self.destroy_and_check, lab, sorted(tables.splitlines()))
        yield lab.create()
        return lab

    @defer.inlineCallbacks
    def destroy_and_check(self, lab, tables_before):
        """Destroy the lab; then nothing of it may remain: namespaces, nft tables, processes."""
        identities = {i for i in (poweroff.netns_identity(ns) for ns in lab.namespaces()) if i is not None}
        started = [p for procs in lab.spawned.values() for p in procs] + list(lab.processes.values())
        pids = {p.pid for p in started if p.pid}
        for proto in started:  # the daemons under a supervisor
            if proto.pid and not proto.ended.called:
                try:
                    pids.update(c.pid for c in psutil.Process(proto.pid).children(recursive=True))
                except psutil.NoSuchProcess:
                    pass
        yield lab.destroy()
        self.assertEqual([ns for ns in lab_namespaces() if lab.id in ns], [], "lab namespaces left")
        code, tables = yield run(reactor, [tool("nft"), "list", "tables"])
        self.assertEqual(sorted(tables.splitlines()), tables_before, "nft tables left in the root namespace")
        self.assertEqual([p.pid for p in started if not p.ended.called], [])
        self.assertEqual(sorted(p for p in pids if pid_alive(p)), [], "processes of the lab still running")
        left = [e for e in os.listdir("/proc") if e.isdigit() and poweroff.process_netns(e) in identities]
        self.assertEqual(left, [], "processes still in the lab's namespaces")

    def watch(self, lab):
        w = HolderWatch(lab, VIP).start()
        self.addCleanup(w.stop)  # before the lab's destroy (clean-ups run last in, first out)
        return w

    def prober(self, lab):
        p = Prober(lab).start()
        self.addCleanup(p.stop)
        return p

    def assert_never_two(self, watch):
        self.assertEqual(watch.doubles(), [], f"{VIP} on two servers at once")
        self.assertGreater(len(watch.samples), 10)
        # The loop really watched all along: no long blind spot.
        self.assertLess(watch.max_gap(), 0.25, "the holder watch fell behind")

    @defer.inlineCallbacks
    def start_on_srv1(self, lab, supervised=None):
        """Services on both servers, both daemons (under cpro-supervise when supervised), the
        group Online on srv1 for both, the client served by srv1 through the floating IP."""
        for name in lab.names:
            lab.serve(name, PORT)
        for name in lab.names:
            if supervised:
                lab.start_supervised(name, supervisor_args=["--cleanup-grace", "1"])
            else:
                lab.start(name)
        yield lab.wait_until(online_everywhere("failover1", "srv1", lab.names), timeout=SYNC_WAIT + 30,
                             what="failover1 Online on srv1 for both servers")
        reply = yield wait_for(lambda: lab.client_connect(VIP, PORT), 10, "the client served through the VIP")
        self.assertEqual(reply, "srv1")
        self.assertEqual((yield lab.neighbour(lab.client, VIP)), lab.mac("srv1"))

    @defer.inlineCallbacks
    def operate(self, lab, name, line):
        """An admin request to server name that must succeed."""
        reply = yield lab.admin(name, line)
        self.assertEqual(reply["result"]["code"], 0, f"{line} on {name}: {reply}")
        return reply

    @defer.inlineCallbacks
    def alerts(self, lab, name, module="rc", server=None):
        """[(time, id, message)] of module raised by server (default: name) in name's alert log."""
        reply = yield lab.admin(name, "alerts 500")
        return [(a["time"], a["id"], a["message"]) for a in reply["alerts"]
                if a["module"] == module and a["server"] == (server or name)]

    @defer.inlineCallbacks
    def start_time(self, lab, name, after):
        """T_start of the group's last start on name after `after`: from rc 10 (start group)
        to rc 11 (group started), by name's alert times."""
        alerts = yield self.alerts(lab, name)
        started = [t for t, i, m in alerts if i == 11 and "failover1" in m and t > after]
        self.assertTrue(started, f"failover1 did not start on {name}: {alerts}")
        begun = [t for t, i, m in alerts if i == 10 and "failover1" in m and after < t <= started[-1]]
        return started[-1] - begun[-1]

    def supervised_daemon(self, lab, name):
        """The pid of the daemon under server name's supervisor, or None."""
        proto = lab.processes[name]
        if proto.ended.called:
            return None
        try:
            children = psutil.Process(proto.pid).children()
        except psutil.NoSuchProcess:
            return None
        return children[0].pid if children else None

    def starts(self, lab):
        return [(m[1], m[4]) for m in lab.marks() if m[2] == "START"]


class FailoverTests(FloatingIPTestCase):
    @defer.inlineCallbacks
    def test_server_down_moves_the_address_and_the_client_follows(self):
        lab = yield self.make_lab()
        yield self.start_on_srv1(lab)
        watch = self.watch(lab)
        prober = self.prober(lab)
        yield wait_for(lambda: prober.served_by("srv1"), 5, "the prober served by srv1")

        down = time.time()
        yield lab.server_down("srv1")
        served = yield wait_for(lambda: prober.served_by("srv2", after=down), 10, "the client served by srv2")
        recovery = served - down
        yield lab.wait_until(lambda st: group_current(st, "failover1", "srv2") == "srv2", names=["srv2"],
                             timeout=5, what="failover1 Online on srv2")
        t_start = yield self.start_time(lab, "srv2", after=down)
        yield watch.stop()

        # The client's neighbour entry was updated by srv2's gratuitous ARP.
        self.assertEqual((yield lab.neighbour(lab.client, VIP)), lab.mac("srv2"))
        self.assertEqual((yield lab.client_connect(VIP, PORT)), "srv2")
        self.assertEqual((yield lab.addresses("srv2")), [lab.address("srv2"), VIP])
        self.assertEqual(self.starts(lab), [("srv1", "START"), ("srv2", "FAILOVER")])
        self.assert_never_two(watch)
        self.assertEqual(watch.seen(), ["srv1", "srv2"], f"down at {down}, served at {served}: {watch.samples[-40:]}")
        # Failover after a power-off: T_hb + T_start (the shutdown row of the bound).
        bound = TIMEOUT_MS / 1000 + t_start
        log.info("server down: client served again after {r:.3f} s (bound {b:.3f} s, T_start {s:.3f} s)",
                 r=recovery, b=bound, s=t_start)
        self.assertLessEqual(recovery, bound + CLIENT_SLACK)


class DaemonCrashTests(FloatingIPTestCase):
    timeout = 90

    @defer.inlineCallbacks
    def crash(self, lab, prober):
        """SIGKILL srv1's daemon under its supervisor; (its pid, crash time, time of the first
        probe srv2 answered)."""
        yield wait_for(lambda: prober.served_by("srv1"), 5, "the prober served by srv1")
        daemon = self.supervised_daemon(lab, "srv1")
        self.assertIsNotNone(daemon)
        self.assertIn("cpro", psutil.Process(daemon).cmdline())
        crashed = time.time()
        os.kill(daemon, signal.SIGKILL)
        served = yield wait_for(lambda: prober.served_by("srv2", after=crashed), 15,
                                "the client served by srv2 after the crash")
        return daemon, crashed, served

    @defer.inlineCallbacks
    def restart(self, slow_start=0.0):
        """A crash under the supervisor with daemon_failure_action restart; the daemon takes
        slow_start seconds more than usual to start. Returns srv2's nm alerts after the crash,
        [(id, message)]."""
        lab = yield self.make_lab(recover="restart")
        if slow_start:
            twistd = lab.twistd()
            wrapper = os.path.join(lab.workdir, "slow-twistd")
            with open(wrapper, "w") as f:
                f.write(f"#!/bin/sh\n# A daemon that takes long to start (a loaded host).\n"
                        f"sleep {slow_start}\nexec {twistd} \"$@\"\n")
            os.chmod(wrapper, 0o755)
            lab.twistd = lambda: wrapper
        yield self.start_on_srv1(lab, supervised=True)
        watch = self.watch(lab)
        prober = self.prober(lab)
        daemon, crashed, served = yield self.crash(lab, prober)
        yield lab.wait_until(lambda st: st["srv1"]["cluster"]["status"] == "Online"
                             and online_everywhere("failover1", "srv2", lab.names)(st),
                             timeout=15, what="srv1 back (standby), failover1 on srv2 for both")
        t_start = yield self.start_time(lab, "srv2", after=crashed)
        yield sleep(0.5)  # nothing moves any more
        yield watch.stop()

        new = self.supervised_daemon(lab, "srv1")
        self.assertNotIn(new, (None, daemon))
        self.assertIn("--after-crash", psutil.Process(new).cmdline())
        self.assertEqual((yield lab.holders(VIP)), ["srv2"])
        self.assertEqual((yield lab.neighbour(lab.client, VIP)), lab.mac("srv2"))
        self.assert_never_two(watch)
        pm = [(i, m) for _, i, m in (yield self.alerts(lab, "srv1", module="pm"))]
        # The supervisor deleted the address before the new daemon started.
        self.assertTrue(any(i == 20 and "restarted" in m and f"removed address {VIP} of fip1 before restarting"
                            in m for i, m in pm), pm)
        self.assertEqual(self.starts(lab), [("srv1", "START"), ("srv2", "FAILOVER")])
        # restart: min(T_hb, T_restart + T_cleanup) + T_start <= T_hb + T_start.
        recovery = served - crashed
        bound = TIMEOUT_MS / 1000 + t_start
        log.info("daemon crash, restart (start {slow} s slower): client served again after {r:.3f} s "
                 "(bound {b:.3f} s, T_start {s:.3f} s)", slow=slow_start, r=recovery, b=bound, s=t_start)
        self.assertLessEqual(recovery, bound + CLIENT_SLACK)
        return [(i, m) for t, i, m in (yield self.alerts(lab, "srv2", module="nm")) if t > crashed]

    def test_restart_serves_again_within_the_bound(self):
        return self.restart()

    @defer.inlineCallbacks
    def test_restart_slower_than_the_heartbeat_timeout(self):
        # The peer fails over on its timeout, before the new daemon runs: the crashed
        # daemon's address must be gone by then, or its duplicate check refuses it.
        nm = yield self.restart(slow_start=1.0)
        self.assertIn((2, "Server srv1 has been stopped."), nm)

    @defer.inlineCallbacks
    def test_shutdown_serves_again_within_the_bound(self):
        lab = yield self.make_lab(recover="shutdown")
        yield self.start_on_srv1(lab, supervised=True)
        watch = self.watch(lab)
        prober = self.prober(lab)
        daemon, crashed, served = yield self.crash(lab, prober)
        yield lab.wait_until(online_everywhere("failover1", "srv2", ["srv2"]), names=["srv2"], timeout=10,
                             what="failover1 Online on srv2")
        t_start = yield self.start_time(lab, "srv2", after=crashed)
        # The supervisor ran the lab's shutdown command: srv1's namespace is powered off.
        yield wait_for(lambda: lab.processes["srv1"].ended.called, 10, "srv1's supervisor gone")
        yield watch.stop()
        self.assertEqual([(h, a) for _, h, a in lab.poweroffs()], [("srv1", "shutdown")])
        self.assertEqual(poweroff.namespace_pids(lab.netns("srv1")), [])
        self.assertEqual((yield lab.holders(VIP)), ["srv2"])
        self.assertEqual((yield lab.neighbour(lab.client, VIP)), lab.mac("srv2"))
        self.assert_never_two(watch)
        self.assertEqual(self.starts(lab), [("srv1", "START"), ("srv2", "FAILOVER")])
        # shutdown: T_hb + T_start.
        recovery = served - crashed
        bound = TIMEOUT_MS / 1000 + t_start
        log.info("daemon crash, shutdown: client served again after {r:.3f} s (bound {b:.3f} s, "
                 "T_start {s:.3f} s)", r=recovery, b=bound, s=t_start)
        self.assertLessEqual(recovery, bound + CLIENT_SLACK)


class DuplicateAddressTests(FloatingIPTestCase):
    @defer.inlineCallbacks
    def test_address_in_use_fails_escalates_and_is_never_added(self):
        lab = yield self.make_lab(extra_hosts=["dup"])
        code, out = yield lab.run("dup", [tool("ip"), "address", "add", f"{VIP}/24", "dev", "eth1"])
        self.assertEqual(code, 0, out)
        watch = self.watch(lab)
        for name in lab.names:
            lab.serve(name, PORT)
        yield lab.start_all()
        # srv1 fails, hands the group to srv2 (rc 60), srv2 fails too.
        yield wait_for(lambda: self.alerts(lab, "srv2").addCallback(
            lambda a: any(i == 12 and "failover1" in m for _, i, m in a)), 20, "failover1 failing on srv2")
        yield lab.wait_until(lambda st: all(not seen_by(st, n)[1].endswith("Pending") for n in lab.names),
                             timeout=10, what="no start pending any more")
        yield sleep(0.5)
        srv1 = yield self.alerts(lab, "srv1")
        srv2 = yield self.alerts(lab, "srv2")
        failed = [m for _, i, m in srv1 if i == 12 and "failover1" in m]
        self.assertTrue(failed, srv1)
        self.assertIn(f"{VIP} is already in use on the LAN", failed[0])
        self.assertIn(lab.mac("dup"), failed[0].lower())
        self.assertTrue(any(i == 60 and "srv2" in m and "failover1" in m for _, i, m in srv1), srv1)
        self.assertTrue(any(i == 12 and f"{VIP} is already in use" in m for _, i, m in srv2), srv2)

        # Never added anywhere; the exec resource after it never started.
        self.assertEqual(watch.seen(), [])
        self.assertEqual((yield lab.holders(VIP)), [])
        self.assertEqual(self.starts(lab), [])
        self.assertIsNone((yield lab.client_connect(VIP, PORT, timeout=0.3)))  # dup serves nothing
        # srv2 handed it back (rc 60), srv1 had used its failover and took the final action:
        # the group waits in Online Failure on srv1 for the operator.
        self.assertTrue(any(i == 60 and "srv1" in m for _, i, m in srv2), srv2)
        self.assertTrue(any(i == 200 and "fip1" in m for _, i, m in srv1), srv1)
        st = yield lab.status_all()
        self.assertEqual([seen_by(st, n) for n in lab.names], [("srv1", "Online Failure")] * 2)

        # The LAN is free again: the operator stops what failed and starts the group.
        code, out = yield lab.run("dup", [tool("ip"), "address", "del", f"{VIP}/24", "dev", "eth1"])
        self.assertEqual(code, 0, out)
        yield self.operate(lab, "srv2", "group stop failover1")
        yield lab.wait_until(nowhere(lab.names), timeout=10, what="failover1 Offline")
        yield self.operate(lab, "srv2", "group start failover1")
        yield lab.wait_until(online_everywhere("failover1", "srv1", lab.names), timeout=10,
                             what="failover1 Online on srv1")
        yield lab.flush_neighbours(lab.client)
        self.assertEqual((yield lab.client_connect(VIP, PORT)), "srv1")
        self.assertEqual((yield lab.neighbour(lab.client, VIP)), lab.mac("srv1"))
        yield watch.stop()
        self.assert_never_two(watch)
        self.assertEqual((yield lab.holders(VIP)), ["srv1"])
        self.assertEqual(self.starts(lab), [("srv1", "START")])


class InterconnectCutTests(FloatingIPTestCase):
    @defer.inlineCallbacks
    def test_cut_server_keeps_the_address_alone_until_the_heal(self):
        lab = yield self.make_lab(heartbeat_devices=("eth0",))
        yield self.start_on_srv1(lab)
        watch = self.watch(lab)
        prober = self.prober(lab)
        yield wait_for(lambda: prober.served_by("srv1"), 5, "the prober served by srv1")

        cut = time.time()
        yield lab.block_interconnect("srv1")
        # Each side declares the other down; srv2 tries to take the group and its
        # duplicate check finds srv1 still answering for the address.
        yield wait_for(lambda: self.alerts(lab, "srv2").addCallback(
            lambda a: any(i == 12 and "failover1" in m and t > cut for t, i, m in a)), 10,
            "srv2 failing to start failover1")
        yield sleep(1.0)
        srv2 = yield self.alerts(lab, "srv2")
        self.assertTrue(any(i == 12 and f"{VIP} is already in use on the LAN" in m and t > cut
                            for t, i, m in srv2), srv2)
        self.assertEqual((yield lab.holders(VIP)), ["srv1"])
        self.assertEqual(self.starts(lab), [("srv1", "START")])  # exec1 never ran on srv2
        # The client was served by srv1 all along.
        done = time.time() - PROBE_TIMEOUT  # probes started before this have their outcome
        during = {(ok, who) for t, ok, who in prober.rows() if cut < t < done}
        self.assertEqual(during, {(True, "srv1")})

        # srv2 holds the group in Online Failure (without the address): to the core that is
        # a group active on two servers once they see each other again.
        st = yield lab.status_all()
        self.assertEqual(seen_by(st, "srv2"), ("srv2", "Online Failure"))
        self.assertEqual(seen_by(st, "srv1"), ("srv1", "Online"))

        healed = time.time()
        yield lab.heal_all()
        # The double-activation rule (rc 92): the lower-priority server srv2 stops its copy.
        yield wait_for(lambda: self.alerts(lab, "srv2").addCallback(
            lambda a: any(i == 21 and "failover1" in m and t > healed for t, i, m in a)), 15,
            "srv2 stopping its copy of failover1")
        yield lab.wait_until(lambda st: all(s["status"] == "Online" for n in lab.names for s in st[n]["servers"])
                             and online_everywhere("failover1", "srv1", lab.names)(st),
                             timeout=15, what="both Online again, failover1 on srv1")
        for name in lab.names:
            alerts = yield self.alerts(lab, name)
            self.assertTrue(any(i == 92 and "failover1" in m and "srv1, srv2" in m and t > healed
                                for t, i, m in alerts), alerts)
        srv2 = yield self.alerts(lab, "srv2")
        self.assertTrue(any(i == 20 and "higher-priority server srv1" in m and t > healed
                            for t, i, m in srv2), srv2)
        yield sleep(1.0)
        st = yield lab.status_all()
        self.assertTrue(online_everywhere("failover1", "srv1", lab.names)(st))
        yield watch.stop()
        self.assert_never_two(watch)
        self.assertEqual(watch.seen(), ["srv1"])
        self.assertEqual((yield lab.holders(VIP)), ["srv1"])
        self.assertEqual((yield lab.client_connect(VIP, PORT)), "srv1")
        self.assertEqual(self.starts(lab), [("srv1", "START")])


class DeactivationAfterRestartTests(FloatingIPTestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_group_stop_removes_the_address_after_a_daemon_restart(self):
        # No supervisor here: only the restarted daemon's own cleanup removes what
        # its predecessor left. T_hb 2 s: a restart (~0.5 s) is faster.
        t_hb = 2.0
        lab = yield self.make_lab(timeout_ms=int(t_hb * 1000))
        yield self.start_on_srv1(lab)
        watch = self.watch(lab)

        # 1. Restarted before srv2's heartbeat timeout: the new incarnation removes the
        # address before it joins, srv2 learns of the restart and takes the group.
        first = lab.pid("srv1")
        yield lab.kill("srv1")
        self.assertEqual((yield lab.holders(VIP)), ["srv1"])  # a crash leaves the address
        lab.start("srv1")
        yield lab.wait_until(lambda st: st["srv1"]["cluster"]["status"] == "Online"
                             and online_everywhere("failover1", "srv2", lab.names)(st),
                             timeout=15, what="srv1 back, failover1 on srv2 for both")
        self.assertNotEqual(lab.pid("srv1"), first)
        self.assertEqual((yield lab.holders(VIP)), ["srv2"])
        pm = [(i, m) for _, i, m in (yield self.alerts(lab, "srv1", module="pm"))]
        self.assertTrue(any(i == 21 and f"removed address {VIP} of fip1" in m for i, m in pm), pm)
        nm = [(i, m) for _, i, m in (yield self.alerts(lab, "srv2", module="nm"))]
        self.assertIn((2, "Server srv1 has been restarted."), nm)
        # Stopped from the restarted server, wherever the group runs.
        yield self.operate(lab, "srv1", "group stop failover1")
        yield lab.wait_until(nowhere(lab.names), timeout=10, what="failover1 Offline")
        self.assertEqual((yield lab.holders(VIP)), [])
        self.assertIsNone((yield lab.client_connect(VIP, PORT, timeout=0.3)))

        # 2. Restarted after srv2's timeout: srv2's duplicate check found the crashed
        # daemon's address and refused it; the restarted daemon removes it.
        yield self.operate(lab, "srv1", "group start failover1")
        yield lab.wait_until(online_everywhere("failover1", "srv1", lab.names), timeout=10,
                             what="failover1 Online on srv1")
        self.assertEqual((yield lab.holders(VIP)), ["srv1"])
        crashed = time.time()
        yield lab.kill("srv1")
        yield wait_for(lambda: self.alerts(lab, "srv2").addCallback(
            lambda a: any(i == 12 and f"{VIP} is already in use" in m and t > crashed for t, i, m in a)),
            t_hb + 10, "srv2 refusing the address of the crashed daemon")
        self.assertEqual((yield lab.holders(VIP)), ["srv1"])
        lab.start("srv1")
        yield lab.wait_until(lambda st: st["srv1"]["cluster"]["status"] == "Online"
                             and all(seen_by(st, n) == ("srv2", "Online Failure") for n in lab.names),
                             timeout=15, what="srv1 back, failover1 failed on srv2")
        self.assertEqual((yield lab.holders(VIP)), [])
        yield self.operate(lab, "srv1", "group stop failover1")
        yield lab.wait_until(nowhere(lab.names), timeout=10, what="failover1 Offline")
        self.assertEqual((yield lab.holders(VIP)), [])

        # 3. The operator starts it again; stopping it removes the address.
        yield self.operate(lab, "srv2", "group start failover1")
        yield lab.wait_until(online_everywhere("failover1", "srv1", lab.names), timeout=10,
                             what="failover1 Online on srv1")
        self.assertEqual((yield lab.client_connect(VIP, PORT)), "srv1")
        yield self.operate(lab, "srv2", "group stop failover1")
        yield lab.wait_until(nowhere(lab.names), timeout=10, what="failover1 Offline")
        yield watch.stop()
        self.assertEqual((yield lab.holders(VIP)), [])
        self.assert_never_two(watch)
        self.assertEqual(watch.seen(), ["srv1", "srv2"])
        self.assertEqual([(m[1], m[2], m[4]) for m in lab.marks()],
                         [("srv1", "START", "START"), ("srv2", "START", "FAILOVER"), ("srv2", "STOP", "START"),
                          ("srv1", "START", "START"), ("srv1", "START", "START"), ("srv1", "STOP", "START")])
