"""Unit tests for cpro.services.heartbeat.comhb: the COM (serial line) heartbeat path.

Serial lines are fakes (an opener handing out StringTransport-based lines
that deliver each other's writes); time is a task.Clock.
"""

import dataclasses

from twisted.internet import task
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from cpro.config.model import Device, HeartbeatConfig
from cpro.interfaces import IHeartbeatPath
from cpro.plugins import HEARTBEAT_KINDS
from cpro.protocols.heartbeat import HeartbeatPacket, StateDigest, encode, new_incarnation
from cpro.services.heartbeat import comhb
from cpro.services.heartbeat.comhb import COUNTERS, ComHeartbeatPath
from cpro.services.heartbeat.base import HeartbeatConfigError, HeartbeatContext
from cpro.testing.fakes import make_config

HB = HeartbeatConfig(name="comhb1", kind="comhb", priority=2, device=200, baud_rate=19200)
TTY = {"srv1": "/dev/ttyS0", "srv2": "/dev/ttyS1", "srv3": "/dev/ttyS2"}
BOOT1 = new_incarnation(1700000000.0, nonce="aaaa")
BOOT2 = new_incarnation(1700000100.0, nonce="bbbb")
DIGEST = StateDigest("0" * 64, 1, "running")
REOPEN = 1.0


def com_config(servers=("srv1", "srv2"), with_device=None, **kw):
    """A cluster whose servers in with_device (default: all) have device 200 (a tty)."""
    config = make_config(servers=servers, **kw)
    with_device = servers if with_device is None else with_device
    new_servers = tuple(
        dataclasses.replace(s, devices=s.devices + (Device(id=200, type="com", info=TTY[s.name]),))
        if s.name in with_device else s
        for s in config.servers)
    return dataclasses.replace(config, servers=new_servers, heartbeats=(HB,))


class FakeLine(StringTransport):
    """One end of a fake serial line: what is written reaches the other end's
    current line (if open); abortConnection/lose end it like a real one."""

    def __init__(self, devices, protocol, device, baud_rate):
        super().__init__()
        self.devices = devices
        self.device = device
        self.baud_rate = baud_rate
        self.closed = False
        self.fail_writes = None
        self.protocol = protocol
        protocol.makeConnection(self)

    def write(self, data):
        if self.fail_writes is not None:
            raise self.fail_writes
        super().write(data)
        if self.devices.cable_plugged:
            other = self.devices.lines.get(self.devices.other_end(self.device))
            if other is not None and not other.closed:
                other.receive(data)

    def receive(self, data):
        self.protocol.dataReceived(data)

    def lose(self, reason=None):
        """The line goes away under the path (end of file, I/O error)."""
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost(Failure(reason or ConnectionLost("Input/output error")))

    def abortConnection(self):
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost(Failure(ConnectionDone("closed")))


class FakeDevices:
    """The opener of fake serial devices; present devices open, others raise ENOENT."""

    def __init__(self, present=(), cable=("/dev/ttyS0", "/dev/ttyS1")):
        self.present = set(present)
        self.cable = cable
        self.cable_plugged = True
        self.lines = {}  # device -> latest FakeLine
        self.attempts = []

    def other_end(self, device):
        a, b = self.cable
        return b if device == a else a if device == b else None

    def open(self, protocol, device, baud_rate):
        self.attempts.append(device)
        if device not in self.present:
            raise FileNotFoundError(2, "No such file or directory", device)
        line = FakeLine(self, protocol, device, baud_rate)
        self.lines[device] = line
        return line


class PathTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.devices = FakeDevices(present=TTY.values())
        self.beats = []
        self.log_events = []
        self.patch(comhb, "log", Logger(observer=self.log_events.append))

    def tearDown(self):
        self.assertEqual(self.clock.getDelayedCalls(), [], "pending delayed calls")

    def make_path(self, local="srv1", config=None, on_beat=None, incarnation=BOOT1, start=True):
        config = config or com_config()
        path = ComHeartbeatPath(self.clock, config, local, HB, incarnation,
                                on_beat or (lambda name, packet: self.beats.append((local, name, packet))),
                                opener=self.devices.open, reopen_delay=REOPEN)
        if start:
            path.start_listening()
            self.addCleanup(path.stop_listening)
        return path

    def pair(self, config=None):
        return self.make_path("srv1", config), self.make_path("srv2", config)

    def inject(self, device, data):
        """Bytes arriving at the path whose line is device."""
        self.devices.lines[device].receive(data)

    def packet_bytes(self, seq, sender="srv2", incarnation=BOOT2, key=b"test-key",
                     cluster="testcluster"):
        return encode(HeartbeatPacket(cluster, sender, incarnation, seq, DIGEST), key)

    def logged(self, level=None):
        return [formatEvent(e) for e in self.log_events if level is None or e["log_level"] == level]


