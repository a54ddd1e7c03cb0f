"""ARP and IPv6 neighbour-discovery frames: bytes <-> packets, for floating IPs.

The fip resource checks that an address is free before taking it and then
tells the LAN where it lives. On IPv4 that is ARP (RFC 826): probes in the
style of RFC 5227 (sender IP 0.0.0.0) and gratuitous ARP announcements. On
IPv6 it is neighbour discovery (RFC 4861/4862): a duplicate-address-detection
neighbour solicitation from :: to the solicited-node group, and unsolicited
neighbour advertisements to all nodes with the override flag set.

Frames are whole Ethernet frames, as sent and received on an AF_PACKET
socket: building the IPv6 header here (instead of using a raw ICMPv6 socket)
is what lets a DAD solicitation carry the unspecified source address, which
the kernel does not allow a raw ICMPv6 socket to send.

Nothing here does I/O. The parsers raise L{MalformedFrame} for truncated or
inconsistent frames; callers count and drop them.
"""

import ipaddress
import struct
from dataclasses import dataclass
from typing import Optional

from cpro.protocols.icmp import internet_checksum

ETH_P_ARP = 0x0806
ETH_P_IPV4 = 0x0800
ETH_P_IPV6 = 0x86DD

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

ARP_REQUEST = 1
ARP_REPLY = 2

ICMPV6_NS = 135
ICMPV6_NA = 136
NA_FLAG_ROUTER = 0x80000000
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000
_OPT_SOURCE_LLADDR = 1
_OPT_TARGET_LLADDR = 2
_IPPROTO_ICMPV6 = 58
_ND_HOP_LIMIT = 255  # RFC 4861: anything else did not come from the link

ALL_NODES = ipaddress.IPv6Address("ff02::1")
UNSPECIFIED_V4 = ipaddress.IPv4Address("0.0.0.0")
UNSPECIFIED_V6 = ipaddress.IPv6Address("::")

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_ICMPV6_ND = struct.Struct("!BBHI16s")  # type, code, checksum, flags/reserved, target

ARP_FRAME_LEN = _ETH.size + _ARP.size  # 42; Ethernet pads it to 60 on the wire


class MalformedFrame(ValueError):
    """Truncated or inconsistent: not a frame of the kind the socket was opened for."""


@dataclass(frozen=True)
class ArpPacket:
    op: int  # ARP_REQUEST or ARP_REPLY
    eth_src: bytes
    sender_mac: bytes
    sender_ip: ipaddress.IPv4Address
    target_mac: bytes
    target_ip: ipaddress.IPv4Address

    @property
    def is_probe(self):
        """An RFC 5227 probe: a request from a host that does not claim an address yet."""
        return self.op == ARP_REQUEST and self.sender_ip == UNSPECIFIED_V4


@dataclass(frozen=True)
class NdpPacket:
    type: int  # ICMPV6_NS or ICMPV6_NA
    eth_src: bytes
    src_ip: ipaddress.IPv6Address
    dst_ip: ipaddress.IPv6Address
    target: ipaddress.IPv6Address
    flags: int  # NA flags (NA_FLAG_*), 0 for NS
    link_addr: Optional[bytes]  # source (NS) or target (NA) link-layer address option

    @property
    def is_dad(self):
        """A duplicate-address-detection solicitation (RFC 4862: source ::)."""
        return self.type == ICMPV6_NS and self.src_ip == UNSPECIFIED_V6


def mac_bytes(text):
    """'02:00:00:00:00:01' -> 6 bytes."""
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def mac_text(raw):
    return ":".join(f"{b:02x}" for b in raw)


def _check_mac(mac):
    if len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, got {len(mac)}")
    return mac


# ARP


def build_arp(op, src_mac, sender_ip, target_ip, target_mac=ZERO_MAC, eth_dst=BROADCAST_MAC):
    """One Ethernet/ARP frame from src_mac (Ethernet and ARP sender hardware address)."""
    _check_mac(src_mac)
    body = _ARP.pack(
        1,  # hardware type: Ethernet
        ETH_P_IPV4,
        6,
        4,
        op,
        src_mac,
        ipaddress.IPv4Address(sender_ip).packed,
        _check_mac(target_mac),
        ipaddress.IPv4Address(target_ip).packed,
    )
    return _ETH.pack(_check_mac(eth_dst), src_mac, ETH_P_ARP) + body


def arp_probe(src_mac, ip):
    """RFC 5227 probe: 'who has ip?' without claiming any address (sender 0.0.0.0)."""
    return build_arp(ARP_REQUEST, src_mac, UNSPECIFIED_V4, ip)


def arp_announcement(src_mac, ip, op=ARP_REQUEST):
    """Gratuitous ARP: sender and target IP are both ip, broadcast.

    The request form is RFC 5227's announcement; the reply form (target MAC =
    our MAC) is what `arping -A` sends. Linux updates an existing neighbour
    entry on either.
    """
    target_mac = src_mac if op == ARP_REPLY else ZERO_MAC
    return build_arp(op, src_mac, ip, ip, target_mac=target_mac)


def parse_arp(frame):
    """An Ethernet frame -> L{ArpPacket}; L{MalformedFrame} if it is not Ethernet/IPv4 ARP."""
    if len(frame) < ARP_FRAME_LEN:
        raise MalformedFrame(f"ARP frame of {len(frame)} bytes, need {ARP_FRAME_LEN}")
    _, eth_src, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_ARP:
        raise MalformedFrame(f"ethertype 0x{ethertype:04x} is not ARP")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, _ETH.size)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IPV4, 6, 4):
        raise MalformedFrame(f"ARP for hardware {htype}/{hlen} protocol 0x{ptype:04x}/{plen}, not Ethernet/IPv4")
    if op not in (ARP_REQUEST, ARP_REPLY):
        raise MalformedFrame(f"ARP operation {op}")
    return ArpPacket(
        op=op,
        eth_src=eth_src,
        sender_mac=sha,
        sender_ip=ipaddress.IPv4Address(spa),
        target_mac=tha,
        target_ip=ipaddress.IPv4Address(tpa),
    )


