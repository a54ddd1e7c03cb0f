"""The schedule and state of one monitor on the local server (one L{MonitorRunner} each).

A runner owns when checks run and what their results mean; the monitor type
(an L{cpro.interfaces.IMonitor}) only looks. Clock-injected, no I/O:

- after start, the first check waits ``first_wait``; each next check starts
  ``interval`` after the previous one ended (checks never overlap), less the
  time the previous one started late, up to a tenth of the interval (so
  that monitors delayed by one busy moment keep their own phases);
- a check that has not answered within ``timeout`` is cancelled (the type
  kills whatever it started) and counts as an error, retried or not
  (``timeout_retry``);
- a check slower than ``delay_warning`` percent of the timeout raises a delay
  warning (rm 71): 0 warns on every check, 100 never;
- an error is confirmed after ``retry`` further consecutive errors; each
  confirmed error is handed to ``on_error`` (the recovery), and the next
  check waits until that recovery step has ended;
- suspend/resume (by an operator or with the cluster), dummy failure (checks
  report an error without running).

Every state change goes through L{MonitorRunner._transition}, which logs
old -> new and emits the alert (module 'rm', ids in docs/operations.md).
"""

from twisted.internet import defer
from twisted.logger import Logger

from cpro import alertcatalog as catalog
from cpro.cluster.states import MonitorState
from cpro.resources.monitors.base import CheckResult, CheckStatus

log = Logger()

# Why checks are held: an operator (clpmonctrl -s) or the cluster (clpcl --suspend).
BY_OPERATOR = "operator"
BY_CLUSTER = "cluster"

DUMMY_FAILURE_TEXT = "dummy failure"
# A check that started late (the reactor was busy) takes up to this share of
# the interval off the wait before the next one. Without it, every monitor
# delayed by one busy moment would start together and then check together at
# every interval: the clump grows heavier each time something else stalls.
CATCH_UP_SHARE = 0.1
MAX_ERROR_TEXT = 512  # bounds what one monitor adds to alerts and state reports


def _text(message):
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT - 3] + "..."


