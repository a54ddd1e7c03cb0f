"""Tests for the fipw and arpw monitors, against a real FipResource on fakes (task.Clock, fake LAN and netlink)."""

import errno

from twisted.internet import defer, task
from twisted.trial import unittest

from cpro.protocols import arp
from cpro.resources.base import ActionContext, ResourceError
from cpro.resources.monitors.arpw import ArpMonitor
from cpro.resources.monitors.base import CheckStatus
from cpro.resources.monitors.fipw import FipMonitor
from cpro.system.netlink import IFF_UP
from cpro.system.runners import run_inline
from test.unit.fip_fakes import OUR_MAC, make_fip
from test.unit.monitor_contract import MonitorContractMixin, make_environment, make_monitor_config

START = ActionContext(event="START", group="failover1", server="srv1", home=True)


class SwitchableRunner:
    """Runs netlink calls inline until held; then they stay pending (a stuck thread)."""

    def __init__(self):
        self.hold = False
        self.pending = []

    def __call__(self, f, *args):
        if self.hold:
            d = defer.Deferred()
            self.pending.append(d)
            return d
        return run_inline(f, *args)


class FipFixture:
    """An active fip1 on eth0 (192.168.1.100/24 by default) and an environment that finds it."""

    def make_active(self, ip="192.168.1.100", **params):
        self.clock = task.Clock()
        params = {"probe_count": 0, "garp_count": 1, "garp_repeat_delay": 0.0, **params}
        self.resource, self.lan, self.netlink = make_fip(self.clock, ip=ip, **params)
        self.runner = SwitchableRunner()
        self.resource._run = self.runner
        self.successResultOf(self.resource.activate(START))
        self.lan.sent.clear()
        self.env = make_environment(resource=lambda name: self.resource if name == "fip1" else None)
        return self.resource

    def fipw(self, monmii=0, target="fip1"):
        config = make_monitor_config("fipw", {"monmii": monmii}, target=target)
        return FipMonitor(self.clock, config, config.params, self.env)

    def arpw(self, count=1, target="fip1"):
        config = make_monitor_config("arpw", {"count": count}, target=target)
        return ArpMonitor(self.clock, config, config.params, self.env)

    def check(self, monitor):
        return self.successResultOf(monitor.check())


class FipwContractTests(FipFixture, MonitorContractMixin, unittest.TestCase):
    monitor_type = "fipw"

    def make_monitor(self):
        self.make_active()
        return self.fipw()

    def make_pending_monitor(self):
        monitor = self.make_monitor()
        self.runner.hold = True
        return monitor

    def contract_reactor(self):
        return self.clock

    def assert_nothing_left(self, monitor):
        self.assertEqual(len(self.runner.pending), 1)


class ArpwContractTests(FipFixture, MonitorContractMixin, unittest.TestCase):
    monitor_type = "arpw"

    def make_monitor(self):
        self.make_active()
        return self.arpw()

    def make_pending_monitor(self):
        # Two announcements 10 ms apart: the check waits on the clock for the second.
        self.make_active()
        return self.arpw(count=2)

    def contract_reactor(self):
        return self.clock

    def assert_nothing_left(self, monitor):
        self.assertEqual(self.lan.open_links(), [])
        self.assertEqual(len(self.lan.sent), 1)


