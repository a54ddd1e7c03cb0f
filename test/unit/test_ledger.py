"""Tests for cpro.resources.ledger: the leftovers ledger and the cleanup after a crash.

The file and decision tests are synchronous (task.Clock, a fake process
table); the kill tests use real `sleep` processes, each in its own session
and process group, on the global reactor.
"""

import json
import os
import signal

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase

from cpro.resources import ledger as ledger_module
from cpro.resources.base import ActionContext
from cpro.resources.exec import ExecResource
from cpro.resources.ledger import (
    ADDRESS,
    LEDGER_NAME,
    NULL_LEDGER,
    PROCESS_GROUP,
    Entry,
    Ledger,
    ProcTable,
    cleanup_leftovers,
    group_is_ours,
    process_group_value,
)
from cpro.system.process import read_proc_stat, spawn_resident

from test.unit.test_exec import make_config
from test.unit.test_process import ProcessTestCase, is_gone, wait_gone, write_script

BOOT = "boot-1"


def read_json(path):
    with open(path) as f:
        return json.load(f)


class LedgerFileTests(SynchronousTestCase):
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, LEDGER_NAME)

    def test_record_and_forget_rewrite_the_file(self):
        ledger = Ledger(self.path, current_boot=BOOT)
        ledger.record("exec1", PROCESS_GROUP, {"pgid": 1234, "start": 99})
        ledger.record("fip1", ADDRESS, "10.0.0.5")
        data = read_json(self.path)
        self.assertEqual(data["boot_id"], BOOT)
        self.assertEqual(data["pid"], os.getpid())
        self.assertEqual(data["entries"], [
            {"resource": "exec1", "kind": PROCESS_GROUP, "value": {"pgid": 1234, "start": 99}},
            {"resource": "fip1", "kind": ADDRESS, "value": "10.0.0.5"}])
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o600)
        ledger.forget("exec1", PROCESS_GROUP, {"start": 99, "pgid": 1234})  # same value, other key order
        self.assertEqual([e["resource"] for e in read_json(self.path)["entries"]], ["fip1"])
        self.assertEqual(os.listdir(self.dir), [LEDGER_NAME])  # no temporary file left

    def test_recording_twice_keeps_one_entry_and_forgetting_unknown_is_fine(self):
        ledger = Ledger(self.path, current_boot=BOOT)
        ledger.record("fip1", ADDRESS, "10.0.0.5")
        ledger.record("fip1", ADDRESS, "10.0.0.5")
        ledger.forget("fip1", ADDRESS, "10.0.0.6")
        self.assertEqual(ledger.entries(), [Entry("fip1", ADDRESS, "10.0.0.5")])

    def test_failed_write_keeps_the_previous_file_whole(self):
        ledger = Ledger(self.path, current_boot=BOOT)
        ledger.record("fip1", ADDRESS, "10.0.0.5")
        os.mkdir(self.path + ".tmp")  # the temporary file cannot be created
        ledger.record("fip2", ADDRESS, "10.0.0.6")  # logged, not raised
        self.assertEqual([e["resource"] for e in read_json(self.path)["entries"]], ["fip1"])
        self.flushLoggedErrors()

    def test_next_incarnation_sees_leftovers_until_cleared(self):
        first = Ledger(self.path, current_boot=BOOT)
        first.record("exec1", PROCESS_GROUP, {"pgid": 1234, "start": 99})
        second = Ledger(self.path, current_boot=BOOT)
        self.assertEqual(second.leftovers(), [Entry("exec1", PROCESS_GROUP, {"pgid": 1234, "start": 99})])
        self.assertEqual(second.stale(), [])
        self.assertEqual(second.previous_pid, os.getpid())
        # What the new one records does not hide the old entries from a third incarnation.
        second.record("fip1", ADDRESS, "10.0.0.5")
        third = Ledger(self.path, current_boot=BOOT)
        self.assertEqual(len(third.leftovers()), 2)
        third.clear_leftovers()
        self.assertEqual(read_json(self.path)["entries"], [])
        self.assertEqual(Ledger(self.path, current_boot=BOOT).leftovers(), [])

    def test_entries_of_an_earlier_boot_are_stale(self):
        Ledger(self.path, current_boot="boot-0").record("fip1", ADDRESS, "10.0.0.5")
        ledger = Ledger(self.path, current_boot=BOOT)
        self.assertEqual(ledger.leftovers(), [])
        self.assertEqual(ledger.stale(), [Entry("fip1", ADDRESS, "10.0.0.5")])

    def test_unreadable_file_and_malformed_entries_are_ignored(self):
        with open(self.path, "w") as f:
            f.write("{not json")
        self.assertEqual(Ledger(self.path, current_boot=BOOT).leftovers(), [])
        with open(self.path, "w") as f:
            json.dump({"boot_id": BOOT, "entries": [
                {"resource": "exec1", "kind": PROCESS_GROUP, "value": {"pgid": 1}},  # never init
                {"resource": "exec1", "kind": PROCESS_GROUP, "value": {"pgid": "12"}},
                {"resource": 5, "kind": ADDRESS, "value": "x"}, "junk",
                {"resource": "exec2", "kind": PROCESS_GROUP, "value": {"pgid": 77, "start": None}}]}, f)
        self.assertEqual(Ledger(self.path, current_boot=BOOT).leftovers(),
                         [Entry("exec2", PROCESS_GROUP, {"pgid": 77, "start": None})])

    def test_claim_writes_the_owner_pid_and_keeps_leftovers(self):
        Ledger(self.path, current_boot=BOOT).record("fip1", ADDRESS, "10.0.0.5")
        with open(self.path) as f:
            data = json.load(f)
        data["pid"] = 1
        with open(self.path, "w") as f:
            json.dump(data, f)
        ledger = Ledger(self.path, current_boot=BOOT)
        self.assertEqual(ledger.previous_pid, 1)
        ledger.claim()
        data = read_json(self.path)
        self.assertEqual((data["pid"], len(data["entries"])), (os.getpid(), 1))

    def test_null_ledger_records_nothing(self):
        NULL_LEDGER.record("exec1", PROCESS_GROUP, {"pgid": 5})
        NULL_LEDGER.forget("exec1", PROCESS_GROUP, {"pgid": 5})
        self.assertEqual((NULL_LEDGER.entries(), NULL_LEDGER.leftovers()), ([], []))

    def test_boot_id(self):
        path = os.path.join(self.dir, "boot_id")
        with open(path, "w") as f:
            f.write("abc\n")
        self.assertEqual(ledger_module.boot_id(path), "abc")
        self.assertIsNone(ledger_module.boot_id(os.path.join(self.dir, "missing")))


