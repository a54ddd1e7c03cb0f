"""Watchdog backends fed from the reactor: the kernel device or a keeper process.

A stalled reactor cannot run a check that says it is stalled, so userw arms
a watchdog and feeds it from the reactor thread: when feeding stops for the
timeout, something outside the daemon resets the server.

- L{DeviceWatchdog}: the kernel's /dev/watchdog (softdog, a hardware or the
  IPMI watchdog driver): open, set the timeout (WDIOC_SETTIMEOUT), write a
  byte per feed, write the magic 'V' before closing on a clean stop. The
  kernel resets the machine itself; the configured action cannot be chosen.
- L{KeeperWatchdog}: where there is no device, a small separate process
  (L{cpro.system.watchdog_keeper}) fed through a pipe, which runs the
  cluster's OS action command (reboot) when not fed.

Both follow the kernel's rule: closing without the clean-stop sign (the
daemon crashed or was killed) leaves the watchdog armed, and it fires
unless a restarted daemon takes over in time. A restarted daemon reopens
the one kernel device; a keeper is found through its pid file (pid and
kernel start time), stopped with SIGTERM (no action) and replaced by the
new daemon's own keeper.
"""

import fcntl
import math
import os
import signal
import struct
import sys

from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from cpro.system.process import read_proc_stat
from cpro.system import watchdog_keeper

log = Logger()

DEVICE_PATH = "/dev/watchdog"
# <linux/watchdog.h>: _IOWR('W', 6, int) and _IOR('W', 5, int).
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_KEEPALIVE = 0x80045705
FEED_BYTE = b"."
KEEPER_STOP_WAIT = 5.0  # s for the keeper to exit after a clean stop before SIGKILL


class WatchdogError(Exception):
    """The watchdog could not be armed."""


class IWatchdog(Interface):
    """Something that acts (resets the server) unless fed in time."""

    kind = Attribute("'device' or 'keeper'")
    timeout = Attribute("seconds without a feed before it acts")
    alive = Attribute("True while armed and able to act (False once stopped or dead)")

    def start():
        """Arm it. Deferred firing None, or failing with L{WatchdogError}."""

    def feed():
        """Restart the countdown. Cheap and synchronous; never raises."""

    def stop():
        """Disarm cleanly (magic close). Deferred firing None once done; idempotent."""

    def describe():
        """A dict of run-time details for status views."""


