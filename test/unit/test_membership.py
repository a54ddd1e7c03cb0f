"""Tests for cpro.cluster.membership: path and server state from heartbeats."""

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cpro.cluster import membership as membership_module
from cpro.cluster.membership import IMembershipListener, Membership
from cpro.cluster.states import PathState, ServerState
from cpro.protocols.heartbeat import Incarnation

INTERVAL = 0.1
TIMEOUT = 0.5
INC1 = Incarnation(1000, "aa")
INC2 = Incarnation(2000, "bb")


@implementer(IMembershipListener)
class RecordingListener:
    """Records every event with the clock time it was told."""

    def __init__(self, clock):
        self.clock = clock
        self.events = []

    def path_state_changed(self, server, path, old, new):
        self.events.append(("path", server, path, old, new))

    def server_up(self, server, incarnation):
        self.events.append(("up", server, incarnation))

    def server_down(self, server):
        self.events.append(("down", server, self.clock.seconds()))

    def server_restarted(self, server, old_incarnation, new_incarnation):
        self.events.append(("restarted", server, old_incarnation, new_incarnation))

    def of(self, kind):
        return [e for e in self.events if e[0] == kind]


class MembershipTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.listener = RecordingListener(self.clock)
        self.membership = Membership(
            self.clock, "srv1", ["srv2", "srv3"], ["lanhb1", "lanhb2"], TIMEOUT, self.listener
        )
        self.addCleanup(self.assertNoPendingCalls)

    def assertNoPendingCalls(self):
        self.membership.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def elapse(self, seconds, step=0.05):
        """Let time pass with the reactor turning (a single big advance looks
        like a stalled process, which the membership deliberately forgives once)."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() + step < end:
            self.clock.advance(step)
        self.clock.advance(end - self.clock.seconds())

    def beat_for(self, seconds, server="srv2", paths=("lanhb1", "lanhb2"), incarnation=INC1):
        """Beat every INTERVAL on paths for about `seconds`, starting now."""
        for _ in range(int(round(seconds / INTERVAL))):
            for p in paths:
                self.membership.beat(server, p, incarnation)
            self.clock.advance(INTERVAL)

    def test_listener_fake_provides_interface(self):
        verifyObject(IMembershipListener, self.listener)

    def test_start_state(self):
        m = self.membership
        self.assertFalse(m.is_up("srv2"))
        self.assertTrue(m.is_up("srv1"))
        self.assertEqual(m.live_servers(), ["srv1"])
        self.assertEqual(
            m.path_states("srv2"), {"lanhb1": PathState.UNKNOWN, "lanhb2": PathState.UNKNOWN}
        )
        self.assertEqual(m.server_state("srv2"), ServerState.OFFLINE)
        self.assertEqual(m.server_state("srv1"), ServerState.ONLINE)
        self.assertEqual(m.server_state("nobody"), ServerState.UNKNOWN)
        self.assertIsNone(m.last_heard("srv2"))
        self.assertIsNone(m.incarnation("srv2"))
        self.assertEqual(self.listener.events, [])
        # Nothing is scheduled for servers never heard.
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_first_beat_brings_server_up(self):
        self.elapse(3)
        self.assertTrue(self.membership.beat("srv2", "lanhb1", INC1))
        self.assertEqual(
            self.listener.events,
            [
                ("path", "srv2", "lanhb1", PathState.UNKNOWN, PathState.NORMAL),
                ("up", "srv2", INC1),
            ],
        )
        self.assertTrue(self.membership.is_up("srv2"))
        self.assertEqual(sorted(self.membership.live_servers()), ["srv1", "srv2"])
        self.assertEqual(self.membership.last_heard("srv2"), 3)
        self.assertEqual(self.membership.last_heard("srv2", "lanhb1"), 3)
        self.assertIsNone(self.membership.last_heard("srv2", "lanhb2"))
        self.assertEqual(self.membership.incarnation("srv2"), INC1)
        self.assertEqual(self.membership.server_state("srv2"), ServerState.CAUTION)

    def test_detection_exactly_at_timeout(self):
        self.beat_for(1.0)
        last = self.membership.last_heard("srv2")
        self.assertEqual(self.listener.of("down"), [])
        # Each (server, path) has exactly one deadline, at last beat + timeout.
        deadlines = sorted(c.getTime() for c in self.clock.getDelayedCalls())
        self.assertEqual(deadlines, [last + TIMEOUT, last + TIMEOUT])

        self.clock.advance(last + TIMEOUT - self.clock.seconds() - 1e-6)
        self.assertTrue(self.membership.is_up("srv2"))
        self.clock.advance(2e-6)
        self.assertFalse(self.membership.is_up("srv2"))
        [(_, server, at)] = self.listener.of("down")
        self.assertEqual(server, "srv2")
        self.assertLessEqual(abs(at - (last + TIMEOUT)), 2e-6)

    def test_steady_beats_never_time_out(self):
        self.beat_for(30.0)
        self.assertEqual(self.listener.of("down"), [])
        self.assertEqual(len(self.listener.of("up")), 1)
        self.assertEqual(self.membership.server_state("srv2"), ServerState.ONLINE)
        # Timers are re-armed, not piled up.
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)

    def test_beats_just_inside_timeout_keep_server_up(self):
        for _ in range(20):
            self.membership.beat("srv2", "lanhb1", INC1)
            self.clock.advance(TIMEOUT * 0.99)
        self.assertTrue(self.membership.is_up("srv2"))
        self.assertEqual(self.listener.of("down"), [])

    def test_one_path_lost_is_a_warning(self):
        self.beat_for(1.0)
        self.beat_for(1.0, paths=("lanhb1",))
        self.assertTrue(self.membership.is_up("srv2"))
        self.assertEqual(self.listener.of("down"), [])
        self.assertEqual(
            self.membership.path_states("srv2"),
            {"lanhb1": PathState.NORMAL, "lanhb2": PathState.ERROR},
        )
        self.assertEqual(self.membership.server_state("srv2"), ServerState.CAUTION)
        self.assertIn(
            ("path", "srv2", "lanhb2", PathState.NORMAL, PathState.ERROR), self.listener.events
        )

    def test_path_never_heard_turns_error_once_server_is_up(self):
        self.beat_for(1.0, paths=("lanhb1",))
        self.assertEqual(self.membership.path_states("srv2")["lanhb2"], PathState.ERROR)
        self.assertIn(
            ("path", "srv2", "lanhb2", PathState.UNKNOWN, PathState.ERROR), self.listener.events
        )
        self.assertTrue(self.membership.is_up("srv2"))

    def test_all_paths_lost_is_down_once(self):
        self.beat_for(1.0)
        self.beat_for(0.3, paths=("lanhb1",))  # lanhb2 goes silent first
        self.elapse(10)
        self.assertEqual([e[1] for e in self.listener.of("down")], ["srv2"])
        self.assertFalse(self.membership.is_up("srv2"))
        self.assertEqual(
            self.membership.path_states("srv2"),
            {"lanhb1": PathState.ERROR, "lanhb2": PathState.ERROR},
        )
        self.assertEqual(self.membership.live_servers(), ["srv1"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_down_comes_when_the_last_path_times_out(self):
        self.beat_for(1.0)
        self.beat_for(0.3, paths=("lanhb1",))
        last = self.membership.last_heard("srv2", "lanhb1")
        self.elapse(last + TIMEOUT - self.clock.seconds() - 1e-6)
        self.assertEqual(self.membership.path_states("srv2")["lanhb2"], PathState.ERROR)
        self.assertTrue(self.membership.is_up("srv2"))
        self.clock.advance(2e-6)
        [(_, _, at)] = self.listener.of("down")
        self.assertLessEqual(abs(at - (last + TIMEOUT)), 2e-6)

    def test_heal_brings_server_up_again(self):
        self.beat_for(1.0)
        self.elapse(5)
        self.beat_for(1.0, paths=("lanhb2",))
        self.assertEqual([e[0] for e in self.listener.events if e[0] in ("up", "down")],
                         ["up", "down", "up"])
        self.assertTrue(self.membership.is_up("srv2"))
        self.assertEqual(self.membership.path_states("srv2")["lanhb2"], PathState.NORMAL)
        # lanhb1 was silent all along after the heal: still in error.
        self.assertEqual(self.membership.path_states("srv2")["lanhb1"], PathState.ERROR)

    def test_servers_are_independent(self):
        self.beat_for(1.0, server="srv2")
        self.beat_for(1.0, server="srv3")
        self.assertEqual(self.listener.of("down")[0][1], "srv2")
        self.assertTrue(self.membership.is_up("srv3"))

    def test_restart_faster_than_timeout(self):
        self.beat_for(1.0, incarnation=INC1)
        self.beat_for(1.0, incarnation=INC2)
        self.assertEqual(self.listener.of("restarted"), [("restarted", "srv2", INC1, INC2)])
        self.assertEqual(self.listener.of("down"), [])
        self.assertEqual(len(self.listener.of("up")), 1)
        self.assertEqual(self.membership.incarnation("srv2"), INC2)

    def test_late_beat_of_old_incarnation_is_ignored(self):
        self.beat_for(0.2, incarnation=INC2)
        self.clock.advance(0.4)
        self.assertFalse(self.membership.beat("srv2", "lanhb1", INC1))
        self.clock.advance(0.1)
        self.assertFalse(self.membership.is_up("srv2"))
        self.assertEqual(self.listener.of("restarted"), [])

    def test_new_incarnation_after_down_is_just_up(self):
        self.beat_for(0.5, incarnation=INC1)
        self.elapse(1)
        self.membership.beat("srv2", "lanhb1", INC2)
        self.assertEqual(self.listener.of("restarted"), [])
        self.assertEqual(self.listener.of("up")[-1], ("up", "srv2", INC2))

    def test_ignored_beats(self):
        m = self.membership
        self.assertFalse(m.beat("srv1", "lanhb1", INC1))
        self.assertFalse(m.beat("srv9", "lanhb1", INC1))
        self.assertFalse(m.beat("srv2", "lanhb9", INC1))
        self.assertEqual(self.listener.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_cancels_timers_and_ignores_beats(self):
        self.beat_for(0.3)
        self.beat_for(0.3, server="srv3")
        self.assertEqual(len(self.clock.getDelayedCalls()), 4)
        self.membership.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.membership.beat("srv2", "lanhb1", INC1))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reset_timeout_moves_deadlines(self):
        self.membership.beat("srv2", "lanhb1", INC1)
        self.clock.advance(0.2)
        self.membership.reset_timeout(2.0)
        self.assertEqual(self.membership.timeout, 2.0)
        self.clock.advance(1.7)
        self.assertTrue(self.membership.is_up("srv2"))
        self.clock.advance(0.1)
        self.assertFalse(self.membership.is_up("srv2"))

    def test_reset_timeout_shorter_than_elapsed_fires_at_once(self):
        self.membership.beat("srv2", "lanhb1", INC1)
        self.clock.advance(0.4)
        self.membership.reset_timeout(0.1)
        self.clock.advance(0)
        self.assertFalse(self.membership.is_up("srv2"))

    def test_bad_timeout_refused(self):
        self.assertRaises(ValueError, Membership, self.clock, "a", [], [], 0, self.listener)
        self.assertRaises(ValueError, self.membership.reset_timeout, -1)

    def test_local_server(self):
        m = Membership(self.clock, "srv1", ["srv1", "srv2"], ["lanhb1"], 1, self.listener,
                       local_incarnation=INC1)
        self.assertEqual(m.path_states("srv1"), {"lanhb1": PathState.NORMAL})
        self.assertEqual(m.incarnation("srv1"), INC1)
        self.assertEqual(m.live_servers(), ["srv1"])
        self.assertFalse(m.beat("srv1", "lanhb1", INC1))

    def test_failing_listener_does_not_break_the_machine(self):
        events = []

        class Broken(RecordingListener):
            def server_up(self, server, incarnation):
                raise RuntimeError("boom")

            def server_down(self, server):
                raise RuntimeError("boom")

        self.patch(membership_module, "log", _RecordingLogger(events))
        m = Membership(self.clock, "srv1", ["srv2"], ["lanhb1"], TIMEOUT, Broken(self.clock))
        self.addCleanup(m.stop)
        m.beat("srv2", "lanhb1", INC1)
        self.assertTrue(m.is_up("srv2"))
        self.clock.advance(TIMEOUT)
        self.assertFalse(m.is_up("srv2"))
        self.assertEqual(len([e for e in events if e[0] == "failure"]), 2)

    def test_transitions_are_logged(self):
        events = []
        self.patch(membership_module, "log", _RecordingLogger(events))
        self.membership.beat("srv2", "lanhb1", INC1)
        self.clock.advance(TIMEOUT)
        text = [e[1] for e in events]
        self.assertIn("heartbeat path {path} to {server}: {old} -> {new}", text)
        self.assertTrue(any(t.startswith("server {server}: down -> up") for t in text))
        self.assertTrue(any(t.startswith("server {server}: up -> down") for t in text))


class _RecordingLogger:
    """Stands in for the module's twisted.logger.Logger."""

    def __init__(self, events):
        self.events = events

    def _record(level):
        def emit(self, format, *args, **kwargs):
            self.events.append((level, format, kwargs))

        return emit

    debug = _record("debug")
    info = _record("info")
    warn = _record("warn")
    error = _record("error")
    failure = _record("failure")


class StallTests(SynchronousTestCase):
    """A deadline that fires far too late means this process was stalled."""

    def setUp(self):
        self.clock = task.Clock()
        self.listener = RecordingListener(self.clock)
        self.membership = Membership(self.clock, "srv1", ["srv2"], ["lanhb1"], 0.5, self.listener)
        self.addCleanup(self.membership.stop)

    def test_stall_gets_a_grace_and_queued_beats_keep_the_peer_up(self):
        self.membership.beat("srv2", "lanhb1", INC1)
        self.clock.advance(5)  # SIGSTOP / SIGCONT of this daemon
        self.assertTrue(self.membership.is_up("srv2"))
        self.membership.beat("srv2", "lanhb1", INC1)  # read from the socket after the stall
        self.clock.advance(0.3)
        self.assertTrue(self.membership.is_up("srv2"))
        self.assertEqual(self.listener.of("down"), [])

    def test_peer_really_gone_is_down_after_the_grace(self):
        self.membership.beat("srv2", "lanhb1", INC1)
        self.clock.advance(5)
        self.assertTrue(self.membership.is_up("srv2"))
        self.clock.advance(0.25)
        self.assertFalse(self.membership.is_up("srv2"))
        self.assertEqual(len(self.listener.of("down")), 1)
