"""Unit tests for cpro.protocols.serialframe: heartbeat frames found in a byte stream."""

import random
import struct

from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import serialframe
from cpro.protocols.heartbeat import MAGIC, MAX_PACKET, HeartbeatPacket, StateDigest, encode, new_incarnation
from cpro.protocols.serialframe import (
    FOREIGN,
    GARBAGE,
    MALFORMED,
    PACKET,
    RESYNC,
    TRUNCATED,
    UNAUTHENTICATED,
    StreamDeframer,
)

KEY = b"cluster-key"
CLUSTER = "cl1"
BOOT = new_incarnation(1700000000.5, nonce="ab12")
DIGEST = StateDigest("0" * 64, 3, "running")


def packet(seq, sender="srv2", cluster=CLUSTER):
    return HeartbeatPacket(cluster, sender, BOOT, seq, DIGEST)


def frame(seq, key=KEY, **kw):
    return serialframe.frame(packet(seq, **kw), key)


def kinds(events):
    return [k for k, _ in events]


def packets(events):
    return [d for k, d in events if k == PACKET]


def garbage(events):
    return sum(d for k, d in events if k == GARBAGE)


class FrameTests(SynchronousTestCase):
    def test_frame_is_the_encoded_packet(self):
        self.assertEqual(frame(1), encode(packet(1), KEY))
        self.assertTrue(frame(1).startswith(MAGIC))

    def test_one_frame(self):
        d = StreamDeframer(KEY, CLUSTER)
        self.assertEqual(d.feed(frame(1)), [(PACKET, packet(1))])
        self.assertEqual(d.pending(), 0)

    def test_frames_back_to_back_in_one_read(self):
        d = StreamDeframer(KEY, CLUSTER)
        events = d.feed(frame(1) + frame(2) + frame(3))
        self.assertEqual(events, [(PACKET, packet(1)), (PACKET, packet(2)), (PACKET, packet(3))])

    def test_byte_by_byte(self):
        d = StreamDeframer(KEY, CLUSTER)
        data = frame(7)
        events = []
        for i in range(len(data)):
            events += d.feed(data[i:i + 1])
            if i < len(data) - 1:
                self.assertEqual(events, [])
        self.assertEqual(events, [(PACKET, packet(7))])
        self.assertEqual(d.pending(), 0)

    def test_empty_feed(self):
        self.assertEqual(StreamDeframer(KEY, CLUSTER).feed(b""), [])


