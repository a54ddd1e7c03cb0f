"""Tests for cpro.protocols.arp and cpro.protocols.icmp: frames built and parsed as bytes."""

import ipaddress
import socket
import struct

from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import arp, icmp

OUR_MAC = bytes.fromhex("020000000001")
THEIR_MAC = bytes.fromhex("020000000002")
FIP = ipaddress.ip_address("10.0.0.100")
FIP6 = ipaddress.ip_address("fd00::1:2:3")


class MacTests(SynchronousTestCase):
    def test_round_trip(self):
        self.assertEqual(arp.mac_bytes("02:00:00:00:00:0a"), bytes.fromhex("02000000000a"))
        self.assertEqual(arp.mac_text(bytes.fromhex("02000000000a")), "02:00:00:00:00:0a")

    def test_bad_mac(self):
        self.assertRaises(ValueError, arp.mac_bytes, "02:00:00")
        self.assertRaises(ValueError, arp.arp_probe, b"\x02\x00", FIP)


class ArpBuildTests(SynchronousTestCase):
    def test_probe_layout(self):
        frame = arp.arp_probe(OUR_MAC, FIP)
        self.assertEqual(len(frame), arp.ARP_FRAME_LEN)
        self.assertEqual(frame[0:6], arp.BROADCAST_MAC)
        self.assertEqual(frame[6:12], OUR_MAC)
        self.assertEqual(frame[12:14], b"\x08\x06")
        # htype 1, ptype IPv4, hlen 6, plen 4, op request
        self.assertEqual(frame[14:22], bytes.fromhex("0001080006040001"))
        self.assertEqual(frame[22:28], OUR_MAC)
        self.assertEqual(frame[28:32], bytes(4))  # sender IP 0.0.0.0: claims nothing
        self.assertEqual(frame[32:38], bytes(6))
        self.assertEqual(frame[38:42], FIP.packed)

    def test_probe_parses_as_probe(self):
        packet = arp.parse_arp(arp.arp_probe(OUR_MAC, FIP))
        self.assertTrue(packet.is_probe)
        self.assertEqual(packet.target_ip, FIP)
        self.assertEqual(packet.sender_mac, OUR_MAC)
        self.assertEqual(packet.eth_src, OUR_MAC)

    def test_announcement_request_form(self):
        packet = arp.parse_arp(arp.arp_announcement(OUR_MAC, FIP))
        self.assertEqual(packet.op, arp.ARP_REQUEST)
        self.assertEqual(packet.sender_ip, FIP)
        self.assertEqual(packet.target_ip, FIP)
        self.assertEqual(packet.sender_mac, OUR_MAC)
        self.assertEqual(packet.target_mac, arp.ZERO_MAC)
        self.assertFalse(packet.is_probe)

    def test_announcement_reply_form(self):
        frame = arp.arp_announcement(OUR_MAC, FIP, op=arp.ARP_REPLY)
        self.assertEqual(frame[0:6], arp.BROADCAST_MAC)
        packet = arp.parse_arp(frame)
        self.assertEqual(packet.op, arp.ARP_REPLY)
        self.assertEqual(packet.target_mac, OUR_MAC)
        self.assertEqual((packet.sender_ip, packet.target_ip), (FIP, FIP))

    def test_reply_to_someone(self):
        frame = arp.build_arp(arp.ARP_REPLY, THEIR_MAC, FIP, "10.0.0.1", target_mac=OUR_MAC, eth_dst=OUR_MAC)
        packet = arp.parse_arp(frame)
        self.assertEqual(packet.op, arp.ARP_REPLY)
        self.assertEqual(packet.sender_mac, THEIR_MAC)
        self.assertEqual(packet.sender_ip, FIP)
        self.assertEqual(packet.target_ip, ipaddress.ip_address("10.0.0.1"))


