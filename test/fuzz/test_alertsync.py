"""Fuzzing the alert sync codec (cpro.protocols.alertsync): decode_alert and
AlertSyncProtocol.datagramReceived.

The fixups and structured inputs sign with the cluster key, so that hostile
JSON (deep nesting, huge numbers, lone surrogates, odd types) gets past the
HMAC and reaches the body parser. The contract: decode_alert raises only
L{AlertCodecError}; the protocol never raises into the reactor, logs no
failure, and counts every datagram exactly once (received, malformed,
unauthenticated or foreign); only signed input is accepted; an accepted
alert encodes again to a packet that decodes the same.
"""

import hashlib
import hmac
import json
import math
import struct

from twisted.trial.unittest import SynchronousTestCase

from cpro.cluster.states import Level
from cpro.protocols import alertsync as al
from test.fuzz.harness import Finding, FuzzTestMixin, Target, dumps, logged_failures, mutate_json

KEY = b"fuzz-alert-key"
CLUSTER = "fuzzcluster"
ADDRESS = ("127.0.0.2", 29003)


def frame(body, name=CLUSTER.encode(), key=KEY):
    """An alert datagram around arbitrary body bytes, lengths and tag right."""
    head = struct.pack("!4sBB", al.MAGIC, al.VERSION, len(name) & 0xFF) + name
    head += struct.pack("!H", len(body) & 0xFFFF) + body
    return head + hmac.new(key, head, hashlib.sha256).digest()


class AlertSyncTarget(Target):
    name = "alertsync"
    max_size = al.MAX_PACKET + 64

    def __init__(self):
        self._seeds = set()
        self._signed = None  # the last input this target signed itself
        self._delivered = []
        self.protocol = al.AlertSyncProtocol(CLUSTER, KEY, lambda *a: self._delivered.append(a))

    def seeds(self, rng):
        alerts = [
            (al.Alert(1_700_000_000.25, "srv1", "nm", 1, Level.INFO, "Server srv1 has started.", 7), "tok1"),
            (al.Alert(0, "サーバ2", "rc", 92, Level.ERROR, "Grüße \"quoted\" {x}\n", 2**40), "a" * 64),
            (al.Alert(1e9, "s", "lanhb", 0, Level.WARNING, "x" * 5000, 0), ""),
        ]
        seeds = [al.encode_alert(a, token, CLUSTER, KEY) for a, token in alerts]
        self._seeds.update(seeds)
        self._bodies = [json.loads(s[8 + s[5]:-32]) for s in seeds]
        return seeds

    def _resign(self, data):
        # Keep the header and cluster name as mutated; recompute the body length and the tag.
        if len(data) < 8 + 32:
            raise ValueError("too short")
        name_len = data[5]
        out = frame(data[8 + name_len:-32], data[6:6 + name_len])
        out = data[:6] + out[6:]  # keep a mutated magic or version
        self._signed = out = out[:-32] + hmac.new(KEY, out[:-32], hashlib.sha256).digest()
        return out

    def fixups(self):
        return [self._resign]

    def structured(self, rng):
        body = mutate_json(rng.choice(self._bodies), rng)
        self._signed = out = frame(dumps(body))
        return out

    def check(self, data):
        try:
            decoded = al.decode_alert(data, CLUSTER, KEY)
        except al.AlertCodecError as e:
            decoded, error = None, e
        else:
            error = None
            self._accepted(data, *decoded)
        self._through_protocol(data, decoded, error)

    def _accepted(self, data, alert, token):
        if data not in self._seeds and data != self._signed:
            raise Finding("a mutated packet without a valid tag was accepted")
        if not (isinstance(alert.time, float) and math.isfinite(alert.time)):
            raise Finding(f"time {alert.time!r} accepted")
        for value in (alert.event_id, alert.origin_seq):
            if not (type(value) is int and 0 <= value <= al.MAX_INTEGER):
                raise Finding(f"integer field {value!r} accepted")
        if alert.details:
            raise Finding("details from the wire were kept")
        again = al.decode_alert(al.encode_alert(alert, token, CLUSTER, KEY), CLUSTER, KEY)
        if again != (alert, token):
            raise Finding(f"decode(encode(a)) != a: {again!r} != {(alert, token)!r}")

    def _through_protocol(self, data, decoded, error):
        before = dict(self.protocol.counters)
        self._delivered.clear()
        with logged_failures() as failures:
            self.protocol.datagramReceived(data, ADDRESS)
        if failures:
            raise Finding(f"datagramReceived logged a failure: {failures[0].get('log_failure')}")
        changed = {k: self.protocol.counters[k] - before[k] for k in before if self.protocol.counters[k] != before[k]}
        if error is None:
            expected = {"received": 1}
        elif isinstance(error, al.ForeignCluster):
            expected = {"foreign": 1}
        elif isinstance(error, al.Unauthenticated):
            expected = {"unauthenticated": 1}
        else:
            expected = {"malformed": 1}
        if changed != expected:
            raise Finding(f"counters moved by {changed}, expected {expected} ({error!r})")
        if len(self._delivered) != (error is None):
            raise Finding(f"{len(self._delivered)} alerts handed on for one datagram ({error!r})")
        if decoded is not None and self._delivered[0][:2] != decoded:
            raise Finding("the protocol handed on another alert than decode_alert returned")


class AlertSyncFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = AlertSyncTarget()
