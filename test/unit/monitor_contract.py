"""Contract tests that every monitor type must pass: MonitorContractMixin for
polled types (IMonitor), EventMonitorContractMixin for event-fed ones
(IEventMonitor, schema event_fed; see its docstring).

How to use, in test/unit/test_monitor_<type>.py::

    from test.unit.monitor_contract import MonitorContractMixin

    class GenwContractTests(MonitorContractMixin, unittest.TestCase):
        monitor_type = "genw"          # the name registered with MONITOR_TYPES

        def make_monitor(self):
            # A fresh, healthy monitor: after start() its check() must fire a
            # Normal CheckResult by itself (synchronously, or on the real
            # reactor), without the test advancing a fake clock.
            return CustomMonitor(reactor, config, config.params, env)

        def make_pending_monitor(self):
            # Optional. A monitor whose check() stays pending until cancelled
            # (a `sleep` script, a fake thread runner that never answers, a
            # fake ICMP socket that never replies). Return None (the default)
            # when no check of this type can pend: the cancellation test then
            # cancels make_monitor()'s check, which must be harmless.
            ...

make_monitor_config(type, params, ...) and make_environment(...) build the
constructor's arguments without a clp.conf; HeldRunner is a run_in_thread that
holds its calls until release() (a pending check for thread-based monitors).

Optional hooks:

- ``contract_reactor()``: the reactor (or task.Clock) the monitor schedules
  on; its delayed calls must be as they were once a cancelled check has
  settled. Default: the global reactor.
- ``assert_nothing_left(monitor)``: extra checks after a cancelled check has
  settled (e.g. a fake runner's work was abandoned, a fake socket has no
  request pending). Default: nothing more.

The test class must be a twisted.trial.unittest.TestCase (these tests return
Deferreds). If the monitor spawns processes, derive from
test.unit.test_process.ProcessTestCase (its tearDown works around a trial
SIGCHLD quirk). Every contract test is named test_contract_*; each stops the
monitors it started.

What is checked: verifyObject(IMonitor), `type` and the registry entry; check()
returns a Deferred firing a CheckResult; describe() returns a dict before and
after checks; start() and stop() return None or a Deferred; stop() is
idempotent and safe on a never-started monitor; a monitor can be started again
after stop(); a cancelled check fails with CancelledError and leaves no child
process and no delayed call behind (the engine enforces timeouts by cancelling).
"""

import psutil
from twisted.internet import defer, reactor, task
from zope.interface.verify import verifyObject

from cpro.config.model import MonitorConfig, MonitorRecovery
from cpro.interfaces import IEventMonitor, IMonitor
from cpro import plugins
from cpro.resources.monitors.base import CheckResult, CheckStatus, MonitorEnvironment

SETTLE_LIMIT = 3.0  # s of real time a cancelled check may take to clean up
SETTLE_STEP = 0.02


def make_monitor_config(type, params, name=None, target=None, interval=5.0, timeout=60.0, retry=0):
    """A MonitorConfig built directly (no clp.conf); recovery: the local server, final action none."""
    return MonitorConfig(
        name=name or f"{type}1",
        type=type,
        interval=interval,
        timeout=timeout,
        retry=retry,
        first_wait=0.0,
        timing=0 if target is None else 1,
        target=target,
        servers=None,
        delay_warning=80,
        timeout_retry=False,
        timeout_recover=False,
        recovery=MonitorRecovery(kind="cls", target="LocalServer", restart_threshold=0, failover_threshold=0, final_action=1),
        params=dict(params),
    )


def make_environment(local="srv1", state_dir="/nonexistent/state", log_dir="/nonexistent/log", **kw):
    """A MonitorEnvironment for unit tests; keyword arguments as MonitorEnvironment's."""
    return MonitorEnvironment(local, state_dir, log_dir, **kw)


class HeldRunner:
    """A run_in_thread that runs nothing until release(): a probe stuck in its thread.

    Pass it as a monitor's run_in_thread to get a check that stays pending
    (make_pending_monitor), then release() to let the held calls finish.
    """

    def __init__(self):
        self.calls = []  # (Deferred, fn, args) not yet released

    def __call__(self, fn, *args, **kwargs):
        d = defer.Deferred()
        self.calls.append((d, fn, args, kwargs))
        return d

    def release(self):
        calls, self.calls = self.calls, []
        for d, fn, args, kwargs in calls:
            d.callback(fn(*args, **kwargs))


