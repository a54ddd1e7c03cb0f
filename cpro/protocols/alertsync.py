"""Alert synchronisation: the UDP datagrams that share alerts between servers.

Every server sends each of its own alerts to every peer (UDP 29003 by
default) so that the alert log is the same cluster-wide. This module only
turns an L{Alert} into bytes and back, and receives datagrams; what to do with
a received alert (deduplicate, store) is L{cpro.services.alerts.AlertLog}'s
business.

Datagram layout (at most L{MAX_PACKET} bytes)::

    magic    4 bytes  b"CPAL"
    version  1 byte   1
    name_len 1 byte   length of the cluster name
    name     name_len bytes, UTF-8, in clear (so that a foreign cluster's
             packets are told apart from forged ones)
    body_len 2 bytes  big-endian
    body     body_len bytes, UTF-8 JSON object (see L{alert_to_fields})
    tag      32 bytes HMAC-SHA256(cluster key, every byte before the tag)
"""

import hashlib
import hmac
import json
import math
import struct
from dataclasses import dataclass, field

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from cpro.cluster.states import Level
from cpro.protocols.keyring import accepted_keys, signing_key
from cpro.protocols.ratelog import worth_logging

MAGIC = b"CPAL"
VERSION = 1
MAX_PACKET = 4096
TAG_SIZE = 32
_HEADER = struct.Struct("!4sBB")
_BODY_LEN = struct.Struct("!H")

# Bounds on the fields, so that a packet always fits and a log line stays sane.
MAX_NAME = 255  # server and cluster names
MAX_MODULE = 32
MAX_TOKEN = 64
MAX_MESSAGE = 4096  # characters; further bounded by MAX_PACKET on the wire
MAX_INTEGER = 2**63 - 1  # event ids and sequence numbers fit a signed 64-bit field


@dataclass(frozen=True)
class Alert:
    """One recorded event: a state change or an error somewhere in the cluster.

    origin_seq numbers the alerts of one daemon incarnation on the server that
    raised it; together with that incarnation's token it identifies the alert
    cluster-wide (used to drop duplicates).
    """

    time: float  # seconds since the epoch, on the originating server
    server: str  # the server that raised it
    module: str  # 'nm', 'rc', 'pm', 'lanhb', 'cl', ...
    event_id: int
    level: Level
    message: str
    origin_seq: int
    # Extra key/values given to emit(); kept in the local log only.
    details: dict = field(default_factory=dict, compare=False, repr=False)


class AlertCodecError(Exception):
    """A datagram or log line that cannot be accepted as an alert."""


class MalformedAlert(AlertCodecError):
    """Not an alert packet, truncated, oversized, or with bad fields."""


class Unauthenticated(AlertCodecError):
    """Right cluster name but the HMAC tag does not verify (wrong key or tampered)."""


class ForeignCluster(AlertCodecError):
    """A well-formed packet of another cluster (its name is not ours)."""

    def __init__(self, cluster_name):
        self.cluster_name = cluster_name
        super().__init__(f"alert from foreign cluster {cluster_name!r}")


def alert_to_fields(alert, incarnation):
    """The JSON object for an alert, as sent on the wire and written to alert.log."""
    return {
        "time": alert.time,
        "server": alert.server,
        "module": alert.module,
        "id": alert.event_id,
        "level": alert.level.value,
        "message": alert.message,
        "seq": alert.origin_seq,
        "token": incarnation,
    }


def _text(fields, key, limit):
    value = fields.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise MalformedAlert(f"field {key!r} must be a string of at most {limit} characters")
    try:
        # JSON can carry a lone surrogate (the escape \udcff), which no UTF-8 log can hold.
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedAlert(f"field {key!r} is not valid Unicode text") from None
    return value


def _integer(fields, key):
    value = fields.get(key)
    # bool is an int subclass; true/false are not event ids.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INTEGER:
        raise MalformedAlert(f"field {key!r} must be an integer from 0 to {MAX_INTEGER}")
    return value


def _seconds(fields, key):
    value = fields.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise MalformedAlert(f"field {key!r} must be a number")
    try:
        # An integer such as 10**400 has no float: float() raises OverflowError.
        value = float(value)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise MalformedAlert(f"field {key!r} must be a finite number")
    return value


def alert_from_fields(fields):
    """Validate a decoded JSON object. Returns (Alert, incarnation token).

    @raise MalformedAlert: when a field is missing or of the wrong type.
    """
    if not isinstance(fields, dict):
        raise MalformedAlert("alert body is not a JSON object")
    when = _seconds(fields, "time")
    try:
        level = Level(fields.get("level"))
    except ValueError:
        raise MalformedAlert(f"unknown level {str(fields.get('level'))[:40]!r}") from None
    details = fields.get("details", {})
    if not isinstance(details, dict):
        raise MalformedAlert("field 'details' must be an object")
    alert = Alert(
        time=when,
        server=_text(fields, "server", MAX_NAME),
        module=_text(fields, "module", MAX_MODULE),
        event_id=_integer(fields, "id"),
        level=level,
        message=_text(fields, "message", MAX_MESSAGE),
        origin_seq=_integer(fields, "seq"),
        details=details,
    )
    if not alert.server or not alert.module:
        raise MalformedAlert("empty server or module")
    return alert, _text(fields, "token", MAX_TOKEN)


