"""Tests for cpro.system.linklayer with fake sockets on a MemoryReactorClock (no real network)."""

import errno
import struct
from ipaddress import ip_address

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import icmp
from cpro.system.linklayer import MAX_READS_PER_WAKEUP, PACKET_OUTGOING, PacketLink, _EchoProbe


class FakeSocket:
    def __init__(self, incoming=(), send_error=None):
        self.incoming = list(incoming)  # (data, address) or an exception to raise
        self.sent = []
        self.bound = None
        self.closed = False
        self.send_error = send_error
        self.reads = 0

    def setblocking(self, flag):
        self.blocking = flag

    def bind(self, address):
        self.bound = address

    def fileno(self):
        return 42

    def sendto(self, data, address):
        if self.send_error:
            raise OSError(self.send_error, "nope")
        self.sent.append((data, address))

    def recvfrom(self, size):
        self.reads += 1
        if not self.incoming:
            raise BlockingIOError(errno.EAGAIN, "again")
        item = self.incoming.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        self.closed = True


def packet_address(pkttype=0):
    return ("eth0", 0x0806, pkttype, 1, b"\x02\x00\x00\x00\x00\x09")


class PacketLinkTests(SynchronousTestCase):
    def test_receiving_link(self):
        reactor = MemoryReactorClock()
        sock = FakeSocket(
            [(b"frame1", packet_address()), (b"mine", packet_address(PACKET_OUTGOING)), (b"frame2", packet_address())]
        )
        frames = []
        link = PacketLink(reactor, "eth0", 0x0806, frames.append, sock=sock)
        self.assertEqual(sock.bound, ("eth0", 0x0806))
        self.assertIn(link, reactor.getReaders())
        link.doRead()
        self.assertEqual(frames, [b"frame1", b"frame2"])  # our own transmissions skipped
        link.send(b"out")
        self.assertEqual(sock.sent, [(b"out", ("eth0", 0x0806))])
        link.close()
        self.assertNotIn(link, reactor.getReaders())
        self.assertTrue(sock.closed)
        link.close()  # idempotent
        self.assertRaises(OSError, link.send, b"late")

    def test_send_only_link_receives_nothing(self):
        reactor = MemoryReactorClock()
        sock = FakeSocket()
        link = PacketLink(reactor, "eth0", 0x86DD, sock=sock)
        self.assertEqual(sock.bound, ("eth0", 0))
        self.assertNotIn(link, reactor.getReaders())
        link.send(b"x")
        self.assertEqual(sock.sent, [(b"x", ("eth0", 0x86DD))])
        link.close()

    def test_reads_are_bounded_per_wakeup(self):
        reactor = MemoryReactorClock()
        sock = FakeSocket([(b"f", packet_address())] * (MAX_READS_PER_WAKEUP + 10))
        frames = []
        link = PacketLink(reactor, "eth0", 0x0806, frames.append, sock=sock)
        link.doRead()
        self.assertEqual(len(frames), MAX_READS_PER_WAKEUP)
        link.doRead()
        self.assertEqual(len(frames), MAX_READS_PER_WAKEUP + 10)
        link.close()

    def test_handler_errors_do_not_escape(self):
        reactor = MemoryReactorClock()
        sock = FakeSocket([(b"a", packet_address()), (b"b", packet_address())])
        seen = []

        def handler(frame):
            seen.append(frame)
            raise ValueError("bad handler")

        link = PacketLink(reactor, "eth0", 0x0806, handler, sock=sock)
        link.doRead()
        self.assertEqual(seen, [b"a", b"b"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        link.close()

    def test_socket_error_stops_the_read(self):
        reactor = MemoryReactorClock()
        sock = FakeSocket([OSError(errno.ENETDOWN, "down"), (b"a", packet_address())])
        frames = []
        link = PacketLink(reactor, "eth0", 0x0806, frames.append, sock=sock)
        link.doRead()
        self.assertEqual(frames, [])
        link.doRead()
        self.assertEqual(frames, [b"a"])
        link.close()

    def test_bind_failure_closes(self):
        class Unbindable(FakeSocket):
            def bind(self, address):
                raise OSError(errno.ENODEV, "No such device")

        sock = Unbindable()
        self.assertRaises(OSError, PacketLink, MemoryReactorClock(), "eth9", 0x0806, print, sock=sock)
        self.assertTrue(sock.closed)


def v4_reply(ident, seq):
    message = bytearray(icmp.echo_request(ident, seq, b"cpro-fip"))
    message[0] = icmp.ICMP_ECHO_REPLY
    message[2:4] = b"\x00\x00"
    message[2:4] = struct.pack("!H", icmp.internet_checksum(bytes(message)))
    return bytes([0x45] + [0] * 8 + [1] + [0] * 10) + bytes(message)


class EchoProbeTests(SynchronousTestCase):
    def test_answered(self):
        reactor = MemoryReactorClock()
        sock = FakeSocket()
        probe = _EchoProbe(reactor, ip_address("10.0.0.5"), 0.2, sock=sock, identifier=77)
        data, address = sock.sent[0]
        self.assertEqual(address, ("10.0.0.5", 0))
        kind, code, _, ident, seq = struct.unpack_from("!BBHHH", data)
        self.assertEqual((kind, code, ident, seq), (icmp.ICMP_ECHO_REQUEST, 0, 77, 1))
        sock.incoming = [
            (v4_reply(78, 1), ("10.0.0.5", 0)),  # another pinger's reply
            (v4_reply(77, 1), ("10.0.0.6", 0)),  # right id, wrong host
            OSError(errno.EHOSTUNREACH, "unreachable"),
            (b"\x45garbage", ("10.0.0.5", 0)),
            (v4_reply(77, 1), ("10.0.0.5", 0)),
        ]
        probe.doRead()
        self.assertEqual(self.successResultOf(probe.result), "10.0.0.5")
        self.assertTrue(sock.closed)
        self.assertNotIn(probe, reactor.getReaders())
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_timeout(self):
        reactor = MemoryReactorClock()
        probe = _EchoProbe(reactor, ip_address("10.0.0.5"), 0.2, sock=FakeSocket(), identifier=1)
        reactor.advance(0.19)
        self.assertNoResult(probe.result)
        reactor.advance(0.01)
        self.assertIsNone(self.successResultOf(probe.result))
        self.assertEqual(reactor.getReaders(), [])

    def test_cancel(self):
        reactor = MemoryReactorClock()
        sock = FakeSocket()
        probe = _EchoProbe(reactor, ip_address("fd00::5"), 0.2, sock=sock, identifier=1)
        self.assertEqual(sock.sent[0][0][0], icmp.ICMPV6_ECHO_REQUEST)
        probe.result.cancel()
        self.failureResultOf(probe.result, defer.CancelledError)
        self.assertTrue(sock.closed)
        self.assertEqual(reactor.getDelayedCalls(), [])
        self.assertEqual(reactor.getReaders(), [])

    def test_v6_answer(self):
        reactor = MemoryReactorClock()
        sock = FakeSocket()
        probe = _EchoProbe(reactor, ip_address("fd00::5"), 0.2, sock=sock, identifier=5)
        reply = bytes([icmp.ICMPV6_ECHO_REPLY]) + sock.sent[0][0][1:]
        sock.incoming = [(reply, ("fd00::5", 0, 0, 0))]
        probe.doRead()
        self.assertEqual(self.successResultOf(probe.result), "fd00::5")

    def test_send_failure_raises_and_closes(self):
        sock = FakeSocket(send_error=errno.EPERM)
        self.assertRaises(OSError, _EchoProbe, MemoryReactorClock(), ip_address("10.0.0.5"), 0.2, sock=sock)
        self.assertTrue(sock.closed)
