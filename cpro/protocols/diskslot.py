"""Disk heartbeat records: bytes <-> L{SlotRecord} and the partition header.

The shared partition of a disk heartbeat (diskhb) is laid out in blocks of
L{SLOT_SIZE} bytes, aligned for O_DIRECT::

    offset 0                     partition header (one block, names the cluster)
    offset HEADER_SIZE + i*SLOT  slot of server i (its position in ClusterConfig.servers)

Header block (big-endian)::

    magic       4 bytes  b"CPDP"
    version     1 byte   VERSION
    name_len    1 byte
    slot_size   4 bytes  SLOT_SIZE
    cluster     name_len cluster name, UTF-8
    crc32       4 bytes  CRC-32 of every byte before it
    zero padding to HEADER_SIZE

Slot record (big-endian)::

    magic       4 bytes  b"CPDH"
    version     1 byte   VERSION
    name_len    1 byte   length of the server name
    slot        2 bytes  slot index the writer meant to write
    seq         8 bytes  sequence number (the embedded packet's seq)
    written_ns  8 bytes  writer's wall clock at the write, ns since the epoch
    packet_len  2 bytes  length of the embedded heartbeat packet
    server      name_len server name, UTF-8
    packet      packet_len  a L{cpro.protocols.heartbeat} packet (HMAC with the cluster key)
    crc32       4 bytes  CRC-32 of every byte before it
    zero padding to SLOT_SIZE

The CRC finds torn and corrupted records; authenticity is the embedded
packet's HMAC, checked by the caller (who holds the key). Nothing here does
I/O: L{decode_record} and L{decode_header} raise a L{RecordError} subclass
for whatever bytes they are given, and the caller counts and drops.
"""

import struct
import zlib
from dataclasses import dataclass

from cpro.protocols.heartbeat import MAX_PACKET

SLOT_SIZE = 4096  # one block; a multiple of every logical block size O_DIRECT needs
HEADER_SIZE = SLOT_SIZE
MAGIC = b"CPDH"
HEADER_MAGIC = b"CPDP"
VERSION = 1
MAX_NAME = 255

_RECORD = struct.Struct("!4sBBHQQH")
_HEADER = struct.Struct("!4sBBI")
_CRC = struct.Struct("!I")
_MAX_U64 = 2**64 - 1
_MAX_SLOT = 2**16 - 1


class RecordError(Exception):
    """Bytes that are not a usable record or header."""


class EmptySlot(RecordError):
    """Nothing was ever written here (all zero bytes)."""


class TornRecord(RecordError):
    """A record or header whose checksum does not match: torn or corrupted."""


class MalformedRecord(RecordError):
    """Not a cpro record or header: wrong magic, version or lengths."""


@dataclass(frozen=True)
class SlotRecord:
    slot: int  # index the writer meant to write
    server: str  # writer's server name
    seq: int
    written_ns: int  # writer's wall clock, ns since the epoch
    packet: bytes  # an encoded heartbeat packet


def slot_offset(index):
    """Byte offset of slot C{index} on the partition."""
    if not 0 <= index <= _MAX_SLOT:
        raise ValueError(f"slot index {index} out of range")
    return HEADER_SIZE + index * SLOT_SIZE


def area_size(slots):
    """Bytes from offset 0 covering the header and C{slots} slots."""
    return HEADER_SIZE + slots * SLOT_SIZE


def encode_record(record):
    """The L{SLOT_SIZE} bytes of C{record}, zero-padded.

    @raise ValueError: a field out of range (a programming error, not input).
    """
    server = record.server.encode("utf-8")
    if not 0 < len(server) <= MAX_NAME:
        raise ValueError("server name must be 1 to 255 bytes")
    if not 0 < len(record.packet) <= MAX_PACKET:
        raise ValueError(f"packet must be 1 to {MAX_PACKET} bytes")
    if not 0 <= record.slot <= _MAX_SLOT:
        raise ValueError(f"slot index {record.slot} out of range")
    for value, what in ((record.seq, "sequence number"), (record.written_ns, "timestamp")):
        if not 0 <= value <= _MAX_U64:
            raise ValueError(f"{what} out of range")
    body = _RECORD.pack(MAGIC, VERSION, len(server), record.slot, record.seq,
                        record.written_ns, len(record.packet)) + server + record.packet
    data = body + _CRC.pack(zlib.crc32(body))
    return data.ljust(SLOT_SIZE, b"\0")


