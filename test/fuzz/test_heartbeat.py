"""Fuzzing the LAN heartbeat codec (cpro.protocols.heartbeat) and its replay guard."""

import hashlib
import hmac
import json
import struct

from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import heartbeat as hb
from cpro.protocols.keyring import Keyring
from test.fuzz.harness import Finding, FuzzTestMixin, Target, dumps, mutate_json

KEY = b"fuzz-cluster-key"
# Decoding goes through a keyring in the middle of a rotation: the key the
# seeds are signed with and one more, so the any-of-the-keys check is fuzzed.
KEYRING = Keyring(b"fuzz-next-key")
KEYRING.accept(KEY)
CLUSTER = "fuzzcluster"


def sign(cluster_and_body_head, key=KEY):
    return cluster_and_body_head + hmac.new(key, cluster_and_body_head, hashlib.sha256).digest()


def frame(body, cluster=CLUSTER.encode(), key=KEY):
    """A heartbeat datagram around arbitrary body bytes, lengths and tag right."""
    head = struct.pack("!4sBBH", hb.MAGIC, hb.VERSION, len(cluster) & 0xFF, len(body) & 0xFFFF)
    return sign(head + cluster + body, key)


class HeartbeatTarget(Target):
    name = "heartbeat"
    max_size = 1200

    def __init__(self):
        self.guard = hb.ReplayGuard()
        self._seeds = set()
        self._signed = None  # the last input this target signed itself

    def seeds(self, rng):
        seeds = []
        for seq in (1, 2, 2**40):
            p = hb.HeartbeatPacket(CLUSTER, f"srv{seq % 7}", hb.Incarnation(1_700_000_000 * 10**9 + seq, "abc123"),
                                   seq, hb.StateDigest("ab" * 32, seq, "Running"))
            seeds.append(hb.encode(p, KEY))
        self._seeds.update(seeds)
        self._seed_bodies = [s[8 + s[5]:-32] for s in seeds]
        return seeds

    def _resign(self, data):
        # Keep header and cluster name as mutated, recompute the body length and the tag.
        if len(data) < 8 + 32:
            raise ValueError("too short")
        name_len = data[5]
        body = data[8 + name_len:-32]
        out = frame(body, data[8:8 + name_len])
        self._signed = out
        return out

    def fixups(self):
        return [self._resign]

    def structured(self, rng):
        body = json.loads(rng.choice(self._seed_bodies))
        out = frame(dumps(mutate_json(body, rng)))
        self._signed = out
        return out

    def check(self, data):
        try:
            packet = hb.decode(data, KEYRING, CLUSTER)
        except hb.PacketError:
            return
        if data not in self._seeds and data != self._signed:
            raise Finding("a mutated packet without a valid tag was accepted")
        before = dict(self.guard._latest)
        verdict = self.guard.accept(packet)
        if verdict not in (hb.OK, hb.RESTARTED, hb.REPLAY, hb.STALE):
            raise Finding(f"unknown verdict {verdict!r}")
        if verdict in (hb.REPLAY, hb.STALE) and self.guard._latest != before:
            raise Finding("a refused packet changed the replay guard")
        # An accepted packet encodes again to a packet that decodes the same.
        if len(packet.cluster.encode()) <= 255:
            try:
                again = hb.encode(packet, KEY)
            except ValueError:
                return
            if hb.decode(again, KEY, CLUSTER) != packet:
                raise Finding("decode(encode(p)) != p")


class HeartbeatFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = HeartbeatTarget()
