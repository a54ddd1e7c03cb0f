"""Raw sockets read by the reactor: Ethernet frames on one NIC, and ICMP echo.

L{PacketLink} is an AF_PACKET socket bound to one interface: it sends whole
Ethernet frames (gratuitous ARP, probes, neighbour advertisements) and, when
given a callback, delivers the frames of one ethertype that the NIC receives.
A send-only link is bound with protocol 0 so that the kernel queues nothing
for it. L{ping} sends one ICMP echo request and says who answered within a
timeout. Both are non-blocking and registered with the reactor (addReader);
both need root (CAP_NET_RAW) and act in the current network namespace.
"""

import ipaddress
import os
import socket

from twisted.internet import defer
from twisted.logger import Logger

from cpro.protocols.icmp import echo_request, parse_echo_reply_v4, parse_echo_reply_v6

log = Logger()

PACKET_OUTGOING = 4  # sll_pkttype of frames this host sent
MAX_READS_PER_WAKEUP = 64  # bound the work one readable event may cause on a busy LAN
MAX_FRAME = 65536


class PacketLink:
    """An AF_PACKET socket on one interface (IReadDescriptor when receiving)."""

    def __init__(self, reactor, interface_name, ethertype, on_frame=None, sock=None):
        self._reactor = reactor
        self.interface_name = interface_name
        self._ethertype = ethertype
        self._on_frame = on_frame
        # Created with protocol 0 (receives nothing) and bound to the interface
        # with the wanted protocol: frames from other NICs never get queued.
        self._socket = sock if sock is not None else socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._socket.setblocking(False)
            # Python converts the protocol to network order itself (sll_protocol = htons(proto)).
            self._socket.bind((interface_name, ethertype if on_frame else 0))
        except OSError:
            self._socket.close()
            raise
        self._reading = on_frame is not None
        if self._reading:
            reactor.addReader(self)

    def send(self, frame):
        """Send one Ethernet frame; OSError if the kernel refuses it."""
        if self._socket is None:
            raise OSError(f"packet socket on {self.interface_name} is closed")
        self._socket.sendto(frame, (self.interface_name, self._ethertype))

    def close(self):
        if self._socket is None:
            return
        if self._reading:
            self._reactor.removeReader(self)
            self._reading = False
        self._socket.close()
        self._socket = None

    # IReadDescriptor

    def fileno(self):
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self):
        return f"PacketLink({self.interface_name})"

    def doRead(self):
        for _ in range(MAX_READS_PER_WAKEUP):
            if self._socket is None:
                return
            try:
                frame, address = self._socket.recvfrom(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warn("packet socket on {interface}: {error}", interface=self.interface_name, error=e)
                return
            if len(address) > 2 and address[2] == PACKET_OUTGOING:
                # Our own transmissions. The kernel hands outgoing frames only to
                # ETH_P_ALL sockets, so this is a guard, not the usual path.
                continue
            try:
                self._on_frame(frame)
            except Exception:
                log.failure("packet socket on {interface}: frame handler", interface=self.interface_name)

    def connectionLost(self, reason):
        self.close()


def open_packet_link(reactor, interface_name, ethertype, on_frame=None):
    return PacketLink(reactor, interface_name, ethertype, on_frame)


class _EchoProbe:
    """One echo request in flight (IReadDescriptor)."""

    def __init__(self, reactor, ip, timeout, sock=None, identifier=None):
        self._reactor = reactor
        self._ip = ip
        self._v6 = ip.version == 6
        self._identifier = identifier if identifier is not None else int.from_bytes(os.urandom(2), "big")
        self._sequence = 1
        if sock is None:
            family = socket.AF_INET6 if self._v6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if self._v6 else socket.IPPROTO_ICMP)
        self._socket = sock
        self._socket.setblocking(False)
        self.result = defer.Deferred(lambda _: self._finish(None, cancelled=True))
        self._timer = None
        try:
            self._socket.sendto(
                echo_request(self._identifier, self._sequence, b"cpro-fip", v6=self._v6), (str(ip), 0)
            )
        except OSError:
            self._socket.close()
            raise
        reactor.addReader(self)
        self._timer = reactor.callLater(timeout, self._finish, None)

    def fileno(self):
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self):
        return f"Ping({self._ip})"

    def doRead(self):
        for _ in range(MAX_READS_PER_WAKEUP):
            if self._socket is None:
                return
            try:
                data, address = self._socket.recvfrom(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP errors (host unreachable after failed ARP) land here: not an answer.
                continue
            reply = parse_echo_reply_v6(data) if self._v6 else parse_echo_reply_v4(data)
            if reply == (self._identifier, self._sequence) and ipaddress.ip_address(address[0].split("%")[0]) == self._ip:
                self._finish(address[0])
                return

    def connectionLost(self, reason):
        self._finish(None)

    def _finish(self, responder, cancelled=False):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._socket is not None:
            self._reactor.removeReader(self)
            self._socket.close()
            self._socket = None
        if not cancelled and not self.result.called:
            self.result.callback(responder)


def ping(reactor, ip, timeout):
    """Send one echo request to ip: Deferred firing with the responder's address, or None after timeout.

    OSError (raised, not a failed Deferred) if the socket cannot be opened or the request not sent.
    """
    return _EchoProbe(reactor, ipaddress.ip_address(ip), timeout).result
