"""The witness heartbeat path and the witness resolver, with a fake HTTP
client answered by a real L{WitnessState} on a task.Clock.

Covers: reports are signed and carry the incarnation and increasing
sequence numbers; at most one request is in flight (beats skipped and
counted); the view becomes on_alive calls for peers that use the witness,
heard within the heartbeat timeout (the round trip added to the age); stale,
unknown and non-witness servers are ignored; malformed, misdirected and
wrongly signed answers, refusals and transport errors are counted and never
raise; a refusal as replayed moves the sequence number above the witness's;
an unused path sends nothing; fresh_view shares the request in flight and is
cancellable; stop cancels; the resolver's verdicts.
"""

import dataclasses

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

from cpro.cluster.partition import Verdict
from cpro.config.model import Device, HeartbeatConfig, HttpTarget
from cpro.interfaces import IHeartbeatPath, INPResolver
from cpro.plugins import HEARTBEAT_KINDS
from cpro.protocols import witness as wp
from cpro.protocols.heartbeat import Incarnation, StateDigest
from cpro.services.heartbeat import base as hbpath, witnesshb
from cpro.system.httpclient import HttpAnswer, HttpRequestError
from cpro.services.heartbeat.witnesshb import WitnessHeartbeatPath, WitnessResolver, WitnessUnavailable
from cpro.testing.fakes import make_config
from cpro.witness.server import Refused, WitnessState

KEY = b"test-key"
INC1 = Incarnation(1000, "aa")
INC2 = Incarnation(2000, "bb")
INC3 = Incarnation(3000, "cc")
DIGEST = StateDigest("0" * 64, 0, "running")


def witness_config(uses=("1", "1", "0"), target=None, with_device=True):
    config = make_config(servers=("srv1", "srv2", "srv3"), hb_timeout=10.0, hb_interval=1.0)
    servers = []
    for server, use in zip(config.servers, uses):
        devices = server.devices + ((Device(700, "witness", use, "127.0.0.1:8080"),)
                                    if with_device else ())
        servers.append(dataclasses.replace(server, devices=devices))
    heartbeat = HeartbeatConfig("witnesshb1", "witnesshb", 5, 700,
                                witness=target or HttpTarget("127.0.0.1", 8080, timeout=3.0))
    return dataclasses.replace(config, servers=tuple(servers),
                               heartbeats=config.heartbeats + (heartbeat,)), heartbeat


class FakeClient:
    base_url = "http://127.0.0.1:8080"

    def __init__(self):
        self.requests = []  # [method, path, headers, body, deferred]
        self.closed = False

    def url(self, path):
        return self.base_url + path

    def request(self, method, path, headers=None, body=None):
        d = defer.Deferred()
        self.requests.append((method, path, headers, body, d))
        return d

    def close(self):
        self.closed = True
        return defer.succeed(None)


class Harness:
    """A path of srv1, its fake client, and a witness state answering it."""

    def __init__(self, testcase, local="srv1", uses=("1", "1", "0"), witness_keys=None):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.config, self.heartbeat = witness_config(uses)
        self.alive = []
        self.context = hbpath.HeartbeatContext(
            reactor=self.clock, config=self.config, local=local, incarnation=INC1,
            on_beat=lambda *a: testcase.fail("witness paths carry no packets"),
            on_alive=lambda *args: self.alive.append(args), runner=None)
        self.client = FakeClient()
        self.path = WitnessHeartbeatPath(self.context, self.heartbeat, client=self.client)
        self.witness = WitnessState(self.clock.seconds, keys=witness_keys)

    def report_as(self, server, incarnation, seq=1):
        self.witness.report(wp.Report(self.config.name, server, incarnation, seq))

    def answer(self, index=-1, sign_with=None, code=None, body=None):
        """Answer request C{index} as the witness would."""
        method, path, headers, request_body, d = self.client.requests[index]
        if code is None:
            route = wp.parse_path(path)
            try:
                view = self.witness.report(wp.decode_report(route.cluster, route.server, request_body))
                code, body = 200, wp.encode_view(view)
            except Refused as e:
                import json
                code, body = e.code, json.dumps(dict(e.details, error=str(e))).encode()
        headers = Headers()
        if sign_with is not None:
            headers.setRawHeaders(wp.SIGNATURE_HEADER, [wp.sign(sign_with, wp.answer_message(path, body))])
        d.callback(HttpAnswer(code, headers, body))


class PathTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness(self)
        self.path = self.h.path
        self.path.start_listening()

    def test_interfaces(self):
        verifyObject(IHeartbeatPath, self.path)
        verifyObject(INPResolver, WitnessResolver(self.path, 10.0))
        self.assertEqual((self.path.name, self.path.kind), ("witnesshb1", "witnesshb"))
        self.assertTrue(self.path.used)
        self.assertEqual(self.path.peers, frozenset({"srv2"}))

    def test_registered(self):
        path = HEARTBEAT_KINDS.get("witnesshb").factory(self.h.context, self.h.heartbeat)
        self.assertIsInstance(path, WitnessHeartbeatPath)
        self.assertEqual(path.url, "http://127.0.0.1:8080")

    def test_no_witness_target(self):
        heartbeat = dataclasses.replace(self.h.heartbeat, witness=None)
        self.assertRaises(hbpath.HeartbeatConfigError, WitnessHeartbeatPath, self.h.context, heartbeat)

    def test_not_started_sends_nothing(self):
        path = WitnessHeartbeatPath(self.h.context, self.h.heartbeat, client=FakeClient())
        path.send_beat(DIGEST)
        self.assertEqual(path._client.requests, [])

    def test_report_signed(self):
        self.path.send_beat(DIGEST)
        method, path, headers, body, _ = self.h.client.requests[0]
        self.assertEqual((method, path), (b"POST", "/clusters/testcluster/servers/srv1"))
        wp.verify(KEY, wp.request_message(b"POST", path, body), headers[b"X-Cpro-Signature"])
        report = wp.decode_report("testcluster", "srv1", body)
        self.assertEqual(report.incarnation, INC1)
        self.assertEqual(report.seq, 1_700_000_000_000 + 1)
        self.h.answer()
        self.path.send_beat(DIGEST)
        self.assertEqual(wp.decode_report("testcluster", "srv1", self.h.client.requests[1][3]).seq,
                         report.seq + 1)

    def test_one_request_in_flight(self):
        self.path.send_beat(DIGEST)
        self.path.send_beat(DIGEST)
        self.path.send_beat(DIGEST)
        self.assertEqual(len(self.h.client.requests), 1)
        self.assertEqual(self.path.counters()["skipped_busy"], 2)
        self.h.answer()
        self.path.send_beat(DIGEST)
        self.assertEqual(len(self.h.client.requests), 2)
        self.assertEqual(self.path.counters()["sent"], 2)

    def test_view_to_on_alive(self):
        self.h.report_as("srv2", INC2)
        self.h.report_as("srv3", INC3)  # does not use the witness in this configuration
        self.h.report_as("stranger", INC3)
        self.h.clock.advance(2.0)
        self.path.send_beat(DIGEST)
        self.h.clock.advance(0.5)  # the round trip
        self.h.answer()
        # The witness answered at the end of the round trip (age 2.5); the
        # path cannot tell when within it and adds the round trip: 3.0.
        self.assertEqual(self.h.alive, [("witnesshb1", "srv2", INC2, 3.0)])
        counters = self.path.counters()
        self.assertEqual((counters["answered"], counters["alive"]), (1, 1))
        view = self.path.latest_view()
        self.assertEqual(view.received, self.h.clock.seconds())
        self.assertEqual(set(view.servers), {"srv1", "srv2", "srv3", "stranger"})
        self.assertIsNone(self.path.problem)

    def test_stale_peer_ignored(self):
        self.h.report_as("srv2", INC2)
        self.h.clock.advance(9.6)
        self.path.send_beat(DIGEST)
        self.h.clock.advance(0.2)  # witness age 9.8, + 0.2 round trip: the 10 s timeout
        self.h.answer()
        self.assertEqual(self.h.alive, [])
        self.assertIn("srv2", self.path.latest_view().servers)

    def test_peer_just_within_timeout(self):
        self.h.report_as("srv2", INC2)
        self.h.clock.advance(9.5)
        self.path.send_beat(DIGEST)
        self.h.clock.advance(0.2)
        self.h.answer()
        self.assertEqual([a[:3] for a in self.h.alive], [("witnesshb1", "srv2", INC2)])
        self.assertAlmostEqual(self.h.alive[0][3], 9.9)

    def test_on_alive_failure_contained(self):
        self.h.context.on_alive = lambda *a: 1 / 0
        self.h.report_as("srv2", INC2)
        self.path.send_beat(DIGEST)
        self.h.answer()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.path.send_beat(DIGEST)
        self.assertEqual(len(self.h.client.requests), 2)

    def assertProblem(self, counter, text):
        self.assertEqual(self.path.counters()[counter], 1)
        self.assertEqual(self.h.alive, [])
        self.assertIsNone(self.path.latest_view())
        self.assertIn(text, self.path.problem)
        # The path goes on: the next beat sends.
        self.path.send_beat(DIGEST)
        self.assertEqual(len(self.h.client.requests), 2)

    def test_malformed_answer(self):
        self.h.report_as("srv2", INC2)
        self.path.send_beat(DIGEST)
        self.h.answer(code=200, body=b"<html>hello</html>")
        self.assertProblem("malformed_answers", "malformed answer")

    def test_answer_to_another_report(self):
        self.path.send_beat(DIGEST)
        body = wp.encode_view(wp.View("testcluster", {}, seq=5))
        self.h.answer(code=200, body=body)
        self.assertProblem("malformed_answers", "answers report 5")

    def test_view_of_another_cluster(self):
        self.path.send_beat(DIGEST)
        seq = wp.decode_report("testcluster", "srv1", self.h.client.requests[0][3]).seq
        self.h.answer(code=200, body=wp.encode_view(wp.View("other", {}, seq=seq)))
        self.assertProblem("malformed_answers", "another cluster")

    def test_bad_answer_signature(self):
        self.h.report_as("srv2", INC2)
        self.path.send_beat(DIGEST)
        self.h.answer(sign_with=b"another key")
        self.assertProblem("unauthenticated_answers", "bad view signature")

    def test_huge_integer_age(self):
        # Issue 10: math.isfinite(10**400) raised OverflowError out of the
        # view's parser: an unexpected error logged with its traceback.
        self.path.send_beat(DIGEST)
        seq = wp.decode_report("testcluster", "srv1", self.h.client.requests[0][3]).seq
        body = (b'{"protocol":1,"cluster":"testcluster","seq":%d,"servers":{"srv2":'
                b'{"incarnation":"2000/bb","age":1%s,"seq":1}}}' % (seq, b"0" * 400))
        self.h.answer(code=200, body=body)
        self.assertProblem("malformed_answers", "malformed answer")
        self.assertEqual(self.path.counters()["errors"], 0)

    def test_non_ascii_answer_signature(self):
        # Issue 10: invalid UTF-8 raised UnicodeDecodeError in the header
        # lookup, valid non-ASCII TypeError in the digest comparison.
        for i, value in enumerate([b"\xff\xfe" + b"0" * 62, "é".encode() * 32]):
            self.path.send_beat(DIGEST)
            _, path, _, request_body, d = self.h.client.requests[i]
            headers = Headers()
            headers.setRawHeaders(wp.SIGNATURE_HEADER.encode(), [value])
            d.callback(HttpAnswer(200, headers, wp.encode_view(wp.View("testcluster", {}))))
            self.assertEqual(self.path.counters()["unauthenticated_answers"], i + 1)
            self.assertIn("bad view signature", self.path.problem)
        self.assertEqual(self.path.counters()["errors"], 0)
        self.assertIsNone(self.path.latest_view())

    def test_refusal_cannot_push_seq_to_the_end(self):
        # An unsigned 409 carrying the largest sequence number must not
        # leave the path unable to number its next report.
        self.path.send_beat(DIGEST)
        self.h.answer(code=409, body=b'{"error": "replayed", "seq": %d}' % (2**64 - 1))
        self.path.send_beat(DIGEST)
        self.assertEqual(len(self.h.client.requests), 2)
        seq = wp.decode_report("testcluster", "srv1", self.h.client.requests[1][3]).seq
        self.assertLess(seq, 2**63)

    def test_refusal_message_is_one_line(self):
        self.path.send_beat(DIGEST)
        self.h.answer(code=400, body=b'{"error": "bad\\nforged log line"}')
        self.assertNotIn("\n", self.path.problem)

    def test_good_answer_signature(self):
        self.h.report_as("srv2", INC2)
        self.path.send_beat(DIGEST)
        self.h.answer(sign_with=KEY)
        self.assertEqual(len(self.h.alive), 1)

    def test_refused(self):
        self.path.send_beat(DIGEST)
        self.h.answer(code=403, body=b'{"error": "signature mismatch"}')
        self.assertProblem("refused", "403 signature mismatch")

    def test_replay_refusal_moves_seq_above(self):
        self.h.report_as("srv1", INC1, seq=2_000_000_000_000)
        self.path.send_beat(DIGEST)
        self.h.answer()
        self.assertEqual(self.path.counters()["refused"], 1)
        self.path.send_beat(DIGEST)
        self.h.answer()
        self.assertEqual(self.path.counters()["answered"], 1)
        self.assertEqual(self.path.latest_view().servers["srv1"].seq, 2_000_000_000_001)

    def test_transport_error(self):
        self.path.send_beat(DIGEST)
        self.h.client.requests[0][4].errback(HttpRequestError("connection refused"))
        self.assertProblem("errors", "connection refused")

    def test_problem_logged_once_per_change(self):
        events = []
        self.patch(witnesshb.log, "observer", events.append)
        for i in range(3):
            self.path.send_beat(DIGEST)
            self.h.client.requests[i][4].errback(HttpRequestError("connection refused"))
        self.assertEqual(self.path.counters()["errors"], 3)
        self.path.send_beat(DIGEST)
        self.h.answer()
        self.assertIsNone(self.path.problem)
        texts = [e["log_format"] for e in events]
        self.assertEqual(len(texts), 2, texts)
        self.assertIn("no view from the witness", texts[0])
        self.assertIn("answers again", texts[1])

    def test_stop_cancels_in_flight(self):
        self.path.send_beat(DIGEST)
        waiter = self.path.fresh_view()
        failures = []
        waiter.addErrback(failures.append)
        done = []
        self.path.stop_listening().addCallback(done.append)
        self.assertEqual(done, [None])
        self.assertTrue(self.h.client.closed)
        self.assertTrue(self.h.client.requests[0][4].called)
        self.assertTrue(failures[0].check(WitnessUnavailable))
        self.path.send_beat(DIGEST)
        self.assertEqual(len(self.h.client.requests), 1)
        self.failureResultOf(self.path.fresh_view(), WitnessUnavailable)


class FreshViewTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness(self)
        self.path = self.h.path
        self.path.start_listening()

    def test_sends_when_idle(self):
        d = self.path.fresh_view()
        self.assertEqual(len(self.h.client.requests), 1)
        self.h.report_as("srv2", INC2)
        self.h.answer()
        view = self.successResultOf(d)
        self.assertIn("srv2", view.servers)
        self.assertIs(view, self.path.latest_view())

    def test_shares_request_in_flight(self):
        self.path.send_beat(DIGEST)
        first, second = self.path.fresh_view(), self.path.fresh_view()
        self.assertEqual(len(self.h.client.requests), 1)
        self.h.answer()
        self.assertIs(self.successResultOf(first), self.successResultOf(second))

    def test_cancel_waiter_keeps_request(self):
        d = self.path.fresh_view()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertFalse(self.h.client.requests[0][4].called)
        self.h.answer()
        self.assertEqual(self.path.counters()["answered"], 1)

    def test_failure(self):
        d = self.path.fresh_view()
        self.h.client.requests[0][4].errback(HttpRequestError("no answer within 3 s"))
        self.assertIn("no answer within 3 s", str(self.failureResultOf(d, WitnessUnavailable).value))


class UnusedPathTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness(self, local="srv3")
        self.path = self.h.path
        self.path.start_listening()

    def test_sends_nothing(self):
        self.assertFalse(self.path.used)
        self.path.send_beat(DIGEST)
        self.assertEqual(self.h.client.requests, [])
        self.assertEqual(set(self.path.counters().values()), {0})
        self.failureResultOf(self.path.fresh_view(), WitnessUnavailable)

    def test_no_device_is_unused(self):
        config, heartbeat = witness_config(with_device=False)
        context = dataclasses.replace(self.h.context, config=config, local="srv1")
        self.assertFalse(WitnessHeartbeatPath(context, heartbeat, client=FakeClient()).used)

    def test_resolver_not_healthy(self):
        verdict = self.successResultOf(WitnessResolver(self.path, 10.0).check({"srv1"}))
        self.assertFalse(verdict.healthy)
        self.assertIn("does not use", verdict.reason)


class ResolverTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness(self)
        self.h.path.start_listening()
        self.resolver = WitnessResolver(self.h.path, 10.0)

    def test_attributes(self):
        self.assertEqual((self.resolver.name, self.resolver.kind, self.resolver.timeout),
                         ("witnesshb1", "witness", 3.0))

    def test_healthy_when_lost_not_heard(self):
        self.h.report_as("srv2", INC2)
        self.h.clock.advance(12)
        d = self.resolver.check({"srv2"})
        self.h.answer()
        verdict = self.successResultOf(d)
        self.assertIsInstance(verdict, Verdict)
        self.assertTrue(verdict.healthy, verdict.reason)
        self.assertIn("does not hear srv2", verdict.reason)

    def test_healthy_when_lost_never_heard(self):
        d = self.resolver.check({"srv2"})
        self.h.answer()
        self.assertTrue(self.successResultOf(d).healthy)

    def test_not_healthy_when_lost_still_heard(self):
        self.h.report_as("srv2", INC2)
        self.h.clock.advance(4)
        d = self.resolver.check({"srv2"})
        self.h.answer()
        verdict = self.successResultOf(d)
        self.assertFalse(verdict.healthy)
        self.assertIn("still hears srv2 (4.0 s ago)", verdict.reason)

    def test_not_healthy_when_witness_silent(self):
        d = self.resolver.check({"srv2"})
        self.h.client.requests[0][4].errback(HttpRequestError("connection refused"))
        verdict = self.successResultOf(d)
        self.assertFalse(verdict.healthy)
        self.assertIn("connection refused", verdict.reason)

    def test_cancel(self):
        d = self.resolver.check({"srv2"})
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
