"""Tests for cpro.system.netlink: choosing the interface, and the pyroute2 calls (with a fake IPRoute)."""

import errno
import ipaddress
import socket

from pyroute2 import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from twisted.trial.unittest import SynchronousTestCase

from cpro.system.netlink import (
    IFA_F_NODAD,
    IFF_LOWER_UP,
    IFF_NOARP,
    IFF_UP,
    Interface,
    InterfaceAddress,
    Netlink,
    NetlinkFailure,
    choose_interface,
    find_interface,
    holders,
)
from cpro.system.runners import run_inline


def addr(text, secondary=False):
    iface = ipaddress.ip_interface(text)
    return InterfaceAddress(iface.ip, iface.network.prefixlen, secondary)


def iface(index, name, *addresses, mac="02:00:00:00:00:01", link_type=1, flags=IFF_UP | IFF_LOWER_UP):
    return Interface(index, name, mac, link_type, flags, tuple(addr(a) for a in addresses))


LO = iface(1, "lo", "127.0.0.1/8", "::1/128", mac="00:00:00:00:00:00", link_type=772)
ETH0 = iface(2, "eth0", "192.168.1.10/24", "fd00::10/64", "fe80::1/64")
ETH1 = iface(3, "eth1", "10.0.0.10/16")


class ChooseInterfaceTests(SynchronousTestCase):
    def test_subnet_match(self):
        self.assertEqual(choose_interface((LO, ETH0, ETH1), "192.168.1.100"), (ETH0, 24))
        self.assertEqual(choose_interface((LO, ETH0, ETH1), "10.0.200.1"), (ETH1, 16))
        self.assertEqual(choose_interface((LO, ETH0, ETH1), "fd00::100"), (ETH0, 64))

    def test_no_match(self):
        self.assertIsNone(choose_interface((LO, ETH0, ETH1), "172.16.0.1"))
        self.assertIsNone(choose_interface((LO, ETH0, ETH1), "fd01::1"))

    def test_link_local_subnets_never_match(self):
        # Every interface has fe80::/64; a floating IP there says nothing about the NIC.
        other = iface(4, "eth2", "fe80::2/64")
        self.assertIsNone(choose_interface((ETH0, other), "fe80::99"))

    def test_longest_prefix_wins(self):
        wide = iface(2, "eth0", "10.0.0.1/8")
        narrow = iface(3, "eth1", "10.1.2.1/24")
        self.assertEqual(choose_interface((wide, narrow), "10.1.2.50"), (narrow, 24))
        self.assertEqual(choose_interface((wide, narrow), "10.9.0.1"), (wide, 8))

    def test_primary_before_secondary_then_lowest_index(self):
        a = Interface(5, "a", "02:00:00:00:00:05", 1, IFF_UP, (addr("10.0.0.1/24", secondary=True),))
        b = Interface(6, "b", "02:00:00:00:00:06", 1, IFF_UP, (addr("10.0.0.2/24"),))
        c = Interface(7, "c", "02:00:00:00:00:07", 1, IFF_UP, (addr("10.0.0.3/24"),))
        self.assertEqual(choose_interface((c, b, a), "10.0.0.100"), (b, 24))

    def test_host_routes_and_own_address_skipped(self):
        host = iface(4, "eth2", "10.5.5.5/32")
        self.assertIsNone(choose_interface((host,), "10.5.5.5"))
        held = iface(5, "eth3", "10.6.0.100/24")
        self.assertIsNone(choose_interface((held,), "10.6.0.100"))

    def test_holders(self):
        held = iface(4, "eth2", "192.168.1.10/24", "192.168.1.100/24")
        self.assertEqual(holders((ETH0, held), "192.168.1.100"), [(held, addr("192.168.1.100/24"))])
        self.assertEqual(holders((ETH0,), "192.168.1.100"), [])

    def test_find_interface(self):
        self.assertIs(find_interface((LO, ETH0), "eth0"), ETH0)
        self.assertIsNone(find_interface((LO, ETH0), "eth9"))


class InterfacePropertyTests(SynchronousTestCase):
    def test_flags(self):
        self.assertTrue(ETH0.uses_arp)
        self.assertTrue(ETH0.carrier)
        self.assertFalse(LO.uses_arp)
        no_arp = iface(4, "x", flags=IFF_UP | IFF_NOARP)
        self.assertFalse(no_arp.uses_arp)
        self.assertFalse(no_arp.carrier)
        down = iface(5, "y", flags=IFF_LOWER_UP)
        self.assertFalse(down.up)
        self.assertFalse(down.carrier)

    def test_has_and_summary(self):
        self.assertTrue(ETH0.has("fd00::10"))
        self.assertFalse(ETH0.has("fd00::11"))
        self.assertEqual(ETH1.summary(), "eth1 (10.0.0.10/16)")
        self.assertEqual(iface(9, "z").summary(), "z (no address)")


def link_msg(index, name, mac, link_type=1, flags=IFF_UP | IFF_LOWER_UP):
    m = ifinfmsg()
    m["index"] = index
    m["ifi_type"] = link_type
    m["flags"] = flags
    m["attrs"] = [("IFLA_IFNAME", name), ("IFLA_ADDRESS", mac)]
    return m


def addr_msg(index, family, address, prefixlen, flags=0, local=None):
    m = ifaddrmsg()
    m["family"] = family
    m["index"] = index
    m["prefixlen"] = prefixlen
    m["flags"] = flags & 0xFF
    m["attrs"] = [("IFA_ADDRESS", address), ("IFA_FLAGS", flags)]
    if local:
        m["attrs"].append(("IFA_LOCAL", local))
    return m


