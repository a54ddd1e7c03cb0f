"""Tests for the ipw monitor.

Fake ICMP sockets on a MemoryReactorClock for the matching and timing rules;
real echoes to 127.0.0.1 and ::1; and (root) a network namespace of our own for
addresses that never answer, the unprivileged ping socket, and unreachable
networks. No echo leaves the loopback or that namespace.
"""

import errno
import ipaddress
import os
import shutil
import socket
import struct
import subprocess

from pyroute2.netns import popns, pushns
from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from cpro.protocols.icmp import echo_request, parse_icmp
from cpro.protocols.icmp import internet_checksum as checksum
from cpro.resources.monitors.base import CheckStatus
from cpro.resources.monitors.ipw import (
    IcmpMonitor,
    IcmpPinger,
    open_icmp_socket,
    shared_pinger,
)

from test.unit.monitor_contract import MonitorContractMixin, make_environment, make_monitor_config

IDENT = 0x1234


def monitor(addresses, pinger, clock=None, timeout=2.0):
    config = make_monitor_config("ipw", {"addresses": list(addresses)}, timeout=timeout)
    return IcmpMonitor(clock or reactor, config, config.params, make_environment(), pinger=pinger)


def ipv4_header(source, destination, payload_length):
    return struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + payload_length, 0, 0, 64, socket.IPPROTO_ICMP, 0,
        ipaddress.ip_address(source).packed, ipaddress.ip_address(destination).packed,
    )


def ipv4_reply(request, source, ident=None):
    """What a raw IPv4 socket receives when source answers the echo request."""
    _, _, _, req_ident, seq = struct.unpack("!BBHHH", request[:8])
    icmp = struct.pack("!BBHHH", 0, 0, 0, req_ident if ident is None else ident, seq) + request[8:]
    return ipv4_header(source, "127.0.0.1", len(icmp)) + icmp


def ipv4_unreachable(request, destination, reporter, code=1):
    quoted = ipv4_header("127.0.0.1", destination, len(request)) + request[:8]
    icmp = struct.pack("!BBHI", 3, code, 0, 0) + quoted
    return ipv4_header(reporter, "127.0.0.1", len(icmp)) + icmp


class FakeIcmpSocket:
    def __init__(self, fd, send_error=None):
        self.fd = fd
        self.sent = []  # (packet, destination)
        self.inbox = []  # (data, (host, port))
        self.closed = False
        self.send_error = send_error

    def fileno(self):
        return self.fd

    def sendto(self, packet, destination):
        if self.send_error is not None:
            raise OSError(self.send_error, os.strerror(self.send_error))
        self.sent.append((packet, destination))
        return len(packet)

    def recvfrom(self, size):
        if not self.inbox:
            raise BlockingIOError(errno.EAGAIN, "no data")
        return self.inbox.pop(0)

    def close(self):
        self.closed = True


class FakeNetwork:
    """open_socket for IcmpPinger: fake raw sockets, one per family."""

    def __init__(self, send_error=None, open_error=None):
        self.sockets = {}
        self.send_error = send_error
        self.open_error = open_error

    def __call__(self, family):
        if self.open_error is not None:
            raise PermissionError(self.open_error, os.strerror(self.open_error))
        sock = self.sockets[family] = FakeIcmpSocket(100 + len(self.sockets), self.send_error)
        return sock, True

    def deliver(self, reactor, family, data, source):
        self.sockets[family].inbox.append((data, (source, 0)))
        for reader in reactor.getReaders():
            if reader.family == family:
                reader.doRead()


class FakeSocketTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = MemoryReactorClock()
        self.net = FakeNetwork()
        self.pinger = IcmpPinger(self.clock, open_socket=self.net, ident=IDENT)

    def sent(self, family=socket.AF_INET):
        return self.net.sockets[family].sent

    def assertNothingPending(self):
        self.assertEqual(self.pinger.pending, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reply_is_normal(self):
        m = monitor(["127.0.0.9"], self.pinger, self.clock)
        m.start()
        d = m.check()
        self.assertNoResult(d)
        ((packet, destination),) = self.sent()
        self.assertEqual(destination, ("127.0.0.9", 0))
        self.assertEqual(checksum(packet), 0)
        self.clock.advance(0.004)
        self.net.deliver(self.clock, socket.AF_INET, ipv4_reply(packet, "127.0.0.9"), "127.0.0.9")
        result = self.successResultOf(d)
        self.assertEqual((result.status, result.message), (CheckStatus.NORMAL, "127.0.0.9 replied in 4.0 ms"))
        self.assertEqual(m.describe(), {"addresses": ["127.0.0.9"], "last_replied": "127.0.0.9"})
        self.assertNothingPending()

    def test_silence_resends_then_errors_after_the_reply_wait(self):
        d = monitor(["127.0.0.9"], self.pinger, self.clock, timeout=6.0).check()  # reply wait 3 s
        self.assertEqual(len(self.sent()), 1)
        self.clock.advance(1.0)
        self.assertEqual(len(self.sent()), 2)
        self.clock.advance(1.0)
        self.assertEqual(len(self.sent()), 3)
        seqs = {struct.unpack("!H", p[6:8])[0] for p, _ in self.sent()}
        self.assertEqual(len(seqs), 3)
        self.assertNoResult(d)
        self.clock.advance(1.0)
        result = self.successResultOf(d)
        self.assertEqual(
            (result.status, result.message),
            (CheckStatus.ERROR, "no reply from any address: 127.0.0.9: no reply within 3 s"),
        )
        self.assertNothingPending()

    def test_reply_to_a_resent_echo_counts(self):
        d = monitor(["127.0.0.9"], self.pinger, self.clock, timeout=6.0).check()
        self.clock.advance(1.0)
        self.clock.advance(0.5)
        packet = self.sent()[1][0]
        self.net.deliver(self.clock, socket.AF_INET, ipv4_reply(packet, "127.0.0.9"), "127.0.0.9")
        self.assertEqual(self.successResultOf(d).message, "127.0.0.9 replied in 500.0 ms")

    def test_one_answer_of_several_is_enough(self):
        d = monitor(["127.0.0.7", "127.0.0.8"], self.pinger, self.clock).check()
        packet = self.sent()[1][0]
        self.net.deliver(self.clock, socket.AF_INET, ipv4_reply(packet, "127.0.0.8"), "127.0.0.8")
        self.assertEqual(self.successResultOf(d).status, CheckStatus.NORMAL)
        self.assertNothingPending()  # the other echo is abandoned at once

    def test_foreign_packets_are_ignored(self):
        d = monitor(["127.0.0.9"], self.pinger, self.clock).check()
        packet = self.sent()[0][0]
        deliver = lambda data, source: self.net.deliver(self.clock, socket.AF_INET, data, source)  # noqa: E731
        deliver(ipv4_reply(packet, "127.0.0.9", ident=IDENT + 1), "127.0.0.9")  # another program's ping
        deliver(ipv4_reply(packet, "127.0.0.10"), "127.0.0.10")  # not the address we pinged
        forged = bytearray(ipv4_reply(packet, "127.0.0.9"))
        forged[20 + 8] ^= 0xFF  # token
        deliver(bytes(forged), "127.0.0.9")
        deliver(packet, "127.0.0.1")  # our own request, looped back to the raw socket
        deliver(b"\x45\x00", "127.0.0.9")  # truncated
        self.assertNoResult(d)
        deliver(ipv4_reply(packet, "127.0.0.9"), "127.0.0.9")
        self.assertEqual(self.successResultOf(d).status, CheckStatus.NORMAL)

    def test_unreachable_fails_at_once(self):
        d = monitor(["127.0.0.9"], self.pinger, self.clock).check()
        packet = self.sent()[0][0]
        self.net.deliver(self.clock, socket.AF_INET, ipv4_unreachable(packet, "127.0.0.9", "127.0.0.254"), "127.0.0.254")
        result = self.successResultOf(d)
        self.assertEqual(
            result.message,
            "no reply from any address: 127.0.0.9: host unreachable (reported by 127.0.0.254)",
        )
        self.assertNothingPending()

    def test_send_error(self):
        self.net.send_error = errno.ENETUNREACH
        result = self.successResultOf(monitor(["127.0.0.9"], self.pinger, self.clock).check())
        self.assertEqual(
            result.message,
            "no reply from any address: 127.0.0.9: cannot send: Network is unreachable (ENETUNREACH)",
        )
        self.assertNothingPending()

    def test_socket_cannot_be_opened(self):
        self.net.open_error = errno.EACCES
        result = self.successResultOf(monitor(["127.0.0.9"], self.pinger, self.clock).check())
        self.assertEqual(
            result.message, "no reply from any address: 127.0.0.9: cannot open an ICMP socket: Permission denied"
        )

    def test_bad_or_no_address(self):
        d = monitor(["not-an-ip", "127.0.0.9"], self.pinger, self.clock).check()
        self.clock.advance(1.0)
        self.assertEqual(
            self.successResultOf(d).message,
            "no reply from any address: not-an-ip: not an IP address; 127.0.0.9: no reply within 1 s",
        )
        result = self.successResultOf(monitor(["not-an-ip"], self.pinger, self.clock).check())
        self.assertEqual((result.status, result.message), (CheckStatus.ERROR, "not-an-ip: not an IP address"))
        result = self.successResultOf(monitor([], self.pinger, self.clock).check())
        self.assertEqual(result.message, "no address to ping (parameters list)")
        self.assertNothingPending()

    def test_ipv6(self):
        d = monitor(["::1"], self.pinger, self.clock).check()
        ((packet, destination),) = self.sent(socket.AF_INET6)
        self.assertEqual(destination, ("::1", 0, 0, 0))
        self.assertEqual(packet[0], 128)
        reply = bytes([129]) + packet[1:]
        self.net.deliver(self.clock, socket.AF_INET6, reply, "::1")
        self.assertEqual(self.successResultOf(d).status, CheckStatus.NORMAL)

    def test_monitors_share_one_socket_closed_by_the_last_stop(self):
        first = monitor(["127.0.0.7"], self.pinger, self.clock)
        second = monitor(["127.0.0.8"], self.pinger, self.clock)
        first.start()
        second.start()
        d1, d2 = first.check(), second.check()
        self.assertEqual(len(self.net.sockets), 1)
        self.assertEqual(len(self.clock.getReaders()), 1)
        self.assertEqual(len(self.sent()), 2)
        first.stop()
        self.failureResultOf(d1, defer.CancelledError)
        self.assertFalse(self.net.sockets[socket.AF_INET].closed)
        second.stop()
        self.failureResultOf(d2, defer.CancelledError)
        self.assertTrue(self.net.sockets[socket.AF_INET].closed)
        self.assertEqual(self.clock.getReaders(), [])
        self.assertNothingPending()

    def test_shared_pinger_per_reactor(self):
        self.assertIs(shared_pinger(self.clock), shared_pinger(self.clock))
        self.assertIsNot(shared_pinger(self.clock), shared_pinger(MemoryReactorClock()))


class PacketTests(unittest.SynchronousTestCase):
    def test_echo_request_and_parse(self):
        packet = echo_request(IDENT, 7, b"token123")
        self.assertEqual(checksum(packet), 0)
        self.assertIsNone(parse_icmp(socket.AF_INET, packet, with_ip_header=False))  # a request
        reply = ipv4_reply(packet, "127.0.0.5")
        self.assertEqual(parse_icmp(socket.AF_INET, reply, with_ip_header=True), ("reply", IDENT, 7, b"token123"))
        error = ipv4_unreachable(packet, "127.0.0.5", "127.0.0.6", code=0)
        self.assertEqual(parse_icmp(socket.AF_INET, error, True), ("error", IDENT, 7, "network unreachable"))
        for junk in (b"", b"\x00" * 7, b"\x60" + b"\x00" * 30):
            self.assertIsNone(parse_icmp(socket.AF_INET, junk, True))

    def test_checksum(self):
        self.assertEqual(checksum(b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7"), 0x220D)  # RFC 1071 example
        self.assertEqual(checksum(b"\xff"), 0x00FF)


def icmp_available():
    try:
        sock, _ = open_icmp_socket(socket.AF_INET)
    except OSError as e:
        return f"cannot open an ICMP socket here ({e.strerror}): needs root or net.ipv4.ping_group_range"
    sock.close()
    return None


class LoopbackContractTests(MonitorContractMixin, unittest.TestCase):
    """Real echoes to 127.0.0.1; the pending check uses a fake socket that never answers."""

    monitor_type = "ipw"

    def setUp(self):
        reason = icmp_available()
        if reason:
            raise unittest.SkipTest(reason)
        self.fake_clock = MemoryReactorClock()

    def make_monitor(self):
        return monitor(["127.0.0.1"], IcmpPinger(reactor))

    def make_pending_monitor(self):
        self.fake_pinger = IcmpPinger(self.fake_clock, open_socket=FakeNetwork())
        return monitor(["127.0.0.9"], self.fake_pinger, self.fake_clock)

    def contract_reactor(self):
        return self.fake_clock

    def assert_nothing_left(self, monitor):
        self.assertEqual(self.fake_pinger.pending, 0)


class LoopbackTests(unittest.TestCase):
    def setUp(self):
        reason = icmp_available()
        if reason:
            raise unittest.SkipTest(reason)
        self.pinger = IcmpPinger(reactor)

    @defer.inlineCallbacks
    def test_ipv4_and_ipv6_loopback(self):
        for addresses in (["127.0.0.1"], ["::1"], ["127.0.0.1", "::1"]):
            m = monitor(addresses, self.pinger)
            m.start()
            result = yield m.check()
            m.stop()
            self.assertEqual(result.status, CheckStatus.NORMAL, f"{addresses}: {result.message}")
        self.assertEqual(self.pinger.open_families, [])  # closed by the last stop


class NamespaceTests(unittest.TestCase):
    """A network namespace of our own: 10.231.0.1/24 on a veth whose peer holds nothing.

    Its sockets are opened inside the namespace (setns on this thread for the
    socket() call only); the reactor reads them like any other.
    """

    OWN = "10.231.0.1"
    SILENT = "10.231.0.2"  # on the link, but nobody answers ARP for it
    NO_ROUTE = "10.232.0.1"

    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to create a network namespace")
        if shutil.which("ip") is None:
            raise unittest.SkipTest("needs the ip command (iproute2)")
        self.netns = f"cpro-ipw-{os.getpid()}"
        self.ip("netns", "add", self.netns)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.netns], check=False)
        self.ip("-n", self.netns, "link", "set", "lo", "up")
        self.ip("-n", self.netns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        self.ip("-n", self.netns, "addr", "add", f"{self.OWN}/24", "dev", "v0")
        self.ip("-n", self.netns, "link", "set", "v0", "up")
        self.ip("-n", self.netns, "link", "set", "v1", "up")

    def ip(self, *args):
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def pinger(self, opener=open_icmp_socket):
        def open_in_namespace(family):
            pushns(self.netns)
            try:
                return opener(family)
            finally:
                popns()

        pinger = IcmpPinger(reactor, open_socket=open_in_namespace)
        self.addCleanup(pinger.close)
        return pinger

    @defer.inlineCallbacks
    def test_all_fail_is_error(self):
        m = monitor([self.SILENT, self.NO_ROUTE], self.pinger(), timeout=2.0)
        result = yield m.check()
        m.stop()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertTrue(result.message.startswith("no reply from any address: "), result.message)
        self.assertIn(f"{self.SILENT}: no reply within 1 s", result.message)
        self.assertIn(f"{self.NO_ROUTE}: cannot send: Network is unreachable (ENETUNREACH)", result.message)

    @defer.inlineCallbacks
    def test_one_answering_address_is_enough(self):
        m = monitor([self.SILENT, self.OWN], self.pinger(), timeout=2.0)
        result = yield m.check()
        m.stop()
        self.assertEqual(result.status, CheckStatus.NORMAL, result.message)
        self.assertTrue(result.message.startswith(f"{self.OWN} replied in "))

    @defer.inlineCallbacks
    def test_unprivileged_ping_socket(self):
        self.ip("netns", "exec", self.netns, "sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 0")

        def ping_socket(family):
            proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
            sock = socket.socket(family, socket.SOCK_DGRAM, proto)
            sock.setblocking(False)
            return sock, False

        pinger = self.pinger(ping_socket)
        for addresses in ([self.OWN], ["::1"]):
            m = monitor(addresses, pinger, timeout=2.0)
            result = yield m.check()
            m.stop()
            self.assertEqual(result.status, CheckStatus.NORMAL, f"{addresses}: {result.message}")
        m = monitor([self.SILENT], pinger, timeout=0.6)
        result = yield m.check()
        m.stop()
        self.assertEqual(result.message, f"no reply from any address: {self.SILENT}: no reply within 0.3 s")
