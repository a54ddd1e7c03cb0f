"""Network-partition resolution and forced stop: what happens between
"every heartbeat to a peer is lost" and "its groups fail over" (SPEC section 5).

A pure state machine on an injected clock. When a peer is declared down the
controller asks L{PartitionResolution.resolve}; the answer is an L{Outcome}:

  - ISOLATED: a resolver could not prove this server is on the healthy side
    (a ping target or HTTP target unreachable, the witness unreachable or
    still hearing the peer). The controller takes the NP action and never
    activates the peer's groups.
  - FAILOVER: every resolver says healthy; the peer was forced to stop, or
    enough time has passed for an isolated peer to have released its
    groups (see L{PartitionResolution.takeover_delay}).
  - SUPPRESSED: the forced stop failed and the configuration says a failed
    forced stop keeps the groups where they are.
  - CANCELLED: the peer was heard again before the failover.

Servers lost while a resolution runs join it (one verdict per episode), so a
server cut from all its peers at once resolves once and acts once.

Why the healthy side waits: both sides lose each other at about the same
moment (within one heartbeat interval), but the isolated side needs up to
the slowest resolver's timeout to find out, and a moment more to release its
groups. Taking them sooner would run them twice. A successful forced stop
proves the peer is down and ends the wait.
"""

import enum
from dataclasses import dataclass

from twisted.internet import defer, task
from twisted.logger import Logger

from cpro import alertcatalog as catalog

log = Logger()


@dataclass(frozen=True)
class Verdict:
    """What one resolver found: is this server on the healthy side?"""

    healthy: bool
    reason: str


class Outcome(enum.Enum):
    FAILOVER = "failover"
    ISOLATED = "isolated"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"


class _Episode:
    """One resolution: the servers lost during it share its verdict."""

    def __init__(self, started):
        self.started = started
        self.lost = set()
        self.verdict = None  # Deferred firing (healthy, reasons)


