"""Running external commands without blocking the reactor: the one process runner of cpro.

Every external command (exec scripts, genw scripts, fsck, mount, ipmitool...)
goes through L{run_command} (wait for it, with a timeout) or L{spawn_resident}
(keep it running, e.g. an asynchronous exec start script watched by pidw).

Each command runs in its own session and process group, so a timeout or a
stop kills the whole tree it started: SIGTERM to the group, then SIGKILL
after a grace period. The command's output goes to a log file (appended,
passed as a file descriptor, never read into memory) or to /dev/null.
Commands never pass through a shell: argv is a list.
"""

import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from typing import Optional

from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

log = Logger()

DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

_SETSID_CANDIDATES = ("/usr/bin/setsid", "/bin/setsid")
# Used only when util-linux setsid is absent: same effect, slower to start.
_PY_SETSID = "import os,sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])"


class CommandError(Exception):
    """The command could not be started at all (missing, not executable, bad cwd...)."""


@dataclass(frozen=True)
class ProcessResult:
    """How one command ended."""

    pid: int
    exit_code: Optional[int]  # None when killed by a signal
    signal: Optional[int]  # the signal that ended it, or None
    timed_out: bool
    duration: float  # seconds, measured on the reactor clock

    @property
    def succeeded(self):
        return self.exit_code == 0 and not self.timed_out

    def describe(self):
        """Short English phrase for logs and error messages."""
        if self.signal is not None:
            how = f"was killed by signal {self.signal} ({signal_name(self.signal)})"
        else:
            how = f"exited with code {self.exit_code}"
        if self.timed_out:
            how = f"timed out and {how}"
        return how


def signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def kill_process_group(pgid, sig):
    """Send sig to process group pgid. Returns False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def read_proc_stat(pid):
    """(state letter, start time) of pid from /proc/PID/stat, or None if there is no such process.

    The start time is the kernel's (clock ticks after boot, field 22): with the
    pid it names one process even after the pid has been reused. procfs is
    served from memory, so this is safe to call on the reactor thread.
    """
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) is in parentheses and may itself hold spaces and ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode("ascii", "replace"), int(fields[19])


def _kill_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _setsid_prefix():
    for candidate in _SETSID_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return [candidate]
    return [sys.executable, "-c", _PY_SETSID]


def _complete_env(env):
    full = dict(env) if env else {}
    if not full.get("PATH"):
        full["PATH"] = DEFAULT_PATH
    return full


def check_executable(executable, search_path=DEFAULT_PATH):
    """Raise L{CommandError} naming the path and the reason if executable cannot be run.

    A name without '/' is looked up in search_path, as execvp will.
    """
    if not executable:
        raise CommandError("cannot run an empty command")
    if "/" in executable:
        if not os.path.exists(executable):
            raise CommandError(f"cannot run {executable}: no such file")
        if os.path.isdir(executable):
            raise CommandError(f"cannot run {executable}: is a directory")
        if not os.access(executable, os.X_OK):
            raise CommandError(f"cannot run {executable}: not executable (permission denied)")
        return
    for directory in search_path.split(":"):
        candidate = os.path.join(directory or ".", executable)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return
    raise CommandError(f"cannot run {executable}: not found in PATH {search_path}")


def _open_output(reactor, log_path, argv):
    """An fd for the child's stdout/stderr, with a header line already written."""
    if log_path is None:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as e:
        raise CommandError(f"cannot open log file {log_path}: {e.strerror}") from e
    try:
        os.write(fd, f"--- {_timestamp(reactor)} run: {shlex.join(argv)}\n".encode("utf-8", "replace"))
    except OSError:
        pass  # a full disk must not prevent the command from running
    return fd


def _append_trailer(reactor, log_path, result):
    if log_path is None:
        return
    line = f"--- {_timestamp(reactor)} pid {result.pid} {result.describe()} after {result.duration:.3f} s\n"
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        pass


def _timestamp(reactor):
    now = reactor.seconds()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"


