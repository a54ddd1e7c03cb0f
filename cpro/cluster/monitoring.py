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

An event-fed monitor (an L{cpro.interfaces.IEventMonitor}, C{event_fed}) runs
through the same states, counts and recovery, with results that arrive
instead of checks (L{MonitorRunner.report}, given to the type as its
C{report} callback through an L{EventInlet}):

- it shows Normal once the type has started (an error if it could not) and
  takes reports from then on; no check is scheduled, so there is no timeout
  and no delay warning, and C{first_wait} does not apply;
- an error report is confirmed after ``retry`` further consecutive error
  reports; a Normal or Warning report resets the count, and ends an Error
  only when the type is C{clearable};
- reports are refused while stopped, suspended, in a dummy failure, or while
  the recovery of a confirmed error runs (they would be about the same
  failure);
- a dummy failure reports an error at once and then every ``interval`` (so
  that it rehearses the whole escalation); when it ends, the monitor goes
  back to the state the real reports had left;
- the recovery counters are not reset when monitoring starts again (only a
  Normal report resets them): no news is no proof of health.

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


class EventInlet:
    """The C{report(result)} callable an event-fed monitor is built with.

    The type is built before the runner that drives it, so its inlet is
    connected to the runner afterwards; until then reports are refused.
    """

    def __init__(self):
        self._runner = None

    def connect(self, runner):
        self._runner = runner

    def __call__(self, result):
        """Hand result to the runner. Returns whether it was taken."""
        return self._runner.report(result) if self._runner is not None else False


