"""The httpnp resolver and the HTTP client under it, on a MemoryReactorClock:
the Agent's connection is completed by hand with a StringTransport.

Covers: a HEAD of the target path; any answer below 500 is healthy, 5xx is
not; refused connections, timeouts (connecting or waiting for the answer)
and an unusable CA file are not healthy, with the reason; cancelling drops
the request and leaves no delayed call; an oversize body fails the request.
"""

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from cpro.cluster.partition import Verdict
from cpro.config.model import HttpNPConfig, HttpTarget
from cpro.interfaces import INPResolver
from cpro.system.httpclient import AnswerTooLarge, HttpClient, HttpRequestError
from cpro.services.partition.httpnp import HttpResolver


def npconfig(**target):
    defaults = dict(host="127.0.0.1", port=8080, timeout=3.0, path="/")
    defaults.update(target)
    return HttpNPConfig("httpnp1", 1, 10700, HttpTarget(**defaults))


class Connection:
    """Complete the reactor's pending connection attempt and play the server."""

    def __init__(self, reactor, index=-1):
        host, port, factory, _, _ = reactor.tcpClients[index]
        self.protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def sent(self):
        return self.transport.value()

    def answer(self, raw):
        self.protocol.dataReceived(raw)


class HttpResolverTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.resolver = HttpResolver(self.reactor, npconfig(path="/health"))

    def tearDown(self):
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def check(self):
        return self.resolver.check(frozenset({"srv2"}))

    def test_interface(self):
        verifyObject(INPResolver, self.resolver)
        self.assertEqual((self.resolver.name, self.resolver.kind, self.resolver.timeout),
                         ("httpnp1", "httpnp", 3.0))

    def test_head_request_healthy(self):
        d = self.check()
        connection = Connection(self.reactor)
        self.assertTrue(connection.sent().startswith(b"HEAD /health HTTP/1.1\r\n"))
        connection.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 703\r\n\r\n")
        verdict = self.successResultOf(d)
        self.assertEqual(verdict, Verdict(True, "reached http://127.0.0.1:8080/health (200)"))

    def test_4xx_is_healthy(self):
        d = self.check()
        Connection(self.reactor).answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(self.successResultOf(d).healthy)

    def test_5xx_is_not(self):
        d = self.check()
        Connection(self.reactor).answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
        verdict = self.successResultOf(d)
        self.assertFalse(verdict.healthy)
        self.assertIn("answered 503", verdict.reason)

    def test_connection_refused(self):
        d = self.check()
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(self.reactor.connectors[0],
                                       Failure(error.ConnectionRefusedError()))
        self.reactor.advance(0.3)  # HostnameEndpoint reports after its attempt interval
        verdict = self.successResultOf(d)
        self.assertEqual(verdict, Verdict(False, "cannot reach http://127.0.0.1:8080/health: "
                                                 "connection refused"))

    def test_connect_timeout(self):
        d = self.check()
        self.reactor.advance(3.0)
        verdict = self.successResultOf(d)
        self.assertFalse(verdict.healthy)
        self.assertIn("no answer within 3 s", verdict.reason)

    def test_answer_timeout(self):
        d = self.check()
        connection = Connection(self.reactor)
        self.reactor.advance(2.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertIn("no answer within 3 s", self.successResultOf(d).reason)
        self.assertTrue(connection.transport.disconnecting)

    def test_cancel(self):
        d = self.check()
        connection = Connection(self.reactor)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertTrue(connection.transport.disconnecting)

    def test_bad_ca_file(self):
        resolver = HttpResolver(self.reactor, npconfig(tls=True, ca_file="/nonexistent/ca.pem"))
        verdict = self.successResultOf(resolver.check(frozenset()))
        self.assertFalse(verdict.healthy)
        self.assertIn("cannot read CA file /nonexistent/ca.pem", verdict.reason)
        self.assertEqual(resolver.url, "https://127.0.0.1:8080/")
        self.flushLoggedErrors()

    def test_ipv6_url(self):
        resolver = HttpResolver(self.reactor, npconfig(host="::1"))
        self.assertEqual(resolver.url, "http://[::1]:8080/")


class HttpClientTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.client = HttpClient(self.reactor, HttpTarget("127.0.0.1", 8080, timeout=3.0),
                                 max_body=10)

    def tearDown(self):
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_post_with_body(self):
        d = self.client.request(b"POST", "/x", {b"Content-Type": b"application/json"}, b'{"a":1}')
        connection = Connection(self.reactor)
        sent = connection.sent()
        self.assertTrue(sent.startswith(b"POST /x HTTP/1.1\r\n"))
        self.assertIn(b"Content-Length: 7\r\n", sent)
        self.assertTrue(sent.endswith(b'\r\n\r\n{"a":1}'))
        connection.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok")
        answer = self.successResultOf(d)
        self.assertEqual((answer.code, answer.body, answer.header(b"X-A")), (200, b"ok", b"b"))

    def test_oversize_body(self):
        d = self.client.request(b"GET", "/")
        connection = Connection(self.reactor)
        connection.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + b"x" * 20)
        failure = self.failureResultOf(d, HttpRequestError)
        self.assertIn("larger than 10 bytes", str(failure.value))
        self.assertTrue(connection.transport.disconnecting)
        self.assertTrue(issubclass(AnswerTooLarge, HttpRequestError))

    def test_server_closes_early(self):
        d = self.client.request(b"GET", "/")
        connection = Connection(self.reactor)
        connection.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.failureResultOf(d, HttpRequestError)
