"""LAN heartbeat packets: bytes <-> L{HeartbeatPacket}, and replay filtering.

Wire format (all integers big-endian)::

    magic      4 bytes   b"CPHB"
    version    1 byte    VERSION
    name_len   1 byte    length of the cluster name
    body_len   2 bytes   length of the JSON body
    cluster    name_len  cluster name, UTF-8, in clear
    body       body_len  compact JSON (sender, boot id, sequence, state digest)
    tag        32 bytes  HMAC-SHA256(cluster key, every byte before the tag)

The cluster name travels in clear, before the tag, so that a packet from
another cluster on the same segment is recognised and counted as I{foreign}
(a neighbour's misconfiguration) rather than as I{unauthenticated} (a forged
or corrupted packet): the two call for different operator reactions.

Nothing here does I/O or decides anything: L{decode} turns bytes into a
packet or raises a L{PacketError} subclass, L{ReplayGuard} says whether an
authentic packet is fresh. The callers count and drop.
"""

import hashlib
import hmac
import json
import re
import secrets
import struct
from dataclasses import dataclass

from cpro.protocols.keyring import Keyring, accepted_keys, signing_key

MAGIC = b"CPHB"
VERSION = 1
MAX_PACKET = 1024  # bytes; a beat is ~250 bytes, anything bigger is not ours

_HEADER = struct.Struct("!4sBBH")
_TAG_SIZE = hashlib.sha256().digest_size
_MIN_PACKET = _HEADER.size + _TAG_SIZE

# Bounds on the body fields: JSON integers are unbounded and strings can be
# anything, so every field is checked before the packet object exists.
_MAX_NAME = 255
_MAX_NONCE = 64
_MAX_SERVICE = 32
_MAX_CONFIG = 128
_MAX_INT = 2**64 - 1
_INCARNATION = re.compile(r"([0-9]{1,20})/([A-Za-z0-9_.\-]{0,64})\Z")

_BODY_KEYS = frozenset(("sender", "boot", "seq", "digest"))
_DIGEST_KEYS = frozenset(("config", "placement", "service"))


class PacketError(Exception):
    """A datagram that is not an acceptable heartbeat of this cluster."""


class MalformedPacket(PacketError):
    """Not a heartbeat packet: wrong size, magic, version or body."""


class Unauthenticated(PacketError):
    """Claims to be from this cluster but the HMAC tag does not match."""


class ForeignCluster(PacketError):
    """A well-formed heartbeat header naming another cluster."""


@dataclass(frozen=True, order=True)
class Incarnation:
    """One run of a server's daemon (its boot id).

    Ordered by start time, then nonce: the later start is the newer
    incarnation. The nonce separates two starts within the same nanosecond
    reading (or a clock that did not move).
    """

    started_ns: int  # wall-clock time the daemon started, ns since the epoch
    nonce: str  # random hex

    def __str__(self):
        return f"{self.started_ns}/{self.nonce}"


def parse_incarnation(text):
    """The L{Incarnation} written as C{"<started_ns>/<nonce>"} (its C{str}).

    @raise ValueError: for anything else.
    """
    m = _INCARNATION.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"bad incarnation {str(text)[:80]!r}")
    started = int(m.group(1))
    if started > _MAX_INT:
        raise ValueError("incarnation start time out of range")
    return Incarnation(started_ns=started, nonce=m.group(2))


def new_incarnation(clock_seconds, nonce=None):
    """The incarnation of a daemon starting at C{clock_seconds} (wall clock, float seconds)."""
    # Whole seconds and fraction apart: a float of ~1.7e18 ns cannot hold
    # every nanosecond, but each part converts exactly enough.
    whole = int(clock_seconds)
    return Incarnation(
        started_ns=whole * 1_000_000_000 + int(round((clock_seconds - whole) * 1_000_000_000)),
        nonce=nonce if nonce is not None else secrets.token_hex(8),
    )


@dataclass(frozen=True)
class StateDigest:
    """What a sender says about its state, so that views converge quickly."""

    config: str  # configuration generation (ClusterConfig.digest, hex)
    placement: int  # group placement version counter
    service: str  # local cluster service state word (ClusterServiceState value)


@dataclass(frozen=True)
class HeartbeatPacket:
    cluster: str
    sender: str  # server name
    incarnation: Incarnation
    seq: int  # strictly increasing per incarnation (and path)
    digest: StateDigest


