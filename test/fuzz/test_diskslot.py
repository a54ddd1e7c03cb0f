"""Fuzzing the disk heartbeat records (cpro.protocols.diskslot): decode_record
and decode_header.

The fixups recompute the CRC-32 where the (mutated) length fields put it, so
that mutations get past the checksum to the field checks. The contract: only
L{RecordError} subclasses are raised, whatever the bytes; an accepted record
or header has fields in their documented ranges and encodes again to the
same bytes.
"""

import struct
import zlib

from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import diskslot as ds
from cpro.protocols import heartbeat as hb
from test.fuzz.harness import Finding, FuzzTestMixin, Target

KEY = b"fuzz-disk-key"
CLUSTER = "fuzzcluster"

_RECORD = struct.Struct("!4sBBHQQH")
_HEADER = struct.Struct("!4sBBI")


def _beat(seq, sender):
    packet = hb.HeartbeatPacket(CLUSTER, sender, hb.Incarnation(1_700_000_000 * 10**9 + seq, "d15c"), seq,
                                hb.StateDigest("cd" * 32, seq, "Running"))
    return hb.encode(packet, KEY)


def _crc_at(data, end):
    """data with a right CRC-32 of data[:end] written at end."""
    if end + 4 > len(data):
        raise ValueError("length fields reach past the data")
    return data[:end] + struct.pack("!I", zlib.crc32(data[:end])) + data[end + 4:]


def fix_record_crc(data):
    _magic, _version, name_len, _slot, _seq, _ns, packet_len = _RECORD.unpack_from(data)
    return _crc_at(data, _RECORD.size + name_len + packet_len)


def fix_header_crc(data):
    _magic, _version, name_len, _size = _HEADER.unpack_from(data)
    return _crc_at(data, _HEADER.size + name_len)


class DiskSlotTarget(Target):
    name = "diskslot"
    max_size = ds.SLOT_SIZE + 64

    def seeds(self, rng):
        records = [
            ds.SlotRecord(0, "srv1", 1, 1_700_000_000 * 10**9, _beat(1, "srv1")),
            ds.SlotRecord(31, "サーバ" * 20, 2**64 - 1, 2**64 - 1, _beat(2**40, "s")),
            ds.SlotRecord(2**16 - 1, "s", 0, 0, b"\x00"),
        ]
        seeds = [ds.encode_record(r) for r in records]
        seeds += [ds.encode_header(CLUSTER), ds.encode_header("c" * 255), b"\x00" * ds.SLOT_SIZE]
        return seeds

    def fixups(self):
        return [fix_record_crc, fix_header_crc]

    def check(self, data):
        for kind in (bytes, bytearray, memoryview):
            self._record(kind(data), data)
            self._header(kind(data), data)

    def _record(self, data, raw):
        try:
            record = ds.decode_record(data)
        except ds.RecordError:
            return
        server = record.server.encode("utf-8")
        if not 0 < len(server) <= ds.MAX_NAME:
            raise Finding(f"server name of {len(server)} bytes accepted")
        if not 0 < len(record.packet) <= hb.MAX_PACKET:
            raise Finding(f"packet of {len(record.packet)} bytes accepted")
        if not (0 <= record.slot < 2**16 and 0 <= record.seq < 2**64 and 0 <= record.written_ns < 2**64):
            raise Finding(f"field out of range in {record!r}")
        again = ds.encode_record(record)
        used = _RECORD.size + len(server) + len(record.packet) + 4
        if again[:used] != raw[:used]:
            raise Finding("encode_record(decode_record(b)) differs from b")
        if ds.decode_record(again) != record:
            raise Finding("decode_record(encode_record(r)) != r")

    def _header(self, data, raw):
        try:
            name = ds.decode_header(data)
        except ds.RecordError:
            return
        if not isinstance(name, str) or not 0 < len(name.encode("utf-8")) <= ds.MAX_NAME:
            raise Finding(f"cluster name {name!r} accepted")
        again = ds.encode_header(name)
        used = _HEADER.size + len(name.encode("utf-8")) + 4
        if again[:used] != raw[:used]:
            raise Finding("encode_header(decode_header(b)) differs from b")


class DiskSlotFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = DiskSlotTarget()
