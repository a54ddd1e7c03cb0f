"""MonitorRunner: the schedule of one monitor (first wait, interval, retries,
timeout, delay warning), its states and alerts, suspend/resume, dummy failure;
the same for an event-fed monitor, whose results arrive as reports."""

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from cpro.cluster.monitoring import BY_CLUSTER, EventInlet, MonitorRunner
from cpro.cluster.states import MonitorState
from cpro.interfaces import IEventMonitor, IMonitor
from cpro.resources.monitors.base import CheckResult, CheckStatus
from cpro.testing.event_monitors import FAKE_EVENT_TYPE, FakeEventMonitor
from cpro.testing.fakes import FakeAlerts, FakeMonitor, make_monitor

OK = CheckResult.normal()
BAD = CheckResult.error("service is down")


class Harness:
    def __init__(self, results=(), **kw):
        kw.setdefault("interval", 10.0)
        kw.setdefault("timeout", 5.0)
        self.clock = task.Clock()
        self.config = make_monitor(**kw)
        self.monitor = FakeMonitor(self.clock, self.config, results=results)
        self.alerts = FakeAlerts()
        self.errors = []  # (CheckResult, timed_out)
        self.normals = 0
        self.changes = 0
        self.recovery = None  # a Deferred on_error returns, when set
        self.runner = MonitorRunner(self.clock, self.config, self.monitor, self.alerts,
                                    on_error=self._error, on_normal=self._normal, on_change=self._changed)

    def _error(self, runner, result, timed_out):
        self.errors.append((result, timed_out))
        return self.recovery

    def _normal(self, runner):
        self.normals += 1

    def _changed(self):
        self.changes += 1

    def rm(self):
        return self.alerts.ids("rm")


class RunnerTestCase(SynchronousTestCase):
    def harness(self, results=(), **kw):
        h = Harness(results, **kw)
        self.addCleanup(self._no_leftovers, h)
        return h

    def _no_leftovers(self, h):
        h.runner.stop()
        self.assertEqual(h.clock.getDelayedCalls(), [])


class FakeMonitorTests(SynchronousTestCase):
    def test_fake_monitor_provides_imonitor(self):
        verifyObject(IMonitor, FakeMonitor(task.Clock(), make_monitor()))

    def test_scripted_answers(self):
        clock = task.Clock()
        m = FakeMonitor(clock, make_monitor(), results=[BAD, ValueError("boom"), ("after", 2, OK)])
        self.assertEqual(self.successResultOf(m.check()), BAD)
        self.assertEqual(str(self.failureResultOf(m.check(), ValueError).value), "boom")
        d = m.check()
        self.assertNoResult(d)
        clock.advance(2)
        self.assertEqual(self.successResultOf(d), OK)
        self.assertEqual(self.successResultOf(m.check()), OK)  # the default


