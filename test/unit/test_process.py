"""Tests for cpro.system.process: real short processes on the real reactor.

The reactor here is the global one on purpose: these tests check real
fork/exec, process groups and signals, which a fake reactor cannot show.
"""

import os
import signal

import psutil
from twisted.internet import defer, reactor, task
from twisted.internet.error import ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial import unittest

from cpro.system import process
from cpro.system.process import (
    CommandError,
    ProcessResult,
    ResidentProcess,
    kill_process_group,
    run_command,
    spawn_resident,
)


def write_script(directory, name, body, mode=0o755):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, mode)
    return path


def is_gone(pid):
    """True when pid no longer runs (a zombie nobody reaps counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@defer.inlineCallbacks
def wait_gone(pid, limit=1.0):
    """Give the kernel a moment to finish a process that was sent SIGKILL."""
    waited = 0.0
    while not is_gone(pid) and waited < limit:
        yield task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02
    return is_gone(pid)


@defer.inlineCallbacks
def read_when_present(path, limit=1.0):
    waited = 0.0
    while waited < limit:
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
            if text.endswith("\n"):
                return text
        yield task.deferLater(reactor, 0.02, lambda: None)
        waited += 0.02
    raise AssertionError(f"{path} was not written")


class ProcessTestCase(unittest.TestCase):
    """Base for tests that run real processes on the global reactor.

    Works around a trial/reactor interaction (Twisted 26.10): when a test's
    Deferred completes while the reactor is starting (its SIGCHLD handler
    install reaps a child that exited before reactor.run and the test
    finishes there), trial's reactor.crash() re-adds the start-up trigger
    into the list being consumed, so the *next* test runs with no SIGCHLD
    handling and waits for its children until it times out. Finishing every
    test from a delayed call keeps crash() out of the start-up phase.
    """

    timeout = 5

    def tearDown(self):
        return task.deferLater(reactor, 0, lambda: None)


class RunCommandTests(ProcessTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    @defer.inlineCallbacks
    def test_success_in_own_process_group(self):
        """Exit 0; the command leads its own session and group, pid == pgid."""
        out = os.path.join(self.dir, "ids")
        script = write_script(self.dir, "ids.sh", f"echo $$ $(cut -d' ' -f5,6 /proc/$$/stat) > {out}")
        result = yield run_command(reactor, [script], env={})
        self.assertIsInstance(result, ProcessResult)
        self.assertEqual((result.exit_code, result.signal, result.timed_out), (0, None, False))
        self.assertTrue(result.succeeded)
        self.assertGreaterEqual(result.duration, 0)
        with open(out) as f:
            pid, pgid, sid = (int(x) for x in f.read().split())
        self.assertEqual(pid, result.pid)
        self.assertEqual(pgid, pid)
        self.assertEqual(sid, pid)
        self.assertNotEqual(pgid, os.getpgrp())

    @defer.inlineCallbacks
    def test_exit_code(self):
        script = write_script(self.dir, "fail.sh", "exit 3")
        result = yield run_command(reactor, [script])
        self.assertEqual((result.exit_code, result.signal, result.timed_out), (3, None, False))
        self.assertFalse(result.succeeded)
        self.assertEqual(result.describe(), "exited with code 3")

    @defer.inlineCallbacks
    def test_killed_by_signal(self):
        script = write_script(self.dir, "suicide.sh", "kill -KILL $$")
        result = yield run_command(reactor, [script])
        self.assertIsNone(result.exit_code)
        self.assertEqual(result.signal, signal.SIGKILL)
        self.assertIn("SIGKILL", result.describe())

    @defer.inlineCallbacks
    def test_arguments_passed_without_shell(self):
        out = os.path.join(self.dir, "args")
        script = write_script(self.dir, "args.sh", f'for a in "$@"; do echo "[$a]"; done > {out}')
        result = yield run_command(reactor, [script, "two words", "$HOME;", "*"], cwd=self.dir)
        self.assertEqual(result.exit_code, 0)
        with open(out) as f:
            self.assertEqual(f.read(), "[two words]\n[$HOME;]\n[*]\n")

    @defer.inlineCallbacks
    def test_timeout_kills_process_group(self):
        """On timeout the background grandchild dies with the script."""
        gc_file = os.path.join(self.dir, "grandchild")
        script = write_script(self.dir, "hang.sh", f"sleep 30 &\necho $! > {gc_file}\nsleep 30")
        result = yield run_command(reactor, [script], timeout=0.3, kill_grace=0.3)
        self.assertTrue(result.timed_out)
        self.assertFalse(result.succeeded)
        self.assertEqual(result.signal, signal.SIGTERM)
        self.assertGreaterEqual(result.duration, 0.3)
        grandchild = int((yield read_when_present(gc_file)))
        self.assertTrue((yield wait_gone(grandchild)), f"grandchild {grandchild} survived")

    @defer.inlineCallbacks
    def test_timeout_escalates_to_sigkill(self):
        """A group member that ignores SIGTERM gets SIGKILL after the grace period."""
        gc_file = os.path.join(self.dir, "grandchild")
        script = write_script(
            self.dir,
            "stubborn.sh",
            f"(trap '' TERM; exec sleep 30) &\necho $! > {gc_file}\nsleep 30",
        )
        result = yield run_command(reactor, [script], timeout=0.2, kill_grace=0.4)
        self.assertTrue(result.timed_out)
        # The leader died of SIGTERM but the result waits for the SIGKILL round.
        self.assertGreaterEqual(result.duration, 0.55)
        grandchild = int((yield read_when_present(gc_file)))
        self.assertTrue((yield wait_gone(grandchild)), f"grandchild {grandchild} survived SIGKILL")

    @defer.inlineCallbacks
    def test_log_file_appended(self):
        logf = os.path.join(self.dir, "cmd.log")
        script = write_script(self.dir, "talk.sh", 'echo "out $1"\necho "err $1" >&2')
        yield run_command(reactor, [script, "one"], log_path=logf)
        yield run_command(reactor, [script, "two"], log_path=logf)
        with open(logf) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 8)
        self.assertIn("run: " + script + " one", lines[0])
        self.assertEqual(lines[1:3], ["out one", "err one"])
        self.assertIn("exited with code 0", lines[3])
        self.assertIn("run: " + script + " two", lines[4])
        self.assertEqual(lines[5:7], ["out two", "err two"])

    @defer.inlineCallbacks
    def test_output_discarded_without_log(self):
        script = write_script(self.dir, "noisy.sh", "head -c 200000 /dev/zero; head -c 200000 /dev/zero >&2")
        result = yield run_command(reactor, [script])
        self.assertEqual(result.exit_code, 0)

    @defer.inlineCallbacks
    def test_environment_is_complete_and_has_path(self):
        out = os.path.join(self.dir, "env")
        script = write_script(self.dir, "env.sh", f"env > {out}")
        os.environ["CPRO_TEST_LEAK"] = "1"
        self.addCleanup(os.environ.pop, "CPRO_TEST_LEAK", None)
        yield run_command(reactor, [script], env={"FOO": "bar baz"})
        with open(out) as f:
            env = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
        self.assertEqual(env["FOO"], "bar baz")
        self.assertEqual(env["PATH"], process.DEFAULT_PATH)
        self.assertNotIn("CPRO_TEST_LEAK", env)

    @defer.inlineCallbacks
    def test_explicit_path_kept(self):
        out = os.path.join(self.dir, "env")
        script = write_script(self.dir, "env.sh", f'echo "$PATH" > {out}')
        yield run_command(reactor, [script], env={"PATH": "/bin:/usr/bin:/opt/x"})
        with open(out) as f:
            self.assertEqual(f.read().strip(), "/bin:/usr/bin:/opt/x")

    @defer.inlineCallbacks
    def test_cwd(self):
        out = os.path.join(self.dir, "cwd")
        sub = os.path.join(self.dir, "sub")
        os.makedirs(sub)
        script = write_script(self.dir, "pwd.sh", f"pwd > {out}")
        yield run_command(reactor, [script], cwd=sub)
        with open(out) as f:
            self.assertEqual(os.path.realpath(f.read().strip()), os.path.realpath(sub))

    def test_command_from_path(self):
        d = run_command(reactor, ["true"])
        d.addCallback(lambda r: self.assertEqual(r.exit_code, 0))
        return d

    @defer.inlineCallbacks
    def test_missing_executable(self):
        path = os.path.join(self.dir, "nope.sh")
        err = yield self.assertFailure(run_command(reactor, [path]), CommandError)
        self.assertIn(path, str(err))
        self.assertIn("no such file", str(err))

    @defer.inlineCallbacks
    def test_not_executable(self):
        path = write_script(self.dir, "plain.sh", "exit 0", mode=0o644)
        err = yield self.assertFailure(run_command(reactor, [path]), CommandError)
        self.assertIn(path, str(err))
        self.assertIn("not executable", str(err))

    @defer.inlineCallbacks
    def test_directory_is_not_a_command(self):
        err = yield self.assertFailure(run_command(reactor, [self.dir]), CommandError)
        self.assertIn(self.dir, str(err))
        self.assertIn("directory", str(err))

    @defer.inlineCallbacks
    def test_unknown_command_name(self):
        err = yield self.assertFailure(run_command(reactor, ["cpro-no-such-command"]), CommandError)
        self.assertIn("cpro-no-such-command", str(err))
        self.assertIn("not found in PATH", str(err))

    @defer.inlineCallbacks
    def test_missing_cwd(self):
        script = write_script(self.dir, "ok.sh", "exit 0")
        missing = os.path.join(self.dir, "missing")
        err = yield self.assertFailure(run_command(reactor, [script], cwd=missing), CommandError)
        self.assertIn(missing, str(err))

    @defer.inlineCallbacks
    def test_unwritable_log(self):
        script = write_script(self.dir, "ok.sh", "exit 0")
        logf = os.path.join(self.dir, "no", "such", "dir.log")
        err = yield self.assertFailure(run_command(reactor, [script], log_path=logf), CommandError)
        self.assertIn(logf, str(err))

    @defer.inlineCallbacks
    def test_cancel_stops_group(self):
        pid_file = os.path.join(self.dir, "pid")
        script = write_script(self.dir, "hang.sh", f"echo $$ > {pid_file}\nexec sleep 30")
        d = run_command(reactor, [script], kill_grace=0.3)
        pid = int((yield read_when_present(pid_file)))
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        self.assertTrue((yield wait_gone(pid)))
        # Let the stop round (SIGKILL timer) finish: trial fails a test that
        # leaves delayed calls behind.
        yield task.deferLater(reactor, 0.35, lambda: None)


class _InstantExitTransport:
    pid = 4242


class InstantExitReactor(task.Clock):
    """spawnProcess reports the end synchronously, as Twisted does when the
    child has already exited by the time it registers the reaper."""

    def __init__(self, exit_code):
        super().__init__()
        self.exit_code = exit_code

    def spawnProcess(self, proto, executable, args, env=None, path=None, childFDs=None):
        transport = _InstantExitTransport()
        proto.makeConnection(transport)
        transport.pid = None  # as Twisted's Process does once reaped
        proto.processEnded(Failure(ProcessTerminated(exitCode=self.exit_code)))
        return transport


class InstantExitTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.script = write_script(self.dir, "quick.sh", "exit 3")

    def test_run_command(self):
        clock = InstantExitReactor(3)
        result = self.successResultOf(run_command(clock, [self.script], timeout=10))
        self.assertEqual((result.pid, result.exit_code, result.timed_out), (4242, 3, False))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_spawn_resident(self):
        clock = InstantExitReactor(3)
        resident = spawn_resident(clock, [self.script], {}, None)
        self.assertEqual(resident.pid, 4242)
        self.assertFalse(resident.running)
        self.assertEqual(self.successResultOf(resident.ended).exit_code, 3)
        self.assertIs(self.successResultOf(resident.terminate()), resident.result)
        self.assertEqual(clock.getDelayedCalls(), [])


class KillProcessGroupTests(unittest.SynchronousTestCase):
    def test_missing_group_ignored(self):
        # pid_max is at most 2**22 on Linux, so this group cannot exist.
        self.assertFalse(kill_process_group(2**22 + 12345, signal.SIGTERM))

    def test_existing_group(self):
        self.assertTrue(kill_process_group(os.getpgrp(), 0))


class SpawnResidentTests(ProcessTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    @defer.inlineCallbacks
    def test_terminate_kills_group(self):
        gc_file = os.path.join(self.dir, "grandchild")
        logf = os.path.join(self.dir, "resident.log")
        script = write_script(self.dir, "daemon.sh", f"sleep 30 &\necho $! > {gc_file}\necho up\nsleep 30")
        resident = spawn_resident(reactor, [script], {}, logf)
        self.assertIsInstance(resident, ResidentProcess)
        self.assertTrue(resident.running)
        self.assertIsNone(resident.result)
        grandchild = int((yield read_when_present(gc_file)))
        self.assertEqual(os.getpgid(resident.pid), resident.pid)
        self.assertEqual(os.getpgid(grandchild), resident.pid)
        self.assertFalse(is_gone(grandchild))

        ended = resident.ended
        first = resident.terminate(grace=0.3)
        second = resident.terminate(grace=0.3)
        result = yield first
        self.assertIs((yield second), result)
        self.assertIs((yield ended), result)
        self.assertFalse(resident.running)
        self.assertEqual(result.signal, signal.SIGTERM)
        self.assertFalse(result.timed_out)
        self.assertTrue((yield wait_gone(grandchild)))
        # Terminating an ended process is a no-op.
        self.assertIs((yield resident.terminate()), result)
        with open(logf) as f:
            self.assertIn("up\n", f.read())

    @defer.inlineCallbacks
    def test_exits_by_itself(self):
        script = write_script(self.dir, "brief.sh", "exit 4")
        resident = spawn_resident(reactor, [script], {}, None)
        result = yield resident.ended
        self.assertEqual((result.exit_code, result.pid), (4, resident.pid))
        self.assertFalse(resident.running)
        self.assertIs(resident.result, result)

    def test_missing_executable_raises(self):
        path = os.path.join(self.dir, "absent")
        err = self.assertRaises(CommandError, spawn_resident, reactor, [path], {}, None)
        self.assertIn(path, str(err))