class _GroupProcess(ProcessProtocol):
    """Tracks one child that leads its own process group, and stops the group on demand.

    The leader's pid is also the group id. While the leader is not yet reaped its
    pid cannot be reused, so signalling it is always safe; after that the group id
    stays pinned only as long as some member lives.
    """

    def __init__(self, reactor, argv, log_path):
        self._reactor = reactor
        self._argv = argv
        self._log_path = log_path
        self.pid = None
        self.started_at = reactor.seconds()
        self.ended = False
        self.result = None
        self._timed_out = False
        self._stopping = False
        self._timeout_call = None
        self._kill_call = None
        self._exit = None  # (exit_code, signal)
        self._waiters = []

    # ProcessProtocol

    def connectionMade(self):
        # Read the pid here: Twisted may report the end of a very short
        # process before spawnProcess returns, and then transport.pid is None.
        self.pid = self.transport.pid

    def processEnded(self, reason):
        value = reason.value
        if isinstance(value, error.ProcessDone):
            self._exit = (0, None)
        else:
            self._exit = (getattr(value, "exitCode", None), getattr(value, "signal", None))
        self.ended = True
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.cancel()
        if self._kill_call is not None and self._kill_call.active():
            # Stopping: the leader is gone but members that ignored SIGTERM may
            # remain; they get SIGKILL when the grace period ends.
            if self._group_alive():
                return
            self._kill_call.cancel()
        self._finish()

    # control

    def when_ended(self):
        """A new Deferred firing the L{ProcessResult} once the command is over."""
        if self.result is not None:
            return defer.succeed(self.result)
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    def set_timeout(self, seconds, grace):
        if self.ended:
            return
        self._timeout_call = self._reactor.callLater(seconds, self._expire, grace)

    def _expire(self, grace):
        self._timed_out = True
        log.warn("command {argv} (pid {pid}) timed out; stopping its process group", argv=self._argv, pid=self.pid)
        self.stop(grace)

    def stop(self, grace):
        """SIGTERM to the group, SIGKILL after grace seconds. Idempotent."""
        if self.result is not None:
            return defer.succeed(self.result)
        if not self._stopping:
            self._stopping = True
            self._signal_all(signal.SIGTERM)
            self._kill_call = self._reactor.callLater(grace, self._kill)
        return self.when_ended()

    def _kill(self):
        self._signal_all(signal.SIGKILL)
        if self.ended:
            self._finish()
        # else processEnded finishes once the leader is reaped

    def _group_alive(self):
        try:
            return kill_process_group(self.pid, 0)
        except OSError:
            return False

    def _signal_all(self, sig):
        try:
            kill_process_group(self.pid, sig)
            if not self.ended:
                # Covers the instant before the child has called setsid(): it
                # is then still in our own group, not yet leading its own.
                _kill_pid(self.pid, sig)
        except OSError as e:
            # EPERM (e.g. a member changed its uid): nothing more we can do;
            # never let it escape into the reactor.
            log.error("cannot signal process group {pid}: {err}", pid=self.pid, err=e)

    def _finish(self):
        if self.result is not None:
            return
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.cancel()
        exit_code, sig = self._exit
        self.result = ProcessResult(
            pid=self.pid,
            exit_code=exit_code,
            signal=sig,
            timed_out=self._timed_out,
            duration=self._reactor.seconds() - self.started_at,
        )
        _append_trailer(self._reactor, self._log_path, self.result)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self.result)


def _spawn(reactor, argv, env, log_path, cwd):
    """Start argv in its own session; returns the L{_GroupProcess}. Raises L{CommandError}."""
    argv = [os.fspath(a) for a in argv]
    if not argv:
        raise CommandError("cannot run an empty command")
    if "/" in argv[0]:
        # Relative to our directory, as checked here, not to the child's cwd.
        argv[0] = os.path.abspath(argv[0])
    full_env = _complete_env(env)
    check_executable(argv[0], full_env["PATH"])
    if cwd is not None and not os.path.isdir(cwd):
        raise CommandError(f"cannot run {argv[0]}: working directory {cwd} does not exist")
    full_argv = _setsid_prefix() + argv
    out_fd = _open_output(reactor, log_path, argv)
    try:
        in_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            proto = _GroupProcess(reactor, argv, log_path)
            try:
                transport = reactor.spawnProcess(
                    proto,
                    full_argv[0],
                    full_argv,
                    env=full_env,
                    path=cwd,
                    childFDs={0: in_fd, 1: out_fd, 2: out_fd},
                )
            except OSError as e:
                raise CommandError(f"cannot run {argv[0]}: {e.strerror or e}") from e
        finally:
            os.close(in_fd)
    finally:
        # The child holds its own copies; ours are no longer needed.
        os.close(out_fd)
    if proto.pid is None:
        proto.pid = transport.pid
    log.debug("started {argv} as pid {pid}", argv=argv, pid=proto.pid)
    return proto


def run_command(reactor, argv, env=None, timeout=None, log_path=None, cwd=None, kill_grace=2.0):
    """Run argv to completion in its own process group.

    @param env: the complete environment of the command (nothing is inherited);
        PATH is added (L{DEFAULT_PATH}) if missing.
    @param timeout: seconds; on expiry the group gets SIGTERM, then SIGKILL after
        kill_grace, and the result has timed_out=True. None: no timeout.
    @param log_path: file that stdout and stderr are appended to (with a header
        and a trailer line); None discards the output.
    @return: Deferred firing a L{ProcessResult} (whatever the exit status), or
        failing with L{CommandError} if the command cannot be started. Cancelling
        it stops the process group in the background.
    """
    try:
        proto = _spawn(reactor, argv, env, log_path, cwd)
    except CommandError:
        return defer.fail()
    if timeout is not None and timeout > 0:
        proto.set_timeout(timeout, kill_grace)

    def cancel(_):
        d = proto.stop(kill_grace)
        d.addErrback(lambda f: log.failure("stopping cancelled command", f))

    def forward(result):
        if not d.called:  # a cancelled d has already failed with CancelledError
            d.callback(result)

    d = defer.Deferred(cancel)
    proto.when_ended().addCallback(forward)
    return d


class ResidentProcess:
    """A command left running (e.g. an asynchronous exec start script)."""

    def __init__(self, proto):
        self._proto = proto

    @property
    def pid(self):
        return self._proto.pid

    @property
    def running(self):
        return not self._proto.ended

    @property
    def result(self):
        """The L{ProcessResult} once it has ended, else None."""
        return self._proto.result

    @property
    def ended(self):
        """A new Deferred firing the L{ProcessResult} when the process has exited."""
        return self._proto.when_ended()

    def terminate(self, grace=2.0):
        """SIGTERM to the process group, SIGKILL after grace seconds.

        Idempotent; the Deferred fires the L{ProcessResult} once the leader has
        exited and the rest of the group is gone or has been sent SIGKILL.
        """
        return self._proto.stop(grace)


def spawn_resident(reactor, argv, env, log_path, cwd=None):
    """Start argv in its own process group and leave it running.

    Same environment and output rules as L{run_command}. Raises L{CommandError}
    (synchronously) if it cannot be started.
    """
    return ResidentProcess(_spawn(reactor, argv, env, log_path, cwd))