def _tag(key, data):
    return hmac.new(signing_key(key), data, hashlib.sha256).digest()


def _pack(fields, name, key):
    body = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    head = _HEADER.pack(MAGIC, VERSION, len(name)) + name + _BODY_LEN.pack(len(body)) + body
    return head + _tag(key, head)


def encode_alert(alert, incarnation, cluster_name, key):
    """Build the authenticated datagram for one alert.

    A message too long for one datagram is truncated (ending in '...') rather
    than dropped: a shortened alert on the peers beats none.
    """
    name = cluster_name.encode("utf-8")
    if len(name) > MAX_NAME:
        raise ValueError(f"cluster name longer than {MAX_NAME} bytes")
    fields = alert_to_fields(alert, incarnation)
    message = alert.message
    if len(message) > MAX_MESSAGE:
        fields["message"] = message = message[: MAX_MESSAGE - 3] + "..."
    packet = _pack(fields, name, key)
    if len(packet) <= MAX_PACKET:
        return packet
    # Longest prefix that fits (escaping makes bytes per character vary).
    low, high = 0, len(message)
    while low < high:
        mid = (low + high + 1) // 2
        fields["message"] = message[:mid] + "..."
        if len(_pack(fields, name, key)) <= MAX_PACKET:
            low = mid
        else:
            high = mid - 1
    fields["message"] = message[:low] + "..."
    packet = _pack(fields, name, key)
    if len(packet) > MAX_PACKET:
        raise ValueError("alert does not fit in one datagram even without its message")
    return packet


def decode_alert(data, cluster_name, key):
    """Parse and authenticate one datagram. Returns (Alert, incarnation token).

    @raise MalformedAlert: not an alert packet or bad fields.
    @raise ForeignCluster: another cluster's packet.
    @raise Unauthenticated: the tag does not verify with our key.
    """
    if len(data) > MAX_PACKET:
        raise MalformedAlert(f"packet of {len(data)} bytes exceeds {MAX_PACKET}")
    if len(data) < _HEADER.size + _BODY_LEN.size + TAG_SIZE:
        raise MalformedAlert("packet too short")
    magic, version, name_len = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise MalformedAlert("bad magic")
    if version != VERSION:
        raise MalformedAlert(f"unsupported version {version}")
    offset = _HEADER.size
    name = data[offset : offset + name_len]
    offset += name_len
    if len(data) < offset + _BODY_LEN.size + TAG_SIZE:
        raise MalformedAlert("packet truncated")
    (body_len,) = _BODY_LEN.unpack_from(data, offset)
    offset += _BODY_LEN.size
    if len(data) != offset + body_len + TAG_SIZE:
        raise MalformedAlert("body length does not match the packet size")
    if name != cluster_name.encode("utf-8"):
        raise ForeignCluster(name.decode("utf-8", "replace"))
    signed, tag = data[: offset + body_len], data[offset + body_len :]
    if not any(hmac.compare_digest(_tag(k, signed), tag) for k in accepted_keys(key)):
        raise Unauthenticated("alert packet tag does not verify")
    fields = load_fields(data[offset : offset + body_len])
    if isinstance(fields, dict):
        # Details stay in the log of the server that raised the alert
        # (alert_to_fields never sends them); a peer's are not ours to store.
        fields.pop("details", None)
    return alert_from_fields(fields)


def load_fields(raw):
    """The JSON value in C{raw} (bytes): an alert body or an alert.log line.

    @raise MalformedAlert: for every way the bytes can fail to decode.
    """
    try:
        return json.loads(raw.decode("utf-8"))
    # ValueError covers bad JSON and numbers past int()'s digit limit;
    # RecursionError is what json raises for deeply nested arrays/objects.
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MalformedAlert(f"body is not UTF-8 JSON: {str(e)[:120]}") from None


class AlertSyncProtocol(DatagramProtocol):
    """Receives alert datagrams, hands authenticated alerts to on_alert.

    on_alert(alert, incarnation, address) is called for each good packet.
    Bad packets are dropped and counted in .counters (never raised into the
    reactor).
    """

    log = Logger()

    def __init__(self, cluster_name, key, on_alert):
        self._cluster_name = cluster_name
        self._key = key
        self._on_alert = on_alert
        self.counters = {
            "received": 0,
            "malformed": 0,
            "unauthenticated": 0,
            "foreign": 0,
            "handler_errors": 0,
        }

    def _drop(self, counter, address, reason):
        self.counters[counter] += 1
        if worth_logging(self.counters[counter]):
            self.log.warn(
                "dropped alert packet from {address}: {reason} ({count} {counter} so far)",
                address=address,
                reason=reason,
                count=self.counters[counter],
                counter=counter,
            )

    def datagramReceived(self, data, address):
        try:
            alert, incarnation = decode_alert(data, self._cluster_name, self._key)
        except ForeignCluster as e:
            self._drop("foreign", address, e)
            return
        except Unauthenticated as e:
            self._drop("unauthenticated", address, e)
            return
        except MalformedAlert as e:
            self._drop("malformed", address, e)
            return
        self.counters["received"] += 1
        try:
            self._on_alert(alert, incarnation, address)
        except Exception:
            self.counters["handler_errors"] += 1
            self.log.failure("storing the alert from {address} failed", address=address)
