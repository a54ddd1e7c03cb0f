"""The witness server's state and its twisted.web resource.

L{WitnessState} keeps, per cluster name, the last accepted report of each
server and when (on an injected monotonic clock) it arrived; it decides
nothing about the clusters, it only remembers and answers. L{WitnessResource}
maps HTTP requests to it (L{cpro.protocols.witness} describes the protocol),
and L{make_site} builds the Site with a request class that bounds the body.

Everything a client sends is hostile until proven otherwise: names are
checked, bodies are bounded and parsed defensively, and each refusal is
counted by kind, answered with a 4xx code and logged as one line, rate-limited
(L{RefusalLog}); never an exception into the reactor or a traceback per
request. L{BoundedChannel} does the same for what twisted.web refuses
itself. State is bounded too: servers not heard for C{forget_after} seconds
are forgotten, and the number of clusters and of servers per cluster is
capped.
"""

import io
import json

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from cpro.protocols import witness as wp
from cpro.protocols.ratelog import worth_logging

log = Logger()

COUNTERS = (
    "requests",
    "reports",  # reports accepted
    "views",  # views served (answers to reports and GETs)
    "malformed",  # bad JSON, fields or names (400)
    "oversize",  # body larger than allowed (413)
    "unauthenticated",  # missing or wrong signature (403), not hex digits (400)
    "unknown_cluster",  # a cluster without a key, when keys are configured (404)
    "not_found",  # a path that is not part of the protocol (404)
    "bad_method",  # 405
    "bad_http",  # not HTTP as twisted.web reads it: request line, headers, framing (400)
    "replayed",  # sequence number not above the last one of that incarnation (409)
    "stale",  # an incarnation older than the one known (409)
    "full",  # too many clusters or servers (503)
    "forgotten",  # servers dropped after forget_after seconds of silence
    "errors",  # internal errors (500): a bug
)

ROOT_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>cpro witness</title></head>"
    b"<body><h1>cpro witness server</h1><p>It is running.</p></body></html>\n"
)

MAX_CLUSTERS = 1024
# Digits of a Content-Length: any length past the body bound is refused
# anyway, and twisted.web's int() raises past 4300 digits.
MAX_LENGTH_DIGITS = 20
LOG_INTERVAL = 60.0  # s: each kind of refusal is logged at least this often while it goes on


class Refused(Exception):
    """A request the witness does not accept: HTTP C{code}, counted as C{counter}."""

    def __init__(self, code, counter, message, **details):
        super().__init__(message)
        self.code = code
        self.counter = counter
        self.details = details  # extra fields of the JSON answer


class _Entry:
    __slots__ = ("incarnation", "seq", "heard", "time")

    def __init__(self, incarnation, seq, heard, time):
        self.incarnation = incarnation
        self.seq = seq
        self.heard = heard  # witness clock
        self.time = time  # the reporter's wall clock, informative