class ArpParseTests(SynchronousTestCase):
    def test_ethernet_padding_accepted(self):
        frame = arp.arp_probe(OUR_MAC, FIP) + bytes(18)  # padded to 60 bytes on the wire
        self.assertEqual(arp.parse_arp(frame).target_ip, FIP)

    def test_short_frames(self):
        frame = arp.arp_probe(OUR_MAC, FIP)
        for length in (0, 1, 13, 14, 27, 41):
            self.assertRaises(arp.MalformedFrame, arp.parse_arp, frame[:length])

    def test_wrong_ethertype(self):
        frame = bytearray(arp.arp_probe(OUR_MAC, FIP))
        frame[12:14] = b"\x08\x00"
        self.assertRaises(arp.MalformedFrame, arp.parse_arp, bytes(frame))

    def test_wrong_hardware_or_protocol(self):
        good = arp.arp_probe(OUR_MAC, FIP)
        for offset, value in ((14, b"\x00\x06"), (16, b"\x86\xdd"), (18, b"\x08"), (19, b"\x10")):
            frame = bytearray(good)
            frame[offset : offset + len(value)] = value
            self.assertRaises(arp.MalformedFrame, arp.parse_arp, bytes(frame))

    def test_unknown_operation(self):
        frame = bytearray(arp.arp_probe(OUR_MAC, FIP))
        frame[20:22] = b"\x00\x03"  # RARP request
        self.assertRaises(arp.MalformedFrame, arp.parse_arp, bytes(frame))


class SolicitedNodeTests(SynchronousTestCase):
    def test_group_and_mac(self):
        group = arp.solicited_node(FIP6)
        self.assertEqual(group, ipaddress.ip_address("ff02::1:ff02:3"))
        self.assertEqual(arp.multicast_mac(group), bytes.fromhex("3333ff020003"))
        self.assertEqual(arp.multicast_mac(arp.ALL_NODES), bytes.fromhex("333300000001"))



# Frames captured on a veth in a test namespace (Linux 6.x): what real senders put on the wire.
# `arping -D -I eth0 10.77.0.56`: a probe with target MAC ff:ff:ff:ff:ff:ff (RFC 5227 says zero).
ARPING_PROBE = bytes.fromhex(
    "ffffffffffff1271d7b1be43080600010800060400011271d7b1be4300000000ffffffffffff0a4d0038"
)
# The kernel's DAD solicitation for fd77::55, with an RFC 7527 nonce option (type 14).
KERNEL_DAD_NS = bytes.fromhex(
    "3333ff0000551271d7b1be4386dd6000000000203aff00000000000000000000000000000000ff02000000000000"
    "00000001ff00005587006e1b00000000fd7700000000000000000000000000550e0104550dbcee50"
)


class CapturedFrameTests(SynchronousTestCase):
    def test_arping_probe(self):
        packet = arp.parse_arp(ARPING_PROBE)
        self.assertTrue(packet.is_probe)
        self.assertEqual(packet.target_ip, ipaddress.ip_address("10.77.0.56"))
        self.assertEqual(arp.mac_text(packet.sender_mac), "12:71:d7:b1:be:43")

    def test_kernel_dad_solicitation(self):
        # Parsing verifies the checksum: our pseudo-header agrees with the kernel's.
        packet = arp.parse_ndp(KERNEL_DAD_NS)
        self.assertTrue(packet.is_dad)
        self.assertEqual(packet.target, ipaddress.ip_address("fd77::55"))
        self.assertEqual(packet.dst_ip, arp.solicited_node("fd77::55"))
        self.assertIsNone(packet.link_addr)  # the nonce option is skipped
        self.assertEqual(KERNEL_DAD_NS[:6], arp.multicast_mac(arp.solicited_node("fd77::55")))

    def test_our_dad_probe_matches_the_kernels_up_to_the_nonce(self):
        ours = arp.ndp_dad_probe(bytes.fromhex("1271d7b1be43"), "fd77::55")
        # Same Ethernet header, same IPv6 header except the payload length (no 8-byte nonce option).
        self.assertEqual(ours[:18], KERNEL_DAD_NS[:18])
        self.assertEqual(ours[20:54], KERNEL_DAD_NS[20:54])
        self.assertEqual(ours[54:56], KERNEL_DAD_NS[54:56])  # type NS, code 0
        self.assertEqual(ours[58:78], KERNEL_DAD_NS[58:78])  # reserved and target


class NdpBuildTests(SynchronousTestCase):
    def test_dad_probe_layout(self):
        frame = arp.ndp_dad_probe(OUR_MAC, FIP6)
        self.assertEqual(frame[0:6], bytes.fromhex("3333ff020003"))
        self.assertEqual(frame[6:12], OUR_MAC)
        self.assertEqual(frame[12:14], b"\x86\xdd")
        vtf, length, next_header, hop_limit = struct.unpack_from("!IHBB", frame, 14)
        self.assertEqual((vtf >> 28, length, next_header, hop_limit), (6, 24, 58, 255))
        self.assertEqual(frame[22:38], bytes(16))  # source ::
        self.assertEqual(frame[38:54], arp.solicited_node(FIP6).packed)
        packet = arp.parse_ndp(frame)
        self.assertTrue(packet.is_dad)
        self.assertEqual(packet.target, FIP6)
        self.assertIsNone(packet.link_addr)  # RFC 4861: no source link-layer option from ::

    def test_announcement(self):
        frame = arp.ndp_announcement(OUR_MAC, FIP6)
        self.assertEqual(frame[0:6], bytes.fromhex("333300000001"))
        packet = arp.parse_ndp(frame)
        self.assertEqual(packet.type, arp.ICMPV6_NA)
        self.assertEqual(packet.src_ip, FIP6)
        self.assertEqual(packet.dst_ip, arp.ALL_NODES)
        self.assertEqual(packet.target, FIP6)
        self.assertEqual(packet.flags, arp.NA_FLAG_OVERRIDE)  # override, not solicited, not router
        self.assertEqual(packet.link_addr, OUR_MAC)


