"""Tests for cpro.services.heartbeat.diskhb: the disk heartbeat path on a plain file.

Disk I/O runs inline (cpro.system.runners.run_inline) and time is a
task.Clock; the partition is a file in the test's temporary directory,
opened without O_DIRECT except in L{DirectIOTests}.
"""

import dataclasses
import errno
import os

from twisted.internet import defer, task
from twisted.logger import capturedLogs
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from cpro.config.model import Device, HeartbeatConfig
from cpro.interfaces import IHeartbeatPath
from cpro.plugins import HEARTBEAT_KINDS
from cpro.protocols import diskslot
from cpro.protocols.heartbeat import HeartbeatPacket, Incarnation, StateDigest, decode, encode
from cpro.system.runners import run_inline
from cpro.services.heartbeat.diskhb import DiskHeartbeatPath, SlotDisk
from cpro.services.heartbeat.base import HeartbeatConfigError, HeartbeatContext
from cpro.testing.fakes import make_config

KEY = b"disk heartbeat test key"
CLUSTER = "cluster1"
INC1 = Incarnation(1000, "01")
INC2 = Incarnation(2000, "02")
DIGEST = StateDigest("cafe", 3, "Running")
EPOCH_NS = 1_700_000_000 * 10**9
INTERVAL = 1.0
HB = HeartbeatConfig("diskhb1", "diskhb", 3, 300)


def disk_config(devices, key=KEY, name=CLUSTER, interval=INTERVAL):
    """A ClusterConfig whose servers (in order) use the disk device paths C{devices}."""
    base = make_config(servers=tuple(devices), key=key, name=name, hb_interval=interval,
                       hb_timeout=10 * interval)
    servers = tuple(
        dataclasses.replace(s, devices=s.devices + (Device(300, "disk", devices[s.name]),))
        for s in base.servers)
    return dataclasses.replace(base, servers=servers, heartbeats=base.heartbeats + (HB,))


class HeldRunner:
    """A runner whose calls wait until released: a stuck disk."""

    def __init__(self):
        self.calls = []  # (fn, args, Deferred)

    def __call__(self, fn, *args):
        d = defer.Deferred()
        self.calls.append((fn, args, d))
        return d

    def release(self, index=0):
        fn, args, d = self.calls.pop(index)
        try:
            result = fn(*args)
        except Exception:
            d.errback()
        else:
            d.callback(result)