# IPv6 neighbour discovery


def solicited_node(ip):
    """ff02::1:ffXX:XXXX, the group a host joins for each of its addresses."""
    low = ipaddress.IPv6Address(ip).packed[-3:]
    return ipaddress.IPv6Address(bytes.fromhex("ff02" + "0000" * 4 + "0001ff") + low)


def multicast_mac(group):
    """RFC 2464: 33:33 followed by the last four bytes of the group."""
    return b"\x33\x33" + ipaddress.IPv6Address(group).packed[-4:]


def _pseudo_header(src, dst, length):
    return (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!I3xB", length, _IPPROTO_ICMPV6)
    )


def icmpv6_checksum(src, dst, message):
    """RFC 4443 checksum over the IPv6 pseudo-header and the message (checksum field zeroed)."""
    return internet_checksum(_pseudo_header(src, dst, len(message)) + message)


def _ndp_frame(src_mac, src_ip, dst_ip, eth_dst, icmp_type, flags, target, options):
    src_ip = ipaddress.IPv6Address(src_ip)
    dst_ip = ipaddress.IPv6Address(dst_ip)
    message = _ICMPV6_ND.pack(icmp_type, 0, 0, flags, ipaddress.IPv6Address(target).packed) + options
    checksum = icmpv6_checksum(src_ip, dst_ip, message)
    message = message[:2] + struct.pack("!H", checksum) + message[4:]
    ip_header = _IPV6.pack(6 << 28, len(message), _IPPROTO_ICMPV6, _ND_HOP_LIMIT, src_ip.packed, dst_ip.packed)
    return _ETH.pack(eth_dst, _check_mac(src_mac), ETH_P_IPV6) + ip_header + message


def ndp_dad_probe(src_mac, ip):
    """Duplicate-address detection: NS for ip from :: to its solicited-node group, no options."""
    group = solicited_node(ip)
    return _ndp_frame(src_mac, UNSPECIFIED_V6, group, multicast_mac(group), ICMPV6_NS, 0, ip, b"")


def ndp_announcement(src_mac, ip):
    """Unsolicited NA for ip to all nodes, override set, with our MAC as target link-layer address."""
    option = struct.pack("!BB", _OPT_TARGET_LLADDR, 1) + src_mac
    return _ndp_frame(src_mac, ip, ALL_NODES, multicast_mac(ALL_NODES), ICMPV6_NA, NA_FLAG_OVERRIDE, ip, option)


def parse_ndp(frame):
    """An Ethernet frame -> L{NdpPacket}, or None for IPv6 traffic that is not NS/NA.

    L{MalformedFrame} for truncated frames, bad lengths, a wrong hop limit or
    checksum: a neighbour message that did not come intact from the link.
    """
    if len(frame) < _ETH.size + _IPV6.size:
        raise MalformedFrame(f"IPv6 frame of {len(frame)} bytes")
    _, eth_src, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_IPV6:
        raise MalformedFrame(f"ethertype 0x{ethertype:04x} is not IPv6")
    vtf, payload_len, next_header, hop_limit, src, dst = _IPV6.unpack_from(frame, _ETH.size)
    if vtf >> 28 != 6:
        raise MalformedFrame(f"IP version {vtf >> 28} in an IPv6 frame")
    if next_header != _IPPROTO_ICMPV6:
        return None  # other IPv6 traffic (extension headers included): not neighbour discovery
    start = _ETH.size + _IPV6.size
    message = frame[start : start + payload_len]
    if len(message) != payload_len:
        raise MalformedFrame(f"IPv6 payload length {payload_len}, frame holds {len(message)}")
    if len(message) < 1 or message[0] not in (ICMPV6_NS, ICMPV6_NA):
        return None
    if len(message) < _ICMPV6_ND.size:
        raise MalformedFrame(f"neighbour message of {len(message)} bytes")
    if hop_limit != _ND_HOP_LIMIT:
        raise MalformedFrame(f"neighbour message with hop limit {hop_limit}")
    icmp_type, code, _, flags, target = _ICMPV6_ND.unpack_from(message)
    if code != 0:
        raise MalformedFrame(f"neighbour message with code {code}")
    if internet_checksum(_pseudo_header(src, dst, len(message)) + message) != 0:
        raise MalformedFrame("neighbour message with a bad checksum")
    link_addr = _link_addr_option(
        message[_ICMPV6_ND.size :], _OPT_SOURCE_LLADDR if icmp_type == ICMPV6_NS else _OPT_TARGET_LLADDR
    )
    return NdpPacket(
        type=icmp_type,
        eth_src=eth_src,
        src_ip=ipaddress.IPv6Address(src),
        dst_ip=ipaddress.IPv6Address(dst),
        target=ipaddress.IPv6Address(target),
        flags=flags if icmp_type == ICMPV6_NA else 0,
        link_addr=link_addr,
    )


def _link_addr_option(options, wanted):
    """The first link-layer address option of type wanted (RFC 4861 4.6.1), or None."""
    offset = 0
    while offset + 2 <= len(options):
        kind, units = options[offset], options[offset + 1]
        if units == 0:
            raise MalformedFrame("neighbour discovery option of length 0")
        end = offset + units * 8
        if end > len(options):
            raise MalformedFrame("neighbour discovery option runs past the message")
        if kind == wanted and units == 1:
            return options[offset + 2 : offset + 8]
        offset = end
    return None