class ScheduleTests(RunnerTestCase):
    def test_first_wait_then_interval(self):
        h = self.harness(first_wait=30.0)
        h.runner.start()
        self.assertEqual(h.runner.state, MonitorState.UNKNOWN)
        self.assertEqual(h.rm(), [1])
        self.assertEqual(h.monitor.starts, 1)
        h.clock.advance(29.9)
        self.assertEqual(h.monitor.checks, 0)
        h.clock.advance(0.1)
        self.assertEqual(h.monitor.checks, 1)
        self.assertEqual(h.runner.state, MonitorState.NORMAL)
        h.clock.advance(9.9)
        self.assertEqual(h.monitor.checks, 1)
        h.clock.advance(0.1)
        self.assertEqual(h.monitor.checks, 2)

    def test_interval_counts_from_the_end_of_a_check(self):
        h = self.harness([("after", 3, OK)])
        h.runner.start()
        h.clock.advance(0)
        self.assertEqual(h.monitor.checks, 1)
        h.clock.advance(3)
        self.assertEqual(h.runner.last_duration, 3)
        h.clock.advance(9.9)
        self.assertEqual(h.monitor.checks, 1)
        h.clock.advance(0.1)
        self.assertEqual(h.monitor.checks, 2)

    def test_a_late_start_is_caught_up_at_the_next_check(self):
        # The reactor was busy: the check due at 0 ran at 0.5. The next one
        # keeps the monitor's phase (10), so monitors delayed together do not
        # go on checking together.
        h = self.harness()
        h.runner.start()
        h.clock.advance(0.5)
        self.assertEqual(h.monitor.checks, 1)
        h.clock.advance(9.4)
        self.assertEqual(h.monitor.checks, 1)
        h.clock.advance(0.1)
        self.assertEqual(h.monitor.checks, 2)
        h.clock.advance(10)  # on time: a full interval again
        self.assertEqual(h.monitor.checks, 3)

    def test_catch_up_is_at_most_a_tenth_of_the_interval(self):
        h = self.harness()
        h.runner.start()
        h.clock.advance(3)  # ran 3 s late
        self.assertEqual(h.monitor.checks, 1)
        h.clock.advance(8.9)
        self.assertEqual(h.monitor.checks, 1)
        h.clock.advance(0.1)  # 9 s after it, not 7
        self.assertEqual(h.monitor.checks, 2)

    def test_error_confirmed_after_retries(self):
        h = self.harness([BAD, BAD, OK, BAD, BAD, BAD], retry=2)
        h.runner.start()
        h.clock.advance(0)
        h.clock.advance(10)
        self.assertEqual(h.runner.state, MonitorState.UNKNOWN)  # two errors of three: not yet
        self.assertEqual(h.runner.consecutive_errors, 2)
        h.clock.advance(10)  # normal: the count starts again
        self.assertEqual(h.runner.consecutive_errors, 0)
        h.clock.advance(10)
        h.clock.advance(10)
        self.assertEqual(h.errors, [])
        h.clock.advance(10)
        self.assertEqual(len(h.errors), 1)
        self.assertEqual(h.runner.state, MonitorState.ERROR)
        self.assertEqual(h.runner.last_error, "service is down")
        self.assertIn(9, h.rm())
        self.assertIn("service is down", h.alerts.messages()[-1])

    def test_persistent_errors_report_again_after_each_retry_round(self):
        h = self.harness([BAD] * 4, retry=1)
        h.runner.start()
        for _ in range(4):
            h.clock.advance(10)
        self.assertEqual(len(h.errors), 2)
        self.assertEqual(h.rm().count(9), 1)  # the transition is alerted once

    def test_next_check_waits_for_the_recovery_step(self):
        h = self.harness([BAD, OK])
        h.recovery = defer.Deferred()
        h.runner.start()
        h.clock.advance(0)
        self.assertEqual(len(h.errors), 1)
        h.clock.advance(100)
        self.assertEqual(h.monitor.checks, 1)
        h.recovery.callback(None)
        h.clock.advance(10)
        self.assertEqual(h.monitor.checks, 2)
        self.assertEqual(h.runner.state, MonitorState.NORMAL)

    def test_back_to_normal_alerts_and_calls_on_normal(self):
        h = self.harness([BAD, OK])
        h.runner.start()
        h.clock.advance(0)
        normals = h.normals
        h.clock.advance(10)
        self.assertEqual(h.normals, normals + 1)
        self.assertEqual(h.rm()[-1], 26)

    def test_warning_and_back(self):
        h = self.harness([CheckResult.warning("disk 91% full"), OK])
        h.runner.start()
        h.clock.advance(0)
        self.assertEqual(h.runner.state, MonitorState.WARNING)
        self.assertEqual(h.rm()[-1], 4)
        self.assertEqual(h.errors, [])
        h.clock.advance(10)
        self.assertEqual(h.rm()[-1], 49)

    def test_a_failing_check_is_an_error_with_its_message(self):
        h = self.harness([OSError("cannot read /dev/sdb")])
        h.runner.start()
        h.clock.advance(0)
        self.assertEqual(h.errors[0][0].status, CheckStatus.ERROR)
        self.assertEqual(h.runner.last_error, "cannot read /dev/sdb")

    def test_start_failure_is_alerted_and_checks_go_on(self):
        h = self.harness()
        h.monitor.fail_start = OSError("no such device")
        h.runner.start()
        self.assertIn(7, h.rm())
        h.clock.advance(0)
        self.assertEqual(h.monitor.checks, 1)


