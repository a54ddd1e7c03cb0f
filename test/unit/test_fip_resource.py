"""Tests for cpro.resources.fip (and fiplan): the activation sequence on a task.Clock with a fake LAN and netlink."""

import errno
import ipaddress

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from cpro.interfaces import IGroupResource
from cpro.protocols import arp
from cpro.resources.base import ActionContext, ResourceError
from cpro.resources.fip import FipResource, remove_address
from cpro.system.netlink import IFF_NOARP, IFF_UP
from test.unit.fip_fakes import (
    OTHER_MAC,
    OUR_MAC,
    FakeNetlink,
    FakePinger,
    eth,
    fip_config,
    frame_kind,
    loopback,
    make_fip,
)

START = ActionContext(event="START", group="failover1", server="srv1", home=True)
STOP = ActionContext(event="START", group="failover1", server="srv1", home=True, factor="GROUPSTOP")

FIP = ipaddress.ip_address("192.168.1.100")
FIP6 = ipaddress.ip_address("fd00::100")


class FipTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()

    def tearDown(self):
        # No timer may outlive a test: repeat bursts are cancelled by deactivation.
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def assertTimes(self, actual, expected):
        self.assertEqual(len(actual), len(expected), f"{actual} != {expected}")
        for a, e in zip(actual, expected):
            self.assertAlmostEqual(a, e, places=6, msg=f"{actual} != {expected}")

    def run_for(self, seconds, step=None):
        """Advance the clock by seconds, stopping exactly at each timer on the way."""
        end = self.clock.seconds() + seconds
        while True:
            due = sorted(c.getTime() for c in self.clock.getDelayedCalls())
            if not due or due[0] > end + 1e-9:
                break
            self.clock.advance(max(0.0, due[0] - self.clock.seconds()))
        self.clock.advance(max(0.0, end - self.clock.seconds()))

    def deactivate(self, resource):
        self.successResultOf(resource.deactivate(STOP))


class ContractTests(FipTestCase):
    def test_provides_igroupresource(self):
        resource, _, _ = make_fip(self.clock)
        self.assertTrue(verifyObject(IGroupResource, resource))
        self.assertEqual(resource.type, "fip")
        self.assertEqual(resource.name, "fip1")
        self.assertEqual(resource.address, FIP)

    def test_constructor_like_exec(self):
        # node.py builds every group resource as factory(reactor, config, log_dir, ledger=...).
        resource = FipResource(self.clock, fip_config(), "/var/log/cpro")
        self.assertIsNone(resource.interface)
        self.assertEqual(resource.describe(), {"interface": None, "address": "192.168.1.100", "prefix": None, "mac": None})