@implementer(IWatchdog)
class DeviceWatchdog:
    """The kernel watchdog device. open/ioctl are injectable for tests."""

    kind = "device"

    def __init__(self, timeout, path=DEVICE_PATH, opener=os.open, ioctl=fcntl.ioctl):
        self.timeout = timeout
        self.path = path
        self._open = opener
        self._ioctl = ioctl
        self._fd = None
        self.device_timeout = None  # what the driver accepted, None if unknown
        self.failure = None

    @property
    def alive(self):
        return self._fd is not None

    def start(self):
        if self._fd is not None:
            return defer.succeed(None)
        try:
            self._fd = self._open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            return defer.fail(WatchdogError(f"cannot open {self.path}: {e.strerror or e}"))
        # Drivers take whole seconds; rounding up never fires early.
        wanted = max(1, math.ceil(self.timeout))
        try:
            answer = self._ioctl(self._fd, WDIOC_SETTIMEOUT, struct.pack("i", wanted))
            self.device_timeout = struct.unpack("i", answer)[0]
        except OSError as e:
            log.warn("cannot set the timeout of {path} to {t} s ({err}); the driver's own "
                     "timeout applies", path=self.path, t=wanted, err=e)
        self.feed()
        return defer.succeed(None)

    def feed(self):
        if self._fd is None:
            return
        try:
            os.write(self._fd, b"\0")
        except OSError as e:
            # Not fatal by itself: the device fires if this keeps failing.
            self.failure = f"write to {self.path} failed: {e.strerror or e}"
            log.error("{failure}", failure=self.failure)

    def stop(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.write(fd, b"V")
            except OSError as e:
                log.error("cannot disarm {path} ({err}): it will fire", path=self.path, err=e)
            try:
                os.close(fd)
            except OSError:
                pass
        return defer.succeed(None)

    def describe(self):
        details = {"watchdog": self.path, "watchdog_timeout": self.device_timeout or self.timeout}
        if self.failure:
            details["watchdog_failure"] = self.failure
        return details


class _KeeperProtocol(ProcessProtocol):
    def __init__(self, owner):
        self._owner = owner

    def connectionMade(self):
        self.pid = self.transport.pid

    def processEnded(self, reason):
        self._owner._ended(reason)


@implementer(IWatchdog)
class KeeperWatchdog:
    """A L{watchdog_keeper} process fed through its stdin.

    @param action_argv: the command the keeper runs when not fed (argv list).
    @param log_path: file for the keeper's messages (appended); None discards them.
    @param pid_path: file naming the running keeper, so that the next daemon
        (after a crash) can replace it; None: no take-over.
    """

    kind = "keeper"

    def __init__(self, reactor, timeout, action_argv, action_name="reboot", log_path=None,
                 pid_path=None, python=sys.executable):
        if not action_argv:
            raise ValueError("the keeper needs an action command")
        self._reactor = reactor
        self.timeout = timeout
        self._argv = tuple(action_argv)
        self._action = action_name
        self._log_path = log_path
        self._pid_path = pid_path
        self._python = python
        self._transport = None
        self._stopping = False
        self._kill_call = None
        self._waiters = []
        self.pid = None
        self.exit = None  # how the keeper ended: 'exit N' / 'signal N'

    @property
    def alive(self):
        return self._transport is not None and self.exit is None and not self._stopping

    def command(self):
        # Run by file path in isolated mode: the keeper needs only the
        # standard library, not the daemon's import path or environment.
        return [self._python, "-I", os.path.abspath(watchdog_keeper.__file__),
                "--timeout", repr(float(self.timeout)), "--action", self._action, "--",
                *self._argv]

    def start(self):
        if self.alive:
            return defer.succeed(None)
        if self._stopping and self.exit is None:
            # The previous keeper is still exiting: start the next one after it.
            return self.stop().addCallback(lambda _: self.start())
        self._replace_previous()
        out = self._open_log()
        try:
            proto = _KeeperProtocol(self)
            argv = self.command()
            try:
                self._transport = self._reactor.spawnProcess(
                    proto, argv[0], argv, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                    childFDs={0: "w", 1: out, 2: out})
            except OSError as e:
                return defer.fail(WatchdogError(f"cannot start the watchdog keeper: {e}"))
        finally:
            os.close(out)
        self.pid = self._transport.pid
        self.exit = None
        self._stopping = False
        self._write_pid_file()
        log.info("watchdog keeper started as pid {pid} (timeout {t} s, action {a})",
                 pid=self.pid, t=self.timeout, a=self._action)
        self.feed()
        return defer.succeed(None)

    def _replace_previous(self):
        """SIGTERM (stop, no action) the keeper a crashed predecessor left running."""
        if self._pid_path is None:
            return
        try:
            with open(self._pid_path) as f:
                pid, start = (int(field) for field in f.read().split())
        except (OSError, ValueError):
            return  # none, or unreadable: nothing we could safely signal
        stat = read_proc_stat(pid)
        if stat is None or stat[1] != start or stat[0] == "Z":
            return  # gone (its pid may belong to another process by now)
        log.warn("stopping the watchdog keeper {pid} left by a previous daemon", pid=pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass

    def _write_pid_file(self):
        if self._pid_path is None:
            return
        stat = read_proc_stat(self.pid)
        try:
            with open(self._pid_path, "w") as f:
                f.write(f"{self.pid} {stat[1] if stat else 0}\n")
        except OSError as e:
            log.warn("cannot write {path} ({err}): a restarted daemon will not find this keeper",
                     path=self._pid_path, err=e)

    def _remove_pid_file(self):
        if self._pid_path is None:
            return
        try:
            with open(self._pid_path) as f:
                mine = f.read().split()[:1] == [str(self.pid)]
            if mine:
                os.unlink(self._pid_path)
        except (OSError, ValueError):
            pass

    def _open_log(self):
        if self._log_path is not None:
            try:
                return os.open(self._log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o640)
            except OSError as e:
                log.warn("cannot open {path} ({err}); keeper messages are discarded",
                         path=self._log_path, err=e)
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)

    def feed(self):
        if self.alive:
            try:
                self._transport.write(FEED_BYTE)
            except Exception as e:  # a broken pipe shows as processEnded; never raise here
                log.error("cannot feed the watchdog keeper: {err}", err=e)

    def stop(self):
        if self._transport is None or self.exit is not None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        if not self._stopping:
            self._stopping = True
            try:
                self._transport.write(watchdog_keeper.MAGIC_CLOSE)
                self._transport.closeStdin()
            except Exception as e:
                log.error("cannot stop the watchdog keeper cleanly: {err}", err=e)
            self._kill_call = self._reactor.callLater(KEEPER_STOP_WAIT, self._kill)
        return d

    def _kill(self):
        self._kill_call = None
        log.error("watchdog keeper {pid} did not exit after a clean stop: killing it", pid=self.pid)
        try:
            self._transport.signalProcess(signal.SIGKILL)
        except (error.ProcessExitedAlready, OSError):
            pass

    def _ended(self, reason):
        value = reason.value
        if isinstance(value, error.ProcessDone):
            self.exit = "exit 0"
        elif getattr(value, "signal", None) is not None:
            self.exit = f"signal {value.signal}"
        else:
            self.exit = f"exit {getattr(value, 'exitCode', '?')}"
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        self._kill_call = None
        if not self._stopping:
            log.error("watchdog keeper {pid} ended unexpectedly ({how}): the watchdog is disarmed",
                      pid=self.pid, how=self.exit)
        self._remove_pid_file()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def describe(self):
        details = {"watchdog": "keeper", "watchdog_pid": self.pid, "watchdog_timeout": self.timeout}
        if self.exit is not None:
            details["watchdog_exit"] = self.exit
        return details


def make_watchdog(reactor, method, timeout, action_argv, action_name="reboot", log_path=None,
                  pid_path=None, device_path=DEVICE_PATH):
    """The backend for userw's method: None for 'none', else the device when present, else a keeper.

    keepalive, softdog and ipmi all mean "a watchdog the kernel or a BMC
    drives": their drivers expose /dev/watchdog, and without one the keeper
    process stands in for them.
    """
    if method == "none":
        return None
    if os.path.exists(device_path):
        return DeviceWatchdog(timeout, device_path)
    return KeeperWatchdog(reactor, timeout, action_argv, action_name, log_path, pid_path)
