"""Tests for the alert codec (cpro.protocols.alertsync) and the alert log service."""

import json
import os
import socket
import struct
import syslog

from twisted.internet import defer, error
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from cpro.cluster.states import Level
from cpro.config.model import ClusterConfig, Device, OSActionCommands, Ports, ServerConfig
from cpro.interfaces import IAlertSink
from cpro.protocols.alertsync import (
    MAX_PACKET,
    Alert,
    AlertSyncProtocol,
    ForeignCluster,
    MalformedAlert,
    Unauthenticated,
    decode_alert,
    encode_alert,
)
from cpro.services.alerts import AlertBindError, AlertLog, syslog_line

KEY = b"0123456789abcdef0123456789abcdef"


def make_config(ports=(29003, 29003), addresses=("127.0.0.1", "127.0.0.2"), max_bytes=1_000_000,
                backups=5, name="demo", key=KEY):
    servers = tuple(
        ServerConfig(
            name=f"srv{i + 1}",
            priority=i,
            devices=(Device(0, "lan", address),),
            ports=Ports(alert=port),
            address=address,
        )
        for i, (address, port) in enumerate(zip(addresses, ports))
    )
    return ClusterConfig(
        name=name,
        key=key,
        hb_interval=3.0,
        hb_timeout=90.0,
        startup_sync_wait=300.0,
        config_download_wait=60.0,
        ports=Ports(),
        servers=servers,
        heartbeats=(),
        groups=(),
        resources=(),
        os_actions=OSActionCommands(),
        alert_log_max_bytes=max_bytes,
        alert_log_backups=backups,
    )


