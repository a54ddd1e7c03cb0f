"""Integration: a real daemon under a real cpro-supervise, on the loopback lab
(inside a private network namespace when root).

SIGKILL of the daemon stands for a crash. With pm/exec0/recover = 1
(restart) the daemon comes back and first kills what its predecessor left
(the resident process of an asynchronous exec); with 2 (shutdown) the
supervisor runs the lab's harmless shutdown command (it writes a mark) and
exits; SIGTERM to the supervisor is a clean stop. As root, a floating IP on a
veth pair inside the lab's namespace shows that the address a crashed daemon
left is removed too, by the new incarnation or by the supervisor.
"""

import json
import os
import signal
import sys

import psutil
from twisted.internet import defer, error, protocol, reactor

from cpro.resources.ledger import LEDGER_NAME
from cpro.supervisor import EXIT_SERVER_DOWN

from cpro.testing.lab.loopback import run
from test.integration import REPO_ROOT

from test.integration.test_cluster import ClusterTestCase, online_on
from test.unit.test_process import is_gone

RESIDENT = ('#!/bin/sh\necho "$(date +%s.%N) $CPRO_SERVER_NAME START exec1 $CLP_EVENT $CLP_SERVER" >> MARKS\n'
            'exec sleep 300\n')



class SupervisorProcess(protocol.ProcessProtocol):
    """cpro-supervise as the test runs it: output to a file, .ended fires its exit code."""

    def __init__(self, log_path):
        self.log = open(log_path, "ab")
        self.ended = defer.Deferred()
        self.pid = None

    def connectionMade(self):
        self.pid = self.transport.pid

    def outReceived(self, data):
        self.log.write(data)
        self.log.flush()

    errReceived = outReceived

    def processEnded(self, reason):
        self.log.close()
        code = 0 if isinstance(reason.value, error.ProcessDone) else getattr(reason.value, "exitCode", None)
        self.ended.callback(code)


def current(statuses, group, observer):
    """Where observer sees group Online, else None."""
    for g in statuses[observer]["groups"]:
        if g["name"] == group:
            return g["current"] if g["status"] == "Online" else None
    return None


def resident_group(policy=None):
    group = {"name": "failover1", "resources": [{"name": "exec1", "sync": False}]}
    if policy:
        group["policy"] = policy
    return group


def set_recover(lab, code):
    """pm/exec0/recover in the lab's clp.conf (1 restart, 2 shutdown)."""
    with open(lab.config_path) as f:
        text = f.read()
    with open(lab.config_path, "w") as f:
        f.write(text.replace("</root>", f"<pm><exec0><recover>{code}</recover></exec0></pm></root>"))


FIP = "10.79.0.50"
FIP_XML = (f'<fip name="fip1"><parameters><ip>{FIP}</ip><probe><count>1</count></probe>'
           '<garp><count>0</count><repeat><delay>0</delay></repeat></garp></parameters></fip>')


def add_fip(lab):
    """Put fip1 (FIP, on the veth cfa0 of srv1: 10.79.0.1/24) first in failover1."""
    with open(lab.config_path) as f:
        text = f.read()
    for old, new in (("</server>", '<device id="2"><type>lan</type><info>10.79.0.1/24</info></device></server>'),
                     ('<resource name="exec@exec1"/>', '<resource name="fip@fip1"/><resource name="exec@exec1"/>'),
                     ('<types name="exec"/>', '<types name="exec"/><types name="fip"/>')):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    end = text.rindex("</resource>")  # the end of the <resource> section
    text = text[:end] + FIP_XML + text[end:]
    with open(lab.config_path, "w") as f:
        f.write(text)