class WitnessState:
    """What the witness remembers of every cluster's servers.

    @param clock: no-argument callable returning seconds on a monotonic
        clock (C{time.monotonic} in the daemon): ages must not jump when
        the wall clock is set.
    @param keys: {cluster name: key bytes}; None to trust cluster names.
        With keys, only those clusters are served and every request must be
        signed with its cluster's key.
    @param forget_after: seconds of silence after which a server is forgotten.
    @param stale_after: seconds of silence after which a server's older
        incarnation is accepted again (its wall clock was set back across a
        restart); before that an older incarnation is refused as stale.
    """

    def __init__(self, clock, keys=None, forget_after=3600.0, stale_after=90.0,
                 max_clusters=MAX_CLUSTERS, max_servers=wp.MAX_SERVERS):
        if keys is not None:
            for name, key in keys.items():
                if not wp.valid_name(name) or not isinstance(key, bytes) or not key:
                    raise ValueError(f"bad key entry for cluster {name!r}")
        self._clock = clock
        self._keys = dict(keys) if keys is not None else None
        self.forget_after = float(forget_after)
        self.stale_after = float(stale_after)
        self.max_clusters = max_clusters
        self.max_servers = max_servers
        self._clusters = {}  # cluster -> {server -> _Entry}
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._started = clock()

    @property
    def authenticated(self):
        return self._keys is not None

    def key(self, cluster):
        """The key of C{cluster}, or None (no keys configured).

        @raise Refused: keys are configured and C{cluster} has none.
        """
        if self._keys is None:
            return None
        key = self._keys.get(cluster)
        if key is None:
            raise Refused(404, "unknown_cluster", f"unknown cluster {cluster}")
        return key

    def now(self):
        """The witness's clock (seconds, monotonic)."""
        return self._clock()

    def count(self, counter):
        self._counters[counter] += 1
        return self._counters[counter]

    def counters(self):
        return dict(self._counters)

    def report(self, report):
        """Record C{report}; the L{wp.View} of its cluster answering it.

        @raise Refused: replayed, stale, or no room for a new cluster or server.
        """
        now = self._clock()
        servers = self._servers_of(report.cluster, now, create=True)
        entry = servers.get(report.server)
        if entry is not None:
            if report.incarnation == entry.incarnation:
                if report.seq <= entry.seq:
                    # The last sequence number goes back with the refusal:
                    # a reporter that restarted its path (same incarnation)
                    # continues above it.
                    raise Refused(409, "replayed", f"sequence number {report.seq} not above "
                                                   f"{entry.seq}", seq=entry.seq)
            elif report.incarnation < entry.incarnation and now - entry.heard <= self.stale_after:
                raise Refused(409, "stale", f"incarnation {report.incarnation} older than "
                                            f"{entry.incarnation}")
        elif len(servers) >= self.max_servers:
            raise Refused(503, "full", f"cluster {report.cluster} has {len(servers)} servers")
        if entry is None or report.incarnation != entry.incarnation:
            log.info("witness: {cluster}/{server} reports incarnation {incarnation}",
                     cluster=report.cluster, server=report.server, incarnation=report.incarnation)
        servers[report.server] = _Entry(report.incarnation, report.seq, now, report.time)
        self.count("reports")
        return self._view(report.cluster, servers, now, report.seq)

    def view(self, cluster):
        """The L{wp.View} of C{cluster} (empty if nothing was heard)."""
        now = self._clock()
        return self._view(cluster, self._servers_of(cluster, now, create=False), now, None)

    def _view(self, cluster, servers, now, seq):
        self.count("views")
        return wp.View(
            cluster=cluster,
            servers={name: wp.Sighting(name, e.incarnation, now - e.heard, e.seq)
                     for name, e in (servers or {}).items()},
            seq=seq,
        )

    def _servers_of(self, cluster, now, create):
        servers = self._clusters.get(cluster)
        if servers is not None:
            self._forget_silent(cluster, servers, now)
            servers = self._clusters.get(cluster)
        if servers is None and create:
            if len(self._clusters) >= self.max_clusters:
                self.sweep()
            if len(self._clusters) >= self.max_clusters:
                raise Refused(503, "full", f"{len(self._clusters)} clusters already")
            servers = self._clusters[cluster] = {}
        return servers

    def _forget_silent(self, cluster, servers, now):
        for name in [n for n, e in servers.items() if now - e.heard > self.forget_after]:
            del servers[name]
            self.count("forgotten")
            log.info("witness: forgot {cluster}/{server}, silent for more than {limit:g} s",
                     cluster=cluster, server=name, limit=self.forget_after)
        if not servers:
            del self._clusters[cluster]

    def sweep(self):
        """Forget every server silent for more than C{forget_after} seconds."""
        now = self._clock()
        for cluster, servers in list(self._clusters.items()):
            self._forget_silent(cluster, servers, now)

    def status(self):
        """A JSON-able summary: counters and sizes, no cluster or server names."""
        self.sweep()
        return {
            "protocol": wp.PROTOCOL_VERSION,
            "uptime": round(self._clock() - self._started, 3),
            "authenticated": self.authenticated,
            "clusters": len(self._clusters),
            "servers": sum(len(s) for s in self._clusters.values()),
            "counters": self.counters(),
        }