class ContractTests(PathTestCase):
    def test_provides_the_interface(self):
        path = self.make_path(start=False)
        self.assertTrue(verifyObject(IHeartbeatPath, path))
        self.assertEqual((path.name, path.kind), ("comhb1", "comhb"))

    def test_factory_registered_for_comhb(self):
        config = com_config()
        context = HeartbeatContext(reactor=self.clock, config=config, local="srv2", incarnation=BOOT2,
                                   on_beat=lambda *a: None, on_alive=lambda *a: None, runner=None)
        path = HEARTBEAT_KINDS.get("comhb").factory(context, HB)
        self.assertIsInstance(path, ComHeartbeatPath)
        self.assertEqual((path.device, path.peer, path.baud_rate), ("/dev/ttyS1", "srv1", 19200))

    def test_counters_start_at_zero(self):
        path = self.make_path(start=False)
        self.assertEqual(path.counters(), dict.fromkeys(COUNTERS, 0))

    def test_counters_are_a_copy(self):
        path = self.make_path(start=False)
        path.counters()["sent"] = 99
        self.assertEqual(path.counters()["sent"], 0)


class ConfigTests(PathTestCase):
    def test_local_server_without_the_device(self):
        config = com_config(with_device=("srv2",))
        e = self.assertRaises(HeartbeatConfigError, self.make_path, "srv1", config, start=False)
        self.assertIn("comhb1", str(e))
        self.assertIn("srv1", str(e))

    def test_no_peer_with_the_device(self):
        config = com_config(with_device=("srv1",))
        e = self.assertRaises(HeartbeatConfigError, self.make_path, "srv1", config, start=False)
        self.assertIn("comhb1", str(e))
        self.assertIn("other server", str(e))

    def test_three_servers_two_with_the_device(self):
        config = com_config(servers=("srv1", "srv2", "srv3"), with_device=("srv1", "srv3"))
        path = self.make_path("srv3", config, start=False)
        self.assertEqual((path.peer, path.device), ("srv1", "/dev/ttyS2"))

    def test_three_servers_all_with_the_device(self):
        config = com_config(servers=("srv1", "srv2", "srv3"))
        e = self.assertRaises(HeartbeatConfigError, self.make_path, "srv1", config, start=False)
        self.assertIn("srv2, srv3", str(e))

    def test_unknown_local_server(self):
        self.assertRaises(HeartbeatConfigError, self.make_path, "srv9", start=False)

    def test_not_a_com_heartbeat(self):
        config = com_config()
        lan = dataclasses.replace(HB, kind="lanhb")
        self.assertRaises(HeartbeatConfigError, ComHeartbeatPath, self.clock, config, "srv1", lan,
                          BOOT1, lambda *a: None)

    def test_bad_baud_rate(self):
        config = com_config()
        bad = dataclasses.replace(HB, baud_rate=0)
        self.assertRaises(HeartbeatConfigError, ComHeartbeatPath, self.clock, config, "srv1", bad,
                          BOOT1, lambda *a: None)


