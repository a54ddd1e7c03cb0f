"""Fuzzing the ARP and neighbour-discovery parsers (cpro.protocols.arp):
parse_arp and parse_ndp.

The fixups recompute the IPv6 payload length and the ICMPv6 checksum (and,
in one of them, put back the hop limit of 255 and the IPv6 version and next
header) so that mutations reach the option parser. The contract: only
L{MalformedFrame} is raised; an accepted packet says what the bytes say,
and parse_ndp accepts only intact neighbour messages (hop limit 255, a
checksum that verifies, a payload that fits the frame).
"""

import ipaddress
import struct

from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import arp
from cpro.protocols.icmp import internet_checksum
from test.fuzz.harness import Finding, FuzzTestMixin, Target

OUR_MAC = bytes.fromhex("020000000001")
THEIR_MAC = bytes.fromhex("020000000002")
FIP = ipaddress.IPv4Address("10.0.0.100")
FIP6 = ipaddress.IPv6Address("fd00::1:2:3")

_ETH = 14
_IPV6 = 40
_ND = 24


def fix_ndp(data):
    """Payload length and ICMPv6 checksum made right for what the frame holds."""
    if len(data) < _ETH + _IPV6 + 4:
        raise ValueError("too short")
    message = bytearray(data[_ETH + _IPV6:])
    header = bytearray(data[_ETH:_ETH + _IPV6])
    header[4:6] = struct.pack("!H", len(message) & 0xFFFF)
    message[2:4] = b"\x00\x00"
    checksum = arp.icmpv6_checksum(ipaddress.IPv6Address(bytes(header[8:24])),
                                   ipaddress.IPv6Address(bytes(header[24:40])), bytes(message))
    message[2:4] = struct.pack("!H", checksum)
    return data[:_ETH] + bytes(header) + bytes(message)


def fix_ndp_header(data):
    """As fix_ndp, with the version, next header and hop limit of a neighbour message."""
    if len(data) < _ETH + _IPV6 + 4:
        raise ValueError("too short")
    header = bytearray(data[_ETH:_ETH + _IPV6])
    header[0] = 0x60 | (header[0] & 0x0F)
    header[6] = 58
    header[7] = 255
    return fix_ndp(data[:12] + struct.pack("!H", arp.ETH_P_IPV6) + bytes(header) + data[_ETH + _IPV6:])


def _options(rng):
    out = b""
    for _ in range(rng.randrange(4)):
        kind = rng.choice((1, 2, 3, 5, 14))
        units = rng.randrange(1, 3)
        out += bytes([kind, units]) + rng.randbytes(units * 8 - 2)
    return out


class ArpTarget(Target):
    name = "arp"
    max_size = 1600

    def seeds(self, rng):
        seeds = [
            arp.arp_probe(OUR_MAC, FIP),
            arp.arp_announcement(OUR_MAC, FIP),
            arp.arp_announcement(OUR_MAC, FIP, op=arp.ARP_REPLY),
            arp.build_arp(arp.ARP_REPLY, THEIR_MAC, FIP, "10.0.0.1", OUR_MAC, OUR_MAC) + bytes(18),
            arp.ndp_dad_probe(OUR_MAC, FIP6),
            arp.ndp_announcement(THEIR_MAC, FIP6),
        ]
        # NS/NA with several options, the link-layer one anywhere among them.
        for _ in range(4):
            frame = arp.ndp_announcement(THEIR_MAC, FIP6)
            seeds.append(fix_ndp(frame[:-8] + _options(rng) + frame[-8:] + _options(rng)))
        return seeds

    def fixups(self):
        return [fix_ndp, fix_ndp_header]

    def structured(self, rng):
        frame = rng.choice((arp.ndp_announcement(THEIR_MAC, FIP6), arp.ndp_dad_probe(OUR_MAC, FIP6)))
        return fix_ndp_header(frame + _options(rng) + rng.randbytes(rng.randrange(0, 24)))

    def check(self, data):
        self._arp(data)
        self._ndp(data)

    def _arp(self, data):
        try:
            packet = arp.parse_arp(data)
        except arp.MalformedFrame:
            return
        if packet.op not in (arp.ARP_REQUEST, arp.ARP_REPLY):
            raise Finding(f"ARP operation {packet.op} accepted")
        body = data[14:42]
        if (packet.eth_src, packet.sender_mac, packet.sender_ip.packed, packet.target_mac,
                packet.target_ip.packed) != (data[6:12], body[8:14], body[14:18], body[18:24], body[24:28]):
            raise Finding(f"{packet!r} does not say what the frame says")

    def _ndp(self, data):
        try:
            packet = arp.parse_ndp(data)
        except arp.MalformedFrame:
            return
        if packet is None:
            return
        payload_len, next_header, hop_limit = struct.unpack_from("!HBB", data, _ETH + 4)
        message = data[_ETH + _IPV6:_ETH + _IPV6 + payload_len]
        if len(message) != payload_len or len(message) < _ND:
            raise Finding("a neighbour message that does not fit its frame was accepted")
        if next_header != 58 or hop_limit != 255 or data[_ETH] >> 4 != 6:
            raise Finding("a neighbour message with a wrong IPv6 header was accepted")
        pseudo = data[_ETH + 8:_ETH + 40] + struct.pack("!I3xB", len(message), 58)
        if internet_checksum(pseudo + message) != 0:
            raise Finding("a neighbour message with a bad checksum was accepted")
        if packet.type not in (arp.ICMPV6_NS, arp.ICMPV6_NA) or packet.target.packed != message[8:24]:
            raise Finding(f"{packet!r} does not say what the frame says")
        if packet.link_addr is not None and (len(packet.link_addr) != 6 or packet.link_addr not in message[_ND:]):
            raise Finding(f"link-layer address {packet.link_addr!r}")


class ArpFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = ArpTarget()