class NdpParseTests(SynchronousTestCase):
    def test_other_ipv6_traffic_is_none(self):
        frame = bytearray(arp.ndp_announcement(OUR_MAC, FIP6))
        frame[20] = 17  # next header UDP
        self.assertIsNone(arp.parse_ndp(bytes(frame)))

    def test_other_icmpv6_is_none(self):
        frame = bytearray(arp.ndp_announcement(OUR_MAC, FIP6))
        frame[54] = 128  # echo request
        self.assertIsNone(arp.parse_ndp(bytes(frame)))

    def test_short_frames(self):
        frame = arp.ndp_announcement(OUR_MAC, FIP6)
        for length in (0, 14, 53, 54, 60, 77, len(frame) - 1):
            self.assertRaises(arp.MalformedFrame, arp.parse_ndp, frame[:length])

    def test_ethernet_padding_accepted(self):
        frame = arp.ndp_dad_probe(OUR_MAC, FIP6) + bytes(6)
        self.assertEqual(arp.parse_ndp(frame).target, FIP6)

    def test_bad_checksum(self):
        frame = bytearray(arp.ndp_announcement(OUR_MAC, FIP6))
        frame[-1] ^= 0xFF
        self.assertRaises(arp.MalformedFrame, arp.parse_ndp, bytes(frame))

    def test_hop_limit_must_be_255(self):
        frame = bytearray(arp.ndp_announcement(OUR_MAC, FIP6))
        frame[21] = 64  # routed from elsewhere
        self.assertRaises(arp.MalformedFrame, arp.parse_ndp, bytes(frame))

    def test_not_ipv6(self):
        frame = bytearray(arp.ndp_announcement(OUR_MAC, FIP6))
        frame[14] = 0x45
        self.assertRaises(arp.MalformedFrame, arp.parse_ndp, bytes(frame))
        frame = bytearray(arp.ndp_announcement(OUR_MAC, FIP6))
        frame[12:14] = b"\x08\x06"
        self.assertRaises(arp.MalformedFrame, arp.parse_ndp, bytes(frame))

    def _with_options(self, options):
        """A valid NA for FIP6 from THEIR_MAC carrying the given option bytes."""
        src, dst = FIP6, arp.ALL_NODES
        message = struct.pack("!BBHI16s", arp.ICMPV6_NA, 0, 0, 0, FIP6.packed) + options
        checksum = arp.icmpv6_checksum(src, dst, message)
        message = message[:2] + struct.pack("!H", checksum) + message[4:]
        header = struct.pack("!IHBB16s16s", 6 << 28, len(message), 58, 255, src.packed, dst.packed)
        return arp.multicast_mac(dst) + THEIR_MAC + b"\x86\xdd" + header + message

    def test_option_of_length_zero(self):
        self.assertRaises(arp.MalformedFrame, arp.parse_ndp, self._with_options(b"\x02\x00" + bytes(6)))

    def test_option_past_the_end(self):
        self.assertRaises(arp.MalformedFrame, arp.parse_ndp, self._with_options(b"\x02\x02" + bytes(6)))

    def test_target_option_after_another(self):
        options = b"\x05\x01" + bytes(6) + b"\x02\x01" + THEIR_MAC  # MTU option first
        self.assertEqual(arp.parse_ndp(self._with_options(options)).link_addr, THEIR_MAC)

    def test_no_option(self):
        packet = arp.parse_ndp(self._with_options(b""))
        self.assertIsNone(packet.link_addr)
        self.assertEqual(packet.eth_src, THEIR_MAC)