def free_udp_port(address):
    """A UDP port free on address now (the test binds it right after)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((address, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def sample_alert(**overrides):
    fields = dict(time=1700000000.25, server="srv1", module="nm", event_id=1, level=Level.INFO,
                  message="Server srv1 has started.", origin_seq=7)
    fields.update(overrides)
    return Alert(**fields)


class CodecTests(unittest.SynchronousTestCase):
    def test_round_trip(self):
        alert = sample_alert(message="Grüße \"quoted\" {braces}\nnext line")
        packet = encode_alert(alert, "tok1", "demo", KEY)
        decoded, token = decode_alert(packet, "demo", KEY)
        self.assertEqual(decoded, alert)
        self.assertEqual(token, "tok1")
        self.assertEqual(decoded.level, Level.INFO)

    def test_cluster_name_in_clear(self):
        packet = encode_alert(sample_alert(), "tok1", "demo", KEY)
        self.assertEqual(packet[:4], b"CPAL")
        self.assertIn(b"demo", packet[:12])

    def test_tampered_body_is_unauthenticated(self):
        packet = bytearray(encode_alert(sample_alert(), "tok1", "demo", KEY))
        i = packet.index(b"srv1")
        packet[i + 3] = ord("9")
        self.assertRaises(Unauthenticated, decode_alert, bytes(packet), "demo", KEY)

    def test_tampered_tag_is_unauthenticated(self):
        packet = bytearray(encode_alert(sample_alert(), "tok1", "demo", KEY))
        packet[-1] ^= 0xFF
        self.assertRaises(Unauthenticated, decode_alert, bytes(packet), "demo", KEY)

    def test_wrong_key_is_unauthenticated(self):
        packet = encode_alert(sample_alert(), "tok1", "demo", b"another key")
        self.assertRaises(Unauthenticated, decode_alert, packet, "demo", KEY)

    def test_foreign_cluster(self):
        packet = encode_alert(sample_alert(), "tok1", "other", KEY)
        e = self.assertRaises(ForeignCluster, decode_alert, packet, "demo", KEY)
        self.assertEqual(e.cluster_name, "other")

    def test_malformed(self):
        good = encode_alert(sample_alert(), "tok1", "demo", KEY)
        for bad in (b"", b"CPAL", b"XXXX" + good[4:], good[:-1], good + b"x",
                    good[:4] + b"\x02" + good[5:], b"\x00" * (MAX_PACKET + 1)):
            self.assertRaises(MalformedAlert, decode_alert, bad, "demo", KEY)

    GOOD = {"time": 1.0, "server": "srv1", "module": "nm", "id": 1, "level": "INFO",
            "message": "m", "seq": 1, "token": "t"}

    def _signed(self, body):
        import hashlib
        import hmac
        head = b"CPAL" + bytes([1, 4]) + b"demo" + struct.pack("!H", len(body)) + body
        return head + hmac.new(KEY, head, hashlib.sha256).digest()

    def test_authenticated_but_bad_fields_are_malformed(self):
        good = {"time": 1.0, "server": "srv1", "module": "nm", "id": 1, "level": "INFO",
                "message": "m", "seq": 1, "token": "t"}
        self.assertEqual(decode_alert(self._signed(json.dumps(good).encode()), "demo", KEY)[1], "t")
        for change in ({"level": "DEBUG"}, {"id": -1}, {"id": True}, {"seq": "1"},
                       {"time": float("inf")}, {"server": ""}, {"message": None}):
            body = json.dumps(dict(good, **change)).encode()
            self.assertRaises(MalformedAlert, decode_alert, self._signed(body), "demo", KEY)
        self.assertRaises(MalformedAlert, decode_alert, self._signed(b"[1]"), "demo", KEY)
        self.assertRaises(MalformedAlert, decode_alert, self._signed(b"\xff{"), "demo", KEY)

    def test_deeply_nested_body_is_malformed(self):
        # json.loads raises RecursionError past the interpreter's depth limit.
        for body in (b"[" * 2000 + b"]" * 2000, b'{"time":' + b"[" * 1900 + b"]" * 1900 + b"}"):
            packet = self._signed(body)
            self.assertLessEqual(len(packet), MAX_PACKET)
            self.assertRaises(MalformedAlert, decode_alert, packet, "demo", KEY)

    def test_time_too_large_for_a_float_is_malformed(self):
        # float(10**400) raises OverflowError.
        body = json.dumps(dict(self.GOOD, time=10**400)).encode()
        self.assertRaises(MalformedAlert, decode_alert, self._signed(body), "demo", KEY)

    def test_integers_past_64_bits_are_malformed(self):
        for key in ("id", "seq"):
            body = json.dumps(dict(self.GOOD, **{key: 2**63})).encode()
            self.assertRaises(MalformedAlert, decode_alert, self._signed(body), "demo", KEY)
        body = json.dumps(dict(self.GOOD, id=2**63 - 1, seq=2**63 - 1)).encode()
        self.assertEqual(decode_alert(self._signed(body), "demo", KEY)[0].origin_seq, 2**63 - 1)

    def test_number_with_too_many_digits_is_malformed(self):
        # int() refuses more than sys.get_int_max_str_digits() digits (ValueError).
        body = b'{"time":1,"id":' + b"9" * 4000 + b"}"
        self.assertRaises(MalformedAlert, decode_alert, self._signed(body), "demo", KEY)

    def test_text_that_is_not_utf8_encodable_is_malformed(self):
        # A lone surrogate decodes from JSON but cannot be written to the log as UTF-8.
        for key in ("server", "module", "message", "token"):
            body = json.dumps(dict(self.GOOD, **{key: "a\udcff"})).encode()
            self.assertRaises(MalformedAlert, decode_alert, self._signed(body), "demo", KEY)

    def test_details_from_the_wire_are_ignored(self):
        # Details stay in the log of the server that raised the alert.
        body = json.dumps(dict(self.GOOD, details={"a": [[[1]]]})).encode()
        alert, _ = decode_alert(self._signed(body), "demo", KEY)
        self.assertEqual(alert.details, {})

    def test_long_message_is_truncated_to_fit(self):
        alert = sample_alert(message="é\"" * 5000)
        packet = encode_alert(alert, "tok1", "demo", KEY)
        self.assertLessEqual(len(packet), MAX_PACKET)
        decoded, _ = decode_alert(packet, "demo", KEY)
        self.assertTrue(decoded.message.endswith("..."))
        self.assertTrue(alert.message.startswith(decoded.message[:-3]))


class ProtocolTests(unittest.SynchronousTestCase):
    def test_counts_and_drops_bad_packets(self):
        received = []
        proto = AlertSyncProtocol("demo", KEY, lambda *a: received.append(a))
        proto.datagramReceived(encode_alert(sample_alert(), "t", "demo", KEY), ("127.0.0.2", 1))
        proto.datagramReceived(b"garbage", ("127.0.0.2", 1))
        proto.datagramReceived(encode_alert(sample_alert(), "t", "demo", b"bad"), ("127.0.0.2", 1))
        proto.datagramReceived(encode_alert(sample_alert(), "t", "other", KEY), ("127.0.0.2", 1))
        self.assertEqual(len(received), 1)
        self.assertEqual(received[0][1], "t")
        self.assertEqual(
            {k: proto.counters[k] for k in ("received", "malformed", "unauthenticated", "foreign")},
            {"received": 1, "malformed": 1, "unauthenticated": 1, "foreign": 1},
        )
        self.flushLoggedErrors()

    def test_hostile_bodies_are_counted_as_malformed_not_raised(self):
        received = []
        proto = AlertSyncProtocol("demo", KEY, lambda *a: received.append(a))
        signed = CodecTests._signed
        good = CodecTests.GOOD
        bodies = (b"[" * 2000 + b"]" * 2000, json.dumps(dict(good, time=10**400)).encode(),
                  json.dumps(dict(good, message="\udcff")).encode())
        for body in bodies:
            proto.datagramReceived(signed(None, body), ("127.0.0.2", 1))
        self.assertEqual(received, [])
        self.assertEqual(proto.counters["malformed"], len(bodies))
        self.assertEqual(proto.counters["received"], 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_handler_error_is_contained(self):
        def boom(*a):
            raise RuntimeError("disk full")

        proto = AlertSyncProtocol("demo", KEY, boom)
        proto.datagramReceived(encode_alert(sample_alert(), "t", "demo", KEY), ("127.0.0.2", 1))
        self.assertEqual(proto.counters["handler_errors"], 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FakeUDPPort:
    def __init__(self, port, protocol, interface):
        self.port, self.protocol, self.interface = port, protocol, interface
        self.sent = []
        self.stopped = False

    def write(self, data, addr):
        self.sent.append((data, addr))

    def stopListening(self):
        self.stopped = True
        return defer.succeed(None)


class UDPMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock does not do UDP; this one records ports and writes."""

    def __init__(self, fail_bind=False):
        super().__init__()
        self.udp_ports = []
        self.fail_bind = fail_bind

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        if self.fail_bind:
            raise error.CannotListenError(interface, port, OSError(98, "Address already in use"))
        p = FakeUDPPort(port, protocol, interface)
        self.udp_ports.append(p)
        return p


class AlertLogTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        self.reactor = UDPMemoryReactor()
        self.reactor.advance(1700000000)
        self.syslog = []
        self.config = make_config(ports=(29003, 29013))

    def make_log(self, token="inc1", config=None, reactor=None, local="srv1"):
        log = AlertLog(reactor or self.reactor, config or self.config, local, self.dir, token,
                       syslog=lambda prio, line: self.syslog.append((prio, line)))
        return log

    def started(self, **kw):
        log = self.make_log(**kw)
        log.startService()
        self.addCleanup(lambda: log.running and log.stopService())
        return log

    def read_lines(self, name="alert.log"):
        with open(os.path.join(self.dir, name)) as f:
            return [json.loads(line) for line in f]

    def test_provides_interface(self):
        verifyObject(IAlertSink, self.make_log())

    def test_emit_records_everywhere(self):
        log = self.started()
        port = self.reactor.udp_ports[0]
        self.assertEqual((port.port, port.interface), (29003, "127.0.0.1"))
        log.emit("rc", 30, Level.ERROR, "Activating exec1 resource has failed.", resource="exec1")

        [line] = self.read_lines()
        self.assertEqual(line["server"], "srv1")
        self.assertEqual(line["module"], "rc")
        self.assertEqual(line["id"], 30)
        self.assertEqual(line["level"], "ERROR")
        self.assertEqual(line["time"], 1700000000)
        self.assertEqual(line["details"], {"resource": "exec1"})
        self.assertEqual(self.syslog, [
            (syslog.LOG_ERR, "<type: rc><event: 30> Activating exec1 resource has failed.")])
        [(packet, addr)] = port.sent
        self.assertEqual(addr, ("127.0.0.2", 29013))
        alert, token = decode_alert(packet, "demo", KEY)
        self.assertEqual((alert.module, alert.event_id, alert.origin_seq, token), ("rc", 30, 1, "inc1"))
        [recent] = log.recent()
        self.assertEqual(recent.message, "Activating exec1 resource has failed.")
        self.assertEqual(recent.level, Level.ERROR)
        self.assertEqual(log.counters()["sent"], 1)

    def test_level_strings_and_syslog_priorities(self):
        log = self.started()
        log.emit("nm", 1, "info", "a")
        log.emit("nm", 2, "WARNING", "b")
        self.assertEqual([p for p, _ in self.syslog], [syslog.LOG_INFO, syslog.LOG_WARNING])
        self.assertRaises(ValueError, log.emit, "nm", 3, "LOUD", "c")

    def test_syslog_disabled_and_failing(self):
        log = AlertLog(self.reactor, self.config, "srv1", self.dir, "t", syslog=False)
        log.emit("nm", 1, Level.INFO, "quiet")
        self.assertEqual(len(log.recent()), 1)

        def broken(prio, line):
            raise OSError("no /dev/log")

        log = AlertLog(self.reactor, self.config, "srv1", self.dir, "t", syslog=broken)
        log.emit("nm", 1, Level.INFO, "still recorded")
        self.assertEqual(log.counters()["syslog_errors"], 1)
        self.assertEqual(len(self.read_lines()), 2)
        self.flushLoggedErrors(OSError)

    def test_emit_before_start_is_recorded_not_sent(self):
        log = self.make_log()
        log.emit("pm", 1, Level.INFO, "Starting the cluster daemon...")
        self.assertEqual(len(self.read_lines()), 1)
        log.startService()
        self.addCleanup(log.stopService)
        self.assertEqual([a.message for a in log.recent()], ["Starting the cluster daemon..."])
        self.assertEqual(self.reactor.udp_ports[0].sent, [])

    def test_peer_alerts_stored_and_deduplicated(self):
        log = self.started()
        proto = self.reactor.udp_ports[0].protocol
        seen = []
        log.add_observer(seen.append)
        peer_alert = sample_alert(server="srv2", module="nm", event_id=2, origin_seq=1)
        packet = encode_alert(peer_alert, "peer-inc", "demo", KEY)
        proto.datagramReceived(packet, ("127.0.0.2", 29013))
        proto.datagramReceived(packet, ("127.0.0.2", 29013))
        # Same seq from a new incarnation of the peer is a different alert.
        proto.datagramReceived(encode_alert(peer_alert, "peer-inc2", "demo", KEY), ("127.0.0.2", 1))
        self.assertEqual([(a.server, a.origin_seq) for a in log.recent()], [("srv2", 1), ("srv2", 1)])
        self.assertEqual(len(seen), 2)
        self.assertEqual(log.counters()["duplicate"], 1)
        self.assertEqual(len(self.read_lines()), 2)
        self.assertEqual(self.syslog, [], "peer alerts are not re-sent to the local syslog")

    def test_unknown_and_own_server_dropped(self):
        log = self.started()
        proto = self.reactor.udp_ports[0].protocol
        proto.datagramReceived(encode_alert(sample_alert(server="srv9"), "x", "demo", KEY), ("127.0.0.9", 1))
        proto.datagramReceived(encode_alert(sample_alert(server="srv1"), "x", "demo", KEY), ("127.0.0.9", 1))
        proto.datagramReceived(b"junk", ("127.0.0.9", 1))
        self.assertEqual(log.recent(), [])
        c = log.counters()
        self.assertEqual((c["unknown_server"], c["duplicate"], c["malformed"]), (1, 1, 1))
        self.flushLoggedErrors()

    def test_rotation(self):
        config = make_config(max_bytes=400, backups=2)
        log = self.started(config=config)
        for i in range(40):
            log.emit("nm", 1, Level.INFO, f"message number {i}")
        files = sorted(os.listdir(self.dir))
        self.assertEqual(files, ["alert.log", "alert.log.1", "alert.log.2"])
        self.assertLessEqual(os.path.getsize(os.path.join(self.dir, "alert.log")), 400 + 300)
        self.assertEqual(self.read_lines()[-1]["message"], "message number 39")
        self.assertEqual(len(log.recent(1000)), 40)

    def test_recent_after_restart_reads_the_file(self):
        config = make_config(max_bytes=2000, backups=3)
        log = self.started(config=config)
        for i in range(30):
            log.emit("nm", 1, Level.WARNING, f"m{i}")
        proto = self.reactor.udp_ports[0].protocol
        peer_packet = encode_alert(sample_alert(server="srv2", origin_seq=5), "peer", "demo", KEY)
        proto.datagramReceived(peer_packet, ("127.0.0.2", 1))
        self.successResultOf(log.stopService())
        self.assertTrue(self.reactor.udp_ports[0].stopped)
        self.assertTrue(os.path.exists(os.path.join(self.dir, "alert.log.1")))

        # A torn last line (crash mid-write) is skipped.
        with open(os.path.join(self.dir, "alert.log"), "a") as f:
            f.write('{"time": 1, "serv')
        again = self.started(token="inc2", config=config)
        recent = again.recent(1000)
        self.assertEqual([a.message for a in recent[:30]], [f"m{i}" for i in range(30)])
        self.assertEqual(recent[-1].server, "srv2")
        self.assertEqual(recent[0].level, Level.WARNING)
        self.assertEqual([a.message for a in again.recent(2)], ["m29", "Server srv1 has started."])
        self.assertEqual(again.counters()["bad_log_lines"], 1)
        # The dedup memory survives the restart too.
        self.reactor.udp_ports[1].protocol.datagramReceived(peer_packet, ("127.0.0.2", 1))
        self.assertEqual(again.counters()["duplicate"], 1)
        # A fresh incarnation numbers its own alerts from 1 again.
        self.assertEqual(again.emit("nm", 1, Level.INFO, "x").origin_seq, 1)

    def test_recent_limits(self):
        log = self.started()
        for i in range(1200):
            log.emit("nm", 1, Level.INFO, str(i))
        self.assertEqual(len(log.recent(5000)), 1000)
        self.assertEqual(log.recent(1000)[0].message, "200")
        self.assertEqual([a.message for a in log.recent(2)], ["1198", "1199"])
        self.assertEqual(log.recent(0), [])
        self.assertEqual(len(log.recent()), 100)

    def test_bind_failure_names_address_and_port(self):
        log = self.make_log(reactor=UDPMemoryReactor(fail_bind=True))
        e = self.assertRaises(AlertBindError, log.startService)
        self.assertIn("127.0.0.1:29003", str(e))
        self.assertFalse(log.running)

    def test_unknown_local_server(self):
        self.assertRaises(ValueError, AlertLog, self.reactor, self.config, "nobody", self.dir, "t")

    def test_send_error_counted(self):
        log = self.started()

        def fail(data, addr):
            raise OSError(101, "Network is unreachable")

        self.reactor.udp_ports[0].write = fail
        log.emit("nm", 1, Level.INFO, "x")
        self.assertEqual(log.counters()["send_errors"], 1)
        self.assertEqual(len(log.recent()), 1)

    def test_emit_after_stop_still_recorded(self):
        log = self.started()
        self.successResultOf(log.stopService())
        log.emit("pm", 2, Level.INFO, "Shutting down the cluster daemon...")
        self.assertEqual(self.read_lines()[-1]["message"], "Shutting down the cluster daemon...")
        self.assertIsNone(log._file)

    def test_syslog_line(self):
        self.assertEqual(syslog_line(sample_alert()), "<type: nm><event: 1> Server srv1 has started.")