def ledger_groups(lab, name):
    try:
        with open(os.path.join(lab.state_dir(name), LEDGER_NAME)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    return [e["value"]["pgid"] for e in data.get("entries", []) if e.get("kind") == "process_group"]


def daemon_pids(supervisor_pid):
    try:
        return [p.pid for p in psutil.Process(supervisor_pid).children()]
    except psutil.NoSuchProcess:
        return []


class SupervisorTests(ClusterTestCase):
    timeout = 120

    @defer.inlineCallbacks
    def make_lab(self, servers=1, recover=1, policy=None, fip=False):
        lab = yield self.make_cluster(servers=servers, groups=[resident_group(policy)])
        lab.groups[0]["resources"][0]["start"] = RESIDENT.replace("MARKS", lab.marks_path())
        lab.write_config()
        if fip:
            # A NIC for the floating IP inside the lab's namespace: a veth
            # pair, its peer end silent (nobody answers the duplicate check).
            ip = lab.in_netns(["ip"])
            yield run(reactor, [*ip, "link", "add", "cfa0", "type", "veth", "peer", "name", "cfa1"])
            yield run(reactor, [*ip, "addr", "add", "10.79.0.1/24", "dev", "cfa0"])
            yield run(reactor, [*ip, "link", "set", "cfa0", "up"])
            yield run(reactor, [*ip, "link", "set", "cfa1", "up"])
            add_fip(lab)
        set_recover(lab, recover)
        return lab

    @defer.inlineCallbacks
    def addresses(self, lab):
        code, out = yield run(reactor, lab.in_netns(["ip", "-o", "addr", "show", "dev", "cfa0"]))
        return out

    def supervise(self, lab, name):
        """Start cpro-supervise running the daemon of server name; returns its process protocol."""
        os.makedirs(lab.state_dir(name), exist_ok=True)
        proto = SupervisorProcess(os.path.join(lab.workdir, f"{name}.supervisor.out"))
        daemon = [lab.twistd(), "-n", "--pidfile=", "--logfile", os.path.join(lab.state_dir(name), "cpro.log"),
                  "cpro", "--config", lab.config_path, "--server", name, "--admin", lab.admin_endpoint(name),
                  "--state-dir", lab.state_dir(name)]
        argv = lab.in_netns([sys.executable, "-m", "cpro.supervisor", "--cleanup-grace", "1", "--", *daemon])
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        reactor.spawnProcess(proto, argv[0], argv, env=env)
        self.daemons = getattr(self, "daemons", set())
        self.addCleanup(self.stop_supervised, proto)  # runs before the lab's destroy
        return proto

    @defer.inlineCallbacks
    def stop_supervised(self, proto):
        if not proto.ended.called:
            os.kill(proto.pid, signal.SIGTERM)
            timer = reactor.callLater(30, lambda: proto.ended.called or os.kill(proto.pid, signal.SIGKILL))
            yield proto.ended
            if timer.active():
                timer.cancel()
        for pid in self.daemons:  # without a namespace nobody else would stop them
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @defer.inlineCallbacks
    def daemon_pid(self, proto, other_than=None):
        """The pid of the supervisor's daemon child (another one than other_than)."""
        for _ in range(400):
            pids = [p for p in daemon_pids(proto.pid) if p != other_than] if not proto.ended.called else []
            if pids:
                self.daemons.add(pids[0])
                return pids[0]
            yield self.sleep(0.05)
        raise AssertionError(f"no daemon child of the supervisor (other than {other_than})")

    @defer.inlineCallbacks
    def alerts(self, lab, name, module="pm"):
        reply = yield lab.admin(name, "alerts 300")
        return [(a["id"], a["message"]) for a in reply["alerts"] if a["module"] == module and a["server"] == name]

    @defer.inlineCallbacks
    def test_restart_kills_the_leftovers_and_alone_starts_groups_as_usual(self):
        lab = yield self.make_lab(recover=1)
        supervisor = self.supervise(lab, "srv1")
        yield lab.wait_until(online_on("failover1", "srv1", ["srv1"]), names=["srv1"], what="failover1 on srv1")
        [resident] = ledger_groups(lab, "srv1")
        self.assertFalse(is_gone(resident))
        first = yield self.daemon_pid(supervisor)
        os.kill(first, signal.SIGKILL)
        second = yield self.daemon_pid(supervisor, other_than=first)
        self.assertIn("--after-crash", psutil.Process(second).cmdline())
        # Alone, no peer can be failing the group over: the new incarnation
        # starts it as at any cluster start (pm 23), after removing the old
        # incarnation's resident process.
        yield lab.wait_until(online_on("failover1", "srv1", ["srv1"]), names=["srv1"],
                             what="failover1 on srv1 again")
        self.assertTrue(is_gone(resident), "the resident start script of the crashed daemon still runs")
        [resident2] = ledger_groups(lab, "srv1")
        self.assertNotEqual(resident2, resident)
        alerts = yield self.alerts(lab, "srv1")
        ids = [i for i, _ in alerts]
        self.assertIn(20, ids)
        self.assertIn(21, ids)
        self.assertIn(23, ids)
        self.assertNotIn(22, ids)
        self.assertTrue(any(i == 20 and "SIGKILL" in m and "restarted" in m for i, m in alerts), alerts)
        self.assertTrue(any(i == 21 and f"process group {resident} of exec1" in m for i, m in alerts), alerts)
        self.assertFalse([m for m in lab.marks() if "OSACTION" in m])
        # A clean stop of the supervisor stops everything.
        os.kill(supervisor.pid, signal.SIGTERM)
        code = yield supervisor.ended
        self.assertEqual(code, 0)
        self.assertTrue(is_gone(second) and is_gone(resident2))

    @defer.inlineCallbacks
    def test_restart_rejoins_while_the_peer_holds_the_group(self):
        lab = yield self.make_lab(servers=2, recover=1)
        supervisor = self.supervise(lab, "srv1")
        lab.start("srv2")
        yield lab.wait_until(online_on("failover1", "srv1", lab.names), what="failover1 on srv1")
        [resident] = ledger_groups(lab, "srv1")
        first = yield self.daemon_pid(supervisor)
        os.kill(first, signal.SIGKILL)
        yield self.daemon_pid(supervisor, other_than=first)
        yield lab.wait_until(lambda st: st["srv1"]["cluster"]["status"] == "Online"
                             and online_on("failover1", "srv2", lab.names)(st), what="srv1 back, group on srv2")
        yield self.sleep(1.0)
        st = yield lab.status_all()
        self.assertTrue(online_on("failover1", "srv2", lab.names)(st))
        self.assertTrue(is_gone(resident))
        starts = [(m[1], m[4]) for m in lab.marks() if m[2] == "START"]
        self.assertEqual(starts, [("srv1", "START"), ("srv2", "FAILOVER")])

    @defer.inlineCallbacks
    def test_restart_removes_the_floating_ip_before_the_service_starts(self):
        self.requires_root()
        lab = yield self.make_lab(recover=1, fip=True)
        supervisor = self.supervise(lab, "srv1")
        yield lab.wait_until(online_on("failover1", "srv1", ["srv1"]), names=["srv1"], what="failover1 on srv1")
        self.assertIn(FIP, (yield self.addresses(lab)))
        first = yield self.daemon_pid(supervisor)
        os.kill(first, signal.SIGKILL)
        yield self.daemon_pid(supervisor, other_than=first)
        yield lab.wait_until(lambda st: st["srv1"]["cluster"]["status"] == "Online", names=["srv1"],
                             what="the new incarnation answering")
        # (Alone, the new incarnation then starts the group again: the order of
        # the alerts shows the address was removed before it started.)
        alerts = yield self.alerts(lab, "srv1")
        cleaned = [n for n, (i, m) in enumerate(alerts) if i == 21 and f"address {FIP} of fip1" in m]
        starting = [n for n, (i, _) in enumerate(alerts) if i == 1]  # "Starting the cluster daemon..."
        self.assertEqual(len(cleaned), 1, alerts)
        self.assertLess(cleaned[0], starting[-1], alerts)  # removed before the new incarnation started

    @defer.inlineCallbacks
    def test_shutdown_action_removes_the_floating_ip_first(self):
        self.requires_root()
        lab = yield self.make_lab(recover=2, fip=True)
        supervisor = self.supervise(lab, "srv1")
        yield lab.wait_until(online_on("failover1", "srv1", ["srv1"]), names=["srv1"], what="failover1 on srv1")
        self.assertIn(FIP, (yield self.addresses(lab)))
        os.kill((yield self.daemon_pid(supervisor)), signal.SIGKILL)
        self.assertEqual((yield supervisor.ended), EXIT_SERVER_DOWN)
        self.assertNotIn(FIP, (yield self.addresses(lab)))
        self.assertEqual(len([m for m in lab.marks() if "OSACTION" in m]), 1)

    @defer.inlineCallbacks
    def test_shutdown_action_runs_the_configured_command(self):
        lab = yield self.make_lab(recover=2)
        supervisor = self.supervise(lab, "srv1")
        yield lab.wait_until(online_on("failover1", "srv1", ["srv1"]), names=["srv1"], what="failover1 on srv1")
        [resident] = ledger_groups(lab, "srv1")
        daemon = yield self.daemon_pid(supervisor)
        os.kill(daemon, signal.SIGKILL)
        code = yield supervisor.ended
        self.assertEqual(code, EXIT_SERVER_DOWN)
        self.assertEqual([m[1:] for m in lab.marks() if "OSACTION" in m], [["srv1", "OSACTION", "shutdown"]])
        # The supervisor removed the leftovers before the action.
        self.assertTrue(is_gone(resident))
        with open(os.path.join(lab.state_dir("srv1"), "crash.json")) as f:
            [note] = json.load(f)["crashes"]
        self.assertEqual((note["pid"], note["signal"], note["action"]), (daemon, signal.SIGKILL, "shutdown"))

    @defer.inlineCallbacks
    def test_sigterm_stops_the_daemon_cleanly_without_the_action(self):
        lab = yield self.make_lab(recover=2)
        supervisor = self.supervise(lab, "srv1")
        yield lab.wait_until(online_on("failover1", "srv1", ["srv1"]), names=["srv1"], what="failover1 on srv1")
        [resident] = ledger_groups(lab, "srv1")
        daemon = yield self.daemon_pid(supervisor)
        os.kill(supervisor.pid, signal.SIGTERM)
        code = yield supervisor.ended
        self.assertEqual(code, 0)
        self.assertTrue(is_gone(daemon))
        self.assertTrue(is_gone(resident))  # the group was stopped, not abandoned
        self.assertEqual(ledger_groups(lab, "srv1"), [])
        self.assertFalse([m for m in lab.marks() if "OSACTION" in m])
        self.assertFalse(os.path.exists(os.path.join(lab.state_dir("srv1"), "crash.json")))
