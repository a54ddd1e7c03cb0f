"""Internal communication: TLS + AMP between two InternalServices on loopback
(real sockets, real reactor), with fake controllers."""

import dataclasses
import socket
import struct

from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols import amp
from twisted.python import failure
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from cpro.cluster.controller import OperationError
from cpro.cluster.states import ClusterServiceState
from cpro.config.model import Ports
from cpro.interfaces import IPeerChannel
from cpro.protocols import internal as wire
from cpro.services import internal as internal_service
from cpro.services.internal import InternalProtocol, InternalService, make_tls_identity
from cpro.testing.fakes import FakeAlerts, make_config


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class FakeController:
    def __init__(self, name):
        self.name = name
        self.reports = []
        self.calls = []
        self.service = ClusterServiceState.STARTING
        self.config_generation = 0

    def local_report(self):
        return {"server": self.name, "version": 1}

    def peer_report(self, server, report):
        self.reports.append((server, report))

    def handle_call(self, op, args):
        self.calls.append((op, args))
        if op == "refuse":
            raise OperationError("refused on purpose")
        return {"echo": args, "by": self.name}


def config_with_port(port, **kw):
    config = make_config(**kw)
    servers = tuple(dataclasses.replace(s, ports=Ports(internal=port)) for s in config.servers)
    return dataclasses.replace(config, servers=servers, source="<root/>")


class InternalServiceTests(unittest.TestCase):
    timeout = 20

    def make(self, name, config):
        controller = FakeController(name)
        alerts = FakeAlerts()
        service = InternalService(reactor, config, name, f"inc-{name}", controller, alerts)
        service.listen()
        service.startService()
        self.addCleanup(service.stopService)
        return service, controller, alerts

    @defer.inlineCallbacks
    def wait_for(self, predicate, timeout=10):
        deadline = reactor.seconds() + timeout
        while not predicate():
            if reactor.seconds() > deadline:
                self.fail("condition not reached")
            yield task.deferLater(reactor, 0.02, lambda: None)

    @defer.inlineCallbacks
    def test_authenticated_link_carries_state_and_calls(self):
        config = config_with_port(free_port())
        one, c1, _ = self.make("srv1", config)
        two, c2, _ = self.make("srv2", config)
        verifyObject(IPeerChannel, one)
        yield self.wait_for(lambda: one.connected_servers() == ["srv2"] and two.connected_servers() == ["srv1"])
        yield self.wait_for(lambda: ("srv1", {"server": "srv1", "version": 1}) in c2.reports)
        result = yield one.call("srv2", "group_start_local", group="g")
        self.assertEqual(result, {"echo": {"group": "g"}, "by": "srv2"})
        with self.assertRaises(OperationError) as e:
            yield one.call("srv2", "refuse")
        self.assertIn("refused on purpose", str(e.exception))

    @defer.inlineCallbacks
    def test_wrong_key_is_refused(self):
        port = free_port()
        one, c1, alerts1 = self.make("srv1", config_with_port(port))
        two, c2, alerts2 = self.make("srv2", config_with_port(port, key=b"another key"))
        yield self.wait_for(lambda: alerts1.ids("nm") and alerts2.ids("nm"))
        self.assertEqual(one.connected_servers(), [])
        self.assertEqual(two.connected_servers(), [])
        self.assertEqual(c1.calls + c2.calls, [])
        self.assertIn(80, alerts1.ids("nm"))

    @defer.inlineCallbacks
    def test_other_configuration_is_reported_and_can_be_fetched(self):
        port = free_port()
        one, _, _ = self.make("srv1", config_with_port(port))
        other = dataclasses.replace(config_with_port(port), digest="1" * 64)
        two, _, alerts2 = self.make("srv2", other)
        seen, seen_runs = [], []

        @defer.inlineCallbacks
        def mismatch(peer, detail, via, peer_run):
            if via is not None and not seen:
                seen_runs.append(peer_run)
                seen.append((peer, (yield two.fetch_config(via))))

        two.on_config_mismatch = mismatch
        yield self.wait_for(lambda: seen)
        self.assertEqual(seen[0], ("srv1", ("0" * 64, "<root/>")))
        # The peer said how far its run is, for cpro.cluster.configcheck.
        self.assertEqual(seen_runs[0].service, one.controller.service.value)
        self.assertEqual(seen_runs[0].incarnation, one.incarnation)
        self.assertIn(10, alerts2.ids("pm"))
        self.assertEqual(two.connected_servers(), [])

    @defer.inlineCallbacks
    def test_lost_connection_is_noticed_and_replaced(self):
        config = config_with_port(free_port())
        one, _, _ = self.make("srv1", config)
        two, _, _ = self.make("srv2", config)
        yield self.wait_for(lambda: one.connected_servers() == ["srv2"])
        first = one.links["srv2"].protocol
        first.transport.abortConnection()
        yield self.wait_for(lambda: one.links["srv2"].protocol not in (None, first))
        result = yield one.call("srv2", "ping")
        self.assertEqual(result["by"], "srv2")

    def tearDown(self):
        return task.deferLater(reactor, 0, lambda: None)