class BeatTests(PathTestCase):
    def test_beats_both_ways(self):
        p1, p2 = self.pair()
        p1.send_beat(DIGEST)
        p2.send_beat(DIGEST)
        p2.send_beat(DIGEST)
        got = [(local, name, packet.sender, packet.seq) for local, name, packet in self.beats]
        self.assertEqual(got, [("srv2", "comhb1", "srv1", 1), ("srv1", "comhb1", "srv2", 1),
                               ("srv1", "comhb1", "srv2", 2)])
        self.assertEqual(self.beats[0][2], HeartbeatPacket("testcluster", "srv1", BOOT1, 1, DIGEST))
        self.assertEqual(p1.counters()["sent"], 1)
        self.assertEqual(p1.counters()["accepted"], 2)
        self.assertEqual(p1.counters()["received"], 2)
        self.assertEqual(p2.counters()["accepted"], 1)

    def test_opened_raw_at_the_baud_rate(self):
        self.make_path()
        line = self.devices.lines["/dev/ttyS0"]
        self.assertEqual(line.baud_rate, 19200)
        self.assertTrue(line.producer is not None and line.streaming)

    def test_start_is_idempotent(self):
        path = self.make_path()
        path.start_listening()
        self.assertEqual(self.devices.attempts, ["/dev/ttyS0"])
        self.assertEqual(path.counters()["opened"], 1)

    def test_frame_split_across_reads(self):
        path = self.make_path()
        data = self.packet_bytes(1)
        self.inject("/dev/ttyS0", data[:10])
        self.inject("/dev/ttyS0", data[10:])
        self.assertEqual([p.seq for _, _, p in self.beats], [1])
        self.assertEqual(path.counters()["bytes_received"], len(data))

    def test_on_beat_failure_does_not_escape(self):
        def boom(name, packet):
            raise RuntimeError("boom")

        p1 = self.make_path("srv1", on_beat=boom)
        self.make_path("srv2").send_beat(DIGEST)
        self.assertEqual(p1.counters()["accepted"], 1)
        self.assertTrue(any("on_beat failed" in t for t in self.logged(LogLevel.critical)))


class DropTests(PathTestCase):
    def test_garbage_is_counted_and_the_next_frame_gets_through(self):
        path = self.make_path()
        self.inject("/dev/ttyS0", b"\x00\xffline noise" + self.packet_bytes(1))
        c = path.counters()
        self.assertEqual((c["garbage_bytes"], c["resync"], c["accepted"]), (12, 1, 1))

    def test_oversize_is_malformed(self):
        path = self.make_path()
        self.inject("/dev/ttyS0", b"CPHB\x01\x00\xff\xff" + self.packet_bytes(1))
        c = path.counters()
        self.assertEqual((c["malformed"], c["accepted"]), (1, 1))

    def test_truncated(self):
        path = self.make_path()
        self.inject("/dev/ttyS0", self.packet_bytes(1)[:80] + self.packet_bytes(2))
        c = path.counters()
        self.assertEqual((c["truncated"], c["accepted"]), (1, 1))
        self.assertEqual([p.seq for _, _, p in self.beats], [2])

    def test_wrong_key(self):
        path = self.make_path()
        self.inject("/dev/ttyS0", self.packet_bytes(1, key=b"wrong"))
        self.assertEqual(path.counters()["unauthenticated"], 1)
        self.assertEqual(self.beats, [])

    def test_wrong_cluster(self):
        path = self.make_path()
        self.inject("/dev/ttyS0", self.packet_bytes(1, cluster="elsewhere"))
        self.assertEqual(path.counters()["foreign"], 1)
        self.assertEqual(self.beats, [])

    def test_replay(self):
        path = self.make_path()
        data = self.packet_bytes(5)
        self.inject("/dev/ttyS0", data + data + self.packet_bytes(4))
        c = path.counters()
        self.assertEqual((c["accepted"], c["replayed"]), (1, 2))

    def test_stale_then_forget(self):
        path = self.make_path()
        older = new_incarnation(1600000000.0, nonce="cccc")
        self.inject("/dev/ttyS0", self.packet_bytes(1))
        self.inject("/dev/ttyS0", self.packet_bytes(9, incarnation=older))
        self.assertEqual(path.counters()["stale"], 1)
        path.forget("srv2")
        self.inject("/dev/ttyS0", self.packet_bytes(10, incarnation=older))
        self.assertEqual([p.seq for _, _, p in self.beats], [1, 10])

    def test_sender_not_the_peer_of_this_line(self):
        config = com_config(servers=("srv1", "srv2", "srv3"), with_device=("srv1", "srv2"))
        path = self.make_path("srv1", config)
        self.inject("/dev/ttyS0", self.packet_bytes(1, sender="srv3"))
        self.assertEqual(path.counters()["unknown_sender"], 1)
        self.assertEqual(self.beats, [])
        self.assertTrue(any("not srv2" in text for text in self.logged(LogLevel.warn)))

    def test_own_beat_echoed(self):
        path = self.make_path()
        self.inject("/dev/ttyS0", self.packet_bytes(1, sender="srv1"))
        self.assertEqual(path.counters()["unknown_sender"], 1)
        self.assertTrue(any("looped back" in text for text in self.logged()))

    def test_drop_logs_are_rate_limited(self):
        path = self.make_path()
        for _ in range(120):
            self.inject("/dev/ttyS0", self.packet_bytes(1, key=b"wrong"))
        self.assertEqual(path.counters()["unauthenticated"], 120)
        drops = [t for t in self.logged(LogLevel.warn) if "unauthenticated" in t]
        self.assertEqual(len(drops), 3)  # 1st, 10th, 100th
        self.assertIn("(100 so far)", drops[-1])

    def test_exception_while_handling_is_contained(self):
        path = self.make_path()
        self.patch(path, "_event", lambda kind, detail: 1 / 0)
        self.inject("/dev/ttyS0", self.packet_bytes(1))
        self.assertTrue(any("error handling serial data" in t for t in self.logged()))