class MonitorRunner:
    def __init__(self, clock, config, monitor, alerts, on_error=None, on_normal=None, on_change=None):
        """
        @param config: the monitor's L{cpro.config.model.MonitorConfig}.
        @param monitor: the L{cpro.interfaces.IMonitor} that runs the checks.
        @param on_error: callable(runner, result, timed_out) -> None or a
            Deferred, for each confirmed error; the next check waits for it.
        @param on_normal: callable(runner) when a check is normal after any
            other state (the recovery counters reset).
        @param on_change: callable() after every state change (status push).
        """
        self.clock = clock
        self.config = config
        self.name = config.name
        self.monitor = monitor
        self.alerts = alerts
        self.on_error = on_error or (lambda runner, result, timed_out: None)
        self.on_normal = on_normal or (lambda runner: None)
        self.on_change = on_change or (lambda: None)
        self.state = MonitorState.STOPPED
        self.running = False  # wanted by the service: cluster running, target active
        self.holds = set()  # BY_OPERATOR / BY_CLUSTER while suspended
        self.dummy = False
        self.last_duration = None  # seconds the last check took
        self.last_error = ""  # text of the last error (kept after a return to normal)
        self.last_message = ""  # text of the last normal/warning result
        self.consecutive_errors = 0
        self.checks = 0
        self._generation = 0  # bumped on every halt: late callbacks of older checks are ignored
        self._timer = None  # the next check
        self._due = None  # when the next check was due to start
        self._late = 0.0  # how late the check in progress started
        self._deadline = None  # the timeout of the check in progress
        self._inflight = None  # the Deferred of the check in progress
        self._expired = False
        self._monitor_started = False

    # -- views -------------------------------------------------------------

    @property
    def suspended(self):
        """Suspended by an operator (the cluster's suspension is not shown here)."""
        return BY_OPERATOR in self.holds

    @property
    def active(self):
        """Checks are being scheduled."""
        return self.running and not self.holds

    def status(self):
        return {
            "status": self.state.value,
            "duration": self.last_duration,
            "error": self.last_error,
            "message": self.last_message,
            "retries": self.consecutive_errors,
            "checks": self.checks,
            "suspended": self.suspended,
            "dummy": self.dummy,
        }

    # -- the one transition function -----------------------------------------

    def _transition(self, new, detail="", alert=True):
        old = self.state
        if old is new:
            return False
        self.state = new
        log.info("monitor {m}: {old} -> {new}", m=self.name, old=old.value, new=new.value)
        if alert:
            self._alert(old, new, detail)
        self.on_change()
        return True

    def _alert(self, old, new, detail):
        n = self.name
        if new is MonitorState.UNKNOWN:
            if old is MonitorState.SUSPENDED:
                self.alerts.emit(*catalog.MONITOR_RESUMED.format(monitor=n))
            else:
                self.alerts.emit(*catalog.MONITOR_STARTED.format(monitor=n))
        elif new is MonitorState.STOPPED:
            self.alerts.emit(*catalog.MONITOR_STOPPED.format(monitor=n))
        elif new is MonitorState.SUSPENDED:
            self.alerts.emit(*catalog.MONITOR_SUSPENDED.format(monitor=n))
        elif new is MonitorState.WARNING:
            self.alerts.emit(*catalog.MONITOR_WARNING.format(monitor=n, detail=detail))
        elif new is MonitorState.ERROR:
            self.alerts.emit(*catalog.MONITOR_ERROR.format(monitor=n, detail=detail))
        elif new is MonitorState.NORMAL and old is MonitorState.ERROR:
            self.alerts.emit(*catalog.MONITOR_ERROR_CLEARED.format(monitor=n))
        elif new is MonitorState.NORMAL and old is MonitorState.WARNING:
            self.alerts.emit(*catalog.MONITOR_WARNING_CLEARED.format(monitor=n))

    # -- lifecycle -----------------------------------------------------------

    def start(self, offset=0.0):
        """Monitoring is wanted (cluster running, target active): first check after
        first_wait (plus offset: the service spreads monitors that start together)."""
        if self.running:
            return
        self.running = True
        self._generation += 1
        if self.holds:
            self._transition(MonitorState.SUSPENDED, alert=False)
            return
        self._begin(self.config.first_wait + offset, alert=True)

    def stop(self):
        """Monitoring is no longer wanted. Returns a Deferred (the type's stop)."""
        if not self.running:
            return defer.succeed(None)
        self.running = False
        self._halt()
        self._transition(MonitorState.STOPPED)
        return self._stop_monitor()

    def suspend(self, reason=BY_OPERATOR, alert=True):
        """Hold the checks. Returns False when already held for that reason."""
        if reason in self.holds:
            return False
        was_active = self.active
        self.holds.add(reason)
        if was_active:
            self._halt()
            self._transition(MonitorState.SUSPENDED, alert=alert)
            self._stop_monitor()
        self.on_change()
        return True

    def resume(self, reason=BY_OPERATOR, alert=True, offset=0.0):
        """Release a hold; checks start again at once (after offset) when nothing else holds them."""
        if reason not in self.holds:
            return False
        self.holds.discard(reason)
        if self.running and not self.holds:
            self._generation += 1
            self._begin(offset, alert=alert)
        self.on_change()
        return True

    def set_dummy(self, on):
        """Dummy failure: checks report an error without running. Returns True if it changed."""
        on = bool(on)
        if self.dummy is on:
            return False
        self.dummy = on
        self.on_change()
        return True

    def _begin(self, delay, alert):
        self.consecutive_errors = 0
        generation = self._generation
        self._transition(MonitorState.UNKNOWN, alert=alert)
        self._monitor_started = True
        d = defer.maybeDeferred(self.monitor.start)
        d.addErrback(self._start_failed)
        d.addCallback(lambda _: self._schedule(generation, delay))
        d.addErrback(lambda f: log.failure("monitor {m}: scheduling failed", f, m=self.name))

    def _start_failed(self, failure):
        # The checks still run: they report what is wrong, and recovery follows.
        self.alerts.emit(*catalog.MONITOR_START_FAILED.format(
            monitor=self.name, error=_text(failure.getErrorMessage())))

    def _halt(self):
        """Forget the schedule and the check in progress (which is cancelled)."""
        self._generation += 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._cancel_deadline()
        inflight, self._inflight = self._inflight, None
        if inflight is not None and not inflight.called:
            inflight.cancel()

    def _stop_monitor(self):
        if not self._monitor_started:
            return defer.succeed(None)
        self._monitor_started = False
        d = defer.maybeDeferred(self.monitor.stop)
        d.addErrback(lambda f: log.failure("monitor {m}: stop failed", f, m=self.name))
        return d

    def _cancel_deadline(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    # -- checks --------------------------------------------------------------

    def _schedule(self, generation, delay):
        if generation != self._generation or not self.active:
            return
        self._due = self.clock.seconds() + delay
        self._timer = self.clock.callLater(delay, self._check, generation)

    def _check(self, generation):
        self._timer = None
        if generation != self._generation:
            return
        started = self.clock.seconds()
        self._late = max(0.0, started - self._due) if self._due is not None else 0.0
        if self.dummy:
            self._finished(generation, started, CheckResult.error(DUMMY_FAILURE_TEXT), timed_out=False,
                           dummy=True)
            return
        self._expired = False
        d = defer.maybeDeferred(self.monitor.check)
        self._inflight = d
        self._deadline = self.clock.callLater(self.config.timeout, self._expire, generation)
        d.addCallbacks(self._checked, self._check_failed, callbackArgs=(generation, started),
                       errbackArgs=(generation, started))
        d.addErrback(lambda f: log.failure("monitor {m}: handling a check result failed", f, m=self.name))

    def _expire(self, generation):
        self._deadline = None
        if generation != self._generation or self._inflight is None:
            return
        self._expired = True
        self._inflight.cancel()

    def _timeout_result(self):
        return CheckResult.error(f"Timeout ({self.config.timeout:g} s)")

    def _checked(self, result, generation, started):
        if generation != self._generation:
            return None
        self._inflight = None
        self._cancel_deadline()
        if self._expired:
            return self._finished(generation, started, self._timeout_result(), timed_out=True)
        if not isinstance(result, CheckResult):
            result = CheckResult.error(f"the check returned {result!r}")
        return self._finished(generation, started, result, timed_out=False)

    def _check_failed(self, failure, generation, started):
        if generation != self._generation:
            return None  # cancelled by a stop or a suspend: nothing to report
        self._inflight = None
        self._cancel_deadline()
        if self._expired:
            return self._finished(generation, started, self._timeout_result(), timed_out=True)
        text = failure.getErrorMessage() or failure.type.__name__
        return self._finished(generation, started, CheckResult.error(text), timed_out=False)

    def _finished(self, generation, started, result, timed_out, dummy=False):
        duration = self.clock.seconds() - started
        self.last_duration = duration
        self.checks += 1
        if not timed_out and not dummy:
            self._delay_warning(duration)
        interval = self.config.interval - min(self._late, self.config.interval * CATCH_UP_SHARE)
        if result.status is CheckStatus.NORMAL:
            self.consecutive_errors = 0
            self.last_message = _text(result.message)
            old = self.state
            self._transition(MonitorState.NORMAL)
            if old is not MonitorState.NORMAL:
                self.on_normal(self)
            self._schedule(generation, interval)
            return None
        if result.status is CheckStatus.WARNING:
            self.consecutive_errors = 0
            self.last_message = _text(result.message)
            self._transition(MonitorState.WARNING, self.last_message)
            self._schedule(generation, interval)
            return None
        self.last_error = _text(result.message or "error")
        self.consecutive_errors += 1
        needed = 1 if (timed_out and not self.config.timeout_retry) else self.config.retry + 1
        if self.consecutive_errors < needed:
            log.info("monitor {m}: error {n}/{needed}: {e}", m=self.name, n=self.consecutive_errors,
                     needed=needed, e=self.last_error)
            self._schedule(generation, interval)
            return None
        self.consecutive_errors = 0
        self._transition(MonitorState.ERROR, self.last_error)
        d = defer.maybeDeferred(self.on_error, self, result, timed_out)
        d.addErrback(lambda f: log.failure("monitor {m}: recovery failed", f, m=self.name))
        d.addCallback(lambda _: self._schedule(generation, self.config.interval))
        return None

    def _delay_warning(self, duration):
        ratio = self.config.delay_warning
        if ratio >= 100:
            return
        if duration >= self.config.timeout * ratio / 100.0:
            self.alerts.emit(*catalog.MONITOR_DELAY.format(
                monitor=self.name, timeout=self.config.timeout, duration=duration, ratio=ratio))
