"""Tests for cpro.protocols.heartbeat: packet codec and replay guard."""

import hashlib
import hmac
import json
import random
import struct

from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import heartbeat as hb
from cpro.protocols.heartbeat import (
    MAX_PACKET,
    ForeignCluster,
    HeartbeatPacket,
    Incarnation,
    MalformedPacket,
    PacketError,
    ReplayGuard,
    StateDigest,
    Unauthenticated,
    decode,
    encode,
    new_incarnation,
)

KEY = b"k" * 32
CLUSTER = "cluster1"
INC = Incarnation(1_700_000_000_000_000_000, "a1b2c3d4e5f60718")
DIGEST = StateDigest("ab" * 32, 7, "Running")


def packet(sender="srv2", seq=1, incarnation=INC, digest=DIGEST, cluster=CLUSTER):
    return HeartbeatPacket(cluster, sender, incarnation, seq, digest)


def signed(body, cluster=CLUSTER, key=KEY):
    """A correctly framed and authenticated datagram around arbitrary body bytes."""
    name = cluster.encode()
    head = struct.pack("!4sBBH", b"CPHB", hb.VERSION, len(name), len(body)) + name + body
    return head + hmac.new(key, head, hashlib.sha256).digest()


def good_body(**changes):
    body = {
        "sender": "srv2",
        "boot": [INC.started_ns, INC.nonce],
        "seq": 1,
        "digest": {"config": "ab", "placement": 0, "service": "Running"},
    }
    body.update(changes)
    return json.dumps(body).encode()


class CodecTests(SynchronousTestCase):
    def test_round_trip(self):
        p = packet(sender="サーバ2", seq=123456789)
        data = encode(p, KEY)
        self.assertLessEqual(len(data), MAX_PACKET)
        self.assertEqual(decode(data, KEY, CLUSTER), p)

    def test_signed_helper_matches_the_format(self):
        self.assertEqual(decode(signed(good_body()), KEY, CLUSTER).sender, "srv2")

    def test_tampered_body_byte_is_unauthenticated(self):
        data = bytearray(encode(packet(), KEY))
        index = data.index(b'"seq":1') + 6
        data[index] = ord("9")
        with self.assertRaises(Unauthenticated):
            decode(bytes(data), KEY, CLUSTER)

    def test_tampered_tag_is_unauthenticated(self):
        data = bytearray(encode(packet(), KEY))
        data[-1] ^= 0x01
        self.assertRaises(Unauthenticated, decode, bytes(data), KEY, CLUSTER)

    def test_every_single_bit_flip_is_refused(self):
        data = encode(packet(), KEY)
        for i in range(len(data)):
            for bit in (0x01, 0x80):
                bad = bytearray(data)
                bad[i] ^= bit
                self.assertRaises(PacketError, decode, bytes(bad), KEY, CLUSTER)

    def test_wrong_key_is_unauthenticated(self):
        data = encode(packet(), b"another key")
        self.assertRaises(Unauthenticated, decode, data, KEY, CLUSTER)

    def test_other_cluster_is_foreign(self):
        data = encode(packet(cluster="cluster2"), b"their key")
        e = self.assertRaises(ForeignCluster, decode, data, KEY, CLUSTER)
        self.assertIn("cluster2", str(e))

    def test_other_cluster_same_key_is_foreign(self):
        data = encode(packet(cluster="cluster2"), KEY)
        self.assertRaises(ForeignCluster, decode, data, KEY, CLUSTER)

    def test_truncated_is_malformed(self):
        data = encode(packet(), KEY)
        for n in range(len(data)):
            self.assertRaises(MalformedPacket, decode, data[:n], KEY, CLUSTER)

    def test_trailing_bytes_are_malformed(self):
        data = encode(packet(), KEY)
        self.assertRaises(MalformedPacket, decode, data + b"\0", KEY, CLUSTER)

    def test_oversize_is_malformed(self):
        body = good_body(digest={"config": "x" * 2000, "placement": 0, "service": ""})
        data = signed(body)
        self.assertGreater(len(data), MAX_PACKET)
        self.assertRaises(MalformedPacket, decode, data, KEY, CLUSTER)
        self.assertRaises(MalformedPacket, decode, b"\0" * (MAX_PACKET + 1), KEY, CLUSTER)

    def test_wrong_magic_or_version_is_malformed(self):
        data = encode(packet(), KEY)
        self.assertRaises(MalformedPacket, decode, b"XPHB" + data[4:], KEY, CLUSTER)
        self.assertRaises(MalformedPacket, decode, data[:4] + b"\x02" + data[5:], KEY, CLUSTER)

    def test_non_bytes_is_malformed(self):
        self.assertRaises(MalformedPacket, decode, "CPHB", KEY, CLUSTER)
        self.assertRaises(MalformedPacket, decode, None, KEY, CLUSTER)

    def test_authentic_but_bad_bodies_are_malformed(self):
        bodies = [
            b"not json",
            b"\xff\xfe",
            b"[]",
            b"null",
            b"[" * 900,
            b"[" * 480 + b"]" * 480,
            good_body(extra=1),
            json.dumps({"sender": "srv2"}).encode(),
            good_body(sender=""),
            good_body(sender=5),
            good_body(sender="s" * 256),
            good_body(seq=-1),
            good_body(seq=True),
            good_body(seq=1.5),
            good_body(seq=2**64),
            good_body(seq="1"),
            good_body(boot=[1]),
            good_body(boot=[1, 2]),
            good_body(boot={"a": 1}),
            good_body(boot=[1, "n" * 65]),
            good_body(digest=[1, 2, 3]),
            good_body(digest={"config": "ab", "placement": 0}),
            good_body(digest={"config": 1, "placement": 0, "service": ""}),
            good_body(digest={"config": "ab", "placement": False, "service": ""}),
            good_body(digest={"config": "ab", "placement": 0, "service": "s" * 33}),
        ]
        for body in bodies:
            data = signed(body)
            if len(data) > MAX_PACKET:
                continue
            with self.assertRaises(MalformedPacket, msg=repr(body[:40])):
                decode(data, KEY, CLUSTER)

    def test_fuzz_random_bytes_only_raise_packet_errors(self):
        rng = random.Random(20240229)
        for _ in range(3000):
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 1100)))
            self.assertRaises(MalformedPacket, decode, data, KEY, CLUSTER)

    def test_fuzz_mutated_packets_only_raise_packet_errors(self):
        rng = random.Random(7)
        good = encode(packet(), KEY)
        for _ in range(3000):
            data = bytearray(good)
            for _ in range(rng.randrange(1, 6)):
                op = rng.randrange(3)
                i = rng.randrange(len(data) + 1)
                if op == 0 and i < len(data):
                    data[i] = rng.getrandbits(8)
                elif op == 1:
                    data.insert(i, rng.getrandbits(8))
                elif i < len(data):
                    del data[i]
            try:
                result = decode(bytes(data), KEY, CLUSTER)
            except PacketError:
                continue
            # Only a mutation that restored the original can decode.
            self.assertEqual(bytes(data), good)
            self.assertEqual(result, packet())

    def test_fuzz_authentic_random_bodies_only_raise_malformed(self):
        rng = random.Random(99)
        alphabet = b'{}[]":,0123456789-.eEtruefalsnl \\u"seqbootdigest'
        for _ in range(2000):
            body = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 300)))
            try:
                decode(signed(body), KEY, CLUSTER)
            except MalformedPacket:
                pass

    def test_encode_refuses_what_decode_would_refuse(self):
        self.assertRaises(ValueError, encode, packet(sender="s" * 300), KEY)
        self.assertRaises(ValueError, encode, packet(seq=-1), KEY)
        self.assertRaises(ValueError, encode, packet(), b"")
        self.assertRaises(ValueError, decode, b"", b"", CLUSTER)