class RealUDPTests(unittest.TestCase):
    """Two alert logs on 127.0.0.1 and 127.0.0.2 exchanging real datagrams."""

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor
        ports = (free_udp_port("127.0.0.1"), free_udp_port("127.0.0.2"))
        self.config = make_config(ports=ports)
        self.logs = []
        for i, local in enumerate(("srv1", "srv2")):
            log = AlertLog(reactor, self.config, local, os.path.join(self.mktemp()), f"inc{i}",
                           syslog=False)
            log.startService()
            self.addCleanup(log.stopService)
            self.logs.append(log)

    def arrival(self, log, count):
        """A Deferred firing when log holds `count` alerts."""
        d = defer.Deferred()

        def check(_alert=None):
            if len(log.recent(1000)) >= count and not d.called:
                log.remove_observer(check)
                d.callback(log.recent(1000))

        log.add_observer(check)
        check()
        timeout = self.reactor.callLater(10, lambda: d.called or d.errback(AssertionError("no alert")))
        d.addBoth(lambda r: (timeout.active() and timeout.cancel(), r)[1])
        return d

    @defer.inlineCallbacks
    def test_alerts_shared_both_ways(self):
        srv1, srv2 = self.logs
        srv1.emit("nm", 1, Level.INFO, "Server srv1 has started.")
        received = yield self.arrival(srv2, 1)
        self.assertEqual([(a.server, a.message) for a in received], [("srv1", "Server srv1 has started.")])

        srv2.emit("rc", 92, Level.ERROR, "Group failover1 has started on more than one server.")
        received = yield self.arrival(srv1, 2)
        self.assertEqual([a.server for a in received], ["srv1", "srv2"])
        self.assertEqual(received[1].event_id, 92)
        self.assertEqual(srv1.counters()["received"], 1)

    @defer.inlineCallbacks
    def test_replayed_datagram_is_dropped(self):
        srv1, srv2 = self.logs
        packet = encode_alert(sample_alert(server="srv1", origin_seq=1), "inc0", "demo", KEY)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.bind(("127.0.0.1", 0))
        target = ("127.0.0.2", self.config.server("srv2").ports.alert)
        sender.sendto(packet, target)
        sender.sendto(packet, target)
        sender.sendto(b"not an alert", target)
        # A marker sent last: once it is in, the earlier datagrams were processed.
        marker = encode_alert(sample_alert(server="srv1", origin_seq=2, message="marker"), "inc0", "demo", KEY)
        sender.sendto(marker, target)
        received = yield self.arrival(srv2, 2)
        self.assertEqual([a.message for a in received], ["Server srv1 has started.", "marker"])
        self.assertEqual(srv2.counters()["duplicate"], 1)
        self.assertEqual(srv2.counters()["malformed"], 1)
        self.flushLoggedErrors()


class BoundsTests(unittest.SynchronousTestCase):
    def test_huge_message_is_bounded_and_reloadable(self):
        directory = self.mktemp()
        reactor = UDPMemoryReactor()
        log = AlertLog(reactor, make_config(), "srv1", directory, "t", syslog=False)
        log.emit("verylongmodulename" * 4, 1, Level.INFO, "x" * 10000)
        again = AlertLog(reactor, make_config(), "srv1", directory, "t2", syslog=False)
        again.startService()
        self.addCleanup(again.stopService)
        [alert] = again.recent()
        self.assertEqual(len(alert.message), 4096)
        self.assertEqual(len(alert.module), 32)