class SendTests(PathTestCase):
    def test_line_down_counts(self):
        self.devices.present.clear()
        path = self.make_path()
        path.send_beat(DIGEST)
        self.assertEqual((path.counters()["line_down"], path.counters()["sent"]), (1, 0))
        self.clock.advance(REOPEN)  # (the path keeps trying)

    def test_write_error(self):
        path = self.make_path()
        self.devices.lines["/dev/ttyS0"].fail_writes = OSError(5, "Input/output error")
        path.send_beat(DIGEST)
        path.send_beat(DIGEST)
        self.assertEqual(path.counters()["send_errors"], 2)
        self.assertEqual(len([t for t in self.logged(LogLevel.warn) if "cannot write" in t]), 1)
        self.devices.lines["/dev/ttyS0"].fail_writes = None
        path.send_beat(DIGEST)
        self.assertEqual(path.counters()["sent"], 1)
        self.assertTrue(any("works again" in t for t in self.logged(LogLevel.info)))

    def test_backlog_skips_beats(self):
        path = self.make_path()
        line = self.devices.lines["/dev/ttyS0"]
        line.producer.pauseProducing()
        path.send_beat(DIGEST)
        self.assertEqual((path.counters()["backlog"], line.value()), (1, b""))
        line.producer.resumeProducing()
        path.send_beat(DIGEST)
        self.assertEqual(path.counters()["sent"], 1)
        self.assertTrue(line.value().startswith(b"CPHB"))

    def test_sequence_numbers_go_on_across_reopens(self):
        p1, p2 = self.pair()
        p1.send_beat(DIGEST)
        self.devices.lines["/dev/ttyS0"].lose()
        self.clock.advance(REOPEN)
        p1.send_beat(DIGEST)
        self.assertEqual([p.seq for _, _, p in self.beats], [1, 2])