class PartitionResolution:
    """Decides, for each lost peer, whether its groups may fail over here.

    @param clock: IReactorTime.
    @param local: the local server's name.
    @param resolvers: L{cpro.interfaces.INPResolver}s; all must say healthy.
    @param forced_stop: an L{cpro.interfaces.IForcedStop}, or None.
    @param np_config: L{cpro.config.model.NetworkPartitionConfig}.
    @param fs_config: L{cpro.config.model.ForcedStopConfig}.
    @param hb_interval: the heartbeat interval, s (the skew between the two
        sides' detections).
    @param alerts: an IAlertSink.
    """

    def __init__(self, clock, local, resolvers, forced_stop, np_config, fs_config, hb_interval, alerts):
        self._clock = clock
        self._local = local
        self._resolvers = tuple(resolvers)
        self._forced_stop = forced_stop if fs_config.enabled else None
        self._np = np_config
        self._fs = fs_config
        self._interval = hb_interval
        self._alerts = alerts
        self._episode = None
        self._pending = {}  # server -> Deferred[Outcome] handed to the controller
        self._waits = {}  # server -> DelayedCall of the takeover wait
        self._fencing = {}  # server -> Deferred of the forced stop in progress
        self._last = {}  # resolver name -> (Verdict, clock seconds)
        self._suppressed = set()  # servers whose failover a failed forced stop suppressed
        self._routine = None  # LoopingCall of the routine checks (start_checks)
        self._routine_run = None  # Deferred of the routine check in progress

    # -- configuration ---------------------------------------------------------

    @property
    def active(self):
        """True if anything stands between a lost peer and its failover."""
        return bool(self._resolvers) or self._forced_stop is not None

    @property
    def takeover_delay(self):
        """Seconds the healthy side waits after its detection before taking a
        lost peer's groups when no forced stop proved the peer down: the
        isolated side's detection skew, its slowest resolver and the grace
        for releasing its groups. 0 without resolvers (nobody self-fences)."""
        if not self._resolvers:
            return 0.0
        return max(r.timeout for r in self._resolvers) + self._interval + self._np.release_grace

    # -- the controller's side ---------------------------------------------------

    def resolve(self, server):
        """A Deferred firing the L{Outcome} for the lost C{server}. Never fails."""
        previous = self._pending.pop(server, None)
        if previous is not None and not previous.called:
            previous.callback(Outcome.CANCELLED)
        result = defer.Deferred()
        self._pending[server] = result
        self._suppressed.discard(server)
        episode = self._episode
        if episode is None or episode.verdict.called:
            episode = self._episode = _Episode(self._clock.seconds())
            episode.lost.add(server)
            episode.verdict = self._run_resolvers(episode)
        else:
            episode.lost.add(server)
        episode.verdict.addCallback(self._after_verdict, server, episode)
        return result

    def cancel(self, server):
        """C{server} was heard again: whatever was pending for it ends (CANCELLED)."""
        self._suppressed.discard(server)
        wait = self._waits.pop(server, None)
        if wait is not None and wait.active():
            wait.cancel()
        self._finish(server, Outcome.CANCELLED)

    def start_checks(self, interval):
        """Run every resolver each C{interval} seconds while no resolution is
        needed, so that status shows their state and a resolver that would
        fail now is reported (nm 33) before a partition relies on it."""
        if interval <= 0 or not self._resolvers or self._routine is not None:
            return
        self._routine = task.LoopingCall(self._routine_check)
        self._routine.clock = self._clock
        self._routine.start(interval, now=True).addErrback(
            lambda f: log.failure("routine network partition checks stopped", f))

    def _routine_check(self):
        busy = self._episode is not None and not self._episode.verdict.called
        if busy or (self._routine_run is not None and not self._routine_run.called):
            return
        self._routine_run = defer.gatherResults([self._check(r, frozenset()) for r in self._resolvers],
                                                consumeErrors=True)
        self._routine_run.addErrback(lambda f: None)  # each check records its own verdict

    def stop(self):
        """Cancel every wait, resolution and routine check (the cluster service stops)."""
        if self._routine is not None and self._routine.running:
            self._routine.stop()
        self._routine = None
        if self._routine_run is not None and not self._routine_run.called:
            self._routine_run.cancel()
        for server in list(self._pending):
            self.cancel(server)
        if self._episode is not None and not self._episode.verdict.called:
            self._episode.verdict.cancel()

    def status(self):
        """{resolver name: {'kind', 'healthy', 'reason', 'at'}} of the last check; pending servers."""
        resolvers = {}
        for r in self._resolvers:
            verdict, at = self._last.get(r.name, (None, None))
            resolvers[r.name] = {
                "kind": r.kind,
                "healthy": None if verdict is None else verdict.healthy,
                "reason": "" if verdict is None else verdict.reason,
                "at": at,
            }
        return {
            "resolvers": resolvers,
            "resolving": sorted(self._pending),
            "suppressed": sorted(self._suppressed),
            "forced_stop": self._fs.method if self._forced_stop is not None else None,
            "takeover_delay": self.takeover_delay,
        }

    # -- resolution ----------------------------------------------------------------

    def _run_resolvers(self, episode):
        if not self._resolvers:
            return defer.succeed((True, []))
        lost = frozenset(episode.lost)
        checks = [self._check(r, lost) for r in self._resolvers]
        d = defer.gatherResults(checks, consumeErrors=True)
        d.addCallback(lambda verdicts: (all(v.healthy for v in verdicts),
                                        [f"{r.name}: {v.reason}" for r, v in zip(self._resolvers, verdicts)]))
        return d

    def _check(self, resolver, lost):
        try:
            d = defer.maybeDeferred(resolver.check, lost)
        except Exception as e:  # maybeDeferred catches; belt and braces
            d = defer.fail(e)
        timer = self._clock.callLater(resolver.timeout, d.cancel)

        def done(result):
            if timer.active():
                timer.cancel()
            return result

        def failed(failure):
            if failure.check(defer.CancelledError):
                return Verdict(False, f"no answer within {resolver.timeout:g} s")
            return Verdict(False, f"check failed: {failure.getErrorMessage()}")

        d.addBoth(done)
        d.addErrback(failed)
        d.addCallback(self._record, resolver)
        return d

    def _record(self, verdict, resolver):
        if not isinstance(verdict, Verdict):
            verdict = Verdict(False, f"resolver returned {verdict!r}")
        previous = self._last.get(resolver.name, (None, None))[0]
        self._last[resolver.name] = (verdict, self._clock.seconds())
        if previous is not None and previous.healthy != verdict.healthy:
            if verdict.healthy:
                self._alerts.emit(*catalog.RESOLVER_WORKS_AGAIN.format(
                    resolver=resolver.name, server=self._local, reason=verdict.reason))
            else:
                self._alerts.emit(*catalog.RESOLVER_STOPPED_WORKING.format(
                    resolver=resolver.name, server=self._local, reason=verdict.reason))
        elif previous is None and not verdict.healthy:
            self._alerts.emit(*catalog.RESOLVER_FAILS.format(
                resolver=resolver.name, server=self._local, reason=verdict.reason))
        log_at = log.info if verdict.healthy else log.warn
        log_at("NP resolver {name} ({kind}): {state}: {reason}", name=resolver.name, kind=resolver.kind,
               state="healthy" if verdict.healthy else "cannot prove this server healthy",
               reason=verdict.reason)
        return verdict

    def _after_verdict(self, result, server, episode):
        healthy, reasons = result
        if server not in self._pending:
            return result
        if not healthy:
            self._finish(server, Outcome.ISOLATED, reasons)
            return result
        if self._resolvers:
            self._alerts.emit(*catalog.PARTITION_HEALTHY_SIDE.format(
                server=server, local=self._local, reasons="; ".join(reasons)))
        if self._forced_stop is not None:
            self._fence(server, episode)
        else:
            self._wait_then_failover(server, episode)
        return result

    # -- forced stop and the takeover wait -------------------------------------------

    def _fence(self, server, episode):
        self._alerts.emit(*catalog.FORCED_STOP_STARTED.format(server=server, method=self._fs.method))
        try:
            d = defer.maybeDeferred(self._forced_stop.stop_server, server)
        except Exception as e:
            d = defer.fail(e)
        timer = self._clock.callLater(self._fs.timeout, d.cancel)
        self._fencing[server] = d

        def done(result):
            if timer.active():
                timer.cancel()
            self._fencing.pop(server, None)
            return result

        def succeeded(_):
            self._alerts.emit(*catalog.FORCED_STOP_SUCCEEDED.format(server=server))
            self._finish(server, Outcome.FAILOVER)

        def failed(failure):
            why = (f"no confirmation within {self._fs.timeout:g} s" if failure.check(defer.CancelledError)
                   else failure.getErrorMessage())
            self._alerts.emit(*catalog.FORCED_STOP_FAILED.format(server=server, reason=why))
            if self._fs.identify_on_failure:
                self._identify(server)
            if self._fs.suppress_failover_on_failure:
                self._suppressed.add(server)
                self._alerts.emit(*catalog.FAILOVER_SUPPRESSED.format(server=server))
                self._finish(server, Outcome.SUPPRESSED)
            else:
                self._wait_then_failover(server, episode)

        d.addBoth(done)
        d.addCallbacks(succeeded, failed)
        d.addErrback(lambda f: log.failure("forced stop of {server}", f, server=server))

    def _identify(self, server):
        try:
            d = defer.maybeDeferred(self._forced_stop.identify, server, self._fs.identify_seconds)
        except Exception as e:
            d = defer.fail(e)
        d.addErrback(lambda f: log.warn("chassis identify of {server} failed: {e}", server=server,
                                        e=f.getErrorMessage()))

    def _wait_then_failover(self, server, episode):
        remaining = episode.started + self.takeover_delay - self._clock.seconds()
        if remaining <= 0:
            self._finish(server, Outcome.FAILOVER)
            return
        log.info("waiting {delay:.3f}s before taking the groups of {server}, so that an isolated {server} "
                 "has released them", delay=remaining, server=server)
        self._waits[server] = self._clock.callLater(remaining, self._waited, server)

    def _waited(self, server):
        self._waits.pop(server, None)
        self._finish(server, Outcome.FAILOVER)

    def _finish(self, server, outcome, reasons=()):
        d = self._pending.pop(server, None)
        if d is None or d.called:
            return
        if outcome is Outcome.ISOLATED:
            log.error("network partition: {local} cannot prove it is on the healthy side after losing {server}: "
                      "{reasons}", local=self._local, server=server, reasons="; ".join(reasons))
        d.callback(outcome)