class IcmpTests(SynchronousTestCase):
    def test_checksum_verifies(self):
        message = icmp.echo_request(0x1234, 7, b"abc")
        self.assertEqual(message[0], icmp.ICMP_ECHO_REQUEST)
        self.assertEqual(icmp.internet_checksum(message), 0)

    def _reply_v4(self, ident, seq, kind=icmp.ICMP_ECHO_REPLY, header_len=20):
        message = bytearray(icmp.echo_request(ident, seq, b"payload"))
        message[0] = kind
        message[2:4] = b"\x00\x00"
        message[2:4] = struct.pack("!H", icmp.internet_checksum(bytes(message)))
        ip_header = bytearray(header_len)
        ip_header[0] = 0x40 | (header_len // 4)
        ip_header[9] = 1
        return bytes(ip_header) + bytes(message)

    def test_parse_reply_v4(self):
        self.assertEqual(icmp.parse_echo_reply_v4(self._reply_v4(0x1234, 7)), (0x1234, 7))
        self.assertEqual(icmp.parse_echo_reply_v4(self._reply_v4(1, 2, header_len=24)), (1, 2))

    def test_v4_not_a_reply(self):
        self.assertIsNone(icmp.parse_echo_reply_v4(self._reply_v4(1, 1, kind=icmp.ICMP_ECHO_REQUEST)))
        self.assertIsNone(icmp.parse_echo_reply_v4(self._reply_v4(1, 1, kind=3)))

    def test_v4_malformed(self):
        good = self._reply_v4(1, 1)
        for frame in (b"", good[:19], good[:27], b"\x60" + good[1:]):
            self.assertIsNone(icmp.parse_echo_reply_v4(frame))
        corrupt = bytearray(good)
        corrupt[-1] ^= 1
        self.assertIsNone(icmp.parse_echo_reply_v4(bytes(corrupt)))
        udp = bytearray(good)
        udp[9] = 17
        self.assertIsNone(icmp.parse_echo_reply_v4(bytes(udp)))

    def test_v6(self):
        request = icmp.echo_request(9, 3, b"x", v6=True)
        self.assertEqual(request[:4], bytes([icmp.ICMPV6_ECHO_REQUEST, 0, 0, 0]))
        reply = bytes([icmp.ICMPV6_ECHO_REPLY]) + request[1:]
        self.assertEqual(icmp.parse_echo_reply_v6(reply), (9, 3))
        self.assertIsNone(icmp.parse_echo_reply_v6(request))
        self.assertIsNone(icmp.parse_echo_reply_v6(reply[:7]))

    def test_parse_icmp_reply_v4(self):
        packet = self._reply_v4(0x1234, 7)
        self.assertEqual(icmp.parse_icmp(socket.AF_INET, packet, True), ("reply", 0x1234, 7, b"payload"))
        self.assertEqual(icmp.parse_icmp(socket.AF_INET, packet[20:], False), ("reply", 0x1234, 7, b"payload"))

    def test_parse_icmp_ignores_a_header_length_under_20_bytes(self):
        # An IHL of 1 to 4 would make parse_icmp read the echo out of the IP
        # header's own identification/flags fields.
        for ihl in range(5):
            packet = bytearray(20) + icmp.echo_request(1, 1)
            packet[0] = 0x40 | ihl
            packet[4 * ihl] = icmp.ICMP_ECHO_REPLY
            self.assertIsNone(icmp.parse_icmp(socket.AF_INET, bytes(packet), True), ihl)

    def test_parse_icmp_ignores_a_header_longer_than_the_packet(self):
        packet = bytearray(self._reply_v4(1, 1))[:24]
        packet[0] = 0x4F  # 60 bytes of header announced
        self.assertIsNone(icmp.parse_icmp(socket.AF_INET, bytes(packet), True))

    def _unreachable_v4(self, quoted_ihl):
        quoted = bytearray(20) + icmp.echo_request(0x42, 9)
        quoted[0] = 0x40 | quoted_ihl
        quoted[9] = socket.IPPROTO_ICMP
        quoted[4 * quoted_ihl] = icmp.ICMP_ECHO_REQUEST
        return struct.pack("!BBHI", 3, 1, 0, 0) + bytes(quoted)

    def test_parse_icmp_error_quoting_echo_request(self):
        self.assertEqual(icmp.parse_icmp(socket.AF_INET, self._unreachable_v4(5), False),
                         ("error", 0x42, 9, "host unreachable"))

    def test_parse_icmp_error_quoting_a_broken_header_is_ignored(self):
        for ihl in range(5):
            self.assertIsNone(icmp.parse_icmp(socket.AF_INET, self._unreachable_v4(ihl), False), ihl)