class ReopenTests(PathTestCase):
    def test_missing_device_does_not_raise_and_is_retried(self):
        self.devices.present.discard("/dev/ttyS0")
        path = self.make_path()
        self.assertFalse(path.is_open())
        self.assertEqual(path.counters()["open_errors"], 1)
        errors = self.logged(LogLevel.error)
        self.assertEqual(len(errors), 1)
        self.assertIn("/dev/ttyS0", errors[0])
        self.assertIn("comhb1", errors[0])
        for _ in range(4):
            self.clock.advance(REOPEN)
        self.assertEqual(path.counters()["open_errors"], 5)
        self.assertEqual(len(self.logged(LogLevel.error)), 1, "logged once, not at every attempt")
        self.devices.present.add("/dev/ttyS0")
        self.clock.advance(REOPEN)
        self.assertTrue(path.is_open())
        self.assertEqual(path.counters()["opened"], 1)
        self.assertTrue(any("open again after 5 failed" in t for t in self.logged(LogLevel.info)))

    def test_a_new_problem_is_logged(self):
        calls = []

        def opener(protocol, device, baud):
            calls.append(device)
            if len(calls) == 1:
                raise FileNotFoundError(2, "No such file or directory")
            raise PermissionError(13, "Permission denied")

        path = ComHeartbeatPath(self.clock, com_config(), "srv1", HB, BOOT1, lambda *a: None,
                                opener=opener, reopen_delay=REOPEN)
        path.start_listening()
        self.clock.advance(REOPEN)
        self.clock.advance(REOPEN)
        errors = self.logged(LogLevel.error)
        self.assertEqual(len(errors), 2)
        self.assertIn("Permission denied", errors[1])
        path.stop_listening()

    def test_lost_line_is_reopened(self):
        p1, p2 = self.pair()
        old = self.devices.lines["/dev/ttyS0"]
        old.lose()
        self.assertFalse(p1.is_open())
        self.assertEqual(p1.counters()["line_lost"], 1)
        self.assertTrue(any("lost" in t and "/dev/ttyS0" in t for t in self.logged(LogLevel.warn)))
        p2.send_beat(DIGEST)
        self.assertEqual(self.beats, [])
        self.clock.advance(REOPEN)
        self.assertTrue(p1.is_open())
        self.assertIsNot(self.devices.lines["/dev/ttyS0"], old)
        p2.send_beat(DIGEST)
        self.assertEqual([(local, p.seq) for local, _, p in self.beats], [("srv1", 2)])
        self.assertEqual(p1.counters()["opened"], 2)

    def test_line_lost_and_device_gone_until_it_comes_back(self):
        p1 = self.make_path()
        self.devices.present.discard("/dev/ttyS0")
        self.devices.lines["/dev/ttyS0"].lose()
        self.clock.advance(REOPEN)
        self.clock.advance(REOPEN)
        self.assertEqual(p1.counters()["open_errors"], 2)
        self.devices.present.add("/dev/ttyS0")
        self.clock.advance(REOPEN)
        self.assertTrue(p1.is_open())

    def test_partial_frame_dropped_when_the_line_is_lost(self):
        path = self.make_path()
        self.inject("/dev/ttyS0", self.packet_bytes(1)[:50])
        self.devices.lines["/dev/ttyS0"].lose()
        self.clock.advance(REOPEN)
        self.inject("/dev/ttyS0", self.packet_bytes(2))
        c = path.counters()
        self.assertEqual((c["truncated"], c["accepted"]), (1, 1))

    def test_data_from_an_old_line_is_ignored(self):
        path = self.make_path()
        old = self.devices.lines["/dev/ttyS0"]
        old.lose()
        self.clock.advance(REOPEN)
        old.protocol.dataReceived(self.packet_bytes(1))
        old.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.beats, [])
        self.assertTrue(path.is_open())

    def test_real_opener_with_a_missing_device(self):
        bad = dataclasses.replace(com_config(), servers=tuple(
            dataclasses.replace(s, devices=tuple(
                dataclasses.replace(d, info="/nonexistent/ttyS9") if d.id == 200 else d
                for d in s.devices))
            for s in com_config().servers))
        path = ComHeartbeatPath(self.clock, bad, "srv1", HB, BOOT1, lambda *a: None,
                                reopen_delay=REOPEN)
        path.start_listening()
        self.assertEqual(path.counters()["open_errors"], 1)
        self.assertIn("/nonexistent/ttyS9", self.logged(LogLevel.error)[0])
        self.clock.advance(REOPEN)
        self.assertEqual(path.counters()["open_errors"], 2)
        self.successResultOf(path.stop_listening())

    def test_default_reopen_delay_is_a_few_intervals(self):
        config = dataclasses.replace(com_config(), hb_interval=3.0)
        self.devices.present.clear()
        path = ComHeartbeatPath(self.clock, config, "srv1", HB, BOOT1, lambda *a: None,
                                opener=self.devices.open)
        path.start_listening()
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [9.0])
        path.stop_listening()


class StopTests(PathTestCase):
    def test_stop_closes_the_line(self):
        path = self.make_path(start=False)
        path.start_listening()
        line = self.devices.lines["/dev/ttyS0"]
        d = path.stop_listening()
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(line.closed)
        self.assertFalse(path.is_open())
        self.assertEqual(path.counters()["line_lost"], 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_cancels_the_reopen(self):
        self.devices.present.clear()
        path = self.make_path(start=False)
        path.start_listening()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(path.stop_listening())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_when_never_started(self):
        path = self.make_path(start=False)
        self.successResultOf(path.stop_listening())

    def test_restart_after_stop(self):
        path = self.make_path(start=False)
        path.start_listening()
        self.successResultOf(path.stop_listening())
        path.start_listening()
        self.assertTrue(path.is_open())
        self.assertEqual(path.counters()["opened"], 2)
        self.successResultOf(path.stop_listening())

    def test_stop_never_fails(self):
        path = self.make_path(start=False)
        path.start_listening()

        def broken():
            raise OSError(5, "Input/output error")

        self.devices.lines["/dev/ttyS0"].abortConnection = broken
        self.successResultOf(path.stop_listening())
        self.assertFalse(path.is_open())
        self.assertTrue(any("error closing" in t for t in self.logged()))
