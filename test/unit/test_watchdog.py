"""Tests for the watchdog backends and the keeper process.

The keeper tests use real processes and real (short) time on purpose: what
matters is that a separate process acts while the daemon is frozen by
SIGSTOP, and does not when the daemon stops cleanly. The action is a
command that writes a marker file, never a reboot.
"""

import io
import os
import signal
import struct
import sys

import psutil
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from cpro.system.process import read_proc_stat
from cpro.system import watchdog_keeper
from cpro.system.watchdog import (
    WDIOC_SETTIMEOUT,
    DeviceWatchdog,
    IWatchdog,
    KeeperWatchdog,
    WatchdogError,
    make_watchdog,
)

from test.unit.test_process import ProcessTestCase, is_gone, wait_gone

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 1.0  # s: the keeper's timeout in the process tests


def marker_command(path):
    """An action command that records that it ran (and which action) in path."""
    return ["/bin/sh", "-c", 'echo "$CPRO_ACTION" > "$0"', path]


@defer.inlineCallbacks
def wait_for(predicate, limit):
    waited = 0.0
    while not predicate() and waited < limit:
        yield task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05
    return predicate()


class RecordingIoctl:
    def __init__(self, answer=None, error=None):
        self.calls = []
        self.answer = answer
        self.error = error

    def __call__(self, fd, request, arg):
        self.calls.append((request, struct.unpack("i", arg)[0]))
        if self.error:
            raise self.error
        return struct.pack("i", self.answer if self.answer is not None else struct.unpack("i", arg)[0])


class DeviceWatchdogTests(unittest.SynchronousTestCase):
    """The device protocol, on a regular file standing in for /dev/watchdog."""

    def setUp(self):
        self.path = self.mktemp()
        open(self.path, "wb").close()

    def written(self):
        with open(self.path, "rb") as f:
            return f.read()

    def test_provides_iwatchdog(self):
        self.assertTrue(verifyObject(IWatchdog, DeviceWatchdog(10.0, self.path)))

    def test_sets_timeout_feeds_and_closes_with_magic_v(self):
        ioctl = RecordingIoctl(answer=11)
        watchdog = DeviceWatchdog(10.2, self.path, ioctl=ioctl)
        self.assertIsNone(self.successResultOf(watchdog.start()))
        self.assertTrue(watchdog.alive)
        self.assertEqual(ioctl.calls, [(WDIOC_SETTIMEOUT, 11)])  # rounded up, never early
        self.assertEqual(watchdog.describe(), {"watchdog": self.path, "watchdog_timeout": 11})
        watchdog.feed()
        watchdog.feed()
        self.successResultOf(watchdog.stop())
        self.assertFalse(watchdog.alive)
        self.assertEqual(self.written(), b"\0\0\0V")
        watchdog.feed()  # after stop: nothing written
        self.successResultOf(watchdog.stop())
        self.assertEqual(self.written(), b"\0\0\0V")

    def test_driver_refusing_the_timeout_is_not_fatal(self):
        # The real ioctl on a regular file fails (ENOTTY): the driver's timeout applies.
        watchdog = DeviceWatchdog(5.0, self.path)
        self.successResultOf(watchdog.start())
        self.assertTrue(watchdog.alive)
        self.assertEqual(watchdog.describe()["watchdog_timeout"], 5.0)
        self.successResultOf(watchdog.stop())

    def test_cannot_open(self):
        watchdog = DeviceWatchdog(5.0, "/nonexistent/watchdog")
        failure = self.failureResultOf(watchdog.start(), WatchdogError)
        self.assertIn("/nonexistent/watchdog", failure.getErrorMessage())
        self.assertFalse(watchdog.alive)


class MakeWatchdogTests(unittest.SynchronousTestCase):
    def test_choice(self):
        device = self.mktemp()
        open(device, "wb").close()
        argv = ("/bin/true",)
        self.assertIsNone(make_watchdog(reactor, "none", 9.0, argv, device_path=device))
        for method in ("keepalive", "softdog", "ipmi"):
            chosen = make_watchdog(reactor, method, 9.0, argv, device_path=device)
            self.assertIsInstance(chosen, DeviceWatchdog)
            self.assertEqual(chosen.path, device)
            chosen = make_watchdog(reactor, method, 9.0, argv, device_path="/nonexistent/wd")
            self.assertIsInstance(chosen, KeeperWatchdog)
            self.assertTrue(verifyObject(IWatchdog, chosen))
            self.assertFalse(chosen.alive)

    def test_keeper_needs_a_command(self):
        self.assertRaises(ValueError, KeeperWatchdog, reactor, 9.0, ())

    def test_keeper_command_line(self):
        keeper = KeeperWatchdog(reactor, 9, ["systemctl", "reboot"], "reboot", python="/usr/bin/python3")
        self.assertEqual(keeper.command(), [
            "/usr/bin/python3", "-I", os.path.abspath(watchdog_keeper.__file__),
            "--timeout", "9.0", "--action", "reboot", "--", "systemctl", "reboot"])


