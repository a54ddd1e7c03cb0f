"""Integration: the disk heartbeat path on a real loop device, with O_DIRECT.

Two DiskHeartbeatPath instances (srv1, srv2) share one loop device in this
process and exchange beats; a corrupted slot (a flipped byte, random bytes
written with dd) is counted and the next good write heals it; a read-only
device (blockdev --setro) makes writes fail and be reported until --setrw.
One test runs srv2 in another process inside a network namespace, to show
that the loop device is one disk shared across namespaces (LAB.md).

Root only (losetup, blockdev, ip netns). The loop device, the read-only
flag and the namespace are undone in clean-ups, also when a test fails.
"""

import json
import mmap
import os
import sys
import textwrap

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from cpro.testing.lab.common import LabError, is_root, lab_env, run, tool
from test.integration import REPO_ROOT
from cpro.protocols import diskslot
from cpro.protocols.heartbeat import Incarnation, StateDigest
from cpro.system.runners import thread_runner
from cpro.services.heartbeat.diskhb import DiskHeartbeatPath
from test.unit.test_diskhb import HB, disk_config

INTERVAL = 0.1
DIGEST = StateDigest("cafe", 1, "Running")
IMAGE_SIZE = 16 * 1024 * 1024

# srv2 in a network namespace: beats for RUN_SECONDS, then prints its counters.
NETNS_SCRIPT = textwrap.dedent("""
    import json, sys
    from twisted.internet import reactor, task
    from cpro.protocols.heartbeat import Incarnation, StateDigest
    from cpro.system.runners import thread_runner
    from cpro.services.heartbeat.diskhb import DiskHeartbeatPath
    from test.unit.test_diskhb import HB, disk_config

    device, seconds = sys.argv[1], float(sys.argv[2])
    config = disk_config({"srv1": device, "srv2": device}, interval=0.1)
    beats = []
    path = DiskHeartbeatPath(reactor, config, "srv2", HB, Incarnation(2, "netns"),
                             lambda name, packet: beats.append(packet.sender),
                             thread_runner(reactor))
    path.start_listening()
    loop = task.LoopingCall(path.send_beat, StateDigest("cafe", 1, "Running"))
    loop.start(0.1)

    def finish():
        loop.stop()
        d = path.stop_listening()
        d.addCallback(lambda _: print("RESULT " + json.dumps(
            {"beats_from": sorted(set(beats)), "beats": len(beats),
             "counters": path.counters()}), flush=True))
        d.addBoth(lambda _: reactor.stop())

    reactor.callLater(seconds, finish)
    reactor.run()
""")


def flip_byte(device, offset):
    """Flip one byte at C{offset} through the block device, with O_DIRECT (blocking)."""
    block = offset - offset % diskslot.SLOT_SIZE
    fd = os.open(device, os.O_RDWR | os.O_DIRECT)
    try:
        with mmap.mmap(-1, diskslot.SLOT_SIZE) as buf:
            os.preadv(fd, [buf], block)
            buf[offset - block] ^= 0xFF
            os.pwrite(fd, buf, block)
    finally:
        os.close(fd)


class DiskHeartbeatLoopTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        if not is_root():
            raise unittest.SkipTest("needs root: attaches a loop device (losetup) and sets it "
                                    "read-only (blockdev --setro)")
        try:
            self.losetup, self.blockdev, self.dd = tool("losetup"), tool("blockdev"), tool("dd")
        except LabError as e:
            raise unittest.SkipTest(str(e))
        self.beats = {"srv1": [], "srv2": []}

    def tearDown(self):
        # One reactor turn after each test: trial's SIGCHLD quirk with spawned processes.
        return task.deferLater(reactor, 0, lambda: None)

    @defer.inlineCallbacks
    def attach_loop(self):
        image = os.path.abspath(self.mktemp())
        os.makedirs(os.path.dirname(image), exist_ok=True)
        with open(image, "wb") as f:
            f.truncate(IMAGE_SIZE)
        code, out = yield run(reactor, [self.losetup, "-f", "--show", image])
        if code != 0:
            raise unittest.SkipTest(f"losetup cannot attach a loop device: {out.strip()}")
        device = out.strip()
        self.addCleanup(run, reactor, [self.losetup, "-d", device])
        return device

    def make_path(self, local, device, incarnation):
        config = disk_config({"srv1": device, "srv2": device}, interval=INTERVAL)
        path = DiskHeartbeatPath(
            reactor, config, local, HB, incarnation,
            lambda name, packet: self.beats[local].append(packet.seq),
            thread_runner(reactor), direct=True)
        path.start_listening()
        self.addCleanup(path.stop_listening)
        return path

    def beat(self, path):
        loop = task.LoopingCall(path.send_beat, DIGEST)
        loop.clock = reactor
        loop.start(INTERVAL)
        self.addCleanup(lambda: loop.running and loop.stop())
        return loop

    @defer.inlineCallbacks
    def wait_for(self, condition, what, timeout=5.0):
        for _ in range(int(timeout / 0.05)):
            if condition():
                return
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"not within {timeout} s: {what}")

    @defer.inlineCallbacks
    def pause(self, loop):
        """Stop a path's beats and let its write in flight land."""
        loop.stop()
        yield task.deferLater(reactor, 3 * INTERVAL, lambda: None)

    @defer.inlineCallbacks
    def test_exchange_corrupt_and_heal(self):
        device = yield self.attach_loop()
        srv1 = self.make_path("srv1", device, Incarnation(1, "a"))
        srv2 = self.make_path("srv2", device, Incarnation(2, "b"))
        self.beat(srv1)
        beating2 = self.beat(srv2)
        yield self.wait_for(lambda: len(self.beats["srv1"]) >= 5 and len(self.beats["srv2"]) >= 5,
                            "five beats each way")
        self.assertEqual(self.beats["srv1"], sorted(self.beats["srv1"]))

        # A flipped byte in srv2's record: torn, no beat.
        yield self.pause(beating2)
        heard = len(self.beats["srv1"])
        yield threads.deferToThread(flip_byte, device, diskslot.slot_offset(1) + 100)
        yield self.wait_for(lambda: srv1.counters()["torn"] >= 2, "the torn record counted")
        self.assertEqual(len(self.beats["srv1"]), heard)

        beating2 = self.beat(srv2)
        yield self.wait_for(lambda: len(self.beats["srv1"]) > heard, "beats after the heal")

        # Random bytes over the slot, written by dd: malformed.
        yield self.pause(beating2)
        heard = len(self.beats["srv1"])
        code, out = yield run(reactor, [
            self.dd, "if=/dev/urandom", f"of={device}", f"bs={diskslot.SLOT_SIZE}",
            f"seek={diskslot.slot_offset(1) // diskslot.SLOT_SIZE}", "count=1",
            "oflag=direct", "conv=notrunc"])
        self.assertEqual(code, 0, out)
        yield self.wait_for(
            lambda: srv1.counters()["malformed"] + srv1.counters()["torn"] >= 3,
            "the overwritten record counted")
        self.assertEqual(len(self.beats["srv1"]), heard)
        self.beat(srv2)
        yield self.wait_for(lambda: len(self.beats["srv1"]) > heard, "beats after the second heal")
        self.assertEqual(srv1.counters()["write_errors"] + srv2.counters()["read_errors"], 0)

    @defer.inlineCallbacks
    def test_read_only_device_reported_and_healed(self):
        device = yield self.attach_loop()
        srv1 = self.make_path("srv1", device, Incarnation(1, "a"))
        srv2 = self.make_path("srv2", device, Incarnation(2, "b"))
        self.beat(srv1)
        self.beat(srv2)
        yield self.wait_for(lambda: len(self.beats["srv2"]) >= 3, "beats from srv1")

        code, out = yield run(reactor, [self.blockdev, "--setro", device])
        self.assertEqual(code, 0, out)
        self.addCleanup(run, reactor, [self.blockdev, "--setrw", device])
        yield self.wait_for(lambda: srv1.counters()["write_errors"] >= 3, "failing writes")
        self.assertIn("write", srv1.status()["problems"])
        # Reads go on: srv2's record stays readable, srv1's stops changing.
        heard = len(self.beats["srv2"])
        yield task.deferLater(reactor, 5 * INTERVAL, lambda: None)
        self.assertLessEqual(len(self.beats["srv2"]), heard + 1)  # one write may have landed
        self.assertGreater(srv2.counters()["stale_reads"], 0)
        self.assertEqual(srv1.counters()["read_errors"], 0)

        code, out = yield run(reactor, [self.blockdev, "--setrw", device])
        self.assertEqual(code, 0, out)
        heard = len(self.beats["srv2"])
        yield self.wait_for(lambda: len(self.beats["srv2"]) > heard + 2, "beats after --setrw")
        self.assertEqual(srv1.status()["problems"], {})

    @defer.inlineCallbacks
    def test_shared_across_network_namespaces(self):
        device = yield self.attach_loop()
        ip = tool("ip")
        namespace = f"cprodiskhb{os.getpid()}"
        code, out = yield run(reactor, [ip, "netns", "add", namespace])
        if code != 0:
            raise unittest.SkipTest(f"cannot create a network namespace: {out.strip()}")
        self.addCleanup(run, reactor, [ip, "netns", "del", namespace])

        srv1 = self.make_path("srv1", device, Incarnation(1, "a"))
        self.beat(srv1)
        code, out = yield run(
            reactor,
            [ip, "netns", "exec", namespace, sys.executable, "-c", NETNS_SCRIPT, device, "3"],
            env=lab_env({"PYTHONPATH": REPO_ROOT}))
        self.assertEqual(code, 0, out)
        result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
        self.assertEqual(result["beats_from"], ["srv1"])
        self.assertGreaterEqual(result["beats"], 10)
        self.assertGreaterEqual(result["counters"]["written"], 10)
        self.assertGreaterEqual(len(self.beats["srv1"]), 10)  # srv2's, from the namespace
        self.assertEqual(srv1.counters()["unauthenticated"] + srv1.counters()["torn"], 0)