class DiskPathTestCase(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.device = self.mktemp()
        self.make_device(self.device)
        self.beats = []  # (local server, path name, packet)

    @staticmethod
    def make_device(path, size=64 * 1024):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)

    def make_path(self, local, servers=("srv1", "srv2"), config=None, incarnation=INC1,
                  runner=run_inline, direct=False, skew_ns=0, **kw):
        if config is None:
            config = disk_config({s: self.device for s in servers})
        return DiskHeartbeatPath(
            self.clock, config, local, HB, incarnation,
            lambda name, packet: self.beats.append((local, name, packet)), runner,
            direct=direct, wall_clock_ns=lambda: EPOCH_NS + skew_ns + int(self.clock.seconds() * 1e9),
            **kw)

    def start(self, *paths):
        for p in paths:
            p.start_listening()
            self.addCleanup(p.stop_listening)

    def tick(self):
        self.clock.advance(INTERVAL)

    def read_slot(self, index, path=None):
        with open(path or self.device, "rb") as f:
            f.seek(diskslot.slot_offset(index))
            return f.read(diskslot.SLOT_SIZE)

    def write_at(self, offset, data, path=None):
        with open(path or self.device, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def beats_of(self, local):
        return [(name, p.sender, p.seq) for (who, name, p) in self.beats if who == local]


class InterfaceTests(DiskPathTestCase):
    def test_verify(self):
        path = self.make_path("srv1")
        self.assertTrue(verifyObject(IHeartbeatPath, path))
        self.assertEqual((path.name, path.kind, path.device, path.slot),
                         ("diskhb1", "diskhb", self.device, 0))

    def test_factory(self):
        config = disk_config({"srv1": self.device, "srv2": self.device})
        context = HeartbeatContext(self.clock, config, "srv2", INC1, lambda *a: None,
                                   lambda *a: None, run_inline)
        path = HEARTBEAT_KINDS.get("diskhb").factory(context, HB)
        self.assertIsInstance(path, DiskHeartbeatPath)
        self.assertEqual(path.slot, 1)

    def test_device_per_server(self):
        other = self.mktemp()
        config = disk_config({"srv1": self.device, "srv2": other})
        self.assertEqual(self.make_path("srv2", config=config).device, other)

    def test_no_device(self):
        config = disk_config({"srv1": self.device, "srv2": self.device})
        config = dataclasses.replace(config, servers=(
            dataclasses.replace(config.servers[0], devices=config.servers[0].devices[:-1]),
            config.servers[1]))
        self.assertRaises(HeartbeatConfigError, self.make_path, "srv1", config=config)
        self.assertRaises(HeartbeatConfigError, self.make_path, "srv9",
                          config=disk_config({"srv1": self.device}))

    def test_not_listening(self):
        path = self.make_path("srv1")
        path.send_beat(DIGEST)
        self.assertEqual(path.counters()["written"], 0)
        self.assertEqual(self.read_slot(0), b"\0" * diskslot.SLOT_SIZE)

    def test_stop(self):
        path = self.make_path("srv1")
        path.start_listening()
        path.start_listening()  # idempotent
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        d = path.stop_listening()
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ExchangeTests(DiskPathTestCase):
    def setUp(self):
        super().setUp()
        self.srv1 = self.make_path("srv1")
        self.srv2 = self.make_path("srv2", incarnation=INC2)
        self.start(self.srv1, self.srv2)

    def test_record_written_in_own_slot(self):
        self.srv2.send_beat(DIGEST)
        record = diskslot.decode_record(self.read_slot(1))
        self.assertEqual((record.slot, record.server, record.seq), (1, "srv2", 1))
        self.assertEqual(record.written_ns, EPOCH_NS)
        packet = decode(record.packet, KEY, CLUSTER)
        self.assertEqual((packet.sender, packet.incarnation, packet.seq, packet.digest),
                         ("srv2", INC2, 1, DIGEST))
        with open(self.device, "rb") as f:
            self.assertEqual(diskslot.decode_header(f.read(diskslot.HEADER_SIZE)), CLUSTER)
        self.assertEqual(self.read_slot(0), b"\0" * diskslot.SLOT_SIZE)
        self.assertEqual(self.srv2.counters()["written"], 1)

    def test_sequence_advance_is_a_beat(self):
        self.srv1.send_beat(DIGEST)
        self.srv2.send_beat(DIGEST)
        self.tick()
        self.assertEqual(self.beats_of("srv1"), [("diskhb1", "srv2", 1)])
        self.assertEqual(self.beats_of("srv2"), [("diskhb1", "srv1", 1)])
        self.srv2.send_beat(DIGEST)
        self.tick()
        self.assertEqual(self.beats_of("srv1"), [("diskhb1", "srv2", 1), ("diskhb1", "srv2", 2)])
        self.assertEqual(self.srv1.counters()["accepted"], 2)

    def test_unchanged_sequence_is_no_beat(self):
        self.srv2.send_beat(DIGEST)
        self.tick()
        self.tick()
        self.tick()
        self.assertEqual(self.beats_of("srv1"), [("diskhb1", "srv2", 1)])
        self.assertEqual(self.srv1.counters()["stale_reads"], 2)

    def test_empty_slot_counted(self):
        self.tick()
        self.assertEqual(self.beats_of("srv1"), [])
        self.assertEqual(self.srv1.counters()["empty"], 2)  # the baseline read and this one

    def test_torn_record_detected_then_healed(self):
        self.srv2.send_beat(DIGEST)
        self.tick()
        data = bytearray(self.read_slot(1))
        data[100] ^= 0xFF
        self.write_at(diskslot.slot_offset(1), bytes(data))
        with capturedLogs() as events:
            self.tick()
            self.tick()
        self.assertEqual(self.srv1.counters()["torn"], 2)
        self.assertEqual(len(self.beats_of("srv1")), 1)
        warnings = [e for e in events if "dropped" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)  # the 1st, not the 2nd
        self.srv2.send_beat(DIGEST)
        self.tick()
        self.assertEqual(self.beats_of("srv1")[-1], ("diskhb1", "srv2", 2))

    def test_garbage_is_malformed(self):
        self.write_at(diskslot.slot_offset(1), b"\xa5" * diskslot.SLOT_SIZE)
        self.tick()
        self.assertEqual(self.srv1.counters()["malformed"], 1)

    def test_wrong_slot(self):
        # srv1's own record copied into srv2's slot (a misconfigured server order).
        self.srv1.send_beat(DIGEST)
        self.write_at(diskslot.slot_offset(1), self.read_slot(0))
        self.tick()
        self.assertEqual(self.srv1.counters()["wrong_slot"], 1)
        self.assertEqual(self.beats_of("srv1"), [])
        self.assertEqual(self.beats_of("srv2"), [("diskhb1", "srv1", 1)])

    def test_packet_of_another_server(self):
        packet = encode(HeartbeatPacket(CLUSTER, "srv1", INC1, 5, DIGEST), KEY)
        record = diskslot.SlotRecord(1, "srv2", 5, EPOCH_NS, packet)
        self.write_at(diskslot.slot_offset(1), diskslot.encode_record(record))
        self.tick()
        self.assertEqual(self.srv1.counters()["malformed"], 1)
        self.assertEqual(self.beats_of("srv1"), [])

    def test_foreign_cluster_header(self):
        self.write_at(0, diskslot.encode_header("othercluster"))
        self.tick()
        self.srv1.send_beat(DIGEST)
        counters = self.srv1.counters()
        self.assertEqual((counters["foreign"], counters["write_refused"], counters["written"]),
                         (1, 1, 0))
        self.assertEqual(self.read_slot(0), b"\0" * diskslot.SLOT_SIZE)
        self.assertIn("othercluster", self.srv1.status()["problems"]["header"])

    def test_foreign_cluster_packet(self):
        packet = encode(HeartbeatPacket("othercluster", "srv2", INC2, 1, DIGEST), KEY)
        self.write_at(diskslot.slot_offset(1),
                      diskslot.encode_record(diskslot.SlotRecord(1, "srv2", 1, EPOCH_NS, packet)))
        self.tick()
        self.assertEqual(self.srv1.counters()["foreign"], 1)
        self.assertEqual(self.beats_of("srv1"), [])

    def test_something_else_on_the_partition(self):
        self.write_at(1024, b"\x53\xef" * 100)  # not ours, not blank: maybe a file system
        self.tick()
        self.srv1.send_beat(DIGEST)
        counters = self.srv1.counters()
        self.assertEqual((counters["bad_header"], counters["write_refused"]), (1, 1))
        self.assertEqual(self.read_slot(0), b"\0" * diskslot.SLOT_SIZE)

    def test_wiped_partition_is_claimed_again(self):
        self.srv1.send_beat(DIGEST)
        self.write_at(0, b"\0" * diskslot.HEADER_SIZE)
        self.tick()
        self.srv1.send_beat(DIGEST)
        with open(self.device, "rb") as f:
            self.assertEqual(diskslot.decode_header(f.read(diskslot.HEADER_SIZE)), CLUSTER)

    def test_replayed_record(self):
        self.srv2.send_beat(DIGEST)
        old = self.read_slot(1)
        self.tick()
        self.srv2.send_beat(DIGEST)
        self.tick()
        self.write_at(diskslot.slot_offset(1), old)
        self.tick()
        self.assertEqual(self.srv1.counters()["replayed"], 1)
        self.assertEqual([b[2] for b in self.beats_of("srv1")], [1, 2])

    def test_older_incarnation_refused_until_forget(self):
        self.srv2.send_beat(DIGEST)
        self.tick()
        older = self.make_path("srv2", incarnation=Incarnation(500, "00"))
        self.start(older)
        older.send_beat(DIGEST)
        self.tick()
        self.assertEqual(self.srv1.counters()["stale"], 1)
        self.srv1.forget("srv2")
        older.send_beat(DIGEST)
        self.tick()
        self.assertEqual(self.beats_of("srv1")[-1], ("diskhb1", "srv2", 2))

    def test_existing_record_is_a_baseline(self):
        # A record written before this server started reading may be long dead.
        self.srv2.send_beat(DIGEST)
        late = self.make_path("srv1")
        self.beats.clear()
        self.start(late)
        self.assertEqual(self.beats, [])
        self.srv2.send_beat(DIGEST)
        self.tick()
        self.assertIn(("srv1", "diskhb1", 2), [(w, n, p.seq) for (w, n, p) in self.beats
                                               if p.sender == "srv2"])


class AuthenticationTests(DiskPathTestCase):
    def test_wrong_key(self):
        srv1 = self.make_path("srv1")
        config = disk_config({"srv1": self.device, "srv2": self.device}, key=b"another key")
        srv2 = self.make_path("srv2", config=config)
        self.start(srv1, srv2)
        srv2.send_beat(DIGEST)
        self.tick()
        self.assertEqual(srv1.counters()["unauthenticated"], 1)
        self.assertEqual(self.beats_of("srv1"), [])

    def test_clock_skew_warned_once(self):
        srv1 = self.make_path("srv1")
        srv2 = self.make_path("srv2", skew_ns=3600 * 10**9)
        self.start(srv1, srv2)
        with capturedLogs() as events:
            for _ in range(3):
                srv2.send_beat(DIGEST)
                self.tick()
        self.assertEqual(len(self.beats_of("srv1")), 3)  # judged by sequence, still beats
        self.assertEqual(srv1.counters()["clock_skew"], 3)
        self.assertEqual(len([e for e in events if "clock" in e.get("log_format", "")]), 1)

    def test_three_servers(self):
        config = disk_config({s: self.device for s in ("srv1", "srv2", "srv3")})
        paths = [self.make_path(s, config=config) for s in ("srv1", "srv2", "srv3")]
        self.start(*paths)
        for p in paths:
            p.send_beat(DIGEST)
        self.tick()
        self.assertEqual(sorted((w, p.sender) for (w, _, p) in self.beats),
                         [("srv1", "srv2"), ("srv1", "srv3"), ("srv2", "srv1"), ("srv2", "srv3"),
                          ("srv3", "srv1"), ("srv3", "srv2")])


class StuckDiskTests(DiskPathTestCase):
    def test_write_skipped_while_one_in_flight(self):
        runner = HeldRunner()
        path = self.make_path("srv1", runner=runner)
        path.start_listening()  # a read is now in flight
        path.send_beat(DIGEST)
        with capturedLogs() as events:
            path.send_beat(DIGEST)
            path.send_beat(DIGEST)
        self.assertEqual(path.counters()["write_skipped"], 2)
        self.assertEqual(len([e for e in events if "still running" in e["log_format"]]), 1)
        self.assertEqual(len(runner.calls), 2)  # one read, one write
        self.tick()  # the read is stuck too
        self.assertEqual(path.counters()["read_skipped"], 1)

        stopped = path.stop_listening()
        self.assertNoResult(stopped)
        runner.release(1)  # the write
        self.assertNoResult(stopped)
        runner.release(0)  # the read
        self.successResultOf(stopped)
        self.assertEqual(path.counters()["written"], 1)
        self.assertEqual(diskslot.decode_record(self.read_slot(0)).seq, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_does_not_wait_forever(self):
        runner = HeldRunner()
        path = self.make_path("srv1", runner=runner, stop_timeout=5.0)
        path.start_listening()
        stopped = path.stop_listening()
        self.clock.advance(4.9)
        self.assertNoResult(stopped)
        with capturedLogs() as events:
            self.clock.advance(0.1)
        self.successResultOf(stopped)
        self.assertEqual(len([e for e in events if "without waiting" in e["log_format"]]), 1)
        runner.release()  # the stuck read ends at last: nothing left to fire
        self.assertEqual(path.counters()["reads"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_next_write_after_the_stuck_one(self):
        runner = HeldRunner()
        path = self.make_path("srv1", runner=runner)
        self.start(path)
        path.send_beat(DIGEST)
        path.send_beat(DIGEST)
        runner.release(1)
        path.send_beat(DIGEST)
        runner.release(1)
        self.assertEqual(diskslot.decode_record(self.read_slot(0)).seq, 2)
        runner.release(0)


class FailingDeviceTests(DiskPathTestCase):
    def test_missing_device_retried(self):
        missing = os.path.join(os.path.abspath(self.mktemp()), "sdb1")
        config = disk_config({"srv1": missing, "srv2": self.device})
        path = self.make_path("srv1", config=config)
        with capturedLogs() as events:
            path.start_listening()  # never raises
            self.addCleanup(path.stop_listening)
            path.send_beat(DIGEST)
            self.tick()
            path.send_beat(DIGEST)
            self.tick()
        counters = path.counters()
        self.assertEqual((counters["read_errors"], counters["write_errors"]), (3, 2))
        errors = [e for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 2)  # read and write, once each
        self.assertIn(missing, errors[0]["device"])
        self.assertEqual(errors[0]["path"], "diskhb1")
        self.assertIn("errno 2", path.status()["problems"]["read"])

        self.make_device(missing)
        with capturedLogs() as events:
            path.send_beat(DIGEST)
            self.tick()
        self.assertEqual(path.status()["problems"], {})
        self.assertEqual(path.counters()["written"], 1)
        self.assertEqual(len([e for e in events if "works again" in e["log_format"]]), 2)
        self.assertEqual(diskslot.decode_record(self.read_slot(0, missing)).seq, 3)

    def test_io_errors_reported_and_healed(self):
        failing = {"errno": errno.EIO}

        def opener(path, flags):
            if failing["errno"]:
                raise OSError(failing["errno"], os.strerror(failing["errno"]), path)
            return os.open(path, flags)

        path = self.make_path("srv1", opener=opener)
        self.start(path)
        path.send_beat(DIGEST)
        self.assertIn("errno 5", path.status()["problems"]["write"])
        failing["errno"] = errno.EROFS
        path.send_beat(DIGEST)
        self.assertIn("errno 30", path.status()["problems"]["write"])
        self.assertEqual(path.counters()["write_errors"], 2)
        failing["errno"] = None
        path.send_beat(DIGEST)
        self.tick()
        self.assertEqual(path.status()["problems"], {})
        self.assertEqual(path.counters()["written"], 1)

    def test_device_too_small(self):
        self.make_device(self.device, size=diskslot.HEADER_SIZE)
        path = self.make_path("srv1")
        self.start(path)
        self.assertEqual(path.counters()["read_errors"], 1)
        self.assertIn("the slots need", path.status()["problems"]["read"])

    def test_on_beat_failure_contained(self):
        srv2 = self.make_path("srv2")
        config = disk_config({"srv1": self.device, "srv2": self.device})
        srv1 = DiskHeartbeatPath(self.clock, config, "srv1", HB, INC1,
                                 lambda *a: 1 / 0, run_inline, direct=False)
        self.start(srv1, srv2)
        srv2.send_beat(DIGEST)
        self.tick()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(srv1.counters()["accepted"], 1)


class DirectIOTests(DiskPathTestCase):
    def setUp(self):
        super().setUp()
        try:
            os.close(os.open(self.device, os.O_RDWR | os.O_DIRECT))
        except OSError as e:
            raise SkipTest(f"the file system of {self.device} refuses O_DIRECT: {e}")

    def test_exchange_with_o_direct(self):
        srv1 = self.make_path("srv1", direct=True)
        srv2 = self.make_path("srv2", direct=True)
        self.start(srv1, srv2)
        srv2.send_beat(DIGEST)
        self.tick()
        self.assertEqual(self.beats_of("srv1"), [("diskhb1", "srv2", 1)])

    def test_slot_disk_direct(self):
        disk = SlotDisk(self.device, direct=True)
        data = diskslot.encode_record(diskslot.SlotRecord(0, "srv1", 7, 1, b"p"))
        self.assertEqual(disk.write_slot(diskslot.slot_offset(0), data, CLUSTER), ("written", None))
        area = disk.read_area(diskslot.area_size(2))
        self.assertEqual(diskslot.decode_header(area[:4096]), CLUSTER)
        self.assertEqual(diskslot.decode_record(area[4096:8192]).seq, 7)
