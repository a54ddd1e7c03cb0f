"""The witness server: state (views, ages, replay, stale incarnations,
forgetting, capacity, keys) and the HTTP resource, driven through the real
Site over a StringTransport (raw HTTP in, status, headers and body out).

Covers: GET/HEAD / answer 200 text/html; a report is answered with every
server of its cluster and its age on the witness's clock; clusters with the
same server names stay apart; malformed JSON, bad names, oversize bodies
(by Content-Length and chunked), wrong methods, unknown paths, replays and
stale incarnations are refused with their code and counted in GET /status;
with keys, unknown clusters are 404 and missing or bad signatures 403, and
views are signed; silent servers are forgotten; capacity limits answer 503.
Hostile requests (issue 10: a non-ASCII or invalid UTF-8 signature, a huge
integer time, a Content-Length past int()'s digit limit, what twisted.web
refuses itself) are refused and counted, never a 500; refusals and internal
errors are logged one line each, rate-limited.
"""

import json
import os
import shutil
import tempfile

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import witness as wp
from cpro.protocols.heartbeat import Incarnation
from cpro.witness.server import ROOT_PAGE, Refused, WitnessState, make_site

INC1 = Incarnation(1000, "aa")
INC2 = Incarnation(2000, "bb")
KEY = b"key-of-c1"


def report(cluster="c1", server="srv1", incarnation=INC1, seq=1):
    return wp.Report(cluster, server, incarnation, seq, 0.0)


class StateTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.state = WitnessState(self.clock.seconds, forget_after=100.0, stale_after=10.0)

    def test_report_answers_view_with_ages_on_witness_clock(self):
        self.state.report(report(server="srv1", seq=1))
        self.clock.advance(2.5)
        view = self.state.report(report(server="srv2", incarnation=INC2, seq=7))
        self.assertEqual(view.seq, 7)
        self.assertEqual(set(view.servers), {"srv1", "srv2"})
        self.assertEqual(view.servers["srv1"].age, 2.5)
        self.assertEqual(view.servers["srv1"].incarnation, INC1)
        self.assertEqual(view.servers["srv2"].age, 0.0)
        self.clock.advance(1)
        self.assertEqual(self.state.view("c1").servers["srv1"].age, 3.5)
        self.assertIsNone(self.state.view("c1").seq)

    def test_clusters_apart(self):
        self.state.report(report(cluster="c1", server="srv1"))
        self.state.report(report(cluster="c2", server="srv1", incarnation=INC2))
        self.assertEqual(self.state.view("c1").servers["srv1"].incarnation, INC1)
        self.assertEqual(self.state.view("c2").servers["srv1"].incarnation, INC2)
        self.assertEqual(self.state.view("c3").servers, {})

    def test_replay_refused(self):
        self.state.report(report(seq=5))
        for seq in (5, 4):
            with self.assertRaises(Refused) as caught:
                self.state.report(report(seq=seq))
            self.assertEqual((caught.exception.code, caught.exception.counter), (409, "replayed"))
            self.assertEqual(caught.exception.details, {"seq": 5})
        self.state.report(report(seq=6))

    def test_new_incarnation_any_seq(self):
        self.state.report(report(seq=50))
        self.state.report(report(incarnation=INC2, seq=1))
        self.assertEqual(self.state.view("c1").servers["srv1"].incarnation, INC2)

    def test_older_incarnation_stale_until_silent(self):
        self.state.report(report(incarnation=INC2, seq=1))
        self.clock.advance(10)
        with self.assertRaises(Refused) as caught:
            self.state.report(report(incarnation=INC1, seq=99))
        self.assertEqual(caught.exception.counter, "stale")
        self.clock.advance(0.5)
        self.state.report(report(incarnation=INC1, seq=99))
        self.assertEqual(self.state.view("c1").servers["srv1"].incarnation, INC1)

    def test_forget_silent(self):
        self.state.report(report(server="srv1"))
        self.clock.advance(60)
        self.state.report(report(server="srv2"))
        self.clock.advance(41)
        self.assertEqual(set(self.state.view("c1").servers), {"srv2"})
        self.assertEqual(self.state.counters()["forgotten"], 1)
        self.clock.advance(60)
        self.assertEqual(self.state.status()["clusters"], 0)
        self.assertEqual(self.state.counters()["forgotten"], 2)

    def test_capacity(self):
        state = WitnessState(self.clock.seconds, max_clusters=2, max_servers=2, forget_after=10)
        state.report(report(cluster="a", server="s1"))
        state.report(report(cluster="a", server="s2"))
        with self.assertRaises(Refused) as caught:
            state.report(report(cluster="a", server="s3"))
        self.assertEqual((caught.exception.code, caught.exception.counter), (503, "full"))
        state.report(report(cluster="b"))
        self.assertRaises(Refused, state.report, report(cluster="c"))
        self.clock.advance(11)  # everything forgotten: room again
        state.report(report(cluster="c"))

    def test_keys(self):
        state = WitnessState(self.clock.seconds, keys={"c1": KEY})
        self.assertEqual(state.key("c1"), KEY)
        with self.assertRaises(Refused) as caught:
            state.key("c2")
        self.assertEqual((caught.exception.code, caught.exception.counter), (404, "unknown_cluster"))
        self.assertIsNone(self.state.key("anything"))
        self.assertRaises(ValueError, WitnessState, self.clock.seconds, keys={"c1": b""})
        self.assertRaises(ValueError, WitnessState, self.clock.seconds, keys={"../x": KEY})


