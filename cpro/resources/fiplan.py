"""What a floating IP says to and hears from the LAN: the duplicate check and announcements.

L{DuplicateAddressProbe} asks whether anyone holds an address before this
server takes it: RFC 5227-style ARP probes (sender 0.0.0.0) or, for IPv6,
duplicate-address-detection neighbour solicitations, optionally with an
ICMP echo. Any frame in which another MAC claims the address, or probes for
it at the same moment, is a L{Conflict}.

L{Announcement} sends a burst of gratuitous ARP (IPv6: unsolicited neighbour
advertisements with the override flag) so that neighbours repoint their
cache entries for the address at this server's MAC.

Both are driven by an injected clock and a link opener
(C{open_link(interface_name, ethertype, on_frame=None)}, see
L{cpro.system.linklayer.open_packet_link}), so the unit tests run them on
a task.Clock with a fake link.
"""

import ipaddress
from dataclasses import dataclass
from typing import Optional

from twisted.internet import defer
from twisted.logger import Logger

from cpro.protocols import arp
from cpro.resources.base import ResourceError

log = Logger()


@dataclass(frozen=True)
class Conflict:
    """Someone else answered for the address."""

    ip: object
    how: str  # 'ARP reply', 'simultaneous ARP probe', 'ICMP echo reply', ...
    mac: Optional[str] = None  # the other holder's MAC, when the answer carried one
    responder: Optional[str] = None  # IP that answered an echo

    def __str__(self):
        who = f"MAC {self.mac}" if self.mac else f"host {self.responder}"
        return f"{self.how} from {who}"


@dataclass
class ProbeStats:
    frames: int = 0  # frames read during the probe
    malformed: int = 0  # truncated or inconsistent frames, dropped
    ignored: int = 0  # well-formed frames about other addresses or from ourselves


def ethertype_for(ip):
    return arp.ETH_P_ARP if ip.version == 4 else arp.ETH_P_IPV6