class ResyncTests(SynchronousTestCase):
    def test_garbage_before_a_frame(self):
        d = StreamDeframer(KEY, CLUSTER)
        events = d.feed(b"\x00noise\xff" + frame(1))
        self.assertEqual(events, [(RESYNC, None), (GARBAGE, 7), (PACKET, packet(1))])

    def test_garbage_run_across_reads_is_one_resync(self):
        d = StreamDeframer(KEY, CLUSTER)
        events = d.feed(b"x" * 100) + d.feed(b"y" * 50) + d.feed(frame(1))
        self.assertEqual(kinds(events).count(RESYNC), 1)
        self.assertEqual(garbage(events), 150)
        self.assertEqual(packets(events), [packet(1)])

    def test_garbage_after_a_frame_is_a_new_resync(self):
        d = StreamDeframer(KEY, CLUSTER)
        events = d.feed(b"zz" + frame(1) + b"zz" + frame(2))
        self.assertEqual(kinds(events), [RESYNC, GARBAGE, PACKET, RESYNC, GARBAGE, PACKET])

    def test_garbage_ending_in_part_of_the_magic(self):
        d = StreamDeframer(KEY, CLUSTER)
        data = frame(1)
        events = d.feed(b"junkCP")
        self.assertEqual(events, [(RESYNC, None), (GARBAGE, 4)])
        self.assertEqual(d.pending(), 2)
        events = d.feed(data[2:])
        # "CP" of the garbage happened to be the frame's own start.
        self.assertEqual(events, [(PACKET, packet(1))])

    def test_partial_magic_that_is_not_one(self):
        d = StreamDeframer(KEY, CLUSTER)
        events = d.feed(b"CPH") + d.feed(b"x" + frame(1))
        self.assertEqual(garbage(events), 4)
        self.assertEqual(packets(events), [packet(1)])

    def test_buffer_bounded_without_a_magic(self):
        d = StreamDeframer(KEY, CLUSTER)
        rnd = random.Random(1)
        total = 0
        for _ in range(50):
            chunk = bytes(rnd.randrange(256) for _ in range(1000)).replace(b"C", b"c")
            total += garbage(d.feed(chunk))
            self.assertEqual(d.pending(), 0)
        self.assertEqual(total, 50000)

    def test_oversize_header(self):
        d = StreamDeframer(KEY, CLUSTER)
        bogus = struct.pack("!4sBBH", MAGIC, 1, 255, 60000) + b"x" * 20
        events = d.feed(bogus + frame(1))
        self.assertEqual(events[0][0], MALFORMED)
        self.assertIn("more than 1024", events[0][1])
        self.assertEqual(garbage(events), len(bogus) - len(MAGIC))
        self.assertEqual(packets(events), [packet(1)])

    def test_unfinished_candidate_never_exceeds_max_packet(self):
        d = StreamDeframer(KEY, CLUSTER)
        # A plausible header announcing 1000 bytes, then fewer than that.
        d.feed(struct.pack("!4sBBH", MAGIC, 1, 0, 1000 - 40) + b"x" * 900)
        self.assertLessEqual(d.pending(), MAX_PACKET)

    def test_truncated_frame_then_a_good_one(self):
        d = StreamDeframer(KEY, CLUSTER)
        cut = frame(1)[:100]
        events = d.feed(cut + frame(2) + frame(3))
        self.assertEqual(kinds(events), [TRUNCATED, PACKET, PACKET])
        self.assertEqual(packets(events), [packet(2), packet(3)])

    def test_truncated_frame_then_a_good_one_read_in_pieces(self):
        # The cut frame is still unfinished when the good one is complete:
        # the good one must not wait for bytes that would finish the cut one.
        d = StreamDeframer(KEY, CLUSTER)
        data = frame(1)
        cut = data[:len(data) - 10]
        events = d.feed(cut)
        self.assertEqual(events, [])
        events = d.feed(frame(2))
        self.assertEqual(kinds(events), [TRUNCATED, PACKET])
        self.assertEqual(packets(events), [packet(2)])

    def _feed_in(self, d, data, step):
        events = []
        for i in range(0, len(data), step):
            events += d.feed(data[i:i + step])
        return events

    def test_frame_cut_short_by_one_to_three_bytes_costs_that_frame_alone(self):
        # The next frame's magic then starts inside the cut frame's announced
        # length but ends past it: the resynchronisation must still see it.
        for cut in (1, 2, 3):
            for step in (1, 5, 64, 10_000):
                d = StreamDeframer(KEY, CLUSTER)
                stream = frame(1)[:-cut] + frame(2) + frame(3)
                events = self._feed_in(d, stream, step)
                self.assertEqual(kinds(events), [TRUNCATED, PACKET, PACKET], (cut, step))
                self.assertEqual(packets(events), [packet(2), packet(3)], (cut, step))
                self.assertEqual(d.pending(), 0)

    def test_damaged_length_then_a_cut_frame_then_a_good_one(self):
        # A header whose length was damaged upwards makes its frame wait for
        # bytes that never belonged to it; a good frame behind a second,
        # cut-short frame inside that span must not wait with it.
        long_claim = bytearray(frame(1))
        struct.pack_into("!H", long_claim, 6, MAX_PACKET - 100)
        d = StreamDeframer(KEY, CLUSTER)
        events = d.feed(bytes(long_claim) + frame(2)[:60] + frame(3))
        self.assertEqual(packets(events), [packet(3)])
        self.assertEqual(d.pending(), 0)

    def test_bogus_magic_with_a_plausible_length_does_not_delay_frames(self):
        d = StreamDeframer(KEY, CLUSTER)
        bogus = struct.pack("!4sBBH", MAGIC, 1, 0, 900)
        events = d.feed(bogus + frame(1))
        self.assertEqual(kinds(events), [TRUNCATED, PACKET])
        self.assertEqual(d.pending(), 0)

    def test_noise_inside_a_frame(self):
        d = StreamDeframer(KEY, CLUSTER)
        data = bytearray(frame(1))
        data[60] ^= 0xFF  # a flipped byte in the body
        events = d.feed(bytes(data) + frame(2))
        self.assertEqual(kinds(events), [UNAUTHENTICATED, PACKET])
        self.assertEqual(packets(events), [packet(2)])

    def test_bad_version(self):
        d = StreamDeframer(KEY, CLUSTER)
        data = bytearray(frame(1))
        data[4] = 9
        events = d.feed(bytes(data) + frame(2))
        self.assertEqual(kinds(events), [MALFORMED, PACKET])

    def test_wrong_key(self):
        d = StreamDeframer(KEY, CLUSTER)
        events = d.feed(frame(1, key=b"other-key") + frame(2))
        self.assertEqual(kinds(events), [UNAUTHENTICATED, PACKET])
        self.assertEqual(packets(events), [packet(2)])

    def test_wrong_cluster(self):
        d = StreamDeframer(KEY, CLUSTER)
        events = d.feed(frame(1, cluster="other") + frame(2))
        self.assertEqual(kinds(events), [FOREIGN, PACKET])
        self.assertIn("other", events[0][1])

    def test_random_noise_between_frames(self):
        rnd = random.Random(7)
        d = StreamDeframer(KEY, CLUSTER)
        stream = b""
        for seq in range(1, 101):
            # Noise without the magic's first letter cannot fake a frame start.
            stream += bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40))).replace(b"C", b"c")
            stream += frame(seq)
        events = []
        pos = 0
        while pos < len(stream):
            step = rnd.randrange(1, 300)
            events += d.feed(stream[pos:pos + step])
            pos += step
            self.assertLessEqual(d.pending(), MAX_PACKET)
        self.assertEqual([p.seq for p in packets(events)], list(range(1, 101)))
        self.assertEqual(len(stream), garbage(events) + sum(len(frame(s)) for s in range(1, 101)))


class ResetTests(SynchronousTestCase):
    def test_reset_drops_an_unfinished_frame(self):
        d = StreamDeframer(KEY, CLUSTER)
        d.feed(frame(1)[:50])
        events = d.reset()
        self.assertEqual(kinds(events), [TRUNCATED])
        self.assertEqual(d.pending(), 0)
        self.assertEqual(d.feed(frame(2)), [(PACKET, packet(2))])

    def test_reset_drops_part_of_a_magic_as_garbage(self):
        d = StreamDeframer(KEY, CLUSTER)
        d.feed(b"CP")
        self.assertEqual(d.reset(), [(GARBAGE, 2)])

    def test_reset_when_empty(self):
        self.assertEqual(StreamDeframer(KEY, CLUSTER).reset(), [])