def encode(packet, key):
    """The datagram for C{packet}, authenticated with the cluster C{key}
    (bytes, or a L{Keyring}: its signing key).

    @raise ValueError: the packet does not fit in L{MAX_PACKET} or a name is
        too long (a configuration or programming error, not input).
    """
    _check_key(key)
    key = signing_key(key)
    cluster = packet.cluster.encode("utf-8")
    if len(cluster) > _MAX_NAME:
        raise ValueError(f"cluster name longer than {_MAX_NAME} bytes")
    body = json.dumps(
        {
            "sender": packet.sender,
            "boot": [packet.incarnation.started_ns, packet.incarnation.nonce],
            "seq": packet.seq,
            "digest": {
                "config": packet.digest.config,
                "placement": packet.digest.placement,
                "service": packet.digest.service,
            },
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode("ascii")
    signed = _HEADER.pack(MAGIC, VERSION, len(cluster), len(body)) + cluster + body
    data = signed + hmac.new(key, signed, hashlib.sha256).digest()
    if len(data) > MAX_PACKET:
        raise ValueError(f"heartbeat packet of {len(data)} bytes exceeds {MAX_PACKET}")
    # Decoding our own output must succeed; this catches a sender name or
    # digest that the receiver would reject, at the sender, where it is a bug.
    try:
        decode(data, key, packet.cluster)
    except PacketError as e:
        raise ValueError(f"unencodable heartbeat: {e}") from None
    return data


def decode(data, key, cluster):
    """The packet in C{data}, if it is an authentic heartbeat of C{cluster}
    (authenticated with C{key}, or any key a L{Keyring} accepts).

    Checks run cheapest and least trusting first: size and header, then the
    cluster name, then the HMAC, and only then is the body parsed.

    @raise MalformedPacket, ForeignCluster, Unauthenticated: and nothing else
        for any bytes given.
    """
    _check_key(key)
    if not isinstance(data, bytes):
        raise MalformedPacket("not a byte string")
    if len(data) > MAX_PACKET:
        raise MalformedPacket(f"{len(data)} bytes, more than {MAX_PACKET}")
    if len(data) < _MIN_PACKET:
        raise MalformedPacket(f"{len(data)} bytes, fewer than {_MIN_PACKET}")
    magic, version, name_len, body_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MalformedPacket("bad magic")
    if version != VERSION:
        raise MalformedPacket(f"unsupported version {version}")
    if _HEADER.size + name_len + body_len + _TAG_SIZE != len(data):
        raise MalformedPacket("length fields do not match the datagram size")
    name_end = _HEADER.size + name_len
    if data[_HEADER.size : name_end] != cluster.encode("utf-8"):
        raise ForeignCluster(
            "cluster " + data[_HEADER.size : name_end].decode("utf-8", "replace")
        )
    signed, tag = data[:-_TAG_SIZE], data[-_TAG_SIZE:]
    if not any(hmac.compare_digest(hmac.new(k, signed, hashlib.sha256).digest(), tag) for k in accepted_keys(key)):
        raise Unauthenticated("HMAC tag mismatch")
    return _parse_body(data[name_end:-_TAG_SIZE], cluster)


def _check_key(key):
    if isinstance(key, Keyring):
        return
    if not isinstance(key, bytes) or not key:
        # A programming or configuration error: an empty key authenticates nothing.
        raise ValueError("the cluster key must be non-empty bytes")


def _parse_body(body, cluster):
    try:
        obj = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise MalformedPacket(f"body is not JSON: {e}") from None
    if not isinstance(obj, dict) or set(obj) != _BODY_KEYS:
        raise MalformedPacket("body fields")
    boot, digest = obj["boot"], obj["digest"]
    if not (isinstance(boot, list) and len(boot) == 2):
        raise MalformedPacket("boot id")
    if not isinstance(digest, dict) or set(digest) != _DIGEST_KEYS:
        raise MalformedPacket("digest fields")
    return HeartbeatPacket(
        cluster=cluster,
        sender=_text(obj["sender"], _MAX_NAME, "sender", allow_empty=False),
        incarnation=Incarnation(
            started_ns=_count(boot[0], "boot time"),
            nonce=_text(boot[1], _MAX_NONCE, "boot nonce"),
        ),
        seq=_count(obj["seq"], "sequence number"),
        digest=StateDigest(
            config=_text(digest["config"], _MAX_CONFIG, "configuration generation"),
            placement=_count(digest["placement"], "placement version"),
            service=_text(digest["service"], _MAX_SERVICE, "service state"),
        ),
    )


def _text(value, limit, what, allow_empty=True):
    if not isinstance(value, str) or len(value) > limit or (not value and not allow_empty):
        raise MalformedPacket(f"bad {what}")
    return value


def _count(value, what):
    # bool is an int subclass; true/false in JSON is not a number here.
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise MalformedPacket(f"bad {what}")
    return value


# Verdicts of ReplayGuard.accept.
OK = "ok"
REPLAY = "replay"  # same incarnation, sequence number not above the last one
STALE = "stale"  # an incarnation older than the newest seen from that sender
RESTARTED = "restarted"  # a newer incarnation: accepted, and worth reporting
ACCEPTED = frozenset((OK, RESTARTED))


class ReplayGuard:
    """Freshness of authentic packets, per sender.

    Keeps the newest incarnation and the last sequence number of each sender.
    Use one guard per path: sequence numbers of different paths are not
    comparable and a packet may overtake another on a different path.

    A sender whose daemon restarts with an I{older} start time (the wall
    clock was set back by more than the previous run's uptime) is refused as
    stale until L{forget} is called for it.
    """

    def __init__(self):
        self._latest = {}  # sender -> (Incarnation, last seq)

    def accept(self, packet):
        """Record C{packet} if fresh; return one of OK, REPLAY, STALE, RESTARTED."""
        known = self._latest.get(packet.sender)
        if known is None:
            verdict = OK
        else:
            incarnation, last_seq = known
            if packet.incarnation == incarnation:
                if packet.seq <= last_seq:
                    return REPLAY
                verdict = OK
            elif packet.incarnation < incarnation:
                return STALE
            else:
                verdict = RESTARTED
        self._latest[packet.sender] = (packet.incarnation, packet.seq)
        return verdict

    def incarnation(self, sender):
        known = self._latest.get(sender)
        return known[0] if known else None

    def forget(self, sender):
        """Drop what is known about C{sender}: its next authentic packet is accepted."""
        self._latest.pop(sender, None)
