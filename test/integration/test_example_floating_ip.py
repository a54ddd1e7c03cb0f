"""Integration: examples/floating-ip runs as it is in the network-namespace lab (root).

The example's clp.conf uses the lab's own addresses (srvN 192.168.100.N and
10.0.0.N, the client 10.0.0.200), so both daemons are started with that file
unchanged; its scripts (exec1's start/stop, genw1's genw.sh) are found next
to it, whatever the daemons' working directory. What is checked:

- group web comes Online on srv1 and every monitor (fipw1, pidw1, genw1,
  ipw1) is Normal there;
- the client reaches the service through the floating IP 10.0.0.100:8080
  and srv1 answers;
- after srv1 is powered off, srv2 answers on the same address within the
  heartbeat timeout (5 s) plus a little, and every monitor is Normal on srv2.

The clean-up destroys the lab and checks that none of its namespaces or
processes is left, also when the test failed.
"""

import os

from twisted.internet import defer, reactor, task
from twisted.logger import Logger
from twisted.trial import unittest

from cpro.testing.lab import poweroff
from cpro.testing.lab.common import group_current, is_root
from cpro.testing.lab.netns import NetnsLab, lab_namespaces
from test.integration import REPO_ROOT

from test.integration.test_floating_ip import wait_for

log = Logger()

EXAMPLE = os.path.join(REPO_ROOT, "examples", "floating-ip", "clp.conf")
VIP = "10.0.0.100"
PORT = 8080
MONITORS = ("fipw1", "pidw1", "genw1", "ipw1")
HB_TIMEOUT = 5.0  # the example's <heartbeat><timeout>, s
CONNECT_TIMEOUT = 0.5  # s, of each client attempt
# From the power-off to srv2's first answer: the heartbeat timeout, then the
# fip's duplicate check, the exec start and Python starting the service
# (~0.7 s together here), and the client's next attempt (up to one connect
# timeout late); the rest is slack for a loaded machine.
FAILOVER_BOUND = HB_TIMEOUT + 3.0




def monitors_on(statuses, observer, server):
    """{monitor: status} of every monitor on server, as observer reports them."""
    out = {}
    for m in statuses[observer]["monitors"]:
        for entry in m["servers"]:
            if entry["name"] == server:
                out[m["name"]] = entry["status"]
    return out


def serving(server):
    """Status predicate: server holds web and every monitor is Normal there (server's own view)."""
    def check(statuses):
        return (group_current(statuses, "web", server) == server
                and monitors_on(statuses, server, server) == {m: "Normal" for m in MONITORS})
    return check


class NetnsExampleTestCase(unittest.TestCase):
    """What the tests of an example run in the namespace lab share: root, and
    a lab that leaves no namespace or process behind."""

    timeout = 90

    def setUp(self):
        if not is_root():
            raise unittest.SkipTest("needs root: builds the network-namespace lab (namespaces, veths, "
                                    "bridges) and runs the example's daemons in it")

    def tearDown(self):
        # One reactor turn after each test: works around trial losing the
        # SIGCHLD handler when a test ends while the reactor is starting.
        return task.deferLater(reactor, 0, lambda: None)

    @defer.inlineCallbacks
    def destroy_and_check(self, lab):
        identities = {i for i in (poweroff.netns_identity(ns) for ns in lab.namespaces()) if i is not None}
        yield lab.destroy()
        self.assertEqual([ns for ns in lab_namespaces() if lab.id in ns], [], "lab namespaces left")
        self.assertEqual([p.pid for p in lab.processes.values() if not p.ended.called], [], "daemons left")
        left = [e for e in os.listdir("/proc") if e.isdigit() and poweroff.process_netns(e) in identities]
        self.assertEqual(left, [], "processes still in the lab's namespaces")


class FloatingIPExampleTests(NetnsExampleTestCase):
    def answer(self, lab):
        return lab.client_connect(VIP, PORT, timeout=CONNECT_TIMEOUT)

    @defer.inlineCallbacks
    def test_example_runs_and_fails_over(self):
        lab = NetnsLab(reactor, os.path.abspath(self.mktemp()), servers=2, client=True)
        self.addCleanup(self.destroy_and_check, lab)
        yield lab.create()
        for name in lab.names:
            lab.start(name, config=EXAMPLE)

        st = yield lab.wait_until(
            lambda st: serving("srv1")(st) and monitors_on(st, "srv2", "srv2")["ipw1"] == "Normal",
            timeout=30, step=0.2, what="web Online on srv1 with every monitor Normal there, ipw1 on srv2")
        # The standby runs ipw1 only: the others wait for web's resources (timing 1).
        waiting = {m: s for m, s in monitors_on(st, "srv2", "srv2").items() if m != "ipw1"}
        self.assertEqual(set(waiting), {"fipw1", "pidw1", "genw1"})
        self.assertTrue(set(waiting.values()) <= {"Offline", "Suspend"}, waiting)
        reply = yield wait_for(lambda: self.answer(lab), 10, f"the service on {VIP}:{PORT}")
        self.assertTrue(reply.startswith(f"hello from srv1 on {VIP}:{PORT} (group web, resource exec1, "
                                         "event START, HOME"), reply)
        self.assertEqual((yield lab.holders(VIP)), ["srv1"])

        down = reactor.seconds()
        yield lab.server_down("srv1")
        reply = yield wait_for(lambda: defer.maybeDeferred(self.answer, lab).addCallback(
            lambda r: r if r and r.startswith("hello from srv2") else None),
            FAILOVER_BOUND + 5, "srv2's answer on the floating IP")
        elapsed = reactor.seconds() - down
        log.info("srv2 answered on the floating IP {elapsed:.2f} s after srv1's power-off", elapsed=elapsed)
        self.assertTrue(reply.startswith(f"hello from srv2 on {VIP}:{PORT} (group web, resource exec1, "
                                         "event FAILOVER, OTHER"), reply)
        self.assertLess(elapsed, FAILOVER_BOUND, f"srv2 answered {elapsed:.2f} s after the power-off")
        yield lab.wait_until(serving("srv2"), names=["srv2"], timeout=10, step=0.2,
                             what="web Online on srv2 with every monitor Normal there")
        self.assertEqual((yield lab.holders(VIP)), ["srv2"])
