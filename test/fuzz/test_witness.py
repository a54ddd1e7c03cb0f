"""Fuzzing the witness: its protocol's parsers (cpro.protocols.witness), the
witness server's request handling (cpro.witness.server, raw HTTP through the
real Site over a StringTransport) and the witness heartbeat client's reading
of an answer (cpro.services.heartbeat.witnesshb).

The contract everywhere: hostile input raises the parser's own error type
(L{wp.Malformed}, L{wp.BadSignature}) or is refused with a 4xx answer and
counted; nothing else is raised or logged as a failure, a refusal changes no
state, and nothing mutated is accepted as signed by the cluster key.
"""

import copy
import json
import re

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from cpro.protocols import witness as wp
from cpro.protocols.heartbeat import Incarnation
from cpro.system.httpclient import HttpAnswer
from cpro.witness import server as ws
from test.fuzz.harness import Finding, FuzzTestMixin, Target, dumps, logged_failures, mutate_json

KEY = b"fuzz-witness-key"
CLUSTER = "fuzzcluster"
INC1 = Incarnation(1_700_000_000_123_456_789, "0123abcd")
INC2 = Incarnation(1_700_000_100_000_000_000, "fedc")


def view_of(seq, servers=(("srv1", INC1, 0.0, 5), ("srv2", INC2, 1.25, 9)), cluster=CLUSTER):
    return wp.View(cluster, {name: wp.Sighting(name, inc, age, s) for name, inc, age, s in servers},
                   seq=seq)


# -- the protocol's parsers ----------------------------------------------------------


class WitnessProtocolTarget(Target):
    """Every parser of cpro.protocols.witness on the same bytes: a report body,
    a view, a refusal, a request path and a signature."""

    name = "witness-protocol"
    max_size = 2048
    _message = wp.request_message(b"POST", wp.report_path(CLUSTER, "srv1"), b"{}")

    def seeds(self, rng):
        good = wp.sign(KEY, self._message).encode()
        self._jsons = [
            wp.encode_report(wp.Report(CLUSTER, "srv1", INC1, 42, 1_700_000_000.25))[1],
            wp.encode_view(view_of(7)),
            wp.encode_view(wp.View(CLUSTER)),
            json.dumps({"error": "replayed", "seq": 5}).encode(),
        ]
        return self._jsons + [b"/", b"/status", b"/clusters/fuzzcluster",
                              b"/clusters/fuzzcluster/servers/srv1?x=1", good, good.upper() + b" "]

    def structured(self, rng):
        return dumps(mutate_json(json.loads(rng.choice(self._jsons)), rng))

    def check(self, data):
        self._check_report(data)
        self._check_view(data)
        self._check_refusal(data)
        self._check_path(data)
        self._check_signature(data)

    @staticmethod
    def _check_report(data):
        try:
            report = wp.decode_report(CLUSTER, "srv1", data)
        except wp.Malformed:
            return
        path, body = wp.encode_report(report)
        if wp.decode_report(CLUSTER, "srv1", body) != report:
            raise Finding("decode_report(encode_report(r)) != r")

    @staticmethod
    def _check_view(data):
        try:
            view = wp.decode_view(data, CLUSTER)
        except wp.Malformed:
            return
        if len(view.servers) > wp.MAX_SERVERS:
            raise Finding("a view with too many servers accepted")
        again = wp.decode_view(wp.encode_view(view), CLUSTER)
        if set(again.servers) != set(view.servers) or again.seq != view.seq:
            raise Finding("decode_view(encode_view(v)) lost servers or seq")

    @staticmethod
    def _check_refusal(data):
        message, seq = wp.decode_refusal(data)
        if not isinstance(message, str) or len(message) > 200 or not message.isprintable():
            raise Finding(f"refusal message not one printable line: {message!r:.80}")
        if seq is not None and not (type(seq) is int and 0 <= seq < 2**64):
            raise Finding(f"refusal seq {seq!r:.40}")

    @staticmethod
    def _check_path(data):
        try:
            route = wp.parse_path(data)
        except wp.Malformed:
            return
        if route is not None and route.kind in ("cluster", "report"):
            if not wp.valid_name(route.cluster) or (route.kind == "report"
                                                    and not wp.valid_name(route.server)):
                raise Finding(f"route with a bad name: {route}")

    def _check_signature(self, data):
        good = wp.sign(KEY, self._message).encode()
        for signature in (data, data.decode("utf-8", "surrogateescape")):
            try:
                wp.verify(KEY, self._message, signature)
            except wp.BadSignature:
                continue
            if data.strip().lower() != good:
                raise Finding("a signature that is not the right one was accepted")


# -- the witness server ----------------------------------------------------------------

_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[^\r\n]*\r\n")
_SIGNATURE = re.compile(rb"(?im)^x-cpro-signature:[^\r\n]*\r\n")


