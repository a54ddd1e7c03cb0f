"""Internal communication: TLS + AMP between two InternalServices on loopback
(real sockets, real reactor), with fake controllers."""

import dataclasses
import socket

from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from cpro.cluster.controller import OperationError
from cpro.cluster.states import ClusterServiceState
from cpro.config.model import Ports
from cpro.interfaces import IPeerChannel
from cpro.services.internal import InternalService
from cpro.testing import FakeAlerts, make_config


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