class BoundedRequest(server.Request):
    """A Request that keeps at most C{max_body} bytes of a body.

    A larger body (by its Content-Length or as it streams in, chunked) is
    read and thrown away; C{oversize} tells the resource to answer 413.
    """

    max_body = wp.MAX_REPORT

    def gotLength(self, length):
        self.oversize = length is not None and length > self.max_body
        self._body_bytes = 0
        self.content = io.BytesIO()

    def handleContentChunk(self, data):
        self._body_bytes += len(data)
        if self._body_bytes > self.max_body:
            if not self.oversize:
                self.oversize = True
                self.content = io.BytesIO()
            return
        if not self.oversize:
            self.content.write(data)


class LogLimiter:
    """Decides which refusals of one kind are worth a log line.

    Anyone who reaches the witness can make it refuse: a flood of refusals
    must not flood the log, and a refusal that goes on must not vanish from
    it either. Of each kind, the 1st, 10th, 100th... are logged, and at
    least one every C{interval} seconds while they go on.
    """

    def __init__(self, clock, interval=LOG_INTERVAL):
        self._clock = clock
        self.interval = interval
        self._last = {}  # kind -> when its last line was logged

    def should_log(self, kind, count):
        now = self._clock()
        last = self._last.get(kind)
        if worth_logging(count) or last is None or now - last >= self.interval:
            self._last[kind] = now
            return True
        return False


class RefusalLog:
    """Counts every refusal in the state's counters and logs the ones the
    L{LogLimiter} lets through, each as one line."""

    def __init__(self, state, interval=LOG_INTERVAL):
        self._state = state
        self._limiter = LogLimiter(state.now, interval)

    def refused(self, refusal, peer, method=b"", path=b"", failure=None):
        """Count C{refusal} (a L{Refused}); log it if it is its kind's turn.

        @param failure: the L{Failure} of an internal error, logged with it.
        """
        count = self._state.count(refusal.counter)
        if not self._limiter.should_log(refusal.counter, count):
            return
        # One line, whatever the client sent: method, path and reason are
        # cut and their unprintable characters escaped.
        request = (wp.printable(method.decode("latin-1"), 20) + " "
                   + wp.printable(path.decode("latin-1"), 200)) if method else "a request"
        fields = dict(request=request, peer=getattr(peer, "host", peer), code=refusal.code,
                      reason=wp.printable(str(refusal), 200), counter=refusal.counter, count=count)
        text = "witness: refused {request} from {peer}: {code} {reason} ({counter}: {count} so far)"
        if failure is not None:
            log.failure(text, failure, **fields)
        else:
            log.warn(text, **fields)


