"""Tests for cpro.supervisor's decisions and cpro.crashnote, with a fake process reactor.

Nothing is spawned for real: the fake reactor records spawnProcess calls and
the tests end those "processes" themselves. Fake pids are above any pid_max,
so a stray signal could reach no real process.
"""

import json
import os
import signal

from twisted.internet import task
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from cpro import crashnote, supervisor
from cpro.testing.lab.loopback import LoopbackCluster
from cpro.resources.ledger import ADDRESS, LEDGER_NAME, Ledger, boot_id
from cpro.supervisor import EXIT_SERVER_DOWN, Options, Supervisor, daemon_settings, with_after_crash

FAKE_PID = 5_000_000
DAEMON = ["twistd", "-n", "--pidfile=", "cpro", "--config", "/etc/cpro/clp.conf", "--server", "srv1"]


class FakeTransport:
    def __init__(self, pid):
        self.pid = pid


class FakeProcessReactor(task.Clock):
    def __init__(self):
        super().__init__()
        self.spawned = []  # (proto, args)
        self._next_pid = FAKE_PID

    def spawnProcess(self, proto, executable, args, env=None, path=None, childFDs=None):
        self._next_pid += 1
        transport = FakeTransport(self._next_pid)
        proto.makeConnection(transport)
        self.spawned.append((proto, list(args)))
        return transport

    def end(self, index=-1, exit_code=0, sig=None):
        proto = self.spawned[index][0]
        if exit_code == 0 and sig is None:
            proto.processEnded(Failure(ProcessDone(0)))
        else:
            # As Twisted reports it: no exit code for a process a signal ended.
            proto.processEnded(Failure(ProcessTerminated(exitCode=None if sig else exit_code, signal=sig)))


def add_recover(config_path, code):
    """Put <pm><exec0><recover>code</recover></exec0></pm> into a lab clp.conf."""
    with open(config_path) as f:
        text = f.read()
    with open(config_path, "w") as f:
        f.write(text.replace("</root>", f"<pm><exec0><recover>{code}</recover></exec0></pm></root>"))


class SupervisorTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.state_dir = os.path.join(self.dir, "state")
        os.makedirs(self.state_dir)
        self.lab = LoopbackCluster(None, os.path.join(self.dir, "lab"), servers=1, netns="unused")
        self.config = self.lab.write_config()
        self.reactor = FakeProcessReactor()
        self.said = []
        self.kills = []

    def supervisor(self, action=None, **kw):
        sup = Supervisor(self.reactor, DAEMON, self.config, self.state_dir, "srv1", action=action,
                         removers={}, say=self.said.append, **kw)
        sup.kill = lambda pid, sig: self.kills.append((pid, sig))
        return sup

    def daemon_started(self, sup):
        """What the daemon does when its services start: write the ledger as its own."""
        with open(os.path.join(self.state_dir, LEDGER_NAME), "w") as f:
            json.dump({"format": 1, "boot_id": boot_id(), "pid": sup.pid, "entries": []}, f)

    def notes(self):
        return crashnote.take_notes(self.state_dir)

    def test_clean_exit_is_not_a_crash(self):
        sup = self.supervisor("restart")
        d = sup.start()
        self.daemon_started(sup)
        self.reactor.end(exit_code=0)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual(self.notes(), [])

    def test_daemon_stopped_by_someone_else_is_not_a_crash(self):
        # twistd stops cleanly on SIGTERM and then ends itself with it.
        for sig in (signal.SIGTERM, signal.SIGINT):
            sup = self.supervisor("restart")
            d = sup.start()
            self.daemon_started(sup)
            self.reactor.end(sig=sig)
            self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(self.notes(), [])

    def test_startup_refusals_are_passed_through(self):
        for code in (3, 4, 5, 6, 7):
            sup = self.supervisor("restart")
            d = sup.start()
            self.daemon_started(sup)  # 7 (configuration mismatch) comes after the start
            self.reactor.end(exit_code=code)
            self.assertEqual(self.successResultOf(d), code)
        self.assertEqual(len(self.reactor.spawned), 5)
        self.assertEqual(self.notes(), [])

    def test_exit_before_the_daemon_started_is_not_a_crash(self):
        # twistd's usage error, an unreadable file...: no server-down action for a typo.
        sup = self.supervisor("shutdown")
        d = sup.start()
        self.reactor.end(exit_code=1)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(len(self.reactor.spawned), 1)

    def test_sigkill_with_restart_restarts_with_after_crash(self):
        sup = self.supervisor("restart")
        d = sup.start()
        first = sup.pid
        self.reactor.end(sig=signal.SIGKILL)  # a signal is a crash even before the start completed
        self.assertNoResult(d)
        self.assertEqual(self.reactor.spawned[-1][1], with_after_crash(DAEMON))
        self.assertIn("--after-crash", self.reactor.spawned[-1][1])
        self.assertNotEqual(sup.pid, first)
        [note] = self.notes()
        self.assertEqual((note["pid"], note["signal"], note["exit_code"], note["action"]),
                         (first, signal.SIGKILL, None, "restart"))
        self.assertTrue(crashnote.same_boot(note, boot_id()))
        self.assertIn("killed by signal 9 (SIGKILL)", crashnote.describe(note))

    def test_unexpected_exit_code_of_a_running_daemon_is_a_crash(self):
        sup = self.supervisor("restart")
        sup.start()
        self.daemon_started(sup)
        self.reactor.end(exit_code=1)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_restart_budget_then_shutdown_action(self):
        sup = self.supervisor("restart", max_restarts=2, restart_window=60)
        d = sup.start()
        for _ in range(2):
            self.reactor.advance(10)
            self.reactor.end(sig=signal.SIGSEGV)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(self.kills, [])
        self.reactor.end(sig=signal.SIGSEGV)
        # The fourth spawn is the shutdown command of clp.conf (through setsid).
        action = self.reactor.spawned[-1][1]
        self.assertTrue(action[-1].endswith("osaction-shutdown"), action)
        self.reactor.end(exit_code=0)
        self.assertEqual(self.successResultOf(d), EXIT_SERVER_DOWN)
        self.assertEqual([n["action"] for n in self.notes()], ["restart", "restart", "shutdown"])

    def test_restarts_outside_the_window_are_forgotten(self):
        sup = self.supervisor("restart", max_restarts=1, restart_window=60)
        sup.start()
        self.reactor.end(sig=signal.SIGKILL)
        self.reactor.advance(61)
        self.reactor.end(sig=signal.SIGKILL)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertIn("--after-crash", self.reactor.spawned[-1][1])

    def test_configured_action_is_read_from_clp_conf(self):
        add_recover(self.config, 1)
        sup = self.supervisor()
        sup.start()
        self.reactor.end(sig=signal.SIGKILL)
        self.assertIn("--after-crash", self.reactor.spawned[-1][1])

    def test_default_action_is_shutdown(self):
        sup = self.supervisor()
        d = sup.start()
        self.reactor.end(sig=signal.SIGABRT)
        self.assertTrue(self.reactor.spawned[-1][1][-1].endswith("osaction-shutdown"))
        self.reactor.end(exit_code=0)
        self.assertEqual(self.successResultOf(d), EXIT_SERVER_DOWN)

    def test_reboot_action(self):
        add_recover(self.config, 3)
        sup = self.supervisor()
        sup.start()
        self.reactor.end(sig=signal.SIGKILL)
        self.assertTrue(self.reactor.spawned[-1][1][-1].endswith("osaction-reboot"))

    def test_failed_action_exits_1(self):
        sup = self.supervisor("shutdown")
        d = sup.start()
        self.reactor.end(sig=signal.SIGKILL)
        self.reactor.end(exit_code=1)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertTrue(any("failed" in s for s in self.said))

    def test_leftovers_are_removed_before_the_action(self):
        removed = []
        Ledger(os.path.join(self.state_dir, LEDGER_NAME)).record("fip1", ADDRESS, "10.0.0.5")
        sup = self.supervisor("shutdown")
        sup.removers = {ADDRESS: lambda ip: removed.append(ip) or True}
        sup.start()
        self.reactor.end(sig=signal.SIGKILL)
        self.assertEqual(removed, ["10.0.0.5"])
        self.assertEqual(len(self.reactor.spawned), 2)  # then the action
        self.assertEqual(Ledger(os.path.join(self.state_dir, LEDGER_NAME)).leftovers(), [])

    def test_restart_removes_the_addresses_before_the_new_daemon(self):
        # A peer whose heartbeat timeout ends before the new daemon runs must
        # find the address gone, or its duplicate check refuses the group.
        ledger_path = os.path.join(self.state_dir, LEDGER_NAME)
        Ledger(ledger_path).record("fip1", ADDRESS, "10.0.0.5")
        removed = []
        sup = self.supervisor("restart")
        sup.removers = {ADDRESS: lambda ip: removed.append((ip, len(self.reactor.spawned))) or ["eth1"]}
        sup.start()
        self.reactor.end(sig=signal.SIGKILL)
        self.assertEqual(removed, [("10.0.0.5", 1)])  # before the second spawn
        self.assertIn("--after-crash", self.reactor.spawned[-1][1])
        # The entry stays: the new daemon's cleanup reports it (pm 21).
        self.assertEqual([e.value for e in Ledger(ledger_path).leftovers()], ["10.0.0.5"])
        [note] = self.notes()
        self.assertIn("removed address 10.0.0.5 of fip1 before restarting it", crashnote.describe(note))

    def test_restart_after_a_failed_address_removal_still_restarts(self):
        Ledger(os.path.join(self.state_dir, LEDGER_NAME)).record("fip1", ADDRESS, "10.0.0.5")
        sup = self.supervisor("restart")
        sup.removers = {ADDRESS: lambda ip: 1 / 0}
        sup.start()
        self.reactor.end(sig=signal.SIGKILL)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertTrue(any("cannot remove address 10.0.0.5 of fip1" in s for s in self.said), self.said)

    def test_stop_during_the_address_removal_does_not_restart(self):
        from twisted.internet import defer

        Ledger(os.path.join(self.state_dir, LEDGER_NAME)).record("fip1", ADDRESS, "10.0.0.5")
        pending = defer.Deferred()
        sup = self.supervisor("restart")
        sup.removers = {ADDRESS: lambda ip: pending}
        d = sup.start()
        self.reactor.end(sig=signal.SIGKILL)
        sup.stop()
        self.assertNoResult(d)
        pending.callback(["eth1"])
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(len(self.reactor.spawned), 1)

    def test_stop_forwards_the_signal_and_is_not_a_crash(self):
        sup = self.supervisor("restart")
        d = sup.start()
        self.daemon_started(sup)
        sup.stop(signal.SIGTERM)
        self.assertEqual(self.kills, [(sup.pid, signal.SIGTERM)])
        self.reactor.end(sig=signal.SIGTERM)
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual(self.notes(), [])

    def test_stop_while_the_action_runs_waits_for_it(self):
        sup = self.supervisor("shutdown")
        d = sup.start()
        self.reactor.end(sig=signal.SIGKILL)
        sup.stop(signal.SIGTERM)
        self.assertNoResult(d)
        self.reactor.end(exit_code=0)
        self.assertEqual(self.successResultOf(d), EXIT_SERVER_DOWN)

    def test_unreadable_config_falls_back_to_shutdown_with_the_default_command(self):
        os.unlink(self.config)
        sup = self.supervisor()
        sup.start()
        self.reactor.end(sig=signal.SIGKILL)
        self.assertEqual(self.reactor.spawned[-1][1][-2:], ["systemctl", "poweroff"])
        # Not run: the fake reactor only records it.