class OwnershipTests(SynchronousTestCase):
    def test_living_leader_must_have_the_recorded_start(self):
        self.assertTrue(group_is_ours(100, 500, [(100, 500), (101, 510)]))
        self.assertFalse(group_is_ours(100, 500, [(100, 900)]))  # pid reused
        self.assertFalse(group_is_ours(100, None, [(100, 900)]))

    def test_without_leader_members_must_be_younger_than_the_recorded_start(self):
        self.assertTrue(group_is_ours(100, 500, [(101, 510), (102, 600)]))
        self.assertFalse(group_is_ours(100, 500, [(101, 400)]))
        self.assertTrue(group_is_ours(100, None, [(101, 400)]))


class FakeProc:
    """A process table: pgid -> [(pid, start)]; SIGTERM ends the groups in .obedient."""

    def __init__(self, groups, obedient=()):
        self.groups = {k: list(v) for k, v in groups.items()}
        self.obedient = set(obedient)
        self.signals = []

    def group_members(self, pgid):
        return list(self.groups.get(pgid, []))

    def killpg(self, pgid, sig):
        self.signals.append((pgid, sig))
        if sig == signal.SIGKILL or pgid in self.obedient:
            self.groups.pop(pgid, None)
        return True


class CleanupDecisionTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, LEDGER_NAME)

    def leftover_ledger(self, *entries):
        first = Ledger(self.path, current_boot=BOOT)
        for e in entries:
            first.record(*e)
        return Ledger(self.path, current_boot=BOOT)

    def run_cleanup(self, ledger, proc, removers=None, steps=60):
        results = []
        cleanup_leftovers(self.clock, ledger, removers, grace=2.0, poll=0.05, proc=proc).addBoth(results.append)
        for _ in range(steps):
            if results:
                break
            self.clock.advance(0.05)
        self.assertEqual(len(results), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        return results[0]

    def test_sigterm_then_sigkill_only_for_our_groups(self):
        ledger = self.leftover_ledger(
            ("exec1", PROCESS_GROUP, {"pgid": 100, "start": 500}),  # ours, obeys SIGTERM
            ("exec2", PROCESS_GROUP, {"pgid": 200, "start": 600}),  # ours, ignores SIGTERM
            ("exec3", PROCESS_GROUP, {"pgid": 300, "start": 700}),  # pid reused by someone else
            ("exec4", PROCESS_GROUP, {"pgid": 400, "start": 800}))  # ended by itself
        proc = FakeProc({100: [(100, 500)], 200: [(201, 650)], 300: [(300, 999)]}, obedient={100})
        report = self.run_cleanup(ledger, proc)
        self.assertEqual(proc.signals, [(100, signal.SIGTERM), (200, signal.SIGTERM), (200, signal.SIGKILL)])
        self.assertEqual(report.removed, ["process group 100 of exec1 (1 process, SIGTERM)",
                                          "process group 200 of exec2 (1 process, SIGKILL)"])
        self.assertEqual(report.skipped, ["process group 300 of exec3 (its id now belongs to other processes)"])
        self.assertEqual(report.failed, [])
        self.assertIn(300, proc.groups)
        self.assertEqual(Ledger(self.path, current_boot=BOOT).leftovers(), [])

    def test_sigkill_waits_for_the_grace_period(self):
        ledger = self.leftover_ledger(("exec2", PROCESS_GROUP, {"pgid": 200, "start": 600}))
        proc = FakeProc({200: [(200, 600)]})
        results = []
        cleanup_leftovers(self.clock, ledger, grace=2.0, poll=0.05, proc=proc).addBoth(results.append)
        self.clock.advance(1.9)
        self.assertEqual(proc.signals, [(200, signal.SIGTERM)])
        self.clock.advance(0.2)
        self.assertEqual(proc.signals, [(200, signal.SIGTERM), (200, signal.SIGKILL)])
        self.clock.advance(0.05)
        self.assertEqual(results[0].removed, ["process group 200 of exec2 (1 process, SIGKILL)"])

    def test_addresses_go_to_the_remover(self):
        ledger = self.leftover_ledger(("fip1", ADDRESS, "10.0.0.5"), ("fip2", ADDRESS, "10.0.0.6"),
                                      ("fip3", ADDRESS, "10.0.0.7"), ("disk1", "mount", "/mnt"))
        removed = []

        def remove(ip):
            removed.append(ip)
            if ip == "10.0.0.7":
                return defer.fail(RuntimeError("netlink says no"))
            return defer.succeed(["eth0"] if ip == "10.0.0.5" else [])  # fip.remove_address's answer

        report = self.run_cleanup(ledger, FakeProc({}), {ADDRESS: remove})
        self.assertEqual(removed, ["10.0.0.5", "10.0.0.6", "10.0.0.7"])
        self.assertEqual(report.removed, ["address 10.0.0.5 of fip1"])
        self.assertEqual(report.skipped, ["address 10.0.0.6 of fip2 (was not there)"])
        self.assertEqual(report.failed, ["address 10.0.0.7 of fip3 (netlink says no)",
                                         "mount /mnt of disk1 (no way to remove a mount here)"])
        self.assertTrue(report.found)
        self.assertIn("could not remove", report.summary())

    def test_a_remover_that_hangs_times_out(self):
        ledger = self.leftover_ledger(("fip1", ADDRESS, "10.0.0.5"))
        results = []
        cleanup_leftovers(self.clock, ledger, {ADDRESS: lambda ip: defer.Deferred()},
                          remove_timeout=10.0, proc=FakeProc({})).addBoth(results.append)
        self.clock.advance(10)
        self.assertEqual(len(results[0].failed), 1)
        self.assertIn("address 10.0.0.5 of fip1", results[0].failed[0])

    def test_stale_entries_are_dropped_without_touching_anything(self):
        Ledger(self.path, current_boot="boot-0").record("exec1", PROCESS_GROUP, {"pgid": 100, "start": 500})
        ledger = Ledger(self.path, current_boot=BOOT)
        proc = FakeProc({100: [(100, 500)]})
        report = self.run_cleanup(ledger, proc)
        self.assertEqual((proc.signals, report.stale, report.found), ([], 1, False))
        self.assertEqual(report.summary(), "dropped 1 entries of an earlier boot")
        self.assertEqual(read_json(self.path)["entries"], [])

    def test_nothing_left(self):
        report = self.run_cleanup(Ledger(self.path, current_boot=BOOT), FakeProc({}))
        self.assertEqual((report.found, report.summary()), (False, "nothing left"))


class RealProcessCleanupTests(ProcessTestCase):
    """Real `sleep` processes, each leading its own session and process group."""

    timeout = 10

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, LEDGER_NAME)
        self.residents = []

    @defer.inlineCallbacks
    def sleeper(self, argv=("sleep", "30"), processes=1):
        """A resident process that leads its own group; waits until the group has that many processes."""
        resident = spawn_resident(reactor, list(argv), None, None)
        self.residents.append(resident)
        self.addCleanup(lambda: resident.terminate(0.1))
        for _ in range(200):
            if len(ProcTable().group_members(resident.pid)) >= processes:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        return resident

    @defer.inlineCallbacks
    def test_cleanup_kills_only_the_groups_whose_start_time_matches(self):
        ours = yield self.sleeper()
        reused = yield self.sleeper()
        first = Ledger(self.path)
        first.record("exec1", PROCESS_GROUP, process_group_value(ours.pid))
        # The same pgid recorded with another start time: a process that got the pid later.
        first.record("exec2", PROCESS_GROUP, {"pgid": reused.pid, "start": read_proc_stat(reused.pid)[1] - 1})
        report = yield cleanup_leftovers(reactor, Ledger(self.path), grace=1.0)
        self.assertTrue((yield wait_gone(ours.pid)))
        self.assertFalse(is_gone(reused.pid))
        self.assertEqual(report.removed, [f"process group {ours.pid} of exec1 (1 process, SIGTERM)"])
        self.assertEqual(len(report.skipped), 1)
        self.assertEqual(Ledger(self.path).leftovers(), [])

    @defer.inlineCallbacks
    def test_group_that_ignores_sigterm_gets_sigkill(self):
        ready = os.path.join(self.dir, "ready")
        script = write_script(self.dir, "stubborn.sh", f"trap '' TERM\nsleep 30 &\ntouch {ready}\nwait")
        stubborn = yield self.sleeper([script], processes=2)
        for _ in range(500):  # the trap is set and sleep forked once the marker exists
            if os.path.exists(ready):
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        Ledger(self.path).record("exec1", PROCESS_GROUP, process_group_value(stubborn.pid))
        report = yield cleanup_leftovers(reactor, Ledger(self.path), grace=0.3)
        self.assertEqual(report.removed, [f"process group {stubborn.pid} of exec1 (2 processes, SIGKILL)"])
        self.assertEqual(ProcTable().group_members(stubborn.pid), [])