def child_pids():
    """Pids of every live descendant of this test process (zombies excluded)."""
    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def maybe_deferred_result(test, value, what):
    """Assert value is None or a Deferred (as IMonitor allows); return a Deferred."""
    test.assertTrue(
        value is None or isinstance(value, defer.Deferred),
        f"{what} returned {value!r}, neither None nor a Deferred",
    )
    return value if value is not None else defer.succeed(None)


class MonitorContractMixin:
    """Mix into a trial TestCase with `monitor_type` and `make_monitor()` (see module docstring)."""

    monitor_type = None

    # hooks

    def make_monitor(self):
        raise NotImplementedError("define make_monitor() returning a healthy monitor")

    def make_pending_monitor(self):
        return None

    def contract_reactor(self):
        return reactor

    def assert_nothing_left(self, monitor):
        pass

    # helpers

    def _start(self, monitor):
        return maybe_deferred_result(self, monitor.start(), "start()")

    def _stop(self, monitor):
        return maybe_deferred_result(self, monitor.stop(), "stop()")

    def _started(self, monitor):
        """Start monitor now and make sure the test stops it whatever happens."""
        self.addCleanup(lambda: defer.maybeDeferred(monitor.stop))
        return self._start(monitor)

    # the contract

    def test_contract_provides_imonitor(self):
        monitor = self.make_monitor()
        self.assertTrue(verifyObject(IMonitor, monitor))
        self.assertEqual(monitor.type, self.monitor_type)
        self.assertIsInstance(monitor.name, str)
        self.assertTrue(monitor.name)
        self.assertIsInstance(monitor, plugins.MONITOR_TYPES.get(self.monitor_type).factory)

    @defer.inlineCallbacks
    def test_contract_check_fires_check_result(self):
        monitor = self.make_monitor()
        yield self._started(monitor)
        d = monitor.check()
        self.assertIsInstance(d, defer.Deferred)
        result = yield d
        self.assertIsInstance(result, CheckResult)
        self.assertIsInstance(result.message, str)
        self.assertEqual(result.status, CheckStatus.NORMAL, result.message)

    @defer.inlineCallbacks
    def test_contract_describe_is_dict(self):
        monitor = self.make_monitor()
        self.assertIsInstance(monitor.describe(), dict)
        yield self._started(monitor)
        yield monitor.check()
        self.assertIsInstance(monitor.describe(), dict)
        yield self._stop(monitor)
        self.assertIsInstance(monitor.describe(), dict)

    @defer.inlineCallbacks
    def test_contract_stop_is_idempotent(self):
        never_started = self.make_monitor()
        yield self._stop(never_started)
        yield self._stop(never_started)
        monitor = self.make_monitor()
        yield self._started(monitor)
        yield monitor.check()
        yield self._stop(monitor)
        yield self._stop(monitor)

    @defer.inlineCallbacks
    def test_contract_restart_after_stop(self):
        monitor = self.make_monitor()
        yield self._started(monitor)
        yield self._stop(monitor)
        yield self._start(monitor)
        result = yield monitor.check()
        self.assertEqual(result.status, CheckStatus.NORMAL, result.message)
        yield self._stop(monitor)

    @defer.inlineCallbacks
    def test_contract_cancelled_check_leaves_nothing(self):
        monitor = self.make_pending_monitor()
        pending = monitor is not None
        if not pending:
            # Still worth doing: cancelling a check that may already have
            # fired must be harmless and leave nothing behind.
            monitor = self.make_monitor()
        clock = self.contract_reactor()
        yield self._started(monitor)
        # Let trial schedule its own timeout for this test before the snapshot.
        yield task.deferLater(reactor, 0, lambda: None)
        calls_before = set(clock.getDelayedCalls())
        children_before = child_pids()
        d = monitor.check()
        self.assertIsInstance(d, defer.Deferred)
        if pending:
            self.assertFalse(d.called, "make_pending_monitor()'s check must stay pending")
        fired = d.called
        d.cancel()
        if fired:
            self.assertIsInstance((yield d), CheckResult)
        else:
            yield self.assertFailure(d, defer.CancelledError)

        def leftovers():
            calls = [c for c in clock.getDelayedCalls() if c not in calls_before and c.active()]
            return calls, child_pids() - children_before

        waited = 0.0
        while any(leftovers()) and waited < SETTLE_LIMIT:
            yield task.deferLater(reactor, SETTLE_STEP, lambda: None)
            waited += SETTLE_STEP
        calls, children = leftovers()
        self.assertEqual(calls, [], "a cancelled check left delayed calls behind")
        self.assertEqual(children, set(), "a cancelled check left processes behind")
        self.assert_nothing_left(monitor)
        yield self._stop(monitor)