class KeeperProgramTests(unittest.SynchronousTestCase):
    """watchdog_keeper's own functions, on a pipe."""

    def setUp(self):
        self.logged = []
        self.patch(watchdog_keeper, "log", self.logged.append)

    def pipe(self, data, close=True):
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        os.write(w, data)
        if close:
            os.close(w)
        else:
            self.addCleanup(os.close, w)
        return r

    def test_magic_close_is_a_clean_stop(self):
        self.assertTrue(watchdog_keeper.watch(self.pipe(b"...V"), 5.0))

    def test_feed_after_magic_rearms(self):
        self.assertFalse(watchdog_keeper.watch(self.pipe(b"V."), 0.05))

    def test_close_without_magic_fires_at_the_timeout(self):
        self.assertFalse(watchdog_keeper.watch(self.pipe(b"."), 0.05))
        self.assertEqual(self.logged, ["the daemon went away without a clean stop: "
                                       "the action runs when the timeout ends"])

    def test_no_feed_fires(self):
        self.assertFalse(watchdog_keeper.watch(self.pipe(b"", close=False), 0.05))

    def test_usage(self):
        self.patch(sys, "stderr", io.StringIO())
        self.assertEqual(watchdog_keeper.main(["--timeout", "5"]), watchdog_keeper.EXIT_USAGE)
        self.assertEqual(watchdog_keeper.main(["--timeout", "0", "--", "true"]),
                         watchdog_keeper.EXIT_USAGE)
        args = watchdog_keeper.parse_args(["--timeout", "5", "--action", "reboot", "--", "a", "-b"])
        self.assertEqual((args.timeout, args.action, args.command), (5.0, "reboot", ["a", "-b"]))


