"""Heartbeat packets on a byte stream (a serial line): bytes <-> packets.

A serial line has no datagram boundaries, and what arrives may be cut
short (a cable pulled mid-frame, the far end restarting), mixed with line
noise, or shifted. The frame on the wire is the heartbeat packet of
L{cpro.protocols.heartbeat} as it is: its header already starts with the
magic C{b"CPHB"} and carries the lengths that end it, and its HMAC tag
tells a whole frame from a damaged one. L{frame} is therefore the identity
on an encoded packet; what this module adds is L{StreamDeframer}, which
finds frames in the stream again.

Resynchronisation: bytes before a magic are skipped as garbage. A
candidate frame that fails to decode is skipped only up to the next magic
that starts inside it (that magic may run past the candidate's end: a frame
cut short by 1 to 3 bytes ends inside the next one's magic), so a frame cut
short by the next one costs that frame alone. A candidate still waiting for
bytes is given up early when a complete, authentic frame already starts
inside it, however many damaged frames lie between. The buffer never holds
more than one candidate (at most L{MAX_PACKET} bytes) after a feed.

Nothing here counts, logs or decides: L{StreamDeframer.feed} returns
events and the caller (L{cpro.services.heartbeat.comhb}) acts on them.
"""

import heapq
import struct

from cpro.protocols.heartbeat import (
    MAGIC,
    MAX_PACKET,
    ForeignCluster,
    PacketError,
    Unauthenticated,
    decode,
    encode,
)

_HEADER = struct.Struct("!4sBBH")  # magic, version, name_len, body_len (as in heartbeat.py)
_TAG_SIZE = 32  # HMAC-SHA256

# Event kinds returned by StreamDeframer.feed / reset.
PACKET = "packet"  # detail: the HeartbeatPacket
MALFORMED = "malformed"  # detail: reason (bad header, oversize length, bad body)
UNAUTHENTICATED = "unauthenticated"  # detail: reason (HMAC mismatch on a whole frame)
FOREIGN = "foreign"  # detail: reason (another cluster's frame)
TRUNCATED = "truncated"  # detail: reason (a frame cut short by the next one, or by a reset)
GARBAGE = "garbage"  # detail: number of bytes skipped that belong to no frame
RESYNC = "resync"  # detail: None; the reader started hunting for a frame start


def frame(packet, key):
    """The bytes to write on the line for C{packet} (see the module docstring).

    @raise ValueError: as L{cpro.protocols.heartbeat.encode}.
    """
    return encode(packet, key)


def _kind(error):
    if isinstance(error, Unauthenticated):
        return UNAUTHENTICATED
    if isinstance(error, ForeignCluster):
        return FOREIGN
    return MALFORMED


def _frame_length(buf, at):
    """Total length announced by the header at C{buf[at:]}, or None if not all there."""
    if len(buf) - at < _HEADER.size:
        return None
    _magic, _version, name_len, body_len = _HEADER.unpack_from(buf, at)
    return _HEADER.size + name_len + body_len + _TAG_SIZE


def _inner_magics(buf, total):
    """Offsets of the magics that start inside the candidate of C{total} bytes
    at C{buf[0:]}, in order. A magic may end up to 3 bytes past the candidate."""
    inner = buf.find(MAGIC, 1, total + len(MAGIC) - 1)
    while inner >= 0:
        yield inner
        inner = buf.find(MAGIC, inner + 1, total + len(MAGIC) - 1)


def _magic_may_start_in_tail(buf, total):
    """True when the buffer ends with the first bytes of a magic that starts
    in the last 3 bytes of the candidate of C{total} bytes at C{buf[0:]}: the
    candidate may be a frame cut short by the next one, whose magic the
    buffer does not hold whole yet."""
    for start in range(max(1, total - len(MAGIC) + 1), total):
        held = len(buf) - start
        if held < len(MAGIC) and buf[start:] == MAGIC[:held]:
            return True
    return False


def _magic_prefix_tail(buf):
    """Length of the longest tail of C{buf} that could begin a magic."""
    for n in range(min(len(MAGIC) - 1, len(buf)), 0, -1):
        if buf[-n:] == MAGIC[:n]:
            return n
    return 0