class EventMonitorContractMixin:
    """The contract of event-fed monitor types (L{IEventMonitor}, schema event_fed).

    Mix into a trial TestCase with:

    - ``monitor_type``: the type name;
    - ``make_monitor(report)``: a fresh monitor built with that report
      callable (the engine's; returns whether a result was taken);
    - optional ``plugin()``: its L{plugins.Plugin} (default: the registry's);
    - optional ``make_event(monitor)``: make the type's own event source
      produce one event (a fake trap, a fake BMC event...); return False
      when the type has no source of its own (it is fed only through
      MonitorService.deliver): the event tests are then skipped;
    - optional ``contract_reactor()``: where it schedules (default: the
      global reactor); no delayed call of its own is left after stop().

    What is checked: verifyObject(IEventMonitor), `type`, `clearable`, the
    registry entry and its schema's event_fed; start() and stop() return
    None or a Deferred, stop() is idempotent and safe on a never-started
    monitor, a monitor can be started again after stop(); describe() is a
    dict; an event reaches report() as a CheckResult while started and not
    after stop(), and nothing is left scheduled.
    """

    monitor_type = None

    def make_monitor(self, report):
        raise NotImplementedError("define make_monitor(report) returning a monitor built with report")

    def plugin(self):
        return plugins.MONITOR_TYPES.get(self.monitor_type)

    def make_event(self, monitor):
        return False

    def contract_reactor(self):
        return reactor

    def _recorded(self):
        reports = []

        def report(result):
            reports.append(result)
            return True

        return self.make_monitor(report), reports

    def _started(self, monitor):
        self.addCleanup(lambda: defer.maybeDeferred(monitor.stop))
        return maybe_deferred_result(self, monitor.start(), "start()")

    def _stop(self, monitor):
        return maybe_deferred_result(self, monitor.stop(), "stop()")

    def test_contract_provides_ieventmonitor(self):
        monitor, _ = self._recorded()
        self.assertTrue(verifyObject(IEventMonitor, monitor))
        self.assertEqual(monitor.type, self.monitor_type)
        self.assertIsInstance(monitor.name, str)
        self.assertTrue(monitor.name)
        self.assertIsInstance(monitor.clearable, bool)
        plugin = self.plugin()
        self.assertEqual(plugin.name, self.monitor_type)
        self.assertTrue(plugin.schema.event_fed, "an event-fed type declares event_fed in its schema")

    @defer.inlineCallbacks
    def test_contract_lifecycle(self):
        never_started, _ = self._recorded()
        yield self._stop(never_started)
        yield self._stop(never_started)
        monitor, reports = self._recorded()
        self.assertIsInstance(monitor.describe(), dict)
        yield self._started(monitor)
        self.assertIsInstance(monitor.describe(), dict)
        yield self._stop(monitor)
        yield self._stop(monitor)
        yield maybe_deferred_result(self, monitor.start(), "start()")
        yield self._stop(monitor)
        self.assertIsInstance(monitor.describe(), dict)
        self.assertEqual(reports, [], "no event, no report")

    @defer.inlineCallbacks
    def test_contract_events_reach_report_while_started(self):
        monitor, reports = self._recorded()
        clock = self.contract_reactor()
        yield task.deferLater(reactor, 0, lambda: None)  # trial's own timeout is scheduled by now
        calls_before = set(clock.getDelayedCalls())
        yield self._started(monitor)
        if not (yield defer.maybeDeferred(self.make_event, monitor)):
            # No source of its own (fed by MonitorService.deliver only): it
            # must report nothing by itself.
            yield self._stop(monitor)
            self.assertEqual(reports, [])
            return
        self.assertTrue(reports, "an event was not reported")
        self.assertTrue(all(isinstance(r, CheckResult) for r in reports), reports)
        yield self._stop(monitor)
        count = len(reports)
        yield defer.maybeDeferred(self.make_event, monitor)
        self.assertEqual(len(reports), count, "a stopped monitor reported an event")
        calls = [c for c in clock.getDelayedCalls() if c not in calls_before and c.active()]
        self.assertEqual(calls, [], "a stopped monitor left delayed calls behind")