class Impostor(amp.AMP):
    """Answers at a peer's address without the cluster key: it plays the
    challenge, never proves anything, and tries to drive the connecting server."""

    def __init__(self, outcomes):
        super().__init__()
        self.outcomes = outcomes

    @wire.Challenge.responder
    def challenge(self):
        return {"nonce": wire.new_nonce()}

    @wire.Authenticate.responder
    def authenticate(self, cluster, server, incarnation, config, nonce, proof):
        return defer.Deferred()  # never answers: the client waits while we act

    def connectionMade(self):
        super().connectionMade()
        for name, command, kwargs in (("call", wire.Call, {"op": "cluster_stop", "args": {}}),
                                      ("config", wire.GetConfig, {"offset": 0}),
                                      ("push", wire.PushState, {"report": {"version": 99}})):
            self.callRemote(command, **kwargs).addBoth(
                lambda r, name=name: self.outcomes.append((name, r)))


class ImpostorFactory(protocol.Factory):
    def __init__(self):
        self.outcomes = []

    def buildProtocol(self, addr):
        return Impostor(self.outcomes)


class OutboundAuthenticationTests(unittest.TestCase):
    """A connection this server opened answers nothing before the far end
    proved the cluster key."""

    timeout = 20

    @defer.inlineCallbacks
    def test_impostor_at_a_peer_address_gets_no_request_through(self):
        port = free_port()
        config = config_with_port(port)
        pkey, cert = make_tls_identity("impostor")
        factory = ImpostorFactory()
        listening = reactor.listenSSL(port, factory, ssl.CertificateOptions(privateKey=pkey, certificate=cert),
                                      interface="127.0.0.2")
        self.addCleanup(listening.stopListening)
        controller = FakeController("srv1")
        service = InternalService(reactor, config, "srv1", "inc-srv1", controller, FakeAlerts())
        service.startService()
        self.addCleanup(service.stopService)
        deadline = reactor.seconds() + 10
        while len(factory.outcomes) < 3 and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(len(factory.outcomes), 3, factory.outcomes)
        self.assertEqual(controller.calls, [])
        self.assertEqual(controller.reports, [])
        for name, outcome in factory.outcomes:
            self.assertIsInstance(outcome, failure.Failure, f"{name} was answered: {outcome!r}")
        self.assertEqual(service.connected_servers(), [])
        self.assertGreaterEqual(service.counters["unauthenticated"], 1)


def box_bytes(*pairs):
    """The wire form of one AMP box from (key, value) byte pairs, unchecked."""
    out = b""
    for k, v in pairs:
        out += struct.pack("!H", len(k)) + k + struct.pack("!H", len(v)) + v
    return out + b"\x00\x00"


