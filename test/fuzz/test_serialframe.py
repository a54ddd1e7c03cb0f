"""Fuzzing the serial-line deframer (cpro.protocols.serialframe.StreamDeframer).

An input is read two ways:

  - as a raw byte stream, fed in random chunks: the deframer must never
    raise, must report only its documented events, must keep its buffer
    bounded, and must never deliver a packet nobody signed;
  - as a small program that builds a stream out of intact frames, frames
    cut short (at the end, by 1 to 3 bytes or more, or in the middle),
    damaged frames (a changed byte, a changed length field, another key or
    cluster) and noise (with fragments of the magic and of headers). The
    module promises that a damaged frame costs that frame alone, so every
    intact frame must come out, in order, and nothing else.

Mutating a program makes another program, so the fuzzer explores streams.
"""

import random
import struct
import zlib

from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import serialframe as sf
from cpro.protocols.heartbeat import MAGIC, MAX_PACKET, HeartbeatPacket, StateDigest, new_incarnation
from test.fuzz.harness import Finding, FuzzTestMixin, Target

KEY = b"fuzz-serial-key"
CLUSTER = "fuzz"
BOOT = new_incarnation(1_700_000_000.25, nonce="5e71a1")
EVENT_KINDS = {sf.PACKET, sf.MALFORMED, sf.UNAUTHENTICATED, sf.FOREIGN, sf.TRUNCATED, sf.GARBAGE, sf.RESYNC}
INTACT = 64  # intact frames a program can hold (seq 1..64)
VICTIMS = 1000  # damaged frames carry seq VICTIMS + n, so that one delivered shows
MAX_OPS = 24


def _packet(seq, cluster=CLUSTER):
    # Names and digests of varying length, so that frames differ in length.
    return HeartbeatPacket(cluster, "srv" + "x" * (seq % 9), BOOT, seq, StateDigest("ab" * (seq % 33), seq, "Running"))


def _frame(seq, key=KEY, cluster=CLUSTER):
    return sf.frame(_packet(seq, cluster), key)


