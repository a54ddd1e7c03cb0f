"""Running a monitor's blocking probe (psutil scan, netlink query, disk read) off the reactor thread.

Monitors take an injectable ``run_in_thread(fn, *args)`` callable that returns a
Deferred firing fn's result (L{cpro.system.runners}: thread_runner in
production, run_inline in unit tests).

A thread cannot be killed, so a cancelled check abandons its thread instead:
L{SingleFlight} keeps at most one call of a probe in flight and lets later
checks wait on that same call, so a probe stuck in the kernel (a dead disk)
holds one pool thread, not one more per interval.
"""

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure


log = Logger()




class SingleFlight:
    """At most one call of fn in a thread; callers meanwhile share its outcome.

    run() returns a new Deferred per caller; cancelling it detaches that
    caller only (it fails with CancelledError at once) and leaves the thread
    to finish in the background, its result then going to whoever still waits.
    """

    def __init__(self, clock, run_in_thread, fn, *args):
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._call = (fn, args)
        self._waiters = None  # list while a call is in flight
        self.busy_since = None  # clock time the call in flight started

    @property
    def busy(self):
        return self._waiters is not None

    def run(self):
        waiter = defer.Deferred(self._detach)
        if self._waiters is None:
            self._waiters = [waiter]
            self.busy_since = self._clock.seconds()
            fn, args = self._call
            try:
                d = self._run_in_thread(fn, *args)
            except Exception:
                d = defer.fail()
            d.addBoth(self._done)
        else:
            self._waiters.append(waiter)
        return waiter

    def _done(self, outcome):
        waiters, self._waiters = self._waiters, None
        self.busy_since = None
        if not waiters and isinstance(outcome, Failure):
            log.debug("abandoned probe failed: {f}", f=outcome.getErrorMessage())
        for waiter in waiters:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)
        return None

    def _detach(self, waiter):
        if self._waiters is not None and waiter in self._waiters:
            self._waiters.remove(waiter)