class MonitorRunner:
    def __init__(self, clock, config, monitor, alerts, on_error=None, on_normal=None, on_change=None,
                 event_fed=False):
        """
        @param config: the monitor's L{cpro.config.model.MonitorConfig}.
        @param monitor: the L{cpro.interfaces.IMonitor} that runs the checks
            or, with event_fed, the L{cpro.interfaces.IEventMonitor} whose
            results arrive through L{report}.
        @param on_error: callable(runner, result, timed_out) -> None or a
            Deferred, for each confirmed error; the next check waits for it.
        @param on_normal: callable(runner) when a check is normal after any
            other state (the recovery counters reset).
        @param on_change: callable() after every state change (status push).
        @param event_fed: the monitor is not polled (see the module docstring).
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
        self.event_fed = bool(event_fed)
        self.events = 0  # reports taken (event-fed)
        self.last_event = None  # clock seconds of the last report taken (event-fed)
        self._listening = None  # the generation whose reports are taken (event-fed, type started)
        self._recovering = None  # the generation whose confirmed error is being recovered
        self._event_state = MonitorState.NORMAL  # what the real reports left (event-fed)
        self._from_dummy = False  # the state shown comes from a dummy failure (event-fed)

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
            "event_fed": self.event_fed,
            "events": self.events,
            "last_event": self.last_event,
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
        if self.event_fed and self._listening == self._generation:
            if on:
                if self._recovering != self._generation:  # else: once the recovery has ended
                    self._schedule(self._generation, 0.0)
            else:
                self._cancel_timer()
                if self._recovering != self._generation:
                    self._end_dummy()
        self.on_change()
        return True

    def _begin(self, delay, alert):
        self.consecutive_errors = 0
        generation = self._generation
        self._transition(MonitorState.UNKNOWN, alert=alert)
        self._monitor_started = True
        d = defer.maybeDeferred(self.monitor.start)
        if self.event_fed:
            d.addCallbacks(self._listen, self._listen, callbackArgs=(generation,), errbackArgs=(generation,))
            d.addErrback(lambda f: log.failure("monitor {m}: starting failed", f, m=self.name))
            return
        d.addErrback(self._start_failed)
        d.addCallback(lambda _: self._schedule(generation, delay))
        d.addErrback(lambda f: log.failure("monitor {m}: scheduling failed", f, m=self.name))

    def _start_failed(self, failure):
        # The checks still run: they report what is wrong, and recovery follows.
        self.alerts.emit(*catalog.MONITOR_START_FAILED.format(
            monitor=self.name, error=_text(failure.getErrorMessage())))

    def _listen(self, started, generation):
        """An event-fed type has started (started: None) or failed to (a Failure):
        take its reports from now on; a failure to start is an error report,
        since no event would tell of what is wrong."""
        why = None
        if started is not None:
            self._start_failed(started)
            why = started.getErrorMessage() or started.type.__name__
        if generation != self._generation or not self.active:
            return
        self._listening = generation
        self._event_state = MonitorState.NORMAL
        self._from_dummy = False
        if why is None:
            self._transition(MonitorState.NORMAL)
        else:
            self._judge(generation, CheckResult.error(f"cannot receive events: {why}"), False,
                        self.config.interval)
            self._event_state = self.state
        if self.dummy and self._recovering != generation:
            self._schedule(generation, 0.0)

    def _halt(self):
        """Forget the schedule and the check in progress (which is cancelled)."""
        self._generation += 1
        self._cancel_timer()
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

    def _cancel_timer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _cancel_deadline(self):
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    # -- checks --------------------------------------------------------------

    def _schedule(self, generation, delay):
        if generation != self._generation or not self.active:
            return
        if self.event_fed and not self.dummy:
            return  # nothing to poll: reports arrive
        self._due = self.clock.seconds() + delay
        self._timer = self.clock.callLater(delay, self._check, generation)

    def _check(self, generation):
        self._timer = None
        if generation != self._generation:
            return
        started = self.clock.seconds()
        self._late = max(0.0, started - self._due) if self._due is not None else 0.0
        if self.event_fed:
            if self.dummy:
                self._from_dummy = True
                self._judge(generation, CheckResult.error(DUMMY_FAILURE_TEXT), False, self.config.interval)
            return
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
        return self._judge(generation, result, timed_out, interval)

    def _judge(self, generation, result, timed_out, interval):
        """What one result means (a check's or a report's); the next check after interval."""
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
        self._recovering = generation
        d = defer.maybeDeferred(self.on_error, self, result, timed_out)
        d.addErrback(lambda f: log.failure("monitor {m}: recovery failed", f, m=self.name))
        d.addCallback(lambda _: self._recovered(generation))
        return None

    def _recovered(self, generation):
        if self._recovering == generation:
            self._recovering = None
        if generation != self._generation:
            return
        if self.event_fed and self._from_dummy and not self.dummy:
            self._end_dummy()  # the dummy failure ended while its recovery ran
        self._schedule(generation, self.config.interval)

    # -- reports (event-fed monitors) ------------------------------------------

    def report(self, result):
        """An event-fed monitor's result, as an event arrives.

        @param result: a L{CheckResult}.
        @return: whether it was taken (see the module docstring for when it is not).
        """
        if not self.event_fed or not isinstance(result, CheckResult):
            return False
        generation = self._generation
        if not self.active or self._listening != generation or self.dummy or self._recovering == generation:
            return False
        if (result.status is not CheckStatus.ERROR and self.state is MonitorState.ERROR
                and not getattr(self.monitor, "clearable", False)):
            log.info("monitor {m}: {s} report refused: the type does not clear an error",
                     m=self.name, s=result.status.value)
            return False
        self._take(result)
        return True

    def _take(self, result):
        self.events += 1
        self.last_event = self.clock.seconds()
        self._from_dummy = False
        self._judge(self._generation, result, False, self.config.interval)
        self._event_state = self.state

    def _end_dummy(self):
        """A dummy failure of an event-fed monitor is over: back to what the real
        reports had left, without a recovery of its own."""
        self._from_dummy = False
        self.consecutive_errors = 0
        old, state = self.state, self._event_state
        if state is MonitorState.NORMAL:
            self._transition(MonitorState.NORMAL)
            if old is not MonitorState.NORMAL:
                self.on_normal(self)
        else:
            self._transition(state, self.last_error if state is MonitorState.ERROR else self.last_message)

    def _delay_warning(self, duration):
        ratio = self.config.delay_warning
        if ratio >= 100:
            return
        if duration >= self.config.timeout * ratio / 100.0:
            self.alerts.emit(*catalog.MONITOR_DELAY.format(
                monitor=self.name, timeout=self.config.timeout, duration=duration, ratio=ratio))
