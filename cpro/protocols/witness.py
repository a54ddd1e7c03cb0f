"""The witness protocol: HTTP(S) requests and answers <-> objects, no I/O.

A witness server (L{cpro.witness.server}) is a third party that the servers
of one or more clusters report to; each report is answered with what the
witness knows of every server of that cluster. A server that can no longer
hear a peer on any other path still learns from the witness whether the
peer is alive (the witness heartbeat), and a server resolving a network
partition asks the witness whether the lost peer still reports (see
docs/witness.md). The original product's protocol is not published: this one
is cpro's own.

Requests (URL path segments are names checked with L{valid_name})::

    GET  /                              200 text/html (reachability, httpnp)
    HEAD /                              200
    POST /clusters/<cluster>/servers/<server>   a report, answered with the view
    GET  /clusters/<cluster>            the view of the cluster
    GET  /status                        the witness's counters (JSON)

A report body is compact JSON, at most L{MAX_REPORT} bytes::

    {"incarnation": "<started_ns>/<nonce>", "seq": N, "time": <wall clock s>}

C{seq} increases with each report of one incarnation (the witness refuses a
replay); C{time} is the reporter's wall clock, for the operator only: the
witness never compares clocks.

A view (the answer to a report or to GET /clusters/<cluster>)::

    {"protocol": 1, "cluster": "<cluster>", "seq": N or null,
     "servers": {"<server>": {"incarnation": "...", "age": 1.25, "seq": N}, ...}}

C{age} is the number of seconds since the witness last accepted a report of
that server, measured on the witness's own monotonic clock, so that the
servers' clocks do not matter. C{seq} at the top echoes the report answered
(null for a GET), so that a client can tell its answer from a replayed one.

A refusal is a 4xx/5xx answer with C{{"error": "<why>"}}; a report refused
as replayed (409) also carries C{"seq"}, the last sequence number the witness
accepted from that incarnation, so that a reporter whose counter went back
continues above it.

Authentication (when the witness is given the cluster keys): the request
carries C{X-Cpro-Signature: <hex HMAC-SHA256>} (64 hex digits, either case;
anything else is a bad signature) over L{request_message}, and
the witness signs its answer over L{answer_message} with the same key. A
witness without keys trusts the cluster name ("trust on name") and sends no
signature; clients accept an unsigned answer but refuse a wrongly signed one.
"""

import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass, field

from cpro.protocols import heartbeat
from cpro.protocols.heartbeat import Incarnation

PROTOCOL_VERSION = 1
MAX_REPORT = 1024  # bytes of a report body; a report is ~100 bytes
MAX_VIEW = 65536  # bytes of an answer; 64 servers of ~200 bytes fit many times
MAX_SERVERS = 64  # servers per cluster in a view (CLUSTERPRO: 32 at most)
SIGNATURE_HEADER = "X-Cpro-Signature"
# Look headers up by bytes: the text lookup decodes values as UTF-8 and
# raises on anything else, before the value can be refused as a signature.
SIGNATURE_HEADER_BYTES = SIGNATURE_HEADER.encode("ascii")

# Same rule as the configuration's names (cpro.config.validate): safe as a URL
# path segment (no '/', '%', and never '.' or '..').
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,62}\Z")
_MAX_INT = 2**64 - 1
_MAX_SIGNATURE = 128  # hex digits and more; a SHA-256 HMAC has 64
_HEX = re.compile(rb"[0-9A-Fa-f]+\Z")
_MAX_AGE = 10.0 * 365 * 86400  # an age beyond ten years is garbage, not a long silence
_REPORT_KEYS = frozenset(("incarnation", "seq", "time"))
_VIEW_KEYS = frozenset(("protocol", "cluster", "seq", "servers"))
_SIGHTING_KEYS = frozenset(("incarnation", "age", "seq"))


class WitnessProtocolError(ValueError):
    """Bytes or a path that are not an acceptable witness message."""


class Malformed(WitnessProtocolError):
    """Not a witness message: bad JSON, fields, names or sizes."""


class BadSignature(WitnessProtocolError):
    """The signature is missing or does not match the cluster key."""


class MalformedSignature(BadSignature):
    """The signature header is not hex digits (non-ASCII, too long...)."""


def valid_name(name):
    """True if C{name} is an acceptable cluster or server name."""
    return isinstance(name, str) and _NAME.match(name) is not None


def parse_incarnation(text):
    """The L{Incarnation} written as C{"<started_ns>/<nonce>"} (its C{str}).

    @raise Malformed: for anything else.
    """
    try:
        return heartbeat.parse_incarnation(text)
    except ValueError as e:
        raise Malformed(str(e)) from None