class KeeperWatchdogTests(ProcessTestCase):
    """KeeperWatchdog driven from this (the test's) reactor."""

    timeout = 30

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.marker = os.path.join(self.dir, "fired")
        self.log = os.path.join(self.dir, "keeper.log")
        self.keeper = KeeperWatchdog(reactor, TIMEOUT, marker_command(self.marker), "reboot", self.log)
        self.addCleanup(self.kill_keeper)

    def kill_keeper(self):
        if self.keeper.pid and not is_gone(self.keeper.pid):
            os.kill(self.keeper.pid, signal.SIGKILL)

    @defer.inlineCallbacks
    def test_fed_then_stopped_cleanly_never_fires(self):
        yield self.keeper.start()
        self.assertTrue(self.keeper.alive)
        feeder = task.LoopingCall(self.keeper.feed)
        feeder.start(TIMEOUT / 5)
        yield task.deferLater(reactor, TIMEOUT * 1.5, lambda: None)
        feeder.stop()
        self.assertTrue(self.keeper.alive)
        yield self.keeper.stop()
        self.assertFalse(self.keeper.alive)
        self.assertEqual(self.keeper.exit, "exit 0")
        yield task.deferLater(reactor, TIMEOUT * 1.2, lambda: None)
        self.assertFalse(os.path.exists(self.marker))
        with open(self.log) as f:
            self.assertIn("clean stop", f.read())

    @defer.inlineCallbacks
    def test_not_fed_fires_the_action(self):
        yield self.keeper.start()
        self.assertTrue((yield wait_for(lambda: os.path.exists(self.marker), TIMEOUT + 10)))
        self.assertTrue((yield wait_for(lambda: self.keeper.exit is not None, 3)))
        self.assertEqual(self.keeper.exit, f"exit {watchdog_keeper.EXIT_FIRED}")
        self.assertFalse(self.keeper.alive)
        with open(self.marker) as f:
            self.assertEqual(f.read(), "reboot\n")
        yield self.keeper.stop()  # harmless once it has ended

    @defer.inlineCallbacks
    def test_killed_keeper_is_not_alive(self):
        yield self.keeper.start()
        os.kill(self.keeper.pid, signal.SIGKILL)
        self.assertTrue((yield wait_for(lambda: not self.keeper.alive, 3)))
        self.assertEqual(self.keeper.exit, f"signal {signal.SIGKILL}")

    @defer.inlineCallbacks
    def test_sigterm_stops_it_without_acting(self):
        yield self.keeper.start()
        yield task.deferLater(reactor, 0.3, lambda: None)  # let it install its handlers
        os.kill(self.keeper.pid, signal.SIGTERM)
        self.assertTrue((yield wait_for(lambda: not self.keeper.alive, 3)))
        self.assertEqual(self.keeper.exit, "exit 0")
        yield task.deferLater(reactor, TIMEOUT * 1.2, lambda: None)
        self.assertFalse(os.path.exists(self.marker))

    @defer.inlineCallbacks
    def test_pid_file_names_the_keeper_and_goes_with_it(self):
        pid_path = os.path.join(self.dir, "keeper.pid")
        keeper = KeeperWatchdog(reactor, TIMEOUT, marker_command(self.marker), "reboot", self.log,
                                pid_path)
        self.addCleanup(lambda: keeper.pid and not is_gone(keeper.pid)
                        and os.kill(keeper.pid, signal.SIGKILL))
        yield keeper.start()
        with open(pid_path) as f:
            pid, start = (int(x) for x in f.read().split())
        self.assertEqual((pid, start), (keeper.pid, read_proc_stat(keeper.pid)[1]))
        yield keeper.stop()
        self.assertFalse(os.path.exists(pid_path))

    @defer.inlineCallbacks
    def test_stale_pid_file_signals_nobody(self):
        pid_path = os.path.join(self.dir, "keeper.pid")
        with open(pid_path, "w") as f:  # our own pid, but another start time: a reused pid
            f.write(f"{os.getpid()} {read_proc_stat(os.getpid())[1] + 1}\n")
        keeper = KeeperWatchdog(reactor, TIMEOUT, marker_command(self.marker), "reboot", self.log,
                                pid_path)
        self.addCleanup(lambda: keeper.pid and not is_gone(keeper.pid)
                        and os.kill(keeper.pid, signal.SIGKILL))
        yield keeper.start()  # this test process survives it
        with open(pid_path) as f:
            self.assertEqual(int(f.read().split()[0]), keeper.pid)
        yield keeper.stop()

    @defer.inlineCallbacks
    def test_keeper_leads_its_own_session(self):
        yield self.keeper.start()
        self.keeper.feed()
        sid = yield wait_for(lambda: os.getsid(self.keeper.pid) == self.keeper.pid, 3)
        self.assertTrue(sid)
        yield self.keeper.stop()


# A stand-in for the daemon: a reactor running userw with a keeper (never the
# real device, even where one exists), stopped cleanly on SIGTERM.
FAKE_DAEMON = """
import sys
from twisted.internet import reactor
from cpro.config.model import OSActionCommands
from cpro.resources.monitors.base import MonitorEnvironment
from cpro.resources.monitors.userw import UserSpaceMonitor
from cpro.system.watchdog import KeeperWatchdog
from test.unit.monitor_contract import make_monitor_config

timeout, marker, log_dir = float(sys.argv[1]), sys.argv[2], sys.argv[3]
config = make_monitor_config("userw", {"usehb": False, "method": "softdog", "action": "RESET"},
                             interval=timeout / 10, timeout=timeout)
env = MonitorEnvironment("srv1", log_dir, log_dir, os_action_commands=OSActionCommands(
    reboot=("/bin/sh", "-c", 'echo "$CPRO_ACTION" > "$0"', marker)))
keepers = []

def keeper_only(reactor, method, timeout, argv, action, log_path, pid_path):
    keepers.append(KeeperWatchdog(reactor, timeout, argv, action, log_path, pid_path))
    return keepers[-1]

monitor = UserSpaceMonitor(reactor, config, config.params, env, watchdog_factory=keeper_only)

def started(_):
    print(keepers[0].pid, flush=True)

reactor.callWhenRunning(lambda: monitor.start().addCallbacks(started, lambda f: reactor.stop()))
reactor.addSystemEventTrigger("before", "shutdown", monitor.stop)
reactor.run()
"""


class _LineCollector(ProcessProtocol):
    def __init__(self):
        self.first_line = defer.Deferred()
        self.ended = defer.Deferred()
        self._buffer = b""

    def outReceived(self, data):
        self._buffer += data
        if b"\n" in self._buffer and not self.first_line.called:
            self.first_line.callback(self._buffer.split(b"\n")[0].decode())

    def processEnded(self, reason):
        if not self.first_line.called:
            self.first_line.errback(reason)
        self.ended.callback(reason.value)


