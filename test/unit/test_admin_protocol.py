"""Tests for the admin line protocol (cpro.protocols.admin)."""

import json
import os
import shutil
import socket
import stat
import tempfile

from twisted.internet import defer
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from cpro.protocols.admin import (
    AdminAddressInUse,
    AdminEndpointError,
    AdminError,
    AdminFactory,
    AdminProtocol,
    AdminRequest,
    IAdminHandler,
    listen_admin,
)
from cpro.testing import FakeAdminHandler

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
        for bad in ("alerts 0", "alerts 1001", "alerts x", "alerts 1 2"):
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


class FactoryTests(unittest.SynchronousTestCase):
    def test_connection_limit(self):
        factory = AdminFactory(FakeHandler())
        protos = []
        for _ in range(AdminFactory.MAX_CONNECTIONS):
            p = factory.buildProtocol(None)
            p.makeConnection(StringTransport())
            protos.append(p)
        refused = factory.buildProtocol(None)
        t = StringTransport()
        refused.makeConnection(t)
        self.assertEqual(t.value(), b"ERR too many admin connections\n")
        self.assertTrue(t.disconnecting)
        protos[0].connectionLost(None)
        self.assertIsInstance(factory.buildProtocol(None), AdminProtocol)


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