class TimeoutTests(RunnerTestCase):
    def test_overrun_check_is_cancelled_and_confirmed_at_once_without_timeout_retry(self):
        h = self.harness(["hang"], retry=3, timeout_retry=False)
        h.runner.start()
        h.clock.advance(0)
        h.clock.advance(4.9)
        self.assertEqual(h.monitor.cancelled, 0)
        h.clock.advance(0.1)
        self.assertEqual(h.monitor.cancelled, 1)
        self.assertEqual(len(h.errors), 1)
        result, timed_out = h.errors[0]
        self.assertTrue(timed_out)
        self.assertEqual(result.message, "Timeout (5 s)")
        self.assertEqual(h.runner.last_duration, 5)
        self.assertEqual(h.runner.state, MonitorState.ERROR)
        self.assertNotIn(71, h.rm())  # a timeout is not also a delay

    def test_timeout_retry_uses_the_retry_count(self):
        h = self.harness(["hang", "hang"], retry=1, timeout_retry=True)
        h.runner.start()
        h.clock.advance(0)
        h.clock.advance(5)
        self.assertEqual(h.errors, [])
        h.clock.advance(10)
        h.clock.advance(5)
        self.assertEqual(len(h.errors), 1)
        self.assertTrue(h.errors[0][1])

    def test_late_answer_after_cancel_is_still_a_timeout(self):
        late = defer.Deferred(lambda d: d.callback(OK))  # a type whose cancel answers "normal"
        h = self.harness([late])
        h.runner.start()
        h.clock.advance(0)
        h.clock.advance(5)
        self.assertTrue(h.errors[0][1])


class DelayWarningTests(RunnerTestCase):
    def run_check(self, ratio, seconds):
        h = self.harness([("after", seconds, OK)], timeout=10.0, delay_warning=ratio)
        h.runner.start()
        h.clock.advance(0)
        h.clock.advance(seconds)
        return h

    def test_default_ratio_80(self):
        self.assertNotIn(71, self.run_check(80, 7.9).rm())
        h = self.run_check(80, 8.0)
        self.assertIn(71, h.rm())
        self.assertEqual(h.runner.state, MonitorState.NORMAL)  # a warning alert, not a state

    def test_zero_warns_on_every_check(self):
        self.assertIn(71, self.run_check(0, 0).rm())

    def test_hundred_never_warns(self):
        self.assertNotIn(71, self.run_check(100, 9.99).rm())