class Program:
    """The stream a program (bytes read as (op, param) pairs) stands for."""

    def __init__(self, target, code):
        self.stream = bytearray()
        self.expected = []  # seqs of the intact frames, in order
        victim = 0
        for i in range(0, min(len(code) - 1, 2 * MAX_OPS), 2):
            op, param = code[i] % 10, code[i + 1]
            if op in (0, 1):
                seq = len(self.expected) + 1
                if seq > INTACT:
                    continue
                self.expected.append(seq)
                self.stream += target.frames[seq]
                continue
            victim = (victim + 1) % len(target.victims)
            self.stream += self._damage(op, param, target.victims[victim], target)

    @staticmethod
    def _damage(op, param, data, target):
        n = len(data)
        if op == 2:  # cut short at the end by 1 to 3 bytes (the resync blind spot)
            return data[: n - 1 - param % 3]
        if op == 3:  # cut anywhere, keeping at least one byte
            return data[: 1 + param * (n - 1) // 256]
        if op == 4:  # a range lost in the middle
            start = 1 + param % (n - 2)
            return data[:start] + data[start + 1 + (param * 7) % (n - start - 1):]
        if op == 5:  # one byte changed
            at = (param * 37) % n
            return data[:at] + bytes([data[at] ^ (param % 255 + 1)]) + data[at + 1:]
        if op == 6:  # noise, sometimes with a magic and a header in it
            rng = random.Random(param)
            noise = rng.randbytes(param % 48)
            if param & 1:
                head = struct.pack("!4sBBH", MAGIC, 1, len(CLUSTER), rng.randrange(0, MAX_PACKET))
                noise += head[: rng.randrange(1, len(head) + 1)] + rng.randbytes(rng.randrange(8))
            return noise
        if op == 7:  # signed with another key, or another cluster's frame
            return target.wrong_key if param & 1 else target.foreign
        if op == 8:  # a damaged length field
            body_len = struct.unpack_from("!H", data, 6)[0]
            new_len = (body_len + 1 + param * 5) % 0x10000
            return data[:6] + struct.pack("!H", new_len) + data[8:]
        # op == 9: noise inside a frame
        at = 1 + param % (n - 1)
        return data[:at] + random.Random(param).randbytes(1 + param % 16) + data[at:]


def _chunks(data, rng):
    """data cut into reads the way a serial line might deliver it."""
    mode = rng.randrange(10)
    if mode == 0:
        yield data
        return
    i = 0
    while i < len(data):
        if mode == 1:
            step = 1
        elif mode < 5:
            step = rng.randrange(1, 9)
        else:
            step = rng.randrange(1, 400)
        yield data[i:i + step]
        i += step


class SerialFrameTarget(Target):
    name = "serialframe"
    max_size = 3000

    def __init__(self):
        self.frames = {seq: _frame(seq) for seq in range(1, INTACT + 1)}
        self.victims = [_frame(VICTIMS + n) for n in range(16)]
        self.wrong_key = _frame(VICTIMS + 99, key=b"another key")
        self.foreign = _frame(VICTIMS + 98, cluster="other")
        self.signed = {_packet(seq) for seq in list(self.frames) + [VICTIMS + n for n in range(16)]}

    def seeds(self, rng):
        programs = [
            bytes([0, 0] * 5),
            bytes([2, 0, 0, 0, 2, 1, 0, 0, 2, 2, 0, 0]),  # cut by 1, 2, 3 bytes, each before an intact frame
            bytes([8, 200, 3, 50, 0, 0, 0, 0]),  # a long length, a cut frame, then intact ones
            bytes([6, 13, 0, 0, 5, 77, 0, 0, 7, 0, 0, 0, 7, 1, 0, 0, 4, 9, 0, 0, 9, 3, 0, 0]),
        ]
        return programs + [self.frames[1] + self.frames[2], self.frames[3][:-2] + self.frames[4]]

    def structured(self, rng):
        ops = []
        for _ in range(rng.randrange(1, MAX_OPS + 1)):
            ops += [rng.choice((0, 0, 0, 2, 2, 3, 4, 5, 6, 7, 8, 9)), rng.randrange(256)]
        return bytes(ops)

    def check(self, data):
        rng = random.Random(zlib.crc32(data))
        self._raw(data, rng)
        self._promise(Program(self, data), rng)

    def _feed(self, deframer, stream, rng):
        events = []
        for chunk in _chunks(stream, rng):
            got = deframer.feed(chunk)
            self._documented(got)
            events += got
            if deframer.pending() > MAX_PACKET:
                raise Finding(f"{deframer.pending()} bytes held back, more than {MAX_PACKET}")
        return events

    def _documented(self, events):
        for kind, detail in events:
            if kind not in EVENT_KINDS:
                raise Finding(f"undocumented event {kind!r}")
            if kind == sf.GARBAGE and not (isinstance(detail, int) and detail > 0):
                raise Finding(f"garbage event with detail {detail!r}")
            if kind == sf.PACKET and detail not in self.signed:
                raise Finding(f"a packet nobody signed was delivered: {detail!r}")

    def _raw(self, data, rng):
        deframer = sf.StreamDeframer(KEY, CLUSTER)
        self._feed(deframer, data, rng)
        self._documented(deframer.reset())
        if deframer.pending():
            raise Finding("reset left bytes behind")

    def _promise(self, program, rng):
        deframer = sf.StreamDeframer(KEY, CLUSTER)
        events = self._feed(deframer, bytes(program.stream), rng)
        stream = bytes(program.stream)
        # Noise after a cut can put back the very bytes cut off (one in 256
        # for a 1-byte cut): a damaged frame made whole again may come out.
        got = [detail.seq for kind, detail in events if kind == sf.PACKET
               and not (detail.seq > INTACT and _frame(detail.seq) in stream)]
        if got != program.expected:
            raise Finding(f"intact frames {program.expected} but delivered {got}")


class SerialFrameFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = SerialFrameTarget()
    inputs = 1500  # each input is two streams of up to a few KiB, some fed byte by byte