def format_incarnation(incarnation):
    text = f"{incarnation.started_ns}/{incarnation.nonce}"
    parse_incarnation(text)  # our own output must parse: catches an odd nonce at the sender
    return text


# -- paths ---------------------------------------------------------------------


def cluster_path(cluster):
    _check_name(cluster, "cluster")
    return f"/clusters/{cluster}"


def report_path(cluster, server):
    _check_name(server, "server")
    return f"{cluster_path(cluster)}/servers/{server}"


@dataclass(frozen=True)
class Route:
    """What a request path asks for: kind is 'root', 'status', 'cluster' or 'report'."""

    kind: str
    cluster: str = None
    server: str = None


def parse_path(path):
    """The L{Route} of a request path (bytes or text, query string ignored).

    @raise Malformed: a path of the protocol's shape with a bad name.
    @return: None for a path that is not part of the protocol at all.
    """
    if isinstance(path, bytes):
        try:
            path = path.decode("ascii")
        except UnicodeDecodeError:
            raise Malformed("non-ASCII request path") from None
    path = path.split("?", 1)[0]
    if path == "/":
        return Route("root")
    if path == "/status":
        return Route("status")
    parts = path.split("/")
    if len(parts) in (3, 5) and parts[0] == "" and parts[1] == "clusters":
        if not valid_name(parts[2]):
            raise Malformed("bad cluster name in the path")
        if len(parts) == 3:
            return Route("cluster", parts[2])
        if parts[3] == "servers":
            if not valid_name(parts[4]):
                raise Malformed("bad server name in the path")
            return Route("report", parts[2], parts[4])
    return None


# -- reports -------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    cluster: str
    server: str
    incarnation: Incarnation
    seq: int
    time: float = 0.0  # the reporter's wall clock (informative only)


def encode_report(report):
    """(path, body) of the POST carrying C{report}."""
    body = _dumps(
        {
            "incarnation": format_incarnation(report.incarnation),
            "seq": _count(report.seq, "sequence number"),
            "time": float(report.time),
        }
    )
    if len(body) > MAX_REPORT:
        raise ValueError(f"report of {len(body)} bytes exceeds {MAX_REPORT}")
    return report_path(report.cluster, report.server), body


def decode_report(cluster, server, body):
    """The L{Report} of C{server} of C{cluster} in the request C{body}.

    @raise Malformed: for any other bytes.
    """
    if not (valid_name(cluster) and valid_name(server)):
        raise Malformed("bad cluster or server name")
    obj = _loads(body, MAX_REPORT)
    if not isinstance(obj, dict) or set(obj) != _REPORT_KEYS:
        raise Malformed("report fields")
    return Report(
        cluster=cluster,
        server=server,
        incarnation=parse_incarnation(obj["incarnation"]),
        seq=_count(obj["seq"], "sequence number"),
        time=_number(obj["time"], "time", low=-_MAX_AGE * 100, high=_MAX_AGE * 100),
    )


# -- views ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    """The witness last heard C{server} (running C{incarnation}) C{age} seconds ago."""

    server: str
    incarnation: Incarnation
    age: float
    seq: int


@dataclass(frozen=True)
class View:
    """What the witness knows of one cluster's servers.

    @ivar seq: the sequence number of the report this view answers (None for a GET).
    @ivar received: when the client received it, on the client's clock (set by
        the client; not on the wire).
    """

    cluster: str
    servers: dict = field(default_factory=dict)  # server name -> Sighting
    seq: int = None
    received: float = None

    def sighting(self, server):
        return self.servers.get(server)


def encode_view(view):
    """The answer body for C{view}."""
    return _dumps(
        {
            "protocol": PROTOCOL_VERSION,
            "cluster": view.cluster,
            "seq": view.seq,
            "servers": {
                s.server: {
                    "incarnation": format_incarnation(s.incarnation),
                    # Millisecond resolution: more is noise over HTTP.
                    "age": round(max(0.0, s.age), 3),
                    "seq": s.seq,
                }
                for s in sorted(view.servers.values(), key=lambda s: s.server)
            },
        }
    )


