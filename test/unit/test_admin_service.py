"""Tests for the admin endpoint (cpro.services.admin): sessions answering the
line protocol through a handler, their bounds, listening, the service, and
the daemon's handler. The codec alone: test_admin_codec."""

import io
import json
import os
import shutil
import socket
import stat
import tempfile

from twisted.internet import defer, reactor, task, threads
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.trial import unittest
from zope.interface.verify import verifyClass, verifyObject

from cpro import exitcodes
from cpro.cli import clpstat
from cpro.interfaces import IAdminHandler
from cpro.protocols import admin as admin_module
from cpro.protocols.admin import AdminError, AdminRequest
from cpro.services.admin import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    AdminAddressInUse,
    AdminEndpointError,
    AdminFactory,
    AdminHandler,
    AdminProtocol,
    AdminService,
    listen_admin,
)
from cpro.services.node import ClusterNode
from cpro.testing.fakes import FakeAdminHandler, make_config

STATUS = {
    "cluster": {"name": "demo", "status": "Online"},
    "local": "srv1",
    "servers": [
        {"name": "srv1", "status": "Online", "priority": 0,
         "heartbeats": [{"name": "lanhb1", "status": "Normal"}]},
        {"name": "srv2", "status": "Online", "priority": 1,
         "heartbeats": [{"name": "lanhb1", "status": "Normal"}]},
    ],
    "groups": [{"name": "failover1", "status": "Online", "current": "srv1", "resources": ["exec1"]}],
    "resources": [{"name": "exec1", "type": "exec", "status": "Online", "current": "srv1",
                   "group": "failover1"}],
    "monitors": [],
}


ALERTS = [{"time": 1700000000.5, "server": "srv1", "module": "nm", "id": 1, "level": "INFO",
           "message": "Server srv1 has started."}]


def FakeHandler():
    return FakeAdminHandler(STATUS, ALERTS)


class ProtocolTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.handler = FakeHandler()
        self.proto = AdminProtocol(self.handler)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def send(self, line):
        self.proto.dataReceived(line.encode("utf-8") + b"\n")

    def output(self):
        value = self.transport.value().decode("utf-8")
        self.transport.clear()
        return value

    def json_reply(self, line):
        self.send("json " + line)
        out = self.output()
        self.assertEqual(out.count("\n"), 1, out)
        return json.loads(out)

    def test_handler_interface(self):
        verifyObject(IAdminHandler, self.handler)

    def test_status_text(self):
        self.send("status")
        out = self.output()
        self.assertIn("CLUSTER STATUS", out)
        self.assertIn("*srv1", out)
        self.assertIn("failover1", out)
        self.assertTrue(out.endswith("\nOK\n"))
        self.assertEqual(self.handler.requests, [AdminRequest("status")])

    def test_status_views(self):
        self.send("status groupmap")
        self.assertIn("server0 [o] : failover1[o]", self.output())
        self.send("status heartbeats")
        self.assertIn("[on server1 : Online]", self.output())
        self.send("status nonsense")
        self.assertEqual(self.output(), "ERR usage: status [detail|groupmap|heartbeats|monitors]\n")

    def test_status_json(self):
        reply = self.json_reply("status")
        self.assertEqual(reply["result"], {"code": 0, "message": ""})
        self.assertEqual(reply["cluster"], {"name": "demo", "status": "Online"})
        self.assertEqual(reply["groups"][0]["current"], "srv1")

    def test_crlf(self):
        self.proto.dataReceived(b"json status\r\n")
        self.assertEqual(json.loads(self.output())["result"]["code"], 0)

    def test_alerts(self):
        self.send("alerts")
        out = self.output()
        self.assertIn("Server srv1 has started.", out)
        self.assertTrue(out.endswith("OK\n"))
        self.send("alerts 5")
        self.output()
        self.assertEqual([r.count for r in self.handler.requests], [100, 5])
        for bad in ("alerts 0", "alerts 1001", "alerts x", "alerts 1 2", "alerts \u00b2", "alerts 0x10"):
            self.send(bad)
            self.assertTrue(self.output().startswith("ERR usage: alerts [N]"), bad)

    def test_alerts_json(self):
        reply = self.json_reply("alerts 3")
        self.assertEqual(reply["alerts"][0]["module"], "nm")

    def test_cluster_commands(self):
        self.send("cluster start --all")
        self.assertEqual(self.output(), "OK\n")
        self.send("cluster suspend")
        self.output()
        self.assertEqual(self.handler.requests, [
            AdminRequest("cluster", action="start", all=True),
            AdminRequest("cluster", action="suspend", all=False),
        ])
        for bad in ("cluster", "cluster jump", "cluster start --server srv1", "cluster start extra"):
            self.send(bad)
            self.assertIn("usage: cluster start|stop|restart|suspend|resume [--all]", self.output())

    def test_per_server_results_in_text(self):
        self.handler.responses.append({"servers": [
            {"name": "srv1", "code": 0, "message": ""},
            {"name": "srv2", "code": 1, "message": "server is not reachable"}]})
        self.send("cluster stop --all")
        self.assertEqual(self.output(), "Stop srv1 : Command succeeded.\n"
                                        "Stop srv2 : server is not reachable\nOK\n")

    def test_message_lines(self):
        self.handler.responses.append({"message": "failover1 moved\nto srv2"})
        self.send("group move failover1")
        self.assertEqual(self.output(), "failover1 moved\nto srv2\nOK\n")

    def test_group_commands(self):
        self.send("group start")
        self.send("group move failover1 --server srv2")
        self.send("group stop 'my group' --server=srv1")
        self.assertEqual(self.output(), "OK\nOK\nOK\n")
        self.assertEqual(self.handler.requests, [
            AdminRequest("group", action="start"),
            AdminRequest("group", action="move", target="failover1", server="srv2"),
            AdminRequest("group", action="stop", target="my group", server="srv1"),
        ])

    def test_group_usage(self):
        usage = "ERR usage: group start|stop|move [GROUP] [--server SERVER]\n"
        for bad in ("group", "group fly", "group start a b"):
            self.send(bad)
            self.assertEqual(self.output(), usage, bad)
        self.send("group start a --server")
        self.assertEqual(self.output(), "ERR option --server needs a value; " + usage[4:])
        self.send("group start a --force")
        self.assertEqual(self.output(),
                         "ERR unknown option --force; usage: group start|stop|move [GROUP] [--server SERVER]\n")
        self.assertEqual(self.handler.requests, [])

    def test_resource_commands(self):
        self.send("resource stop exec1 --server srv2")
        self.assertEqual(self.output(), "OK\n")
        self.assertEqual(self.handler.requests,
                         [AdminRequest("resource", action="stop", target="exec1", server="srv2")])
        self.send("resource start")
        self.assertEqual(self.output(), "ERR usage: resource start|stop RESOURCE [--server SERVER]\n")
        reply = self.json_reply("resource move exec1")
        self.assertEqual(reply["result"]["code"], 2)
        self.assertIn("usage: resource", reply["result"]["message"])

    def test_unknown_verb(self):
        self.send("xyz 1 2")
        self.assertEqual(self.output(), "ERR unknown command 'xyz' (try 'help')\n")
        reply = self.json_reply("xyz")
        self.assertEqual(reply, {"result": {"code": 2, "message": "unknown command 'xyz' (try 'help')"}})

    def test_syntax_errors(self):
        self.send("group start 'unterminated")
        self.assertTrue(self.output().startswith("ERR syntax error"))
        self.proto.dataReceived(b"status \xff\n")
        self.assertEqual(self.output(), "ERR line is not valid UTF-8\n")
        self.send("json")
        self.assertEqual(json.loads(self.output())["result"]["code"], 2)
        self.send("")
        self.assertEqual(self.output(), "")
        self.assertFalse(self.transport.disconnecting)

    def test_parser_bug_is_answered_not_raised(self):
        def broken(words):
            raise ValueError("parser bug")

        self.patch(admin_module, "parse_request", broken)
        self.send("status")
        self.assertEqual(self.output(), "ERR internal error: the request could not be parsed\n")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.json_reply("status")["result"],
                         {"code": 3, "message": "internal error: the request could not be parsed"})
        self.flushLoggedErrors(ValueError)
        self.assertFalse(self.transport.disconnecting)

    def test_help_and_quit(self):
        self.send("help")
        out = self.output()
        self.assertIn("group start|stop|move [GROUP] [--server SERVER]", out)
        self.assertTrue(out.endswith("OK\n"))
        self.assertIn("group start|stop|move [GROUP] [--server SERVER]",
                      " ".join(self.json_reply("help")["help"]))
        self.send("quit")
        self.assertEqual(self.output(), "OK\n")
        self.assertTrue(self.transport.disconnecting)
        self.send("status")
        self.assertEqual(self.output(), "")

    def test_admin_error(self):
        self.handler.responses.append(AdminError("group failover1 is already online on srv1"))
        self.send("group start failover1")
        self.assertEqual(self.output(), "ERR group failover1 is already online on srv1\n")
        self.handler.responses.append(AdminError("refused: recovery in progress", code=7))
        self.assertEqual(self.json_reply("group stop failover1"),
                         {"result": {"code": 7, "message": "refused: recovery in progress"}})

    def test_handler_exception_keeps_connection(self):
        self.handler.responses.append(RuntimeError("boom"))
        self.send("cluster stop")
        self.assertEqual(self.output(), "ERR internal error: boom\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(self.transport.disconnecting)
        self.send("status")
        self.assertTrue(self.output().endswith("OK\n"))

    def test_handler_failure_json(self):
        self.handler.responses.append(defer.fail(KeyError("x")))
        reply = self.json_reply("status")
        self.assertEqual(reply["result"]["code"], 3)
        self.assertTrue(reply["result"]["message"].startswith("internal error:"))
        self.flushLoggedErrors(KeyError)

    def test_bad_payload(self):
        self.handler.responses.append(["not", "a", "dict"])
        self.send("status")
        self.assertEqual(self.output(), "ERR internal error: handler returned list, expected dict\n")
        self.flushLoggedErrors(TypeError)
        self.handler.responses.append({"servers": "garbage"})
        self.send("status")
        self.assertTrue(self.output().startswith("ERR internal error"))
        self.flushLoggedErrors()

    def test_deferred_results_in_order(self):
        first, second = defer.Deferred(), defer.Deferred()
        self.handler.responses += [first, second]
        self.send("json group move failover1")
        self.send("json group stop failover1")
        self.send("json status")
        self.assertEqual(self.output(), "")
        self.assertEqual(len(self.handler.requests), 1, "next request waits for the first")
        first.callback({"message": "moved"})
        out = self.output()
        self.assertEqual(json.loads(out)["message"], "moved")
        self.assertEqual(len(self.handler.requests), 2)
        second.errback(AdminError("stop failed"))
        lines = self.output().splitlines()
        self.assertEqual([json.loads(line)["result"]["code"] for line in lines], [1, 0])
        self.assertEqual(json.loads(lines[1])["cluster"]["name"], "demo")

    def test_connection_lost_while_pending(self):
        pending = defer.Deferred()
        self.handler.responses.append(pending)
        self.send("group move failover1")
        self.proto.connectionLost(None)
        self.transport.clear()
        pending.callback({})
        self.assertEqual(self.transport.value(), b"")

    def test_line_too_long(self):
        self.proto.dataReceived(b"status " + b"x" * 5000 + b"\n")
        self.assertEqual(self.output(), "ERR line too long (max 4096 bytes)\n")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.handler.requests, [])

    def test_unterminated_long_line(self):
        self.proto.dataReceived(b"x" * 4097)
        self.assertEqual(self.output(), "ERR line too long (max 4096 bytes)\n")
        self.assertTrue(self.transport.disconnecting)

    def test_line_at_limit_is_accepted(self):
        line = b"status" + b" " * (4096 - 6)
        self.proto.dataReceived(line + b"\n")
        self.assertTrue(self.output().endswith("OK\n"))

    def test_too_many_pending(self):
        self.handler.responses.append(defer.Deferred())
        self.proto.dataReceived(b"status\n" * (AdminProtocol.MAX_PENDING + 2))
        self.assertIn("ERR too many pending requests", self.output())
        self.assertTrue(self.transport.disconnecting)

    def test_enum_values_in_json(self):
        from cpro.cluster.states import GroupState

        self.handler.responses.append({"groups": [{"name": "g", "status": GroupState.ONLINE_PENDING}]})
        self.assertEqual(self.json_reply("status")["groups"][0]["status"], "Online Pending")