class StalledDaemonTests(ProcessTestCase):
    """The daemon is a separate process here, so the test can freeze it."""

    timeout = 60  # each test starts one or two Python daemons, slow on a loaded machine

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.marker = os.path.join(self.dir, "fired")
        self.pids = []
        self.ended = []
        self.addCleanup(self.kill_all)

    def kill_all(self):
        for pid in self.pids:
            if not is_gone(pid):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        # The daemon's pipes stay in the reactor until it has been reaped.
        return defer.DeferredList(self.ended)

    @defer.inlineCallbacks
    def start_daemon(self, timeout=TIMEOUT):
        proto = _LineCollector()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": REPO}
        transport = reactor.spawnProcess(
            proto, sys.executable, [sys.executable, "-c", FAKE_DAEMON, str(timeout), self.marker,
                                    self.dir], env=env, childFDs={0: "w", 1: "r", 2: 2})
        self.pids.append(transport.pid)
        self.ended.append(proto.ended)
        keeper_pid = int((yield proto.first_line))
        self.pids.append(keeper_pid)
        self.assertTrue(psutil.pid_exists(keeper_pid))
        return transport.pid, keeper_pid, proto

    @defer.inlineCallbacks
    def test_frozen_daemon_fires_the_action(self):
        daemon_pid, keeper_pid, _ = yield self.start_daemon()
        yield task.deferLater(reactor, TIMEOUT * 1.5, lambda: None)
        self.assertFalse(os.path.exists(self.marker), "fired while the daemon was feeding it")
        os.kill(daemon_pid, signal.SIGSTOP)
        self.assertTrue((yield wait_for(lambda: os.path.exists(self.marker), TIMEOUT + 10)),
                        "the keeper did not act on a stalled daemon")
        with open(self.marker) as f:
            self.assertEqual(f.read(), "reboot\n")
        self.assertTrue((yield wait_gone(keeper_pid, 3)))

    @defer.inlineCallbacks
    def test_daemon_stopped_cleanly_leaves_no_keeper_and_no_action(self):
        daemon_pid, keeper_pid, proto = yield self.start_daemon()
        yield task.deferLater(reactor, TIMEOUT * 0.5, lambda: None)
        os.kill(daemon_pid, signal.SIGTERM)
        yield proto.ended
        self.assertTrue((yield wait_gone(keeper_pid, 3)), "the keeper outlived a clean stop")
        yield task.deferLater(reactor, TIMEOUT * 1.5, lambda: None)
        self.assertFalse(os.path.exists(self.marker), "a clean stop fired the action")
        with open(os.path.join(self.dir, "userw1.watchdog.log")) as f:
            self.assertIn("clean stop", f.read())

    @defer.inlineCallbacks
    def test_daemon_killed_fires_the_action(self):
        # As the kernel device closed without the magic 'V': a dead daemon is reset.
        daemon_pid, keeper_pid, proto = yield self.start_daemon()
        os.kill(daemon_pid, signal.SIGKILL)
        yield proto.ended
        self.assertTrue((yield wait_for(lambda: os.path.exists(self.marker), TIMEOUT + 10)))
        self.assertTrue((yield wait_gone(keeper_pid, 3)))

    @defer.inlineCallbacks
    def test_restarted_daemon_replaces_the_keeper_left_behind(self):
        # The first keeper's timeout is long: the second daemon replaces it
        # well before it could act, however slowly that daemon starts.
        daemon_pid, old_keeper, proto = yield self.start_daemon(60.0)
        os.kill(daemon_pid, signal.SIGKILL)
        yield proto.ended
        daemon_pid, new_keeper, proto = yield self.start_daemon()
        self.assertTrue((yield wait_gone(old_keeper, 5)), "the old keeper was not replaced")
        with open(os.path.join(self.dir, "userw1.watchdog.pid")) as f:
            self.assertEqual(int(f.read().split()[0]), new_keeper)
        with open(os.path.join(self.dir, "userw1.watchdog.log")) as f:
            log = f.read()
        self.assertIn(f"watchdog_keeper[{old_keeper}]: SIGTERM: stopped by request, no action", log)
        self.assertNotIn(f"watchdog_keeper[{old_keeper}]: not fed", log)
        self.assertFalse(is_gone(new_keeper))
        os.kill(daemon_pid, signal.SIGTERM)
        yield proto.ended
        self.assertTrue((yield wait_gone(new_keeper, 5)))
        self.assertFalse(os.path.exists(self.marker))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "userw1.watchdog.pid")))