def decode_view(body, cluster):
    """The L{View} of C{cluster} in an answer C{body}.

    @raise Malformed: for any other bytes, or a view of another cluster.
    """
    obj = _loads(body, MAX_VIEW)
    if not isinstance(obj, dict) or set(obj) != _VIEW_KEYS:
        raise Malformed("view fields")
    # type() first: true and 1.0 compare equal to 1.
    if type(obj["protocol"]) is not int or obj["protocol"] != PROTOCOL_VERSION:
        raise Malformed(f"unsupported protocol {printable(repr(obj['protocol']), 20)}")
    if obj["cluster"] != cluster:
        raise Malformed("a view of another cluster")
    seq = obj["seq"]
    if seq is not None:
        seq = _count(seq, "sequence number")
    servers = obj["servers"]
    if not isinstance(servers, dict) or len(servers) > MAX_SERVERS:
        raise Malformed("servers")
    sightings = {}
    for name, s in servers.items():
        if not valid_name(name):
            raise Malformed("bad server name in the view")
        if not isinstance(s, dict) or set(s) != _SIGHTING_KEYS:
            raise Malformed(f"fields of server {name}")
        sightings[name] = Sighting(
            server=name,
            incarnation=parse_incarnation(s["incarnation"]),
            age=_number(s["age"], "age", low=0.0, high=_MAX_AGE),
            seq=_count(s["seq"], "sequence number"),
        )
    return View(cluster=cluster, servers=sightings, seq=seq)


def decode_refusal(body):
    """(message, last accepted seq or None) of a refusal body; never raises."""
    try:
        obj = _loads(body, MAX_VIEW)
    except Malformed:
        return "(no explanation)", None
    if not isinstance(obj, dict):
        return "(no explanation)", None
    message = obj.get("error")
    # The message ends up in the client's log: one printable line.
    message = printable(message, 200) if isinstance(message, str) else "(no explanation)"
    try:
        seq = _count(obj["seq"], "seq") if "seq" in obj else None
    except Malformed:
        seq = None
    return message, seq


# -- signatures ----------------------------------------------------------------


def request_message(method, path, body):
    """The bytes a request signature covers: method, path and body."""
    return b"cpro-witness-1 request\n" + _b(method) + b"\n" + _b(path) + b"\n" + body


def answer_message(path, body):
    """The bytes an answer signature covers: the request path and the answer body."""
    return b"cpro-witness-1 answer\n" + _b(path) + b"\n" + body


def sign(key, message):
    """The hex HMAC-SHA256 of C{message} (text, for an HTTP header)."""
    if not isinstance(key, bytes) or not key:
        raise ValueError("the cluster key must be non-empty bytes")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(key, message, signature):
    """Check that C{signature} signs C{message} with C{key}.

    @param signature: the header's value as received: text, bytes or None
        (any other value is refused too). Hex digits in either case,
        surrounding white space ignored.
    @raise BadSignature: for any signature that is not the right one,
        however it is malformed (and for nothing else).
    """
    if isinstance(signature, str):
        # Text from a header may hold anything (non-ASCII, lone surrogates).
        signature = signature.encode("utf-8", "surrogatepass")
    if not isinstance(signature, bytes) or not signature.strip():
        raise BadSignature("no signature")
    signature = signature.strip()
    # Bytes only from here on: compare_digest refuses non-ASCII text with a
    # TypeError; bytes it compares whatever they hold, in constant time.
    if len(signature) > _MAX_SIGNATURE or not _HEX.match(signature):
        raise MalformedSignature("malformed signature")
    if not hmac.compare_digest(sign(key, message).encode("ascii"), signature.lower()):
        raise BadSignature("signature mismatch")


# -- helpers -------------------------------------------------------------------


def _b(text):
    return text if isinstance(text, bytes) else text.encode("ascii")


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, allow_nan=False).encode("ascii")


def _loads(body, limit):
    if not isinstance(body, bytes):
        raise Malformed("not a byte string")
    if len(body) > limit:
        raise Malformed(f"{len(body)} bytes, more than {limit}")
    try:
        # NaN and Infinity are not JSON; refuse them rather than compare with them.
        return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        raise Malformed(f"not JSON: {e}") from None


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number")


def _check_name(name, what):
    if not valid_name(name):
        raise ValueError(f"invalid {what} name {name!r}")


def _count(value, what):
    # bool is an int subclass; true/false in JSON is not a number here.
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise Malformed(f"bad {what}")
    return value


def _number(value, what, low, high):
    if type(value) not in (int, float):
        raise Malformed(f"bad {what}")
    # The range first: it compares an int of any size exactly, where
    # math.isfinite() would convert it to a float (OverflowError past 1e308).
    # NaN fails every comparison, infinities the range.
    if not low <= value <= high or not math.isfinite(value):
        raise Malformed(f"bad {what}")
    return float(value)


def printable(text, limit):
    """At most C{limit} characters of C{text}, each unprintable one (line
    breaks, terminal escapes, bidi controls) escaped: safe in a one-line log
    entry."""
    text = text[:limit]
    if text.isprintable():
        return text
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace")
                      .decode("ascii") for c in text)
    return escaped[:limit]