START = ActionContext(event="START", group="failover1", server="srv1", home=True)


class ExecLedgerTests(ProcessTestCase):
    """The exec resource records the process groups it leaves running."""

    timeout = 10

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, LEDGER_NAME)

    def resource(self, start, stop=None, sync=True):
        res = ExecResource(reactor, make_config(start, stop, sync=sync), self.dir, kill_grace=0.3)
        res.ledger = Ledger(self.path)
        self.addCleanup(lambda: res.deactivate(START) if res.ledger.entries() else None)
        return res

    @defer.inlineCallbacks
    def test_resident_start_script_recorded_until_deactivation(self):
        res = self.resource(write_script(self.dir, "start.sh", "exec sleep 30"), sync=False)
        yield res.activate(START)
        entries = Ledger(self.path).leftovers()
        self.assertEqual(entries, [Entry("exec1", PROCESS_GROUP,
                                         {"pgid": res.pid, "start": read_proc_stat(res.pid)[1]})])
        pid = res.pid
        yield res.deactivate(START)
        self.assertTrue(is_gone(pid))
        self.assertEqual(read_json(self.path)["entries"], [])

    @defer.inlineCallbacks
    def test_service_left_behind_by_a_sync_start_script_is_killed_after_a_crash(self):
        pidfile = os.path.join(self.dir, "service.pid")
        res = self.resource(write_script(self.dir, "start.sh", f"sleep 30 &\necho $! > {pidfile}"))
        yield res.activate(START)
        with open(pidfile) as f:
            service = int(f.read())
        self.assertEqual([e.value["pgid"] for e in Ledger(self.path).leftovers()], [os.getpgid(service)])
        # The daemon "crashes": a new incarnation cleans up after it.
        report = yield cleanup_leftovers(reactor, Ledger(self.path), grace=1.0)
        self.assertTrue((yield wait_gone(service)))
        self.assertEqual(len(report.removed), 1)
        res.ledger = Ledger(self.path)

    @defer.inlineCallbacks
    def test_sync_start_script_without_leftovers_records_nothing(self):
        res = self.resource(write_script(self.dir, "start.sh", "exit 0"))
        yield res.activate(START)
        self.assertEqual(res.ledger.entries(), [])
