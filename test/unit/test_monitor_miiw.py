"""Tests for the miiw monitor: 'lo', a missing NIC, and (root) veth links in a namespace of our own."""

import functools
import os
import shutil
import subprocess

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cpro.system.runners import run_inline, thread_runner
from cpro.resources.monitors.base import CheckStatus
from cpro.resources.monitors.miiw import IFF_LOWER_UP, IFF_UP, LinkMonitor, LinkState, judge_link, read_link

from test.unit.monitor_contract import HeldRunner, MonitorContractMixin, make_environment, make_monitor_config

MISSING = "cpronone0"


def monitor(ifname, clock=None, **kw):
    kw.setdefault("run_in_thread", run_inline)
    config = make_monitor_config("miiw", {"object": ifname})
    return LinkMonitor(clock or task.Clock(), config, config.params, make_environment(), **kw)


class ContractTests(MonitorContractMixin, unittest.TestCase):
    monitor_type = "miiw"

    def make_monitor(self):
        return monitor("lo")

    def make_pending_monitor(self):
        self.held = HeldRunner()
        return monitor("lo", run_in_thread=self.held)

    def assert_nothing_left(self, monitor):
        self.assertEqual(len(self.held.calls), 1)
        self.held.release()


class HostTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_loopback_in_a_thread(self):
        m = monitor("lo", clock=reactor, run_in_thread=thread_runner(reactor))
        result = yield m.check()
        self.assertEqual(result.status, CheckStatus.NORMAL, result.message)
        self.assertEqual(m.describe(), {"object": "lo", "operstate": "UNKNOWN", "carrier": 1})

    @defer.inlineCallbacks
    def test_missing_nic(self):
        result = yield monitor(MISSING).check()
        self.assertEqual((result.status, result.message), (CheckStatus.ERROR, f"NIC {MISSING} does not exist"))


class NamespaceTests(unittest.TestCase):
    """veth links inside a network namespace created for the test (root, iproute2)."""

    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to create a network namespace")
        if shutil.which("ip") is None:
            raise unittest.SkipTest("needs the ip command (iproute2)")
        self.netns = f"cpro-miiw-{os.getpid()}"
        self.ip("netns", "add", self.netns)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.netns], check=False)
        self.ip("-n", self.netns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        self.ip("-n", self.netns, "link", "set", "v0", "up")

    def ip(self, *args):
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def check(self, ifname):
        read = functools.partial(read_link, netns=self.netns)
        return monitor(ifname, clock=reactor, run_in_thread=thread_runner(reactor), read_link=read).check()

    @defer.inlineCallbacks
    def test_link_down_then_up(self):
        result = yield self.check("v0")  # up, but its peer is down: no carrier
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "link of NIC v0 is down (operstate LOWERLAYERDOWN, carrier 0)")
        result = yield self.check("v1")
        self.assertEqual((result.status, result.message), (CheckStatus.ERROR, "NIC v1 is administratively down"))
        self.ip("-n", self.netns, "link", "set", "v1", "up")
        for ifname in ("v0", "v1"):
            # The kernel may publish the new operstate a little later (linkwatch).
            waited = 0.0
            result = yield self.check(ifname)
            while result.status != CheckStatus.NORMAL and waited < 3.0:
                yield task.deferLater(reactor, 0.05, lambda: None)
                waited += 0.05
                result = yield self.check(ifname)
            self.assertEqual(result.status, CheckStatus.NORMAL, result.message)
        result = yield self.check("lo")  # the namespace's own loopback is down
        self.assertEqual(result.status, CheckStatus.ERROR)


class JudgeTests(unittest.SynchronousTestCase):
    def test_states(self):
        up = IFF_UP | IFF_LOWER_UP
        self.assertEqual(judge_link("eth0", LinkState("UP", 1, up)).status, CheckStatus.NORMAL)
        self.assertEqual(judge_link("lo", LinkState("UNKNOWN", 1, up)).status, CheckStatus.NORMAL)
        self.assertEqual(judge_link("lo", LinkState("UNKNOWN", None, up)).status, CheckStatus.NORMAL)
        self.assertEqual(
            judge_link("eth0", LinkState("UNKNOWN", 0, IFF_UP)).message,
            "link of NIC eth0 is down (operstate UNKNOWN, carrier 0)",
        )
        self.assertEqual(
            judge_link("eth0", LinkState("DORMANT", 1, up)).message,
            "link of NIC eth0 is down (operstate DORMANT, carrier 1)",
        )
        self.assertEqual(judge_link("eth0", LinkState("UP", 1, 0)).message, "NIC eth0 is administratively down")
        self.assertEqual(judge_link("eth0", None).message, "NIC eth0 does not exist")