class SettingsTests(SynchronousTestCase):
    def test_settings_from_the_plugin_command(self):
        config, state_dir, server = daemon_settings(
            ["twistd", "-n", "cpro", "--config", "/x/clp.conf", "--state-dir", "/x/state", "--server", "s2"], {})
        self.assertEqual((config, state_dir, server), ("/x/clp.conf", "/x/state", "s2"))

    def test_settings_of_a_tac_daemon_from_the_environment(self):
        config, state_dir, server = daemon_settings(
            ["twistd", "-ny", "tap/cpro.tac"], {"CPRO_CONFIG": "/y/clp.conf", "CPRO_STATE_DIR": "/y/st",
                                                  "CPRO_SERVER": "s3"})
        self.assertEqual((config, state_dir, server), ("/y/clp.conf", "/y/st", "s3"))

    def test_after_crash_goes_after_the_plugin_name(self):
        self.assertEqual(with_after_crash(["twistd", "-n", "cpro", "--server", "s"]),
                         ["twistd", "-n", "cpro", "--after-crash", "--server", "s"])
        self.assertEqual(with_after_crash(["twistd", "-ny", "cpro.tac"]), ["twistd", "-ny", "cpro.tac"])

    def test_options(self):
        o = Options()
        o.parseOptions(["--action", "restart", "--max-restarts", "5", "--", "twistd", "-n", "cpro"])
        self.assertEqual((o["action"], o["max-restarts"], o["command"]), ("restart", 5, ["twistd", "-n", "cpro"]))
        for bad in (["--action", "panic", "--", "x"], []):
            self.assertRaises(supervisor.usage.UsageError, Options().parseOptions, bad)


class CrashNoteTests(SynchronousTestCase):
    def test_notes_accumulate_and_are_taken_once(self):
        state = os.path.abspath(self.mktemp())
        os.makedirs(state)
        crashnote.add_note(state, 10, None, 9, "restart", "b1", when=0)
        crashnote.add_note(state, 11, 1, None, "shutdown", "b0", when=0, detail="3 restarts")
        notes = crashnote.take_notes(state)
        self.assertEqual([n["pid"] for n in notes], [10, 11])
        self.assertEqual(crashnote.take_notes(state), [])
        self.assertTrue(crashnote.same_boot(notes[0], "b1"))
        self.assertFalse(crashnote.same_boot(notes[1], "b1"))
        self.assertIn("exit code 1; the supervisor ran the server-down action 'shutdown' (3 restarts)",
                      crashnote.describe(notes[1]))

    def test_bounded(self):
        state = os.path.abspath(self.mktemp())
        os.makedirs(state)
        for pid in range(crashnote.MAX_NOTES + 5):
            crashnote.add_note(state, pid, None, 9, "restart", "b")
        self.assertEqual(len(crashnote.take_notes(state)), crashnote.MAX_NOTES)

    def test_garbage_file_is_no_note(self):
        state = os.path.abspath(self.mktemp())
        os.makedirs(state)
        with open(os.path.join(state, crashnote.NOTE_NAME), "w") as f:
            f.write("[1, 2")
        self.assertEqual(crashnote.take_notes(state), [])