def decode_record(data):
    """The L{SlotRecord} in one slot's bytes.

    @raise EmptySlot, TornRecord, MalformedRecord: and nothing else for any bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedRecord("not a byte string")
    data = bytes(data[:SLOT_SIZE])
    if len(data) < _RECORD.size + _CRC.size:
        raise MalformedRecord(f"{len(data)} bytes, too short for a record")
    magic, version, name_len, slot, seq, written_ns, packet_len = _RECORD.unpack_from(data)
    if magic != MAGIC:
        if not data.strip(b"\0"):
            raise EmptySlot("slot never written")
        raise MalformedRecord("bad magic")
    end = _RECORD.size + name_len + packet_len
    if end + _CRC.size > len(data):
        # A length field reaching past the slot is most likely a corrupted
        # length: report it as torn, like any other checksum failure.
        raise TornRecord("length fields reach past the slot")
    (crc,) = _CRC.unpack_from(data, end)
    if zlib.crc32(data[:end]) != crc:
        raise TornRecord("checksum mismatch")
    # Checksum-valid yet unusable: written by an incompatible writer.
    if version != VERSION:
        raise MalformedRecord(f"unsupported version {version}")
    if name_len == 0 or packet_len == 0 or packet_len > MAX_PACKET:
        raise MalformedRecord("length fields")
    try:
        server = data[_RECORD.size:_RECORD.size + name_len].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRecord("server name is not UTF-8") from None
    return SlotRecord(slot=slot, server=server, seq=seq, written_ns=written_ns,
                      packet=data[_RECORD.size + name_len:end])


def encode_header(cluster):
    """The L{HEADER_SIZE} bytes of the header naming C{cluster}."""
    name = cluster.encode("utf-8")
    if not 0 < len(name) <= MAX_NAME:
        raise ValueError("cluster name must be 1 to 255 bytes")
    body = _HEADER.pack(HEADER_MAGIC, VERSION, len(name), SLOT_SIZE) + name
    return (body + _CRC.pack(zlib.crc32(body))).ljust(HEADER_SIZE, b"\0")


def decode_header(data):
    """The cluster name in a header block.

    @raise EmptySlot: the block is all zero (a blank partition, not claimed yet).
    @raise TornRecord, MalformedRecord: something else is there: a corrupted
        header, another program's data or a file system.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedRecord("not a byte string")
    data = bytes(data[:HEADER_SIZE])
    if len(data) < _HEADER.size + _CRC.size:
        raise MalformedRecord(f"{len(data)} bytes, too short for a header")
    magic, version, name_len, slot_size = _HEADER.unpack_from(data)
    if magic != HEADER_MAGIC:
        if not data.strip(b"\0"):
            raise EmptySlot("partition header never written")
        raise MalformedRecord("no cpro disk heartbeat header")
    end = _HEADER.size + name_len
    if end + _CRC.size > len(data):
        raise MalformedRecord("name length reaches past the header")
    (crc,) = _CRC.unpack_from(data, end)
    if zlib.crc32(data[:end]) != crc:
        raise TornRecord("header checksum mismatch")
    if version != VERSION:
        raise MalformedRecord(f"unsupported header version {version}")
    if slot_size != SLOT_SIZE:
        raise MalformedRecord(f"slot size {slot_size}, expected {SLOT_SIZE}")
    try:
        name = data[_HEADER.size:end].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRecord("cluster name is not UTF-8") from None
    if not name:
        raise MalformedRecord("empty cluster name")
    return name