class IdleTimeoutTests(unittest.SynchronousTestCase):
    """Issue 10: an idle admin connection is closed after the idle timeout."""

    def setUp(self):
        self.clock = task.Clock()
        self.handler = FakeHandler()
        self.proto = AdminProtocol(self.handler, clock=self.clock, idle_timeout=30.0)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.addCleanup(self.lose)

    def lose(self):
        if not self.proto._gone:
            self.proto.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idle_connection_is_closed(self):
        self.clock.advance(29.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual(self.transport.value(), b"ERR closed: no request for 30 s (idle timeout)\n")
        self.assertTrue(self.transport.disconnecting)

    def test_unflushed_close_is_aborted(self):
        # A client that does not read keeps loseConnection waiting for ever.
        self.clock.advance(30)
        self.assertFalse(getattr(self.transport, "aborted", False) or self.transport.disconnected)
        self.clock.advance(30)
        self.assertTrue(self.transport.disconnected)

    def test_request_restarts_the_timer(self):
        self.clock.advance(20)
        self.proto.dataReceived(b"status\n")
        self.clock.advance(20)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(10)
        self.assertTrue(self.transport.disconnecting)

    def test_partial_line_is_not_activity(self):
        self.clock.advance(20)
        self.proto.dataReceived(b"sta")
        self.clock.advance(10)
        self.assertTrue(self.transport.disconnecting)

    def test_request_in_progress_is_not_idle(self):
        pending = defer.Deferred()
        self.handler.responses.append(pending)
        self.proto.dataReceived(b"group move failover1\n")
        self.assertIsNone(self.proto.idle_since)
        self.clock.advance(3600)
        self.assertFalse(self.transport.disconnecting)
        pending.callback({})
        self.assertEqual(self.transport.value(), b"OK\n")
        self.assertEqual(self.proto.idle_since, 3600)
        self.clock.advance(30)
        self.assertTrue(self.transport.disconnecting)

    def test_connection_lost_cancels_the_timer(self):
        self.proto.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lost_while_busy_does_not_rearm(self):
        pending = defer.Deferred()
        self.handler.responses.append(pending)
        self.proto.dataReceived(b"group move failover1\n")
        self.proto.connectionLost(None)
        pending.callback({})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_clock_no_timer(self):
        proto = AdminProtocol(self.handler)
        proto.makeConnection(StringTransport())
        self.assertIsNone(proto._idle_call)


class FactoryTests(unittest.SynchronousTestCase):
    """Issue 10: a connection limit that always keeps room for a new client."""

    def setUp(self):
        self.clock = task.Clock()
        self.handler = FakeHandler()
        self.factory = AdminFactory(self.handler, self.clock)
        self.addCleanup(self.close_all)

    def close_all(self):
        for p in list(self.factory.sessions):
            p.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def connect(self):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def test_defaults(self):
        self.assertEqual((self.factory.idle_timeout, self.factory.max_connections), (30.0, 32))
        self.assertEqual((DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS), (30.0, 32))

    def test_oldest_idle_connection_makes_room(self):
        idle = []
        for i in range(AdminFactory(self.handler, self.clock).max_connections):
            idle.append(self.connect())
            self.clock.advance(0.5)
        idle[0][0].dataReceived(b"help\n")  # the oldest is now the most recently active
        newcomer, transport = self.connect()
        self.assertIsInstance(newcomer, AdminProtocol)
        self.assertEqual(len(self.factory.sessions), 32)
        self.assertNotIn(idle[1][0], self.factory.sessions)
        self.assertTrue(idle[1][1].disconnected, "the longest-idle connection is aborted")
        self.assertFalse(idle[0][1].disconnecting)
        newcomer.dataReceived(b"json status\n")
        self.assertEqual(json.loads(transport.value())["result"]["code"], 0)
        idle[1][0].connectionLost(None)  # the reactor reports the abort later: nothing breaks
        self.assertEqual(len(self.factory.sessions), 32)

    def test_busy_connections_are_never_evicted(self):
        for _ in range(31):
            self.handler.responses.append(defer.Deferred())
            proto, _ = self.connect()
            proto.dataReceived(b"group move failover1\n")
        idle, idle_transport = self.connect()
        newcomer, _ = self.connect()
        self.assertIsInstance(newcomer, AdminProtocol)
        self.assertTrue(idle_transport.disconnected)
        busy = [p for p in self.factory.sessions if p is not newcomer]
        self.assertTrue(all(p.idle_since is None for p in busy))

    def test_refused_when_every_connection_is_busy(self):
        for _ in range(32):
            self.handler.responses.append(defer.Deferred())
            proto, _ = self.connect()
            proto.dataReceived(b"group move failover1\n")
        refused = self.factory.buildProtocol(None)
        t = StringTransport()
        refused.makeConnection(t)
        self.assertEqual(t.value(), b"ERR too many admin connections: all 32 have a request in progress;"
                                    b" try again later\n")
        self.assertTrue(t.disconnecting)
        refused.dataReceived(b"status\n")  # what the client sent meanwhile is ignored
        refused.connectionLost(None)
        self.assertEqual(len(self.factory.sessions), 32)
        self.assertEqual(self.factory.counters["refused"], 1)

    def test_closed_connections_free_their_slot(self):
        protos = [self.connect()[0] for _ in range(32)]
        protos[5].connectionLost(None)
        self.connect()
        self.assertTrue(all(not t.disconnecting for p in self.factory.sessions for t in [p.transport]))

    def test_injected_limit_and_timeout(self):
        factory = AdminFactory(self.handler, self.clock, idle_timeout=5.0, max_connections=2)
        a = factory.buildProtocol(None)
        a.makeConnection(StringTransport())
        self.clock.advance(1)
        b = factory.buildProtocol(None)
        b.makeConnection(StringTransport())
        c = factory.buildProtocol(None)
        c.makeConnection(StringTransport())
        self.assertEqual(list(factory.sessions), [b, c])
        self.assertTrue(a.transport.disconnected)
        self.clock.advance(5)
        self.assertTrue(b.transport.disconnecting and c.transport.disconnecting)
        for p in (a, b, c):
            p.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bad_limits_refused(self):
        self.assertRaises(ValueError, AdminFactory, self.handler, self.clock, max_connections=0)
        self.assertRaises(ValueError, AdminFactory, self.handler, self.clock, idle_timeout=0)


class RealSocketTests(unittest.TestCase):
    """Issue 10 on a real UNIX socket: the limit's worth of idle clients does
    not lock clpstat out."""

    @defer.inlineCallbacks
    def setUp(self):
        base = tempfile.mkdtemp(prefix="cpro-adm-")  # AF_UNIX paths: 107 bytes at most
        self.addCleanup(shutil.rmtree, base, True)
        self.endpoint = "unix:" + os.path.join(base, "cpro.sock")
        self.port = yield listen_admin(reactor, self.endpoint, FakeHandler())
        self.addCleanup(self.port.stopListening)
        self.clients = []
        self.addCleanup(self.close_clients)

    @defer.inlineCallbacks
    def close_clients(self):
        for s in self.clients:
            s.close()
        # Abort the server sides too so the reactor is clean when the test ends.
        for proto in list(self.port.factory.sessions):
            proto.transport.abortConnection()
        yield task.deferLater(reactor, 0, lambda: None)

    @defer.inlineCallbacks
    def test_idle_clients_do_not_lock_clpstat_out(self):
        factory = self.port.factory
        for _ in range(factory.max_connections):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect(self.endpoint[5:])
            self.clients.append(s)
        out, err = io.StringIO(), io.StringIO()
        code = yield threads.deferToThread(clpstat.main, ["--admin", self.endpoint], stdout=out, stderr=err)
        self.assertEqual((code, err.getvalue()), (0, ""))
        self.assertIn("CLUSTER STATUS", out.getvalue())
        # One idle client made room; none was refused.
        self.assertEqual((factory.counters["evicted"], factory.counters["refused"]), (1, 0))


class ListenTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactor()
        # Short paths: AF_UNIX addresses are limited to 107 bytes.
        self.base = tempfile.mkdtemp(prefix="cpro-admin-")
        self.addCleanup(shutil.rmtree, self.base, True)

    def test_unix_creates_private_dir(self):
        path = os.path.join(self.base, "run", "cpro", "cpro.sock")
        self.successResultOf(listen_admin(self.reactor, f"unix:{path}", FakeHandler()))
        [(address, factory, _, mode, want_pid)] = self.reactor.unixServers
        self.assertEqual((address, mode, want_pid), (path, 0o600, False))
        self.assertIsInstance(factory, AdminFactory)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)

    def test_bare_path(self):
        path = os.path.join(self.base, "a:b.sock")
        self.successResultOf(listen_admin(self.reactor, path, FakeHandler()))
        self.assertEqual(self.reactor.unixServers[0][0], path)

    def test_stale_socket_removed(self):
        path = os.path.join(self.base, "cpro.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()  # the file stays, nobody listens: what a crashed daemon leaves
        self.successResultOf(listen_admin(self.reactor, f"unix:{path}", FakeHandler()))
        self.assertFalse(os.path.exists(path))

    def test_live_socket_refused(self):
        path = os.path.join(self.base, "cpro.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(path)
        s.listen(1)
        failure = self.failureResultOf(listen_admin(self.reactor, f"unix:{path}", FakeHandler()),
                                       AdminAddressInUse)
        self.assertIn(path, str(failure.value))
        self.assertTrue(os.path.exists(path))
        self.assertEqual(self.reactor.unixServers, [])

    def test_regular_file_refused(self):
        path = os.path.join(self.base, "cpro.sock")
        open(path, "w").close()
        self.failureResultOf(listen_admin(self.reactor, f"unix:{path}", FakeHandler()), AdminEndpointError)
        self.assertTrue(os.path.isfile(path))

    def test_path_too_long(self):
        path = os.path.join(self.base, "x" * 120 + ".sock")
        failure = self.failureResultOf(listen_admin(self.reactor, f"unix:{path}", FakeHandler()),
                                       AdminEndpointError)
        self.assertIn("too long", str(failure.value))

    def test_relative_path_refused(self):
        self.failureResultOf(listen_admin(self.reactor, "unix:cpro.sock", FakeHandler()),
                             AdminEndpointError)

    def test_tcp_loopback_only(self):
        self.successResultOf(listen_admin(self.reactor, "tcp:29099:interface=127.0.0.1", FakeHandler()))
        self.successResultOf(listen_admin(self.reactor, r"tcp6:29099:interface=\:\:1", FakeHandler()))
        self.assertEqual([(p, i) for p, _, _, i in self.reactor.tcpServers],
                         [(29099, "127.0.0.1"), (29099, "::1")])
        for refused in ("tcp:29099", "tcp:29099:interface=0.0.0.0", "tcp:29099:interface=10.0.0.1",
                        "tcp:29099:interface=example.com", "ssl:29099", "udp:1"):
            failure = self.failureResultOf(listen_admin(self.reactor, refused, FakeHandler()),
                                           AdminEndpointError)
            self.assertIn(refused.split(":")[0], str(failure.value))
        self.assertEqual(len(self.reactor.tcpServers), 2)


class AdminServiceTests(unittest.SynchronousTestCase):
    """The endpoint as a service: listen() binds, stopService closes."""

    def setUp(self):
        self.reactor = MemoryReactor()
        self.base = tempfile.mkdtemp(prefix="cpro-admin-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.path = os.path.join(self.base, "cpro.sock")
        self.handler = FakeHandler()
        self.service = AdminService(self.reactor, f"unix:{self.path}", self.handler, idle_timeout=5.0,
                                    max_connections=2)

    def test_starting_does_not_listen(self):
        self.service.startService()
        self.assertEqual((self.reactor.unixServers, self.service.port), ([], None))
        self.assertEqual(self.service.name, "admin")

    def test_listen(self):
        port = self.successResultOf(self.service.listen())
        self.assertIs(self.service.port, port)
        [(address, factory, _, mode, _)] = self.reactor.unixServers
        self.assertEqual((address, mode), (self.path, 0o600))
        self.assertIsInstance(factory, AdminFactory)
        self.assertEqual((factory.handler, factory.clock, factory.idle_timeout, factory.max_connections),
                         (self.handler, self.reactor, 5.0, 2))

    def test_listen_refused(self):
        open(self.path, "w").close()
        self.failureResultOf(self.service.listen(), AdminEndpointError)
        self.assertIsNone(self.service.port)

    def test_stop_closes_the_port(self):
        self.service.startService()
        port = self.successResultOf(self.service.listen())
        closed = defer.Deferred()
        port.stopListening = lambda: closed
        d = self.service.stopService()
        self.assertNoResult(d)
        self.assertFalse(self.service.running)
        self.assertIsNone(self.service.port)
        closed.callback(None)
        self.successResultOf(d)
        self.successResultOf(self.service.stopService())  # again: nothing left to close

    def test_stop_without_listening(self):
        self.service.startService()
        self.successResultOf(self.service.stopService())


class HandlerTests(unittest.SynchronousTestCase):
    def test_interface(self):
        verifyClass(IAdminHandler, AdminHandler)


class NodeAdminTests(unittest.SynchronousTestCase):
    """The node's admin endpoint: its handler, its place among the children,
    and the exit code when it cannot listen."""

    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="cpro-node-")
        self.addCleanup(shutil.rmtree, self.base, True)

    def node(self, endpoint):
        node = ClusterNode(MemoryReactorClock(), make_config(), "srv1", self.base, endpoint)
        node.alerts._syslog = None  # keep the host's syslog out of unit tests
        return node

    def test_admin_is_the_last_child(self):
        node = self.node("unix:" + os.path.join(self.base, "s.sock"))
        self.assertIs(node.getServiceNamed("admin"), node.admin)
        self.assertIs(list(node)[-1], node.admin)
        self.assertIsInstance(node.admin.handler, AdminHandler)
        self.assertIs(node.admin.handler.node, node)

    def test_listen_admin(self):
        path = os.path.join(self.base, "s.sock")
        node = self.node("unix:" + path)
        self.successResultOf(node.listen_admin())
        self.assertEqual(node.reactor.unixServers[0][0], path)
        self.assertIsNotNone(node.admin.port)

    def test_endpoint_in_use_is_exit_code_5(self):
        path = os.path.join(self.base, "s.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(path)
        s.listen(1)
        node = self.node("unix:" + path)
        failure = self.failureResultOf(node.listen_admin(), exitcodes.StartupError)
        self.assertEqual(failure.value.code, exitcodes.ADDRESS_IN_USE)
        self.assertTrue(str(failure.value).startswith(f"admin endpoint unix:{path}: admin socket {path} is in use"))

    def test_refused_endpoint_is_exit_code_5(self):
        node = self.node("tcp:29099")
        failure = self.failureResultOf(node.listen_admin(), exitcodes.StartupError)
        self.assertEqual(failure.value.code, exitcodes.ADDRESS_IN_USE)
        self.assertIn("loopback", str(failure.value))