class HttpTests(SynchronousTestCase):
    """Raw HTTP through the real Site."""

    def setUp(self):
        self.clock = Clock()
        self.reactor = MemoryReactorClock()
        self.state = WitnessState(self.clock.seconds)
        self.site = make_site(self.state, self.reactor)

    def exchange(self, raw):
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        data = transport.value()
        protocol.connectionLost(None)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        code = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode()] = value.strip().decode()
        return code, headers, body

    def request(self, method, path, body=b"", headers=()):
        raw = f"{method} {path} HTTP/1.1\r\nHost: w\r\nConnection: close\r\n".encode()
        for name, value in headers:
            raw += f"{name}: {value}\r\n".encode()
        if body or method == "POST":
            raw += f"Content-Length: {len(body)}\r\n".encode()
        return self.exchange(raw + b"\r\n" + body)

    def post_report(self, rep, key=None, signature=None):
        path, body = wp.encode_report(rep)
        headers = []
        if key is not None:
            headers.append((wp.SIGNATURE_HEADER, wp.sign(key, wp.request_message(b"POST", path, body))))
        if signature is not None:
            headers.append((wp.SIGNATURE_HEADER, signature))
        return self.request("POST", path, body, headers)

    def counters(self):
        code, headers, body = self.request("GET", "/status")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], "application/json")
        return json.loads(body)["counters"]

    def test_root(self):
        code, headers, body = self.request("GET", "/")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertEqual(body, ROOT_PAGE)

    def test_head_root(self):
        code, headers, body = self.request("HEAD", "/")
        self.assertEqual(code, 200)
        self.assertEqual(body, b"")
        self.assertEqual(headers["content-length"], str(len(ROOT_PAGE)))

    def test_report_and_view(self):
        code, _, body = self.post_report(report(server="srv1", seq=3))
        self.assertEqual(code, 200)
        self.clock.advance(1.25)
        code, headers, body = self.post_report(report(server="srv2", incarnation=INC2, seq=4))
        self.assertEqual(code, 200)
        # Signed only by a witness given keys.
        self.assertEqual(wp.SIGNATURE_HEADER.lower() in headers, self.state.authenticated)
        view = wp.decode_view(body, "c1")
        self.assertEqual(view.seq, 4)
        self.assertEqual(view.servers["srv1"], wp.Sighting("srv1", INC1, 1.25, 3))
        self.assertEqual(view.servers["srv2"], wp.Sighting("srv2", INC2, 0.0, 4))
        code, _, body = self.request("GET", "/clusters/c1")
        self.assertEqual(code, 200)
        self.assertEqual(set(wp.decode_view(body, "c1").servers), {"srv1", "srv2"})
        counters = self.counters()
        self.assertEqual(counters["reports"], 2)
        self.assertEqual(counters["views"], 3)

    def test_same_server_names_in_two_clusters(self):
        self.post_report(report(cluster="c1", server="srv1"))
        _, _, body = self.post_report(report(cluster="c2", server="srv1", incarnation=INC2))
        view = wp.decode_view(body, "c2")
        self.assertEqual(view.servers["srv1"].incarnation, INC2)
        _, _, body = self.request("GET", "/clusters/c1")
        self.assertEqual(wp.decode_view(body, "c1").servers["srv1"].incarnation, INC1)

    def assertRefused(self, answer, code, counter):
        self.assertEqual(answer[0], code, answer)
        self.assertEqual(answer[1]["content-type"], "application/json")
        self.assertIsInstance(json.loads(answer[2])["error"], str)
        self.assertEqual(self.counters()[counter], 1)

    def test_malformed_json(self):
        self.assertRefused(self.request("POST", "/clusters/c1/servers/srv1", b"{not json"),
                           400, "malformed")

    def test_malformed_fields(self):
        self.assertRefused(self.request("POST", "/clusters/c1/servers/srv1",
                                        b'{"incarnation": "1/a", "seq": -1, "time": 0}'),
                           400, "malformed")

    def test_bad_name(self):
        self.assertRefused(self.request("GET", "/clusters/-x"), 400, "malformed")

    def test_oversize_by_length(self):
        body = b"{" + b" " * wp.MAX_REPORT + b"}"
        self.assertRefused(self.request("POST", "/clusters/c1/servers/srv1", body), 413, "oversize")

    def test_oversize_chunked(self):
        chunk = b" " * 600
        raw = (b"POST /clusters/c1/servers/srv1 HTTP/1.1\r\nHost: w\r\nConnection: close\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 3 + b"0\r\n\r\n")
        self.assertRefused(self.exchange(raw), 413, "oversize")

    def test_chunked_within_limit(self):
        path, body = wp.encode_report(report())
        signature = wp.sign(KEY, wp.request_message(b"POST", path, body)).encode()
        raw = (b"POST /clusters/c1/servers/srv1 HTTP/1.1\r\nHost: w\r\nConnection: close\r\n"
               b"X-Cpro-Signature: " + signature + b"\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
        self.assertEqual(self.exchange(raw)[0], 200)

    def test_not_found(self):
        self.assertRefused(self.request("GET", "/nothing"), 404, "not_found")

    def test_bad_methods(self):
        code, headers, _ = self.request("DELETE", "/")
        self.assertEqual(code, 405)
        self.assertEqual(headers["allow"], "GET, HEAD, POST")
        self.assertEqual(self.request("GET", "/clusters/c1/servers/srv1")[0], 405)
        self.assertEqual(self.request("POST", "/status", b"{}")[0], 405)
        self.assertEqual(self.counters()["bad_method"], 3)

    def test_replay(self):
        self.assertEqual(self.post_report(report(seq=2))[0], 200)
        answer = self.post_report(report(seq=2))
        self.assertRefused(answer, 409, "replayed")
        self.assertEqual(wp.decode_refusal(answer[2])[1], 2)

    def logged(self):
        """The events cpro.witness.server logs from now on (instead of to Twisted)."""
        from cpro.witness import server as witness_server
        events = []
        self.patch(witness_server.log, "observer", events.append)
        return events

    def test_huge_integer_time(self):
        # Issue 10: math.isfinite(10**400) raised OverflowError: a 500 and a
        # traceback per request, for anyone who can reach the witness.
        events = self.logged()
        body = b'{"incarnation":"1000/aa","seq":1,"time":1' + b"0" * 400 + b"}"
        self.assertRefused(self.request("POST", "/clusters/c1/servers/srv1", body), 400, "malformed")
        self.assertEqual([e for e in events if e.get("log_failure")], [])
        self.assertEqual(self.state.view("c1").servers, {})

    def test_refusals_logged_one_line_rate_limited(self):
        events = self.logged()
        for _ in range(25):
            self.assertEqual(self.request("GET", "/clusters/-x%1b%5b2J")[0], 400)
        refusals = [e for e in events if "refused" in e.get("log_format", "")]
        self.assertEqual(len(refusals), 2)  # the 1st and the 10th
        from twisted.logger import formatEvent
        for event in refusals:
            text = formatEvent(event)
            self.assertIsNone(event.get("log_failure"))
            self.assertTrue(text.isprintable(), repr(text))
            self.assertIn("malformed", text)
        self.assertEqual(self.counters()["malformed"], 25)

    def test_refusals_logged_again_after_a_while(self):
        events = self.logged()
        for _ in range(12):
            self.request("GET", "/nothing")
        self.clock.advance(60)
        self.request("GET", "/nothing")
        self.assertEqual(len([e for e in events if "refused" in e.get("log_format", "")]), 3)

    def test_internal_error_no_traceback_flood(self):
        # A bug (here simulated) answers 500; its traceback is logged
        # rate-limited like a refusal, not once per request.
        events = self.logged()
        self.patch(self.state, "view", lambda cluster: 1 / 0)
        for _ in range(20):
            self.assertEqual(self.request("GET", "/clusters/c1")[0], 500)
        self.assertEqual(len([e for e in events if e.get("log_failure")]), 2)
        self.assertEqual(self.counters()["errors"], 20)

    def exchange_status(self, raw):
        """The status code of the answer to raw bytes Twisted may refuse itself."""
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        protocol.connectionLost(None)
        return int(transport.value().split(b" ", 2)[1])

    def test_content_length_past_int_digit_limit(self):
        # Found by the fuzzer: twisted.web's int() of a Content-Length of more
        # than 4300 digits raised ValueError out of dataReceived.
        events = self.logged()
        raw = (b"POST /clusters/c1/servers/srv1 HTTP/1.1\r\nHost: w\r\n"
               b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n{}")
        self.assertEqual(self.exchange_status(raw), 400)
        self.assertEqual([e for e in events if e.get("log_failure")], [])
        self.assertEqual(self.counters()["bad_http"], 1)

    def test_http_refused_by_twisted_counted_and_logged(self):
        events = self.logged()
        for _ in range(12):
            self.assertEqual(self.exchange_status(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n"), 400)
        self.assertEqual(self.counters()["bad_http"], 12)
        lines = [e for e in events if "refused" in e.get("log_format", "")]
        self.assertEqual(len(lines), 2)
        self.assertIsNone(lines[0].get("log_failure"))

    def test_status_has_no_names(self):
        self.post_report(report(cluster="secretname", server="srv1"))
        code, _, body = self.request("GET", "/status")
        self.assertNotIn(b"secretname", body)
        status = json.loads(body)
        self.assertEqual((status["clusters"], status["servers"]), (1, 1))
        self.assertFalse(status["authenticated"])


class KeyedHttpTests(HttpTests):
    """The same requests against a witness given cluster keys."""

    def setUp(self):
        super().setUp()
        self.state = WitnessState(self.clock.seconds, keys={"c1": KEY, "c2": b"key-of-c2"})
        self.site = make_site(self.state, self.reactor)

    def post_report(self, rep, key=None, signature=None):
        if key is None and signature is None:
            key = {"c1": KEY, "c2": b"key-of-c2"}.get(rep.cluster, b"none")
        return HttpTests.post_report(self, rep, key, signature)

    def request(self, method, path, body=b"", headers=()):
        if path.startswith("/clusters/c") and not headers:
            key = KEY if path.startswith("/clusters/c1") else b"key-of-c2"
            headers = [(wp.SIGNATURE_HEADER,
                        wp.sign(key, wp.request_message(method.encode(), path, body)))]
        return HttpTests.request(self, method, path, body, headers)

    def test_signed_view(self):
        path, _ = wp.encode_report(report())
        code, headers, body = self.post_report(report())
        self.assertEqual(code, 200)
        wp.verify(KEY, wp.answer_message(path, body), headers[wp.SIGNATURE_HEADER.lower()])

    def test_unknown_cluster(self):
        self.assertRefused(self.post_report(report(cluster="c3"), key=KEY), 404, "unknown_cluster")

    def test_bad_signature(self):
        self.assertRefused(self.post_report(report(), key=b"key-of-c2"), 403, "unauthenticated")

    def test_missing_signature(self):
        path, body = wp.encode_report(report())
        answer = HttpTests.request(self, "POST", path, body, [("X-Other", "1")])
        self.assertRefused(answer, 403, "unauthenticated")
        self.assertEqual(self.state.view("c1").servers, {})

    def test_non_ascii_signature(self):
        # Issue 10: valid UTF-8 that is not ASCII raised TypeError in the
        # digest comparison: a 500 and a traceback.
        events = self.logged()
        path, body = wp.encode_report(report())
        good = wp.sign(KEY, wp.request_message(b"POST", path, body))
        answer = HttpTests.request(self, "POST", path, body, [(wp.SIGNATURE_HEADER, good[:-1] + "é")])
        self.assertRefused(answer, 400, "unauthenticated")
        self.assertEqual([e for e in events if e.get("log_failure")], [])
        self.assertEqual(self.state.view("c1").servers, {})

    def test_invalid_utf8_signature(self):
        # Issue 10: invalid UTF-8 raised UnicodeDecodeError in the header lookup.
        events = self.logged()
        path, body = wp.encode_report(report())
        raw = (f"POST {path} HTTP/1.1\r\nHost: w\r\nConnection: close\r\n"
               f"Content-Length: {len(body)}\r\n").encode()
        raw += b"X-Cpro-Signature: \xff\xfe" + b"0" * 62 + b"\r\n\r\n" + body
        self.assertRefused(self.exchange(raw), 400, "unauthenticated")
        self.assertEqual([e for e in events if e.get("log_failure")], [])
        self.assertEqual(self.state.view("c1").servers, {})

    def test_status_authenticated(self):
        self.assertTrue(json.loads(self.request("GET", "/status")[2])["authenticated"])

    def test_status_has_no_names(self):
        pass  # cluster names are the keys file's here


class MainTests(SynchronousTestCase):
    """The cpro-witness command line: endpoints, keys file, option checks."""

    def test_parse_endpoint(self):
        from cpro.witness.main import parse_endpoint
        self.assertEqual(parse_endpoint("127.0.0.1:8080"), ("127.0.0.1", 8080))
        self.assertEqual(parse_endpoint("[::1]:443"), ("::1", 443))
        self.assertEqual(parse_endpoint("0.0.0.0:0"), ("0.0.0.0", 0))
        for text in ["8080", ":8080", "::1:80", "h:x", "h:70000", "h:"]:
            self.assertRaises(ValueError, parse_endpoint, text)

    def keys_file(self, text):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        with open(os.path.join(directory, "c2.key"), "wb") as f:
            f.write(b"  from-file \n")
        path = os.path.join(directory, "keys")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_load_keys(self):
        from cpro.witness.main import load_keys
        path = self.keys_file("# comment\n\nc1 a key with spaces \nc2 @c2.key\n")
        self.assertEqual(load_keys(path), {"c1": b"a key with spaces", "c2": b"from-file"})

    def test_bad_keys(self):
        from cpro import exitcodes
        from cpro.witness.main import SetupError, load_keys
        for text in ["", "# only\n", "../x key\n", "c1\n", "c1 k\nc1 k\n", "c1 @missing\n"]:
            with self.assertRaises(SetupError, msg=text) as caught:
                load_keys(self.keys_file(text))
            self.assertEqual(caught.exception.code, exitcodes.CONFIG_INVALID)

    def test_options(self):
        from cpro.witness.main import build_parser, check_options
        parser = build_parser()
        self.assertEqual(check_options(parser, parser.parse_args([])),
                         ([("127.0.0.1", 8080)], []))
        opts = parser.parse_args(["--listen", "0.0.0.0:80", "--tls-listen", "0.0.0.0:443",
                                  "--tls-cert", "c", "--tls-key", "k"])
        self.assertEqual(check_options(parser, opts), ([("0.0.0.0", 80)], [("0.0.0.0", 443)]))
        self.patch(parser, "error", lambda message: (_ for _ in ()).throw(ValueError(message)))
        for argv in [["--tls-listen", "127.0.0.1:443"], ["--tls-cert", "c", "--tls-key", "k"],
                     ["--listen", "nope"], ["--forget-after", "0"]]:
            self.assertRaises(ValueError, check_options, parser, parser.parse_args(argv))
