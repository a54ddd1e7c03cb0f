"""Tests for cpro.protocols.diskslot: disk heartbeat records and the partition header."""

import struct
import zlib

from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import diskslot
from cpro.protocols.diskslot import (
    HEADER_SIZE,
    SLOT_SIZE,
    EmptySlot,
    MalformedRecord,
    SlotRecord,
    TornRecord,
    decode_header,
    decode_record,
    encode_header,
    encode_record,
)

RECORD = SlotRecord(slot=2, server="srv3", seq=41, written_ns=1_700_000_000_123_456_789,
                    packet=b"CPHB" + bytes(range(200)))


def with_crc(body):
    """C{body} with a valid CRC appended and padded to a slot: a checksum-valid record."""
    return (body + struct.pack("!I", zlib.crc32(body))).ljust(SLOT_SIZE, b"\0")


class RecordTests(SynchronousTestCase):
    def test_round_trip(self):
        data = encode_record(RECORD)
        self.assertEqual(len(data), SLOT_SIZE)
        self.assertEqual(decode_record(data), RECORD)

    def test_layout_big_endian(self):
        data = encode_record(RECORD)
        self.assertEqual(data[:4], b"CPDH")
        magic, version, name_len, slot, seq, written, plen = struct.unpack_from("!4sBBHQQH", data)
        self.assertEqual((version, name_len, slot, seq, written, plen),
                         (1, 4, 2, 41, RECORD.written_ns, len(RECORD.packet)))
        end = 26 + 4 + len(RECORD.packet)
        self.assertEqual(data[26:30], b"srv3")
        self.assertEqual(struct.unpack_from("!I", data, end)[0], zlib.crc32(data[:end]))
        self.assertEqual(data[end + 4:], b"\0" * (SLOT_SIZE - end - 4))

    def test_accepts_a_longer_buffer(self):
        self.assertEqual(decode_record(encode_record(RECORD) + b"x" * 100), RECORD)

    def test_empty_slot(self):
        self.assertRaises(EmptySlot, decode_record, b"\0" * SLOT_SIZE)

    def test_every_flipped_byte_detected(self):
        data = bytearray(encode_record(RECORD))
        end = 26 + 4 + len(RECORD.packet) + 4
        for i in range(end):
            torn = bytearray(data)
            torn[i] ^= 0x40
            with self.subTest(byte=i):
                # Magic bytes give "malformed", the rest a checksum failure.
                self.assertRaises((TornRecord, MalformedRecord), decode_record, bytes(torn))
        torn = bytearray(data)
        torn[100] ^= 1
        self.assertRaises(TornRecord, decode_record, bytes(torn))

    def test_torn_tail(self):
        # The new record's first part over an older record's bytes.
        data = encode_record(RECORD)
        older = encode_record(SlotRecord(2, "srv3", 40, 1, b"X" * 230))
        self.assertRaises(TornRecord, decode_record, data[:60] + older[60:])

    def test_length_past_the_slot(self):
        data = bytearray(encode_record(RECORD))
        data[24:26] = struct.pack("!H", 65535)
        self.assertRaises(TornRecord, decode_record, bytes(data))

    def test_garbage(self):
        for junk in (b"", b"CPDH", b"\xff" * SLOT_SIZE, b"CPDH" + b"\xff" * 5000, "text", None):
            with self.subTest(junk=junk[:8] if junk else junk):
                self.assertRaises(diskslot.RecordError, decode_record, junk)

    def test_checksum_valid_but_wrong_version(self):
        body = struct.pack("!4sBBHQQH", b"CPDH", 9, 1, 0, 1, 1, 1) + b"a" + b"p"
        self.assertRaises(MalformedRecord, decode_record, with_crc(body))

    def test_checksum_valid_but_empty_fields(self):
        body = struct.pack("!4sBBHQQH", b"CPDH", 1, 0, 0, 1, 1, 1) + b"p"
        self.assertRaises(MalformedRecord, decode_record, with_crc(body))

    def test_checksum_valid_but_name_not_utf8(self):
        body = struct.pack("!4sBBHQQH", b"CPDH", 1, 1, 0, 1, 1, 1) + b"\xff" + b"p"
        self.assertRaises(MalformedRecord, decode_record, with_crc(body))

    def test_encode_bounds(self):
        for bad in (dict(server=""), dict(server="x" * 256), dict(packet=b""),
                    dict(packet=b"x" * 1025), dict(slot=-1), dict(slot=70000), dict(seq=-1),
                    dict(written_ns=2**64)):
            with self.subTest(bad=list(bad)):
                fields = dict(RECORD.__dict__, **bad)
                self.assertRaises(ValueError, encode_record, SlotRecord(**fields))


class HeaderTests(SynchronousTestCase):
    def test_round_trip(self):
        data = encode_header("cluster-é")
        self.assertEqual(len(data), HEADER_SIZE)
        self.assertEqual(data[:4], b"CPDP")
        self.assertEqual(decode_header(data), "cluster-é")

    def test_blank(self):
        self.assertRaises(EmptySlot, decode_header, b"\0" * HEADER_SIZE)

    def test_corrupted(self):
        data = bytearray(encode_header("cluster1"))
        data[12] ^= 1
        self.assertRaises(TornRecord, decode_header, bytes(data))

    def test_something_else(self):
        # An ext4 superblock lives at 1024: the first block is not all zero.
        data = bytearray(HEADER_SIZE)
        data[1024 + 56:1024 + 58] = b"\x53\xef"
        self.assertRaises(MalformedRecord, decode_header, bytes(data))
        self.assertRaises(MalformedRecord, decode_header, b"CPDP\x01\xff")
        self.assertRaises(MalformedRecord, decode_header, b"CPDP\x01\xff\0\0\x10\0" + b"x" * 20)

    def test_other_slot_size(self):
        body = struct.pack("!4sBBI", b"CPDP", 1, 1, 512) + b"c"
        self.assertRaises(MalformedRecord, decode_header, with_crc(body))


class OffsetTests(SynchronousTestCase):
    def test_offsets(self):
        self.assertEqual(diskslot.slot_offset(0), 4096)
        self.assertEqual(diskslot.slot_offset(3), 4 * 4096)
        self.assertEqual(diskslot.area_size(3), 4 * 4096)
        self.assertRaises(ValueError, diskslot.slot_offset, -1)