class StreamDeframer:
    """Finds authentic heartbeat packets of one cluster in a byte stream.

    @param key: the cluster key (bytes).
    @param cluster: the cluster name.
    """

    def __init__(self, key, cluster):
        self._key = key
        self._cluster = cluster
        self._buf = bytearray()
        self._hunting = False  # skipping garbage; a RESYNC was already reported
        # While the candidate at the buffer's start waits for bytes, the
        # frames starting inside it are looked at once each, not on every
        # feed: magics are searched from _inner_next on, and those whose frame
        # is still arriving wait in a heap of (end offset, start offset).
        self._inner_next = 1
        self._inner_waiting = []

    def pending(self):
        """Number of bytes held back (an unfinished frame or a magic's first bytes)."""
        return len(self._buf)

    def feed(self, data):
        """Take C{data}; a list of C{(kind, detail)} events, in stream order. Never raises."""
        events = []
        buf = self._buf
        buf += data
        while buf:
            start = buf.find(MAGIC)
            if start < 0:
                self._skip(len(buf) - _magic_prefix_tail(buf), events)
                break
            if start:
                self._skip(start, events)
            total = _frame_length(buf, 0)
            if total is None:
                break
            if total > MAX_PACKET:
                # Not a frame of ours (or a damaged length): the magic goes,
                # the hunt goes on from the byte after it.
                events.append((MALFORMED, f"frame header announces {total} bytes, more than {MAX_PACKET}"))
                self._consume(len(MAGIC))
                continue
            if len(buf) < total:
                inner = self._authentic_frame_inside(total)
                if inner is None:
                    break
                events.append((TRUNCATED, f"frame cut short after {inner} bytes by the next one"))
                self._consume(inner)
                continue
            try:
                packet = decode(bytes(buf[:total]), self._key, self._cluster)
            except PacketError as e:
                inner = next(_inner_magics(buf, total), None)
                if inner is None and _magic_may_start_in_tail(buf, total):
                    break  # tell a cut frame from a damaged one once 1 to 3 more bytes are in
                if inner is not None:
                    events.append((TRUNCATED, f"frame cut short after {inner} bytes by the next one"))
                    self._consume(inner)
                else:
                    events.append((_kind(e), str(e)))
                    self._consume(total)
                self._hunting = False
                continue
            self._consume(total)
            self._hunting = False
            events.append((PACKET, packet))
        return events

    def reset(self):
        """Drop what is held back (the line was closed or lost); its events."""
        events = []
        if self._buf:
            if self._buf.startswith(MAGIC):
                events.append((TRUNCATED, f"{len(self._buf)} bytes of an unfinished frame dropped"))
            else:
                events.append((GARBAGE, len(self._buf)))
        self._consume(len(self._buf))
        self._hunting = False
        return events

    def _consume(self, count):
        """Drop C{count} bytes from the buffer's start (offsets move with it)."""
        del self._buf[:count]
        self._inner_next = 1
        self._inner_waiting = []

    def _skip(self, count, events):
        if count <= 0:
            return
        if not self._hunting:
            self._hunting = True
            events.append((RESYNC, None))
        events.append((GARBAGE, count))
        self._consume(count)

    def _authentic_frame_inside(self, total):
        """Offset of a complete, authentic frame starting inside the unfinished
        candidate at 0 (which therefore was cut short), or None.

        Every magic inside is a possible start: the first may be another
        damaged frame, still unfinished itself, with a good one behind it.
        Work is incremental across feeds (the candidate at 0 stays the same
        until bytes are consumed), so a stream fed byte by byte costs no
        more than one fed at once.
        """
        buf = self._buf
        arrived = []
        while self._inner_waiting and self._inner_waiting[0][0] <= len(buf):
            end, inner = heapq.heappop(self._inner_waiting)
            arrived.append(inner)
        # Frames that arrived whole now start before any magic not yet searched.
        for inner in sorted(arrived):
            if self._authentic(inner, _frame_length(buf, inner)):
                return inner
        limit = min(total + len(MAGIC) - 1, len(buf))
        while True:
            inner = buf.find(MAGIC, self._inner_next, limit)
            if inner < 0:
                # A magic not all there yet may start in the last 3 bytes.
                self._inner_next = max(self._inner_next, limit - len(MAGIC) + 1)
                return None
            length = _frame_length(buf, inner)
            if length is None:
                self._inner_next = inner  # its header is still arriving
                return None
            self._inner_next = inner + 1
            if length > MAX_PACKET:
                continue
            if len(buf) - inner < length:
                heapq.heappush(self._inner_waiting, (inner + length, inner))
            elif self._authentic(inner, length):
                return inner

    def _authentic(self, at, length):
        try:
            decode(bytes(self._buf[at : at + length]), self._key, self._cluster)
        except PacketError:
            return False
        return True
