"""Fuzzing the ICMP / ICMPv6 echo parsers (cpro.protocols.icmp): parse_icmp for
both families (IPv4 with and without the IP header), parse_echo_reply_v4 and
parse_echo_reply_v6.

The contract: never raise, whatever the bytes; return None or the documented
tuple; never read an echo out of an IPv4 header that is not one (version 4,
a header length of at least 20 bytes that the packet holds), whether it is
the packet's own header or the one quoted in an error message.
"""

import ipaddress
import socket
import struct

from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import icmp
from test.fuzz.harness import Finding, FuzzTestMixin, Target

SRC4, DST4 = ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv4Address("192.0.2.2")
SRC6, DST6 = ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("2001:db8::2")


def ipv4_header(payload_length, protocol=socket.IPPROTO_ICMP, src=SRC4, dst=DST4, options=b""):
    ihl = 5 + len(options) // 4
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + payload_length, 0, 0, 64, protocol, 0,
                       src.packed, dst.packed) + options


def ipv6_header(payload_length, next_header=socket.IPPROTO_ICMPV6):
    return struct.pack("!IHBB16s16s", 6 << 28, payload_length, next_header, 64, SRC6.packed, DST6.packed)


def with_checksum(message):
    message = message[:2] + b"\x00\x00" + message[4:]
    return message[:2] + struct.pack("!H", icmp.internet_checksum(message)) + message[4:]


def fix_v4_checksum(data):
    """The ICMP checksum after the IPv4 header made right again."""
    ihl = (data[0] & 0x0F) * 4
    if len(data) < ihl + 8:
        raise ValueError("too short")
    return data[:ihl] + with_checksum(data[ihl:])


def _ipv4_header_ok(data):
    """True if data starts with a whole IPv4 header."""
    return len(data) >= 20 and data[0] >> 4 == 4 and 20 <= (data[0] & 0x0F) * 4 <= len(data)


class IcmpTarget(Target):
    name = "icmp"
    max_size = 600

    def seeds(self, rng):
        request4 = icmp.echo_request(0x1234, 7, b"token" + bytes(8))
        request6 = icmp.echo_request(0x1234, 8, b"token" + bytes(8), v6=True)
        reply4 = with_checksum(bytes([icmp.ICMP_ECHO_REPLY]) + request4[1:])
        reply6 = bytes([icmp.ICMPV6_ECHO_REPLY]) + request6[1:]
        unreachable4 = with_checksum(struct.pack("!BBHI", 3, 1, 0, 0) + ipv4_header(len(request4)) + request4[:8])
        exceeded4 = with_checksum(struct.pack("!BBHI", 11, 0, 0, 0)
                                  + ipv4_header(len(request4), options=b"\x01" * 4) + request4)
        unreachable6 = struct.pack("!BBHI", 1, 3, 0, 0) + ipv6_header(len(request6)) + request6
        exceeded6 = struct.pack("!BBHI", 3, 0, 0, 0) + ipv6_header(len(request6)) + request6
        with_header = [ipv4_header(len(m)) + m for m in (reply4, unreachable4, exceeded4)]
        with_header.append(ipv4_header(len(reply4), options=b"\x00" * 8) + reply4)
        return with_header + [reply4, unreachable4, reply6, unreachable6, exceeded6]

    def fixups(self):
        return [fix_v4_checksum]

    def check(self, data):
        cases = ((socket.AF_INET, True), (socket.AF_INET, False), (socket.AF_INET6, False))
        for family, with_ip_header in cases:
            self._parsed(icmp.parse_icmp(family, data, with_ip_header), family, data, with_ip_header)
        for parser in (icmp.parse_echo_reply_v4, icmp.parse_echo_reply_v6):
            result = parser(data)
            if result is not None and not (isinstance(result, tuple) and len(result) == 2
                                           and all(0 <= v <= 0xFFFF for v in result)):
                raise Finding(f"{parser.__name__} returned {result!r}")
        reply = icmp.parse_echo_reply_v4(data)
        if reply is not None and not _ipv4_header_ok(data):
            raise Finding("parse_echo_reply_v4 read an echo behind a broken IPv4 header")

    def _parsed(self, result, family, data, with_ip_header):
        if result is None:
            return
        if not (isinstance(result, tuple) and len(result) == 4 and result[0] in ("reply", "error")):
            raise Finding(f"parse_icmp returned {result!r}")
        what, ident, seq, rest = result
        if not (0 <= ident <= 0xFFFF and 0 <= seq <= 0xFFFF):
            raise Finding(f"identifier or sequence out of range: {result!r}")
        if what == "reply" and not isinstance(rest, bytes):
            raise Finding(f"reply payload {rest!r}")
        if what == "error" and not (isinstance(rest, str) and rest):
            raise Finding(f"error reason {rest!r}")
        if with_ip_header:
            if not _ipv4_header_ok(data):
                raise Finding(f"parse_icmp read {what} behind a broken IPv4 header")
            data = data[(data[0] & 0x0F) * 4:]
        if what == "error" and family == socket.AF_INET and not _ipv4_header_ok(data[8:]):
            raise Finding("parse_icmp read an error quoting a broken IPv4 header")


class IcmpFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = IcmpTarget()