class ActivationTests(FipTestCase):
    def test_sequence(self):
        resource, lan, netlink = make_fip(self.clock)
        d = resource.activate(START)
        # Probes at 0, 20 and 40 ms from our MAC, claiming no address.
        self.run_for(0.089)
        self.assertNoResult(d)
        self.assertTimes(lan.times("probe"), [0.0, 0.02, 0.04])
        for _, name, frame in lan.sent:
            packet = arp.parse_arp(frame)
            self.assertEqual((name, packet.sender_ip, packet.target_ip), ("eth0", arp.UNSPECIFIED_V4, FIP))
            self.assertEqual(arp.mac_text(packet.sender_mac), OUR_MAC)
        self.assertEqual(netlink.operations(), [])
        # 50 ms after the last probe: added, announced, done.
        self.run_for(0.001)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(netlink.operations(), [("add", 0.09, "eth0", "192.168.1.100", 24)])
        self.assertTimes([c[1] for c in netlink.operations()], [0.09])
        self.assertTrue(netlink.get("eth0").has(FIP))
        self.assertEqual(resource.describe(), {"interface": "eth0", "address": "192.168.1.100", "prefix": 24, "mac": OUR_MAC})
        # The first burst: three announcements 10 ms apart, starting when the address was added.
        self.run_for(0.1)
        self.assertTimes(lan.times("announce"), [0.09, 0.10, 0.11])
        announcement = arp.parse_arp(lan.sent[-1][2])
        self.assertEqual((announcement.sender_ip, announcement.target_ip), (FIP, FIP))
        self.assertEqual(announcement.op, arp.ARP_REQUEST)
        self.assertEqual(lan.sent[-1][2][:6], arp.BROADCAST_MAC)
        # The repeat burst 5 s after the address was added: five more.
        self.run_for(5.0)
        self.assertTimes(lan.times("announce"), [0.09, 0.10, 0.11, 5.09, 5.10, 5.11, 5.12, 5.13])
        self.assertEqual(lan.open_links(), [])  # probe and announcement sockets closed
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(resource.last_probe.frames, 0)

    def test_no_repeat_burst_when_delay_is_zero(self):
        resource, lan, _ = make_fip(self.clock, garp_repeat_delay=0.0)
        d = resource.activate(START)
        self.run_for(0.2)
        self.successResultOf(d)
        self.assertEqual(len(lan.times("announce")), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_probe_disabled(self):
        resource, lan, netlink = make_fip(self.clock, probe_count=0, garp_count=1, garp_repeat_delay=0.0)
        self.successResultOf(resource.activate(START))
        self.assertEqual(lan.times("probe"), [])
        self.assertEqual(lan.times("announce"), [0.0])
        self.assertEqual(netlink.operations(), [("add", 0.0, "eth0", "192.168.1.100", 24)])

    def test_completes_after_the_first_announcement(self):
        # The group goes on with its next resource while the burst finishes.
        resource, lan, _ = make_fip(self.clock, probe_count=0, garp_count=3, garp_repeat_delay=0.0)
        d = resource.activate(START)
        self.successResultOf(d)
        self.assertEqual(len(lan.times("announce")), 1)
        self.run_for(0.05)
        self.assertEqual(len(lan.times("announce")), 3)

    def test_no_subnet_contains_the_address(self):
        resource, lan, netlink = make_fip(self.clock, ip="172.16.5.5")
        failure = self.failureResultOf(resource.activate(START), ResourceError)
        self.assertEqual(
            str(failure.value),
            "no interface has a subnet containing 172.16.5.5 "
            "(interfaces: lo (127.0.0.1/8); eth0 (192.168.1.10/24, fd00::10/64))",
        )
        self.assertEqual(lan.sent, [])
        self.assertEqual(netlink.operations(), [])

    def test_chooses_the_nic_of_the_subnet(self):
        other = eth(3, "eth1", ("10.1.0.5/16",), mac="02:00:00:00:00:03")
        resource, lan, netlink = make_fip(
            self.clock, ip="10.1.2.3", interfaces=(loopback(), eth(), other), probe_count=1, probe_wait=0.0
        )
        d = resource.activate(START)
        self.run_for(0)
        self.successResultOf(d)
        self.assertEqual(netlink.operations(), [("add", 0.0, "eth1", "10.1.2.3", 16)])
        self.assertEqual({name for _, name, _ in lan.sent}, {"eth1"})
        self.assertEqual(resource.mac, "02:00:00:00:00:03")
        self.deactivate(resource)

    def test_netlink_failure_on_add(self):
        resource, lan, netlink = make_fip(self.clock, probe_count=0)
        netlink.fail = {"add": "cannot add 192.168.1.100/24 to eth0: Operation not permitted"}
        failure = self.failureResultOf(resource.activate(START), ResourceError)
        self.assertEqual(str(failure.value), "netlink: cannot add 192.168.1.100/24 to eth0: Operation not permitted")
        self.assertEqual(lan.sent, [])
        self.assertIsNone(resource.interface)

    def test_netlink_failure_on_listing(self):
        resource, _, netlink = make_fip(self.clock)
        netlink.fail = {"interfaces": "cannot list interfaces: Operation not permitted"}
        failure = self.failureResultOf(resource.activate(START), ResourceError)
        self.assertIn("netlink: cannot list interfaces", str(failure.value))

    def test_cannot_open_packet_socket(self):
        resource, lan, netlink = make_fip(self.clock)
        lan.open_error = errno.EPERM
        failure = self.failureResultOf(resource.activate(START), ResourceError)
        self.assertEqual(
            str(failure.value),
            "cannot open a packet socket on eth0 to probe for 192.168.1.100: Operation not permitted",
        )
        self.assertEqual(netlink.operations(), [])

    def test_cannot_send_probe(self):
        resource, lan, netlink = make_fip(self.clock)
        lan.send_error = errno.ENETDOWN
        failure = self.failureResultOf(resource.activate(START), ResourceError)
        self.assertEqual(str(failure.value), "cannot send a probe for 192.168.1.100 on eth0: Network is down")
        self.assertEqual(netlink.operations(), [])
        self.assertEqual(lan.open_links(), [])

    def test_announcement_failure_does_not_fail_activation(self):
        resource, lan, netlink = make_fip(self.clock, probe_count=0, garp_repeat_delay=0.0)
        lan.send_error = errno.ENETDOWN
        self.successResultOf(resource.activate(START))
        self.assertTrue(netlink.get("eth0").has(FIP))
        self.assertEqual(resource.last_announce_error, "[Errno 100] Network is down")
        self.assertEqual(lan.open_links(), [])
        self.deactivate(resource)

    def test_interface_without_arp(self):
        # A loopback address (lab use): nothing to probe or announce on.
        resource, lan, netlink = make_fip(self.clock, ip="127.0.5.1")
        self.successResultOf(resource.activate(START))
        self.assertEqual(lan.sent, [])
        self.assertEqual(netlink.operations(), [("add", 0.0, "lo", "127.0.5.1", 8)])
        self.deactivate(resource)

    def test_noarp_flag(self):
        noarp = eth(flags=IFF_UP | IFF_NOARP)
        resource, lan, _ = make_fip(self.clock, interfaces=(noarp,))
        self.successResultOf(resource.activate(START))
        self.assertEqual(lan.sent, [])
        self.deactivate(resource)

    def test_cancelled_during_probe(self):
        resource, lan, netlink = make_fip(self.clock)
        d = resource.activate(START)
        self.run_for(0.03)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(lan.open_links(), [])
        self.assertEqual(netlink.operations(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The lock was released: the resource can be activated afterwards.
        d = resource.activate(START)
        self.run_for(0.1)
        self.successResultOf(d)
        self.deactivate(resource)


class DuplicateAddressTests(FipTestCase):
    def test_arp_reply_from_holder(self):
        resource, lan, netlink = make_fip(self.clock)
        lan.holder(FIP)
        d = resource.activate(START)
        self.run_for(0.005)
        failure = self.failureResultOf(d, ResourceError)
        self.assertEqual(
            str(failure.value),
            f"192.168.1.100 is already in use on the LAN (ARP reply from MAC {OTHER_MAC}, seen on eth0); not added",
        )
        self.assertEqual(netlink.operations(), [])
        self.assertFalse(netlink.get("eth0").has(FIP))
        self.assertEqual(len(lan.times("probe")), 1)  # stopped at the first answer
        self.assertEqual(lan.times("announce"), [])
        self.assertEqual(lan.open_links(), [])
        self.assertIsNone(resource.interface)

    def test_gratuitous_arp_from_holder(self):
        resource, lan, _ = make_fip(self.clock)
        d = resource.activate(START)
        self.run_for(0.03)
        lan.deliver(arp.arp_announcement(arp.mac_bytes(OTHER_MAC), FIP))
        failure = self.failureResultOf(d, ResourceError)
        self.assertIn(f"ARP request from MAC {OTHER_MAC}", str(failure.value))

    def test_simultaneous_probe(self):
        # RFC 5227 2.1.1: another host probing for the same address at the same time.
        resource, lan, _ = make_fip(self.clock)
        d = resource.activate(START)
        self.run_for(0.01)
        lan.deliver(arp.arp_probe(arp.mac_bytes(OTHER_MAC), FIP))
        failure = self.failureResultOf(d, ResourceError)
        self.assertIn(f"simultaneous ARP probe from MAC {OTHER_MAC}", str(failure.value))

    def test_other_traffic_ignored_and_malformed_counted(self):
        resource, lan, netlink = make_fip(self.clock)
        d = resource.activate(START)
        other = arp.mac_bytes(OTHER_MAC)
        lan.deliver(arp.arp_probe(arp.mac_bytes(OUR_MAC), FIP))  # our own probe, looped back
        lan.deliver(arp.arp_announcement(arp.mac_bytes(OUR_MAC), FIP))  # from our MAC: not a conflict
        lan.deliver(arp.build_arp(arp.ARP_REQUEST, other, "192.168.1.7", "192.168.1.10"))  # someone else's business
        lan.deliver(arp.arp_probe(other, "192.168.1.101"))  # a probe for another address
        lan.deliver(b"")
        lan.deliver(arp.arp_probe(other, FIP)[:30])  # truncated: would be a conflict if whole
        lan.deliver(b"\x00" * 60)
        self.run_for(0.1)
        self.successResultOf(d)
        self.assertEqual(netlink.operations()[0][0], "add")
        stats = resource.last_probe
        self.assertEqual((stats.frames, stats.ignored, stats.malformed), (7, 4, 3))
        self.deactivate(resource)

    def test_ping_answer_is_a_conflict(self):
        pinger = FakePinger(self.clock, responder="192.168.1.100", delay=0.003)
        resource, lan, netlink = make_fip(self.clock, ping_check=True, pinger=pinger)
        d = resource.activate(START)
        self.run_for(0.005)
        failure = self.failureResultOf(d, ResourceError)
        self.assertEqual(
            str(failure.value),
            "192.168.1.100 is already in use on the LAN (ICMP echo reply from host 192.168.1.100, seen on eth0); "
            "not added",
        )
        self.assertEqual(pinger.pings, [(0.0, "192.168.1.100", 0.2)])
        self.assertEqual(netlink.operations(), [])
        self.assertEqual(lan.open_links(), [])

    def test_ping_silence_extends_the_wait(self):
        pinger = FakePinger(self.clock)
        resource, lan, netlink = make_fip(self.clock, ping_check=True, ping_timeout=0.2, pinger=pinger)
        d = resource.activate(START)
        self.run_for(0.199)
        self.assertNoResult(d)
        self.run_for(0.001)
        self.successResultOf(d)
        self.assertTimes([c[1] for c in netlink.operations()], [0.2])
        self.deactivate(resource)

    def test_arp_conflict_cancels_the_ping(self):
        pinger = FakePinger(self.clock)
        resource, lan, _ = make_fip(self.clock, ping_check=True, pinger=pinger)
        lan.holder(FIP)
        d = resource.activate(START)
        self.run_for(0.01)
        self.failureResultOf(d, ResourceError)
        self.assertEqual(pinger.cancelled, 1)

    def test_ping_only(self):
        pinger = FakePinger(self.clock)
        resource, lan, netlink = make_fip(self.clock, probe_count=0, ping_check=True, ping_timeout=0.1, pinger=pinger)
        d = resource.activate(START)
        self.assertEqual(lan.links, [])  # no ARP listener without probes
        self.run_for(0.1)
        self.successResultOf(d)
        self.deactivate(resource)

    def test_ping_cannot_be_sent(self):
        pinger = FakePinger(self.clock, error=errno.EPERM)
        resource, lan, netlink = make_fip(self.clock, ping_check=True, pinger=pinger)
        failure = self.failureResultOf(resource.activate(START), ResourceError)
        self.assertEqual(str(failure.value), "cannot send an ICMP echo to 192.168.1.100: Operation not permitted")
        self.assertEqual(lan.open_links(), [])
        self.assertEqual(netlink.operations(), [])


class IPv6Tests(FipTestCase):
    def test_sequence(self):
        resource, lan, netlink = make_fip(self.clock, ip="fd00::100", garp_repeat_delay=1.0, garp_repeat_count=1)
        d = resource.activate(START)
        self.run_for(0.09)
        self.successResultOf(d)
        self.assertTimes(lan.times("probe"), [0.0, 0.02, 0.04])
        probe = arp.parse_ndp(lan.sent[0][2])
        self.assertTrue(probe.is_dad)
        self.assertEqual((probe.target, probe.dst_ip), (FIP6, arp.solicited_node(FIP6)))
        self.assertEqual(lan.links[0].ethertype, arp.ETH_P_IPV6)
        self.assertEqual(netlink.operations(), [("add", 0.09, "eth0", "fd00::100", 64)])
        self.run_for(1.1)
        self.assertTimes(lan.times("announce"), [0.09, 0.10, 0.11, 1.09])
        na = arp.parse_ndp(lan.sent[-1][2])
        self.assertEqual((na.type, na.target, na.dst_ip), (arp.ICMPV6_NA, FIP6, arp.ALL_NODES))
        self.assertEqual(na.flags, arp.NA_FLAG_OVERRIDE)
        self.assertEqual(arp.mac_text(na.link_addr), OUR_MAC)
        self.deactivate(resource)

    def test_advertisement_from_holder(self):
        resource, lan, netlink = make_fip(self.clock, ip="fd00::100")
        lan.holder(FIP6)
        d = resource.activate(START)
        self.run_for(0.01)
        failure = self.failureResultOf(d, ResourceError)
        self.assertEqual(
            str(failure.value),
            f"fd00::100 is already in use on the LAN (neighbour advertisement from MAC {OTHER_MAC}, seen on eth0); "
            "not added",
        )
        self.assertEqual(netlink.operations(), [])

    def test_simultaneous_dad(self):
        resource, lan, _ = make_fip(self.clock, ip="fd00::100")
        d = resource.activate(START)
        lan.deliver(arp.ndp_dad_probe(arp.mac_bytes(OTHER_MAC), FIP6))
        self.assertIn("simultaneous duplicate-address detection", str(self.failureResultOf(d, ResourceError).value))

    def test_other_neighbour_traffic_ignored(self):
        resource, lan, _ = make_fip(self.clock, ip="fd00::100", garp_repeat_delay=0.0)
        d = resource.activate(START)
        other = arp.mac_bytes(OTHER_MAC)
        lan.deliver(arp.ndp_announcement(other, "fd00::7"))  # another address
        lan.deliver(arp.ndp_announcement(arp.mac_bytes(OUR_MAC), FIP6))  # ourselves
        lan.deliver(arp.ndp_dad_probe(other, "fd00::8"))
        lan.deliver(arp.ndp_announcement(other, FIP6)[:70])  # truncated
        self.run_for(0.1)
        self.successResultOf(d)
        self.assertEqual((resource.last_probe.ignored, resource.last_probe.malformed), (3, 1))
        self.deactivate(resource)


class DeactivationTests(FipTestCase):
    def activated(self, **params):
        resource, lan, netlink = make_fip(self.clock, **params)
        d = resource.activate(START)
        self.run_for(0.2)
        self.successResultOf(d)
        return resource, lan, netlink

    def test_removes_and_cancels_the_repeat(self):
        resource, lan, netlink = self.activated()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the repeat burst
        self.successResultOf(resource.deactivate(STOP))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(netlink.get("eth0").has(FIP))
        self.assertEqual(netlink.operations()[-1], ("delete", 0.2, "eth0", "192.168.1.100", 24))
        self.assertEqual(resource.describe(), {"interface": None, "address": "192.168.1.100", "prefix": None, "mac": None})
        self.clock.advance(10)
        self.assertEqual(len(lan.times("announce")), 3)

    def test_cancels_a_burst_in_progress(self):
        resource, lan, _ = make_fip(self.clock, probe_count=0)
        self.successResultOf(resource.activate(START))
        self.successResultOf(resource.deactivate(STOP))
        self.clock.advance(1)
        self.assertEqual(len(lan.times("announce")), 1)
        self.assertEqual(lan.open_links(), [])

    def test_idempotent(self):
        resource, _, netlink = self.activated()
        self.successResultOf(resource.deactivate(STOP))
        self.successResultOf(resource.deactivate(STOP))
        self.assertEqual([op[0] for op in netlink.operations()], ["add", "delete"])

    def test_removes_an_address_this_process_never_added(self):
        # The daemon restarted: a fresh resource object, the address still on the NIC.
        resource, _, netlink = self.activated()
        self.successResultOf(resource.deactivate(STOP))  # pretend the old daemon...
        netlink.add_address(netlink.get("eth0"), FIP, 24)  # ...left it behind
        fresh = FipResource(
            self.clock, fip_config(), "/x", netlink=netlink, runner=resource._run, open_link=None, pinger=None
        )
        self.successResultOf(fresh.deactivate(STOP))
        self.assertFalse(netlink.get("eth0").has(FIP))

    def test_netlink_failure(self):
        resource, _, netlink = self.activated()
        netlink.fail = {"delete": "cannot delete 192.168.1.100/24 from eth0: Operation not permitted"}
        failure = self.failureResultOf(resource.deactivate(STOP), ResourceError)
        self.assertEqual(str(failure.value), "netlink: cannot delete 192.168.1.100/24 from eth0: Operation not permitted")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_waits_for_an_activation_in_progress(self):
        resource, lan, netlink = make_fip(self.clock)
        activating = resource.activate(START)
        deactivating = resource.deactivate(STOP)
        self.assertNoResult(deactivating)
        self.run_for(0.09)
        self.successResultOf(activating)
        self.successResultOf(deactivating)
        self.assertEqual([op[0] for op in netlink.operations()], ["add", "delete"])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ReactivationTests(FipTestCase):
    def test_address_already_here(self):
        # After a daemon restart (or a retried activation) the address is kept and announced again.
        resource, lan, netlink = make_fip(self.clock, garp_repeat_delay=0.0)
        netlink.add_address(netlink.get("eth0"), FIP, 24)
        netlink.calls.clear()
        self.successResultOf(resource.activate(START))
        self.assertEqual(netlink.operations(), [])
        self.assertEqual(lan.times("probe"), [])  # probing would find ourselves
        self.assertEqual(lan.times("announce"), [0.0])
        self.assertEqual(resource.interface, "eth0")
        self.assertEqual(resource.prefixlen, 24)
        self.run_for(0.05)
        self.deactivate(resource)

    def test_activate_twice(self):
        resource, lan, netlink = make_fip(self.clock)
        d = resource.activate(START)
        self.run_for(1.0)
        self.successResultOf(d)
        self.successResultOf(resource.activate(START))
        self.assertEqual([op[0] for op in netlink.operations()], ["add"])
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # the second burst and one repeat
        self.run_for(6.0)
        # One repeat burst only: the second activation replaced the first one's.
        self.assertTimes(lan.times("announce")[-5:], [6.0, 6.01, 6.02, 6.03, 6.04])
        self.assertEqual(len(lan.times("announce")), 3 + 3 + 5)
        self.deactivate(resource)


class MonitorSupportTests(FipTestCase):
    def test_announce(self):
        resource, lan, _ = make_fip(self.clock, probe_count=0, garp_repeat_delay=0.0)
        self.failureResultOf(resource.announce(2), ResourceError)
        self.successResultOf(resource.activate(START))
        self.run_for(0.1)
        sent_before = len(lan.sent)
        d = resource.announce(2)
        self.run_for(0.01)
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(len(lan.sent), sent_before + 2)
        lan.send_error = errno.ENETDOWN
        self.failureResultOf(resource.announce(1), OSError)
        self.deactivate(resource)

    def test_announce_on_loopback_sends_nothing(self):
        resource, lan, _ = make_fip(self.clock, ip="127.0.5.1")
        self.successResultOf(resource.activate(START))
        self.assertEqual(self.successResultOf(resource.announce(3)), 0)
        self.assertEqual(lan.sent, [])
        self.deactivate(resource)

    def test_interface_state(self):
        resource, _, netlink = make_fip(self.clock, probe_count=0, garp_repeat_delay=0.0)
        self.assertIsNone(self.successResultOf(resource.interface_state()))
        self.successResultOf(resource.activate(START))
        state = self.successResultOf(resource.interface_state())
        self.assertEqual(state.name, "eth0")
        self.assertTrue(state.has(FIP))
        netlink.remove_interface("eth0")
        self.assertIsNone(self.successResultOf(resource.interface_state()))
        self.run_for(0.05)
        self.deactivate(resource)


class RecordingLedger:
    def __init__(self):
        self.held = set()
        self.log = []

    def record(self, resource, kind, value):
        self.log.append(("record", resource, kind, value))
        self.held.add((resource, kind, value))

    def forget(self, resource, kind, value):
        self.log.append(("forget", resource, kind, value))
        self.held.discard((resource, kind, value))


class LedgerTests(FipTestCase):
    def setUp(self):
        super().setUp()
        self.ledger = RecordingLedger()

    def make(self, **params):
        params = {"probe_count": 0, "garp_repeat_delay": 0.0, **params}
        return make_fip(self.clock, ledger=self.ledger, **params)

    def test_recorded_while_held(self):
        resource, lan, netlink = self.make()
        self.assertEqual(FipResource.ledger.entries(), [])  # the class default records nothing
        self.successResultOf(resource.activate(START))
        self.assertEqual(self.ledger.held, {("fip1", "address", "192.168.1.100")})
        self.run_for(0.05)
        self.deactivate(resource)
        self.assertEqual(self.ledger.held, set())

    def test_recorded_before_the_address_is_added(self):
        # A crash between the two leaves a ledger entry, never an unrecorded address.
        resource, _, netlink = self.make()
        original = netlink.add_address
        seen = []

        def add(*args):
            seen.append(set(self.ledger.held))
            original(*args)

        netlink.add_address = add
        self.successResultOf(resource.activate(START))
        self.assertEqual(seen, [{("fip1", "address", "192.168.1.100")}])
        self.run_for(0.05)
        self.deactivate(resource)

    def test_forgotten_when_adding_fails(self):
        resource, _, netlink = self.make()
        netlink.fail = {"add": "cannot add: Operation not permitted"}
        self.failureResultOf(resource.activate(START), ResourceError)
        self.assertEqual(self.ledger.held, set())

    def test_not_recorded_on_conflict(self):
        resource, lan, _ = self.make(probe_count=1)
        lan.holder(FIP)
        d = resource.activate(START)
        self.run_for(0.01)
        self.failureResultOf(d, ResourceError)
        self.assertEqual(self.ledger.log, [])

    def test_kept_when_removal_fails(self):
        resource, _, netlink = self.make()
        self.successResultOf(resource.activate(START))
        self.run_for(0.05)
        netlink.fail = {"delete": "cannot delete: Operation not permitted"}
        self.failureResultOf(resource.deactivate(STOP), ResourceError)
        self.assertEqual(self.ledger.held, {("fip1", "address", "192.168.1.100")})

    def test_address_found_after_restart_is_recorded(self):
        resource, _, netlink = self.make()
        netlink.add_address(netlink.get("eth0"), FIP, 24)
        self.successResultOf(resource.activate(START))
        self.assertEqual(self.ledger.held, {("fip1", "address", "192.168.1.100")})
        self.run_for(0.05)
        self.deactivate(resource)


class RemoveAddressTests(SynchronousTestCase):
    def test_removes_from_every_interface(self):
        clock = task.Clock()
        netlink = FakeNetlink(clock, (loopback(), eth(), eth(3, "eth1", ("192.168.1.20/24",))))
        netlink.add_address(netlink.get("eth0"), FIP, 24)
        netlink.add_address(netlink.get("eth1"), FIP, 32)
        d = remove_address("192.168.1.100", netlink=netlink)
        self.assertEqual(self.successResultOf(d), ["eth0", "eth1"])
        self.assertFalse(netlink.get("eth0").has(FIP))
        self.assertFalse(netlink.get("eth1").has(FIP))
        self.assertEqual(self.successResultOf(remove_address("192.168.1.100", netlink=netlink)), [])

    def test_failure(self):
        netlink = FakeNetlink(task.Clock(), (eth(addresses=("192.168.1.10/24", "192.168.1.100/24")),))
        netlink.fail = {"delete": "cannot delete 192.168.1.100/24 from eth0: Operation not permitted"}
        failure = self.failureResultOf(remove_address(FIP, netlink=netlink), ResourceError)
        self.assertIn("cannot delete 192.168.1.100/24 from eth0", str(failure.value))

    def test_bad_address(self):
        self.assertRaises(ValueError, remove_address, "not-an-ip")


class FrameKindTests(SynchronousTestCase):
    def test_fake_classifier(self):
        mac = arp.mac_bytes(OUR_MAC)
        self.assertEqual(frame_kind(arp.arp_probe(mac, FIP)), "probe")
        self.assertEqual(frame_kind(arp.arp_announcement(mac, FIP)), "announce")
        self.assertEqual(frame_kind(arp.ndp_dad_probe(mac, FIP6)), "probe")
        self.assertEqual(frame_kind(arp.ndp_announcement(mac, FIP6)), "announce")