class WitnessResource(resource.Resource):
    """The whole URL space of the witness (one leaf: paths are parsed by the protocol)."""

    isLeaf = True
    allowed = (b"GET", b"HEAD", b"POST")

    def __init__(self, state, refusals=None):
        super().__init__()
        self._state = state
        self.refusals = refusals if refusals is not None else RefusalLog(state)

    def render(self, request):
        self._state.count("requests")
        try:
            return self._render(request)
        except Refused as e:
            return self._refuse(request, e)
        except Exception:
            # A bug, not the client's fault; still, a client can repeat the
            # request that triggers it: the traceback is rate-limited too.
            return self._refuse(request, Refused(500, "errors", "internal error"), Failure())

    def _render(self, request):
        if getattr(request, "oversize", False):
            raise Refused(413, "oversize", f"body larger than {wp.MAX_REPORT} bytes")
        method = request.method
        if method not in self.allowed:
            request.setHeader(b"Allow", b", ".join(self.allowed))
            raise Refused(405, "bad_method", "method not allowed")
        try:
            route = wp.parse_path(request.path)
        except wp.Malformed as e:
            raise Refused(400, "malformed", str(e)) from None
        if route is None:
            raise Refused(404, "not_found", "no such resource")
        if route.kind == "report":
            if method != b"POST":
                request.setHeader(b"Allow", b"POST")
                raise Refused(405, "bad_method", "reports are POSTed")
        elif method == b"POST":
            request.setHeader(b"Allow", b"GET, HEAD")
            raise Refused(405, "bad_method", "only reports are POSTed")

        if route.kind == "root":
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            return ROOT_PAGE
        if route.kind == "status":
            return self._json(request, json.dumps(self._state.status(), sort_keys=True).encode())

        key = self._state.key(route.cluster)
        body = request.content.getvalue() if request.content is not None else b""
        if key is not None:
            try:
                wp.verify(key, wp.request_message(method, request.path, body),
                          request.getHeader(wp.SIGNATURE_HEADER_BYTES))
            except wp.MalformedSignature as e:
                raise Refused(400, "unauthenticated", str(e)) from None
            except wp.BadSignature as e:
                raise Refused(403, "unauthenticated", str(e)) from None
        if route.kind == "report":
            try:
                report = wp.decode_report(route.cluster, route.server, body)
            except wp.Malformed as e:
                raise Refused(400, "malformed", str(e)) from None
            view = self._state.report(report)
        else:
            view = self._state.view(route.cluster)
        answer = wp.encode_view(view)
        if key is not None:
            request.setHeader(wp.SIGNATURE_HEADER,
                              wp.sign(key, wp.answer_message(request.path, answer)))
        return self._json(request, answer)

    def _refuse(self, request, refusal, failure=None):
        self.refusals.refused(refusal, request.getClientAddress(), request.method, request.path,
                              failure)
        request.setResponseCode(refusal.code)
        answer = dict(refusal.details, error=str(refusal))
        return self._json(request, json.dumps(answer, sort_keys=True).encode())

    @staticmethod
    def _json(request, body):
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return body


class BoundedChannel(http.HTTPChannel):
    """twisted.web's HTTP channel, with its own refusals counted and logged.

    twisted.web answers what it cannot parse (request line, headers, body
    framing) with a bare 400 before any resource sees the request; those are
    counted as C{bad_http} and logged like the witness's own refusals.
    """

    def headerReceived(self, line):
        name, sep, value = line.partition(b":")
        too_long = len(value.strip(b" \t")) > MAX_LENGTH_DIGITS
        if sep and too_long and name.lower() == b"content-length":
            # twisted.web would int() it: ValueError past 4300 digits, raised
            # out of dataReceived into the reactor.
            self._respondToBadRequestAndDisconnect()
            return False
        return super().headerReceived(line)

    def _respondToBadRequestAndDisconnect(self):
        # twisted.web's one exit for a request it cannot parse (a private
        # name: test_witness_server checks that it is still called).
        refusals = getattr(self.site, "refusals", None)
        if refusals is not None:
            refusals.refused(Refused(400, "bad_http", "not a valid HTTP request"),
                             self.transport.getPeer())
        super()._respondToBadRequestAndDisconnect()


class _Site(server.Site):
    protocol = BoundedChannel  # HTTP/1.x only (no HTTP/2 switch over TLS)

    def acceptableProtocols(self):
        # ALPN must not offer h2 (offered when the h2 package is installed):
        # the channel above speaks HTTP/1.1 only.
        return [b"http/1.1"]

    def log(self, request):
        # No access log: every server reports every heartbeat interval, which
        # would bury the refusals and state changes worth reading.
        pass


def make_site(state, reactor, timeout=30):
    """The L{server.Site} serving C{state}; idle connections close after C{timeout} s."""
    root = WitnessResource(state)
    site = _Site(root, requestFactory=BoundedRequest,
                 parsePOSTFormSubmission=False, timeout=timeout, reactor=reactor)
    site.refusals = root.refusals
    site.displayTracebacks = False
    site.noisy = False
    return site

