"""ICMP / ICMPv6 echo messages: bytes <-> (identifier, sequence), for the fip ping check and ipw.

Messages are what a raw ICMP socket sends and receives: an IPv4 raw socket
hands received packets over with their IP header, an ICMPv6 raw socket
without it (and fills in the ICMPv6 checksum itself on sending). Nothing here
does I/O; the parsers return None for anything that is not an intact echo
reply.
"""

import socket
import struct

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129

_ECHO = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence

# (echo request, echo reply, destination unreachable, time exceeded) per family
_TYPES = {
    socket.AF_INET: (8, 0, 3, 11),
    socket.AF_INET6: (128, 129, 1, 3),
}
_UNREACHABLE_V4 = {
    0: "network unreachable",
    1: "host unreachable",
    2: "protocol unreachable",
    3: "port unreachable",
    9: "network prohibited",
    10: "host prohibited",
    13: "communication prohibited",
}
_UNREACHABLE_V6 = {0: "no route", 1: "communication prohibited", 3: "address unreachable", 4: "port unreachable"}


def internet_checksum(data):
    """RFC 1071 ones'-complement checksum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(identifier, sequence, payload=b"", v6=False):
    """One echo request; the IPv6 checksum is left 0 for the kernel to fill in."""
    if v6:
        return _ECHO.pack(ICMPV6_ECHO_REQUEST, 0, 0, identifier, sequence) + payload
    message = _ECHO.pack(ICMP_ECHO_REQUEST, 0, 0, identifier, sequence) + payload
    return message[:2] + struct.pack("!H", internet_checksum(message)) + message[4:]


def _ipv4_payload(packet, protocol):
    """What follows the IPv4 header of C{packet} if that header is whole and
    carries C{protocol}, else None.

    A header length under 20 bytes (IHL < 5) or past the packet's end is no
    IPv4 header: reading on would take an echo out of the header's own fields.
    """
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != protocol:
        return None
    header_len = (packet[0] & 0x0F) * 4
    if header_len < 20 or header_len > len(packet):
        return None
    return packet[header_len:]


def parse_echo_reply_v4(packet):
    """IPv4 packet (with header) -> (identifier, sequence) of an echo reply, else None."""
    message = _ipv4_payload(packet, socket.IPPROTO_ICMP)
    if message is None or len(message) < _ECHO.size or internet_checksum(message) != 0:
        return None
    kind, code, _, identifier, sequence = _ECHO.unpack_from(message)
    if kind != ICMP_ECHO_REPLY or code != 0:
        return None
    return identifier, sequence


def parse_echo_reply_v6(message):
    """ICMPv6 message (no IP header; the kernel checked the checksum) -> (identifier, sequence), else None."""
    if len(message) < _ECHO.size:
        return None
    kind, code, _, identifier, sequence = _ECHO.unpack_from(message)
    if kind != ICMPV6_ECHO_REPLY or code != 0:
        return None
    return identifier, sequence


def parse_icmp(family, data, with_ip_header):
    """What an ICMP packet says about one of our echoes, or None.

    @return: ("reply", ident, seq, payload) for an echo reply, or
        ("error", ident, seq, reason) for an unreachable / time exceeded
        message quoting an echo request.
    """
    if with_ip_header:  # raw IPv4 sockets deliver the IP header too
        data = _ipv4_payload(data, socket.IPPROTO_ICMP)
    if data is None or len(data) < 8:
        return None
    request, reply, unreachable, exceeded = _TYPES[family]
    kind, code, _, ident, seq = struct.unpack("!BBHHH", data[:8])
    if kind == reply:
        return ("reply", ident, seq, data[8:])
    if kind not in (unreachable, exceeded):
        return None
    quoted = data[8:]
    if family == socket.AF_INET:
        inner = _ipv4_payload(quoted, socket.IPPROTO_ICMP)
        if inner is None:
            return None
        reason = _UNREACHABLE_V4.get(code, f"unreachable (code {code})") if kind == unreachable else "time exceeded"
    else:
        if len(quoted) < 40 or quoted[6] != socket.IPPROTO_ICMPV6:
            return None
        inner = quoted[40:]
        reason = _UNREACHABLE_V6.get(code, f"unreachable (code {code})") if kind == unreachable else "time exceeded"
    if len(inner) < 8 or inner[0] != request:
        return None
    _, _, _, ident, seq = struct.unpack("!BBHHH", inner[:8])
    return ("error", ident, seq, reason)