class IncarnationTests(SynchronousTestCase):
    def test_later_start_is_newer(self):
        self.assertLess(Incarnation(1, "ff"), Incarnation(2, "00"))

    def test_ties_broken_by_nonce(self):
        self.assertLess(Incarnation(5, "aa"), Incarnation(5, "ab"))
        self.assertNotEqual(Incarnation(5, "aa"), Incarnation(5, "ab"))

    def test_new_incarnation(self):
        a = new_incarnation(1700000000.25)
        b = new_incarnation(1700000000.25)
        self.assertEqual(a.started_ns, 1_700_000_000_250_000_000)
        self.assertNotEqual(a.nonce, b.nonce)
        int(a.nonce, 16)
        self.assertEqual(new_incarnation(1.0, nonce="x").nonce, "x")


class ReplayGuardTests(SynchronousTestCase):
    def setUp(self):
        self.guard = ReplayGuard()

    def test_first_packet_ok_then_increasing(self):
        self.assertEqual(self.guard.accept(packet(seq=5)), hb.OK)
        self.assertEqual(self.guard.accept(packet(seq=6)), hb.OK)
        self.assertEqual(self.guard.accept(packet(seq=100)), hb.OK)
        self.assertEqual(self.guard.incarnation("srv2"), INC)

    def test_replay(self):
        self.guard.accept(packet(seq=5))
        self.assertEqual(self.guard.accept(packet(seq=5)), hb.REPLAY)
        self.assertEqual(self.guard.accept(packet(seq=4)), hb.REPLAY)
        self.assertEqual(self.guard.accept(packet(seq=6)), hb.OK)

    def test_restart_and_stale(self):
        newer = Incarnation(INC.started_ns + 1, "00")
        self.guard.accept(packet(seq=50))
        self.assertEqual(self.guard.accept(packet(seq=1, incarnation=newer)), hb.RESTARTED)
        self.assertEqual(self.guard.accept(packet(seq=2, incarnation=newer)), hb.OK)
        # The old run's packets, whatever their sequence numbers, are stale now.
        self.assertEqual(self.guard.accept(packet(seq=51)), hb.STALE)
        self.assertEqual(self.guard.accept(packet(seq=1, incarnation=newer)), hb.REPLAY)

    def test_senders_are_independent(self):
        self.guard.accept(packet(sender="srv2", seq=10))
        self.assertEqual(self.guard.accept(packet(sender="srv3", seq=1)), hb.OK)
        self.assertEqual(self.guard.accept(packet(sender="srv2", seq=10)), hb.REPLAY)

    def test_forget(self):
        newer = Incarnation(INC.started_ns + 1, "00")
        self.guard.accept(packet(seq=1, incarnation=newer))
        self.guard.forget("srv2")
        self.assertIsNone(self.guard.incarnation("srv2"))
        self.assertEqual(self.guard.accept(packet(seq=1)), hb.OK)

    def test_refused_packets_do_not_change_state(self):
        self.guard.accept(packet(seq=10))
        self.guard.accept(packet(seq=3))
        self.assertEqual(self.guard.accept(packet(seq=11)), hb.OK)