class DuplicateAddressProbe:
    """One duplicate-address check of ip on interface (an L{Interface}).

    Timeline from run(): probe i (0-based) at i * interval, then listen for
    `wait` after the last one; the echo (if any) runs alongside with its own
    timeout. The result fires at the first conflict, or with None when both
    are over.
    """

    def __init__(self, clock, open_link, interface, ip, count, interval, wait, pinger=None, ping_timeout=0.0):
        self._clock = clock
        self._open_link = open_link
        self._interface = interface
        self.ip = ipaddress.ip_address(ip)
        self._mac = arp.mac_bytes(interface.mac)
        self._count = count
        self._interval = interval
        self._wait = wait
        self._pinger = pinger
        self._ping_timeout = ping_timeout
        self.stats = ProbeStats()
        self._link = None
        self._timer = None
        self._ping = None
        self._sent = 0
        self._arp_done = count <= 0
        self._ping_done = pinger is None
        self._result = None

    def run(self):
        self._result = defer.Deferred(lambda _: self._close())
        name = self._interface.name
        if self._count > 0:
            try:
                self._link = self._open_link(name, ethertype_for(self.ip), self._frame_received)
            except OSError as e:
                self._fail(f"cannot open a packet socket on {name} to probe for {self.ip}: {e.strerror or e}")
                return self._result
        if self._pinger is not None:
            try:
                self._ping = self._pinger(self.ip, self._ping_timeout)
            except OSError as e:
                self._fail(f"cannot send an ICMP echo to {self.ip}: {e.strerror or e}")
                return self._result
            self._ping.addCallbacks(self._ping_answered, self._ping_failed)
        if self._count > 0 and self._result is not None and not self._result.called:
            self._send_probe()
        self._maybe_finish()
        return self._result

    def _send_probe(self):
        self._timer = None
        if self.ip.version == 4:
            frame = arp.arp_probe(self._mac, self.ip)
        else:
            frame = arp.ndp_dad_probe(self._mac, self.ip)
        try:
            self._link.send(frame)
        except OSError as e:
            self._fail(f"cannot send a probe for {self.ip} on {self._interface.name}: {e.strerror or e}")
            return
        self._sent += 1
        if self._sent < self._count:
            self._timer = self._clock.callLater(self._interval, self._send_probe)
        else:
            self._timer = self._clock.callLater(self._wait, self._listening_over)

    def _listening_over(self):
        self._timer = None
        self._arp_done = True
        self._maybe_finish()

    def _ping_answered(self, responder):
        self._ping = None
        self._ping_done = True
        if responder is not None:
            self._conflict(Conflict(self.ip, "ICMP echo reply", responder=str(responder)))
        else:
            self._maybe_finish()

    def _ping_failed(self, failure):
        self._ping = None
        self._ping_done = True
        if not failure.check(defer.CancelledError):
            log.warn("fip probe for {ip}: ICMP echo failed: {error}", ip=self.ip, error=failure.getErrorMessage())
        self._maybe_finish()

    def _frame_received(self, frame):
        if self._result is None or self._result.called:
            return
        self.stats.frames += 1
        try:
            conflict = self._examine(frame)
        except arp.MalformedFrame:
            self.stats.malformed += 1
            return
        if conflict is None:
            self.stats.ignored += 1
        else:
            self._conflict(conflict)

    def _examine(self, frame):
        if self.ip.version == 4:
            packet = arp.parse_arp(frame)
            if self._mac in (packet.sender_mac, packet.eth_src):
                return None
            mac = arp.mac_text(packet.sender_mac)
            if packet.sender_ip == self.ip:
                return Conflict(self.ip, "ARP reply" if packet.op == arp.ARP_REPLY else "ARP request", mac=mac)
            if packet.is_probe and packet.target_ip == self.ip:
                return Conflict(self.ip, "simultaneous ARP probe", mac=mac)
            return None
        packet = arp.parse_ndp(frame)
        if packet is None or packet.eth_src == self._mac or packet.target != self.ip:
            return None
        mac = arp.mac_text(packet.link_addr or packet.eth_src)
        if packet.type == arp.ICMPV6_NA:
            return Conflict(self.ip, "neighbour advertisement", mac=mac)
        if packet.is_dad:
            return Conflict(self.ip, "simultaneous duplicate-address detection", mac=mac)
        return None

    def _maybe_finish(self):
        if self._arp_done and self._ping_done and self._result is not None and not self._result.called:
            self._close()
            self._result.callback(None)

    def _conflict(self, conflict):
        self._close()
        if not self._result.called:
            self._result.callback(conflict)

    def _fail(self, message):
        self._close()
        if not self._result.called:
            self._result.errback(ResourceError(message))

    def _close(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._link is not None:
            self._link.close()
            self._link = None
        ping, self._ping = self._ping, None
        if ping is not None:
            ping.cancel()


class Announcement:
    """A burst of `count` announcements of ip, `interval` apart, from interface.

    start() sends the first frame at once and returns a Deferred firing with
    the number sent once the burst is over; it fails with OSError at the
    first frame that cannot be sent (the rest are not tried). cancel() stops
    the burst.
    """

    def __init__(self, clock, open_link, interface, ip, count, interval):
        self._clock = clock
        self._open_link = open_link
        self._interface = interface
        self.ip = ipaddress.ip_address(ip)
        mac = arp.mac_bytes(interface.mac)
        self._frame = arp.arp_announcement(mac, self.ip) if self.ip.version == 4 else arp.ndp_announcement(mac, self.ip)
        self._count = count
        self._interval = interval
        self.sent = 0
        self._link = None
        self._timer = None
        self.done = defer.Deferred(lambda _: self._close())

    def start(self):
        if self._count <= 0:
            self.done.callback(0)
            return self.done
        try:
            self._link = self._open_link(self._interface.name, ethertype_for(self.ip))
        except OSError as e:
            self._close()
            self.done.errback(e)
            return self.done
        self._send()
        return self.done

    def cancel(self):
        self.done.cancel()

    def _send(self):
        self._timer = None
        try:
            self._link.send(self._frame)
        except OSError as e:
            self._close()
            self.done.errback(e)
            return
        self.sent += 1
        if self.sent < self._count:
            self._timer = self._clock.callLater(self._interval, self._send)
        else:
            self._close()
            self.done.callback(self.sent)

    def _close(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._link is not None:
            self._link.close()
            self._link = None