class FipwTests(FipFixture, unittest.SynchronousTestCase):
    def test_normal(self):
        self.make_active()
        result = self.check(self.fipw())
        self.assertEqual((result.status, result.message), (CheckStatus.NORMAL, "192.168.1.100 on eth0"))

    def test_address_removed_by_hand(self):
        self.make_active()
        eth0 = self.netlink.get("eth0")
        self.netlink.delete_address(eth0, "192.168.1.100", 24)
        result = self.check(self.fipw())
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "floating IP 192.168.1.100 is missing from interface eth0")

    def test_interface_gone(self):
        self.make_active()
        self.netlink.remove_interface("eth0")
        result = self.check(self.fipw())
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "interface eth0 that held floating IP 192.168.1.100 no longer exists")

    def test_link_down_with_monmii(self):
        self.make_active()
        self.netlink.set_flags("eth0", IFF_UP)  # no LOWER_UP: cable out
        result = self.check(self.fipw(monmii=1))
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "link of interface eth0 (floating IP 192.168.1.100) is down")
        self.assertEqual(self.check(self.fipw(monmii=0)).status, CheckStatus.NORMAL)

    def test_link_up_with_monmii(self):
        self.make_active()
        self.assertEqual(self.check(self.fipw(monmii=True)).status, CheckStatus.NORMAL)

    def test_not_active(self):
        self.make_active()
        self.successResultOf(self.resource.deactivate(START))
        result = self.check(self.fipw())
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "floating IP 192.168.1.100 (fip1) is not active on this server")

    def test_no_such_resource(self):
        self.make_active()
        result = self.check(self.fipw(target="fip9"))
        self.assertEqual((result.status, result.message), (CheckStatus.ERROR, "no fip resource 'fip9' on this server"))

    def test_netlink_failure_fails_the_check(self):
        self.make_active()
        self.netlink.fail = {"interfaces": "cannot list interfaces: Operation not permitted"}
        failure = self.failureResultOf(self.fipw().check(), ResourceError)
        self.assertIn("cannot list interfaces", str(failure.value))

    def test_describe(self):
        self.make_active()
        self.assertEqual(self.fipw(monmii=1).describe(), {"target": "fip1", "monmii": True})


class ArpwTests(FipFixture, unittest.SynchronousTestCase):
    def test_sends_count_announcements_per_check(self):
        self.make_active()
        monitor = self.arpw(count=3)
        d = monitor.check()
        self.clock.advance(0.01)
        self.clock.advance(0.01)
        result = self.successResultOf(d)
        self.assertEqual(result.status, CheckStatus.NORMAL)
        self.assertEqual(result.message, "sent 3 gratuitous ARP for 192.168.1.100 on eth0")
        self.assertEqual(len(self.lan.sent), 3)
        for _, name, frame in self.lan.sent:
            packet = arp.parse_arp(frame)
            self.assertEqual((name, str(packet.sender_ip), str(packet.target_ip)), ("eth0", "192.168.1.100", "192.168.1.100"))
            self.assertEqual(arp.mac_text(packet.sender_mac), OUR_MAC)
        self.assertEqual(monitor.describe(), {"target": "fip1", "count": 3, "sent": 3})
        # The next check sends as many again.
        self.assertEqual(self.check(self.arpw(count=1)).status, CheckStatus.NORMAL)
        self.assertEqual(len(self.lan.sent), 4)

    def test_send_failure(self):
        self.make_active()
        self.lan.send_error = errno.ENETDOWN
        result = self.check(self.arpw())
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "cannot send gratuitous ARP for 192.168.1.100 on eth0: Network is down")

    def test_socket_failure(self):
        self.make_active()
        self.lan.open_error = errno.EPERM
        result = self.check(self.arpw())
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "cannot send gratuitous ARP for 192.168.1.100 on eth0: Operation not permitted")

    def test_ipv6(self):
        self.make_active(ip="fd00::100")
        result = self.check(self.arpw())
        self.assertEqual(result.message, "sent 1 neighbour advertisement for fd00::100 on eth0")
        na = arp.parse_ndp(self.lan.sent[0][2])
        self.assertEqual((na.type, str(na.target)), (arp.ICMPV6_NA, "fd00::100"))

    def test_not_active(self):
        self.make_active()
        self.successResultOf(self.resource.deactivate(START))
        result = self.check(self.arpw())
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "floating IP 192.168.1.100 (fip1) is not active on this server")
        self.assertEqual(self.lan.sent, [])

    def test_deactivation_cancels_a_check_in_progress(self):
        self.make_active()
        d = self.arpw(count=5).check()
        self.successResultOf(self.resource.deactivate(START))
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