class SuspendTests(RunnerTestCase):
    def test_suspend_cancels_the_check_and_resume_checks_at_once(self):
        h = self.harness(["hang"])
        h.runner.start()
        h.clock.advance(0)
        self.assertTrue(h.runner.suspend())
        self.assertEqual(h.monitor.cancelled, 1)
        self.assertEqual(h.monitor.stops, 1)
        self.assertEqual(h.runner.state, MonitorState.SUSPENDED)
        self.assertEqual(h.rm()[-1], 29)
        self.assertEqual(h.errors, [])
        h.clock.advance(100)
        self.assertEqual(h.monitor.checks, 1)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertFalse(h.runner.suspend())  # already suspended
        self.assertTrue(h.runner.resume())
        self.assertEqual(h.rm()[-1], 30)
        self.assertEqual(h.runner.state, MonitorState.UNKNOWN)
        h.clock.advance(0)
        self.assertEqual(h.monitor.checks, 2)
        self.assertEqual(h.runner.state, MonitorState.NORMAL)

    def test_operator_suspension_survives_a_restart_and_the_cluster_hold(self):
        h = self.harness()
        h.runner.suspend()  # before it runs
        h.runner.start()
        self.assertEqual(h.runner.state, MonitorState.SUSPENDED)
        h.runner.suspend(BY_CLUSTER, alert=False)
        h.runner.resume(BY_CLUSTER, alert=False)
        self.assertEqual(h.runner.state, MonitorState.SUSPENDED)
        h.clock.advance(100)
        self.assertEqual(h.monitor.checks, 0)
        h.runner.resume()
        h.clock.advance(0)
        self.assertEqual(h.monitor.checks, 1)

    def test_stop_cancels_everything(self):
        h = self.harness(["hang"])
        h.runner.start()
        h.clock.advance(0)
        d = h.runner.stop()
        self.successResultOf(d)
        self.assertEqual(h.runner.state, MonitorState.STOPPED)
        self.assertEqual(h.rm()[-1], 2)
        self.assertEqual(h.monitor.cancelled, 1)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(h.errors, [])


class DummyFailureTests(RunnerTestCase):
    def test_dummy_failure_reports_errors_without_checking(self):
        h = self.harness()
        h.runner.start()
        h.clock.advance(0)
        self.assertTrue(h.runner.set_dummy(True))
        self.assertFalse(h.runner.set_dummy(True))
        h.clock.advance(10)
        self.assertEqual(h.monitor.checks, 1)
        self.assertEqual(h.runner.state, MonitorState.ERROR)
        self.assertEqual(h.runner.last_error, "dummy failure")
        self.assertEqual(len(h.errors), 1)
        self.assertEqual(h.runner.status()["dummy"], True)
        h.runner.set_dummy(False)
        h.clock.advance(10)
        self.assertEqual(h.monitor.checks, 2)
        self.assertEqual(h.runner.state, MonitorState.NORMAL)


class EventHarness(Harness):
    """A runner of an event-fed monitor (FakeEventMonitor): results arrive
    through the monitor's report callback instead of checks."""

    def __init__(self, clearable=True, **kw):
        kw.setdefault("interval", 10.0)
        kw.setdefault("timeout", 5.0)
        kw.setdefault("type", FAKE_EVENT_TYPE)
        self.clock = task.Clock()
        self.config = make_monitor(**kw)
        self.alerts = FakeAlerts()
        self.errors = []
        self.normals = 0
        self.changes = 0
        self.recovery = None
        inlet = EventInlet()
        self.monitor = FakeEventMonitor(self.clock, self.config, report=inlet, clearable=clearable)
        self.runner = MonitorRunner(self.clock, self.config, self.monitor, self.alerts, on_error=self._error,
                                    on_normal=self._normal, on_change=self._changed, event_fed=True)
        inlet.connect(self.runner)

    def event(self, result):
        """An event arrives at the type, which reports it."""
        return self.monitor.receive(result)