class MalformedBoxTests(unittest.SynchronousTestCase):
    """Malformed AMP boxes close the connection quietly, with a counter."""

    def setUp(self):
        self.controller = FakeController("srv1")
        self.service = InternalService(MemoryReactorClock(), config_with_port(29001), "srv1", "inc-srv1",
                                       self.controller, FakeAlerts())
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def feed(self, data, outbound_peer=None):
        p = InternalProtocol(self.service, outbound_peer=outbound_peer)
        transport = StringTransport()
        p.makeConnection(transport)
        p.dataReceived(data)  # must not raise
        return p, transport

    def assertClosedQuietly(self, transport, counter="malformed"):
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.service.counters[counter], 1)
        self.assertEqual([e for e in self.logged if e.get("log_failure") or e.get("isError")], [])
        self.assertEqual(self.controller.calls, [])

    def test_empty_box(self):
        _, transport = self.feed(b"\x00\x00")
        self.assertClosedQuietly(transport)

    def test_non_ascii_command_name(self):
        _, transport = self.feed(box_bytes((b"_command", "Ça".encode()), (b"_ask", b"1")))
        self.assertClosedQuietly(transport)

    def test_invalid_utf8_command_name(self):
        _, transport = self.feed(box_bytes((b"_command", b"\xff\xfe"), (b"_ask", b"1")))
        self.assertClosedQuietly(transport)

    def test_answer_to_a_question_never_asked(self):
        _, transport = self.feed(box_bytes((b"_answer", b"77")))
        self.assertClosedQuietly(transport)

    def test_arguments_that_do_not_parse(self):
        _, transport = self.feed(box_bytes((b"_command", b"Authenticate"), (b"_ask", b"1"),
                                           (b"cluster", b"\xff"), (b"server", b"srv2")))
        self.assertClosedQuietly(transport)

    def test_unauthenticated_request_inbound(self):
        _, transport = self.feed(box_bytes((b"_command", b"Call"), (b"_ask", b"1"), (b"op", b"x"),
                                           (b"args", b"{}")))
        self.assertClosedQuietly(transport, "unauthenticated")

    def test_unauthenticated_request_outbound(self):
        _, transport = self.feed(box_bytes((b"_command", b"GetConfig"), (b"_ask", b"1"), (b"offset", b"0")),
                                 outbound_peer="srv2")
        self.assertClosedQuietly(transport, "unauthenticated")
        self.assertNotIn(b"chunk", transport.value())

    def test_challenge_is_not_answered_on_an_outbound_connection(self):
        _, transport = self.feed(box_bytes((b"_command", b"Challenge"), (b"_ask", b"1")), outbound_peer="srv2")
        self.assertClosedQuietly(transport, "unauthenticated")
        self.assertNotIn(b"nonce", transport.value())


class SilentImpostor(Impostor):
    def connectionMade(self):
        amp.AMP.connectionMade(self)

    def connectionLost(self, reason):
        self.outcomes.append(("lost", reason))
        super().connectionLost(reason)


class AuthenticationTimeoutTests(unittest.TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_a_far_end_that_never_proves_the_key_is_dropped(self):
        self.patch(internal_service, "AUTH_TIMEOUT", 0.3)
        port = free_port()
        pkey, cert = make_tls_identity("impostor")
        factory = ImpostorFactory()
        factory.buildProtocol = lambda addr: SilentImpostor(factory.outcomes)
        listening = reactor.listenSSL(port, factory, ssl.CertificateOptions(privateKey=pkey, certificate=cert),
                                      interface="127.0.0.2")
        self.addCleanup(listening.stopListening)
        alerts = FakeAlerts()
        service = InternalService(reactor, config_with_port(port), "srv1", "inc-srv1", FakeController("srv1"),
                                  alerts)
        service.startService()
        self.addCleanup(service.stopService)
        deadline = reactor.seconds() + 5
        while not (alerts.ids("nm") and factory.outcomes) and reactor.seconds() < deadline:
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertIn(80, alerts.ids("nm"))
        # The client gave up on the connection (it reconnects later and tries again).
        self.assertEqual(factory.outcomes[0][0], "lost")
        self.assertEqual(service.connected_servers(), [])