class FakeIPRoute:
    """Stands in for pyroute2.IPRoute: canned dumps, recorded requests, injectable errors."""

    def __init__(self, links=(), addrs=(), error=None):
        self.links = list(links)
        self.addrs = list(addrs)
        self.error = error
        self.requests = []
        self.closed = 0

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed += 1

    def get_links(self):
        if self.error:
            raise self.error
        return self.links

    def get_addr(self):
        return self.addrs

    def addr(self, command, **kwargs):
        self.requests.append((command, kwargs))
        if self.error:
            raise self.error
        return []


class NetlinkTests(SynchronousTestCase):
    def setUp(self):
        self.ipr = FakeIPRoute(
            links=[link_msg(1, "lo", "00:00:00:00:00:00", link_type=772), link_msg(2, "eth0", "02:00:00:00:00:02")],
            addrs=[
                addr_msg(1, socket.AF_INET, "127.0.0.1", 8),
                addr_msg(2, socket.AF_INET, "192.168.1.10", 24, local="192.168.1.10"),
                addr_msg(2, socket.AF_INET, "192.168.1.100", 24, flags=0x81, local="192.168.1.100"),
                addr_msg(2, socket.AF_INET6, "fd00::10", 64),
                addr_msg(2, socket.AF_PACKET, "ignored", 0),
            ],
        )
        self.netlink = Netlink(self.ipr)

    def test_interfaces(self):
        lo, eth0 = self.netlink.interfaces()
        self.assertEqual((lo.index, lo.name, lo.uses_arp), (1, "lo", False))
        self.assertEqual((eth0.name, eth0.mac, eth0.uses_arp, eth0.carrier), ("eth0", "02:00:00:00:00:02", True, True))
        self.assertEqual(
            eth0.addresses,
            (addr("192.168.1.10/24"), addr("192.168.1.100/24", secondary=True), addr("fd00::10/64")),
        )
        self.assertEqual(self.ipr.closed, 1)

    def test_point_to_point_uses_local(self):
        self.ipr.addrs = [addr_msg(2, socket.AF_INET, "10.9.9.9", 32, local="10.0.0.1")]
        self.assertEqual(self.netlink.interfaces()[1].addresses, (addr("10.0.0.1/32"),))

    def test_list_failure(self):
        self.ipr.error = NetlinkError(errno.EPERM, "Operation not permitted")
        e = self.assertRaises(NetlinkFailure, self.netlink.interfaces)
        self.assertEqual(str(e), "cannot list interfaces: Operation not permitted")

    def test_add_ipv4(self):
        eth0 = self.netlink.interfaces()[1]
        self.netlink.add_address(eth0, "192.168.1.101", 24)
        self.assertEqual(self.ipr.requests, [("add", {"index": 2, "address": "192.168.1.101", "prefixlen": 24})])

    def test_add_ipv6_without_dad(self):
        eth0 = self.netlink.interfaces()[1]
        self.netlink.add_address(eth0, ipaddress.ip_address("fd00::100"), 64)
        self.assertEqual(
            self.ipr.requests,
            [("add", {"index": 2, "address": "fd00::100", "prefixlen": 64, "flags": IFA_F_NODAD})],
        )

    def test_add_existing_is_success(self):
        eth0 = self.netlink.interfaces()[1]
        self.ipr.error = NetlinkError(errno.EEXIST, "File exists")
        self.netlink.add_address(eth0, "192.168.1.100", 24)

    def test_add_failure(self):
        eth0 = self.netlink.interfaces()[1]
        self.ipr.error = NetlinkError(errno.EPERM, "Operation not permitted")
        e = self.assertRaises(NetlinkFailure, self.netlink.add_address, eth0, "192.168.1.101", 24)
        self.assertEqual(str(e), "cannot add 192.168.1.101/24 to eth0: Operation not permitted")

    def test_delete_gone_is_success(self):
        eth0 = self.netlink.interfaces()[1]
        for code in (errno.EADDRNOTAVAIL, errno.ENODEV):
            self.ipr.error = NetlinkError(code, "")
            self.netlink.delete_address(eth0, "192.168.1.101", 24)

    def test_delete_failure(self):
        eth0 = self.netlink.interfaces()[1]
        self.ipr.error = NetlinkError(errno.EPERM, "")
        e = self.assertRaises(NetlinkFailure, self.netlink.delete_address, eth0, "192.168.1.100", 24)
        self.assertIn("cannot delete 192.168.1.100/24 from eth0", str(e))

    def test_remove_everywhere(self):
        self.assertEqual(self.netlink.remove_everywhere(ipaddress.ip_address("192.168.1.100")), ["eth0"])
        self.assertEqual(self.ipr.requests, [("del", {"index": 2, "address": "192.168.1.100", "prefixlen": 24})])

    def test_remove_everywhere_when_absent(self):
        self.assertEqual(self.netlink.remove_everywhere("192.168.1.222"), [])
        self.assertEqual(self.ipr.requests, [])


class InlineRunnerTests(SynchronousTestCase):
    def test_result_and_failure(self):
        self.assertEqual(self.successResultOf(run_inline(lambda a, b=0: a + b, 1, b=2)), 3)
        self.failureResultOf(run_inline(lambda: 1 / 0), ZeroDivisionError)
