"""Tests for the diskw monitor: reads of a temporary file, a missing file and (root) a loop device."""

import errno
import os
import shutil
import subprocess

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cpro.system.runners import run_inline, thread_runner
from cpro.resources.monitors.base import CheckStatus
from cpro.resources.monitors.diskw import DiskMonitor, DiskReadError, read_object

from test.unit.monitor_contract import HeldRunner, MonitorContractMixin, make_environment, make_monitor_config


def monitor(path, size=512, method="read", run_in_thread=run_inline, clock=None):
    config = make_monitor_config("diskw", {"object": path, "size": size, "method": method})
    return DiskMonitor(clock or task.Clock(), config, config.params, make_environment(), run_in_thread=run_in_thread)


class DiskwTestCase(unittest.TestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.file = os.path.join(self.dir, "disk.img")
        with open(self.file, "wb") as f:
            f.write(os.urandom(3 * 4096 + 100))


class ContractTests(MonitorContractMixin, DiskwTestCase):
    monitor_type = "diskw"

    def make_monitor(self):
        return monitor(self.file)

    def make_pending_monitor(self):
        self.held = HeldRunner()
        return monitor(self.file, run_in_thread=self.held)

    def assert_nothing_left(self, monitor):
        self.assertEqual(len(self.held.calls), 1)
        self.held.release()  # the abandoned read ends later: nobody waits for it
        self.assertFalse(monitor.describe()["reading"])


class CheckTests(DiskwTestCase):
    @defer.inlineCallbacks
    def test_file_read_and_odirect_in_a_thread(self):
        for method in ("read", "odirect"):
            m = monitor(self.file, 512, method, run_in_thread=thread_runner(reactor), clock=reactor)
            result = yield m.check()
            self.assertEqual(result.status, CheckStatus.NORMAL, f"{method}: {result.message}")

    @defer.inlineCallbacks
    def test_missing_file_names_path_and_errno(self):
        path = os.path.join(self.dir, "missing")
        m = monitor(path)
        result = yield m.check()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, f"open of {path} failed: ENOENT (No such file or directory)")
        self.assertEqual(m.describe()["last_error"], result.message)
        with open(path, "wb") as f:
            f.write(b"x" * 512)
        self.assertEqual((yield m.check()).status, CheckStatus.NORMAL)
        self.assertIsNone(m.describe()["last_error"])

    @defer.inlineCallbacks
    def test_read_error_names_path_and_errno(self):
        result = yield monitor(self.dir).check()
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, f"read of {self.dir} failed: EISDIR (Is a directory)")

    def test_stuck_read_is_shared_by_later_checks(self):
        held = HeldRunner()
        m = monitor(self.file, run_in_thread=held)
        first = m.check()
        first.cancel()  # the engine's timeout
        self.failureResultOf(first, defer.CancelledError)
        second = m.check()
        self.assertEqual(len(held.calls), 1)  # no second thread for the same device
        self.assertTrue(m.describe()["reading"])
        held.release()
        self.assertEqual(self.successResultOf(second).status, CheckStatus.NORMAL)
        third = m.check()
        self.assertEqual(len(held.calls), 1)  # a new read once the old one ended
        held.release()
        self.assertEqual(self.successResultOf(third).status, CheckStatus.NORMAL)

    def test_unknown_method(self):
        self.assertRaises(ValueError, monitor, self.file, method="scsi")


class ReadObjectTests(DiskwTestCase):
    def test_sizes(self):
        self.assertEqual(read_object(self.file, 512, "read"), 512)
        self.assertEqual(read_object(self.file, 100, "odirect"), 100)
        self.assertEqual(read_object(self.file, 5000, "odirect"), 5000)
        self.assertEqual(read_object(self.file, 1 << 21, "read"), 3 * 4096 + 100)  # short file
        self.assertEqual(read_object(self.file, 1 << 21, "odirect"), 3 * 4096 + 100)

    def test_error_text(self):
        error = DiskReadError("read", "/dev/sdz", OSError(errno.EIO, os.strerror(errno.EIO)))
        self.assertEqual(str(error), "read of /dev/sdz failed: EIO (Input/output error)")
        self.assertEqual(error.errno, errno.EIO)


class LoopDeviceTests(DiskwTestCase):
    """A real block device: a loop device over a temporary image (root, util-linux losetup)."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to attach a loop device")
        if shutil.which("losetup") is None:
            raise unittest.SkipTest("needs losetup (util-linux)")
        with open(self.file, "r+b") as f:
            f.truncate(1 << 20)
        self.device = subprocess.run(
            ["losetup", "--find", "--show", self.file], check=True, capture_output=True, text=True
        ).stdout.strip()
        self.addCleanup(subprocess.run, ["losetup", "--detach", self.device], check=False)

    @defer.inlineCallbacks
    def test_block_device(self):
        for method in ("read", "odirect"):
            m = monitor(self.device, 4096, method, run_in_thread=thread_runner(reactor), clock=reactor)
            result = yield m.check()
            self.assertEqual(result.status, CheckStatus.NORMAL, f"{method}: {result.message}")