class EventFedRunnerTests(RunnerTestCase):
    def harness(self, **kw):
        h = EventHarness(**kw)
        self.addCleanup(self._no_leftovers, h)
        return h

    def test_fake_event_monitor_provides_ieventmonitor(self):
        h = self.harness()
        verifyObject(IEventMonitor, h.monitor)

    def test_not_polled_normal_once_started(self):
        h = self.harness(first_wait=30.0)
        self.assertFalse(h.event(BAD))  # not started: refused
        h.runner.start()
        self.assertEqual(h.monitor.starts, 1)
        self.assertEqual(h.runner.state, MonitorState.NORMAL)  # no first wait: nothing to wait for
        self.assertEqual(h.rm(), [1])
        h.clock.advance(1000)
        self.assertEqual(h.clock.getDelayedCalls(), [])  # nothing scheduled: no checks, no timeout
        self.assertEqual(h.normals, 0)  # starting is no proof of health: counters stay
        self.assertEqual(h.runner.status()["last_event"], None)

    def test_error_after_the_configured_number_of_error_events(self):
        h = self.harness(retry=2)
        h.runner.start()
        h.clock.advance(5)
        self.assertTrue(h.event(BAD))
        self.assertTrue(h.event(BAD))
        self.assertEqual((h.runner.state, h.runner.consecutive_errors), (MonitorState.NORMAL, 2))
        self.assertTrue(h.event(OK))  # a normal event: the count starts again
        self.assertEqual(h.runner.consecutive_errors, 0)
        h.event(BAD)
        h.event(BAD)
        self.assertEqual(h.errors, [])
        h.clock.advance(2)
        self.assertTrue(h.event(BAD))
        self.assertEqual(h.errors, [(BAD, False)])
        self.assertEqual(h.runner.state, MonitorState.ERROR)
        self.assertEqual(h.runner.last_error, "service is down")
        self.assertEqual(h.rm()[-1], 9)
        status = h.runner.status()
        self.assertEqual((status["event_fed"], status["events"], status["last_event"], status["duration"]),
                         (True, 6, 7.0, None))
        self.assertEqual(h.monitor.describe(), {"received": 6, "taken": 6, "last": "Error"})

    def test_events_during_the_recovery_step_are_refused(self):
        h = self.harness()
        h.recovery = defer.Deferred()
        h.runner.start()
        h.event(BAD)
        self.assertEqual(len(h.errors), 1)
        self.assertFalse(h.event(BAD))
        self.assertFalse(h.event(OK))
        h.recovery.callback(None)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertTrue(h.event(BAD))  # the next error: the next step
        self.assertEqual(len(h.errors), 2)
        self.assertEqual(h.rm().count(9), 1)

    def test_a_normal_event_clears_the_error(self):
        h = self.harness()
        h.runner.start()
        h.event(BAD)
        self.assertTrue(h.event(CheckResult.normal("cleared by clprexec")))
        self.assertEqual(h.runner.state, MonitorState.NORMAL)
        self.assertEqual(h.rm()[-1], 26)
        self.assertEqual(h.normals, 1)
        self.assertEqual(h.runner.last_message, "cleared by clprexec")

    def test_a_type_that_does_not_clear_keeps_its_error(self):
        h = self.harness(clearable=False)
        h.runner.start()
        self.assertTrue(h.event(OK))  # in Normal: harmless
        h.event(BAD)
        self.assertFalse(h.event(OK))
        self.assertFalse(h.event(CheckResult.warning("degraded")))
        self.assertEqual(h.runner.state, MonitorState.ERROR)
        self.assertEqual(h.normals, 0)
        self.assertTrue(h.event(BAD))  # errors are still taken

    def test_warning_event_and_back(self):
        h = self.harness()
        h.runner.start()
        h.event(CheckResult.warning("queue 90% full"))
        self.assertEqual((h.runner.state, h.rm()[-1]), (MonitorState.WARNING, 4))
        h.event(OK)
        self.assertEqual(h.rm()[-1], 49)

    def test_suspended_monitor_ignores_events(self):
        h = self.harness()
        h.runner.start()
        h.event(BAD)
        self.assertTrue(h.runner.suspend())
        self.assertEqual((h.runner.state, h.monitor.stops), (MonitorState.SUSPENDED, 1))
        self.assertFalse(h.event(BAD))
        self.assertFalse(h.runner.report(BAD))
        self.assertEqual(len(h.errors), 1)
        h.runner.resume()
        self.assertEqual((h.runner.state, h.monitor.starts), (MonitorState.NORMAL, 2))
        self.assertEqual(h.rm()[-2:], [29, 30])  # suspended, resumed; Normal from Unknown is silent
        self.assertTrue(h.event(BAD))
        self.assertEqual(len(h.errors), 2)

    def test_cluster_hold_and_stop_ignore_events(self):
        h = self.harness()
        h.runner.start()
        h.runner.suspend(BY_CLUSTER, alert=False)
        self.assertFalse(h.event(BAD))
        h.runner.resume(BY_CLUSTER, alert=False)
        self.assertTrue(h.event(OK))
        self.successResultOf(h.runner.stop())
        self.assertFalse(h.event(BAD))
        self.assertEqual(h.runner.state, MonitorState.STOPPED)

    def test_a_type_that_cannot_start_reports_an_error(self):
        h = self.harness()
        h.monitor.fail_start = OSError("cannot open the trap queue")
        h.runner.start()
        self.assertIn(7, h.rm())
        self.assertEqual(h.runner.state, MonitorState.ERROR)
        self.assertEqual(h.errors[0][0].message, "cannot receive events: cannot open the trap queue")
        self.assertEqual(h.runner.events, 0)

    def test_a_start_that_ends_after_a_stop_changes_nothing(self):
        h = self.harness()
        pending = defer.Deferred()
        h.monitor.start = lambda: pending
        h.runner.start()
        self.assertFalse(h.event(BAD))  # not listening yet
        h.runner.stop()
        pending.callback(None)
        self.assertEqual(h.runner.state, MonitorState.STOPPED)
        self.assertFalse(h.event(BAD))

    def test_dummy_failure_rehearses_every_interval_then_restores(self):
        h = self.harness(retry=1)
        h.runner.start()
        h.event(CheckResult.warning("degraded"))
        self.assertTrue(h.runner.set_dummy(True))
        h.clock.advance(0)  # the first dummy error at once
        self.assertEqual(h.runner.consecutive_errors, 1)
        self.assertFalse(h.event(OK))  # real events wait for the end of the dummy failure
        h.clock.advance(10)
        self.assertEqual(h.errors, [(CheckResult.error("dummy failure"), False)])
        self.assertEqual(h.runner.state, MonitorState.ERROR)
        h.clock.advance(10)
        h.clock.advance(10)
        self.assertEqual(len(h.errors), 2)  # the escalation goes on, as with checks
        self.assertEqual(h.runner.events, 1)
        self.assertTrue(h.runner.set_dummy(False))
        self.assertEqual(h.runner.state, MonitorState.WARNING)  # what the real events said
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertTrue(h.event(OK))
        self.assertEqual(h.runner.state, MonitorState.NORMAL)

    def test_dummy_failure_ending_during_its_recovery(self):
        h = self.harness()
        h.recovery = defer.Deferred()
        h.runner.start()
        h.runner.set_dummy(True)
        h.clock.advance(0)
        self.assertEqual(len(h.errors), 1)
        h.runner.set_dummy(False)
        self.assertEqual(h.runner.state, MonitorState.ERROR)  # its recovery still runs
        h.runner.set_dummy(True)  # and again: no error before that recovery ends
        h.clock.advance(100)
        self.assertEqual(len(h.errors), 1)
        h.runner.set_dummy(False)
        h.recovery.callback(None)
        self.assertEqual(h.runner.state, MonitorState.NORMAL)
        self.assertEqual(h.normals, 1)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_dummy_failure_set_before_start(self):
        h = self.harness()
        h.runner.set_dummy(True)
        h.runner.start()
        h.clock.advance(0)
        self.assertEqual(len(h.errors), 1)

    def test_inlet_before_connection_and_foreign_values(self):
        inlet = EventInlet()
        self.assertFalse(inlet(BAD))
        h = self.harness()
        h.runner.start()
        self.assertFalse(h.runner.report("error"))
        polled = Harness()
        polled.runner.start()
        self.assertFalse(polled.runner.report(BAD))  # a polled runner takes no reports
        polled.runner.stop()