def http_request(method, path, body=b"", key=KEY, extra=b""):
    """Raw bytes of one signed request."""
    head = b"%s %s HTTP/1.1\r\nHost: witness\r\nConnection: close\r\n" % (method, path)
    head += extra
    if body or method == b"POST":
        head += b"Content-Length: %d\r\n" % len(body)
    if key is not None:
        signature = wp.sign(key, wp.request_message(method, path, body))
        head += b"X-Cpro-Signature: %s\r\n" % signature.encode()
    return head + b"\r\n" + body


class _RecordingResource(ws.WitnessResource):
    """The witness's resource, recording what each request was answered."""

    def __init__(self, state, answers):
        super().__init__(state)
        self._answers = answers

    def render(self, request):
        result = super().render(request)  # anything it raises is a finding
        body = request.content.getvalue() if request.content is not None else b""
        self._answers.append((request.code, request.method, request.path, body))
        return result


class WitnessServerTarget(Target):
    """Raw HTTP requests to the witness's Site, with keys and without."""

    name = "witness-server"
    max_size = 3000
    time_bound = 0.5

    def __init__(self):
        # (method, path, body) of the seeds and of the last input this target
        # signed (only the last: the input checked next is the one just made).
        self._seed_signed = set()
        self._last_signed = None
        self._bodies = []

    def seeds(self, rng):
        report = wp.Report(CLUSTER, "srv1", INC1, 42, 1_700_000_000.25)
        path, body = wp.encode_report(report)
        path = path.encode()
        self._bodies = [body, wp.encode_report(wp.Report(CLUSTER, "srv2", INC1, 3, 0.0))[1]]
        seeds = [
            http_request(b"POST", path, body),
            http_request(b"POST", b"/clusters/fuzzcluster/servers/srv2", self._bodies[1]),
            http_request(b"GET", b"/clusters/fuzzcluster"),
            http_request(b"HEAD", b"/clusters/fuzzcluster"),
            http_request(b"GET", b"/status", key=None),
            http_request(b"GET", b"/", key=None),
            http_request(b"POST", path, body, extra=b"Transfer-Encoding: chunked\r\n")
            .replace(b"Content-Length: %d\r\n" % len(body), b"")
            .replace(b"\r\n\r\n" + body, b"\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)),
        ]
        self._seed_signed = {self._split(s) for s in seeds}
        return seeds

    def _remember(self, data):
        self._last_signed = self._split(data)

    @staticmethod
    def _split(data):
        """(method, path, body) of a raw request with a Content-Length, or None."""
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            return None
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3:
            return None
        return parts[0], parts[1], body

    def _resign(self, data):
        # Keep the request line and body as mutated; recompute the length and
        # the signature so that the mutation reaches the parsers behind them.
        request = self._split(data)
        if request is None:
            raise ValueError("no request line")
        method, path, body = request
        head = data.partition(b"\r\n\r\n")[0] + b"\r\n"
        head = _SIGNATURE.sub(b"", _CONTENT_LENGTH.sub(b"", head))
        head += b"Content-Length: %d\r\n" % len(body)
        signature = wp.sign(KEY, wp.request_message(method, path, body))
        head += b"X-Cpro-Signature: %s\r\n" % signature.encode()
        out = head + b"\r\n" + body
        self._last_signed = (method, path, body)
        return out

    def fixups(self):
        return [self._resign]

    def structured(self, rng):
        obj = json.loads(rng.choice(self._bodies))
        body = dumps(mutate_json(obj, rng))
        server = rng.choice((b"srv1", b"srv2", b"srv3"))
        out = http_request(b"POST", b"/clusters/fuzzcluster/servers/" + server, body)
        self._remember(out)
        return out

    def check(self, data):
        for keys in ({CLUSTER: KEY}, None):
            self._check_one(data, keys)

    def _check_one(self, data, keys):
        clock = Clock()
        clock.advance(1000)
        state = ws.WitnessState(clock.seconds, keys=keys)
        # One server already known, so that replays and stale incarnations
        # are reachable: srv2 at INC2 seq 9.
        state.report(wp.Report(CLUSTER, "srv2", INC2, 9, 0.0))
        clock.advance(1)
        answers = []
        site = ws.make_site(state, MemoryReactorClock())
        site.resource = _RecordingResource(state, answers)
        before = self._snapshot(state)
        with logged_failures() as failures:
            protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
            protocol.makeConnection(transport)
            protocol.dataReceived(data)
            protocol.connectionLost(None)
        if failures:
            raise Finding(f"logged a failure: {failures[0].get('log_format')} "
                          f"{failures[0].get('log_failure')}")
        counters = state.counters()
        if counters["errors"]:
            raise Finding("a request was answered 500 (internal error)")
        accepted_reports = [a for a in answers if a[0] == 200 and a[1] == b"POST"]
        if not accepted_reports and self._snapshot(state) != before:
            raise Finding("a refused request changed the witness's state")
        if keys is not None:
            for _, method, path, body in accepted_reports:
                if (method, path, body) not in self._seed_signed | {self._last_signed}:
                    raise Finding("a request not signed with the cluster key was accepted")
        for code, *_ in answers:
            if code >= 500 and code != 503:
                raise Finding(f"answered {code}")

    @staticmethod
    def _snapshot(state):
        return {c: {s: (e.incarnation, e.seq, e.heard) for s, e in servers.items()}
                for c, servers in copy.copy(state._clusters).items()}


# -- the client's reading of an answer ---------------------------------------------------


class WitnessClientTarget(Target):
    """An answer to the witness heartbeat path's report.

    Input: C{b"<code> <signature>\\n<body>"} (an empty signature: no header).
    """

    name = "witness-client"
    max_size = 4096
    seq = 1_700_000_000_001  # every report this target's path sends carries it

    def __init__(self):
        self._seed_signed = set()  # bodies of the signed seeds
        self._last_signed = None  # the body this target signed last
        self._bodies = []

    def _build_path(self):
        # Imported here: the service layer pulls in more of cpro than the
        # protocol targets need.
        from test.unit.test_witnesshb import DIGEST, Harness

        class _Case:
            def fail(self, message):
                raise Finding(message)

        harness = Harness(_Case())
        harness.path.start_listening()
        return harness, DIGEST

    def seeds(self, rng):
        self._harness, self._digest = self._build_path()
        self._cluster = self._harness.config.name
        self._key = self._harness.config.key
        self._bodies = [wp.encode_view(view_of(self.seq, cluster=self._cluster)),
                        wp.encode_view(view_of(self.seq, servers=(), cluster=self._cluster)),
                        json.dumps({"error": "replayed", "seq": self.seq + 5}).encode()]
        self._seed_signed = set(self._bodies[:2])
        seeds = [self._frame(200, self._bodies[0], sign=True),
                 self._frame(200, self._bodies[1], sign=True),
                 self._frame(200, self._bodies[0], sign=False),
                 self._frame(409, self._bodies[2], sign=False),
                 self._frame(403, b'{"error":"signature mismatch"}', sign=False)]
        return seeds

    def _frame(self, code, body, sign):
        signature = b""
        if sign:
            path = wp.report_path(self._cluster, "srv1")
            signature = wp.sign(self._key, wp.answer_message(path, body)).encode()
            self._last_signed = body
        return b"%d %s\n" % (code, signature) + body

    def _resign(self, data):
        head, sep, body = data.partition(b"\n")
        if not sep:
            raise ValueError("no head line")
        code = head.split(b" ", 1)[0]
        if not code.isdigit() or len(code) > 3:
            raise ValueError("no code")
        return self._frame(int(code), body, sign=True)

    def fixups(self):
        return [self._resign]

    def structured(self, rng):
        obj = json.loads(rng.choice(self._bodies[:2]))
        return self._frame(200, dumps(mutate_json(obj, rng)), sign=rng.random() < 0.7)

    def check(self, data):
        head, _, body = data.partition(b"\n")
        code, _, signature = head.partition(b" ")
        code = int(code) if code.isdigit() and len(code) <= 3 else 200
        path, harness = self._harness.path, self._harness
        path._seq = self.seq - 1  # the next report carries self.seq
        harness.alive.clear()
        latest = path.latest_view()
        before = path.counters()
        with logged_failures() as failures:
            path.send_beat(self._digest)
            headers = Headers()
            if signature:
                headers.setRawHeaders(wp.SIGNATURE_HEADER_BYTES, [signature])
            harness.client.requests[-1][4].callback(HttpAnswer(code, headers, body))
            harness.client.requests.clear()
        if failures:
            raise Finding(f"logged a failure: {failures[0].get('log_format')} "
                          f"{failures[0].get('log_failure')}")
        if path._in_flight is not None:
            raise Finding("the request stayed in flight")
        after = path.counters()
        changed = {k for k in after if after[k] != before[k]} - {"sent", "alive"}
        if len(changed) != 1 or "errors" in changed:
            raise Finding(f"counters changed: {sorted(changed)}")
        if path.problem is not None and not path.problem.isprintable():
            raise Finding(f"problem not one printable line: {path.problem!r:.80}")
        if not path._seq < 2**64 - 2**32:
            raise Finding(f"a refusal moved the sequence number to {path._seq}")
        if "answered" in changed:
            if signature and body not in self._seed_signed and body != self._last_signed:
                raise Finding("a view with a wrong signature was accepted")
            for _, peer, _, age in harness.alive:
                if peer not in path.peers or not 0 <= age < harness.context.timeout:
                    raise Finding(f"on_alive({peer}, {age}) out of bounds")
        elif path.latest_view() is not latest or harness.alive:
            raise Finding("a refused answer changed the path's view or called on_alive")


class WitnessProtocolFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = WitnessProtocolTarget()


class WitnessServerFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = WitnessServerTarget()


class WitnessClientFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = WitnessClientTarget()
