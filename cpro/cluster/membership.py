"""Server membership from heartbeats: which peers are up, and the state of each path.

A pure state machine: the heartbeat service calls L{Membership.beat} for each
accepted packet, time comes from an injected clock, and what changes is told
to an L{IMembershipListener}. No I/O here.

Rules (SPEC section 4):
  - per (server, path): UNKNOWN until first heard, NORMAL while heard within
    the timeout, ERROR after C{timeout} seconds of silence;
  - a server is up while any of its paths is NORMAL, and down when every path
    has been silent for the timeout; a server never heard is down;
  - one silent path of an up server is a warning (path ERROR, server CAUTION),
    not a failure.

Silence is detected by one deadline timer per (server, path), re-armed with
C{DelayedCall.reset} on each beat, so that detection fires at exactly
last_heard + timeout whatever the interval, without polling.
"""

from twisted.logger import Logger
from zope.interface import Interface

from cpro.cluster.states import PathState, ServerState

log = Logger()


class IMembershipListener(Interface):
    """Told about every membership change, in the order they happen."""

    def path_state_changed(server, path, old, new):
        """Path C{path} to C{server} went from PathState C{old} to C{new}."""

    def server_up(server, incarnation):
        """C{server} is heard again (or for the first time), running C{incarnation}."""

    def server_down(server):
        """Every path to C{server} has been silent for the heartbeat timeout."""

    def server_restarted(server, old_incarnation, new_incarnation):
        """C{server}'s daemon restarted faster than the timeout; it stays up."""


class _PathView:
    __slots__ = ("state", "last_heard", "armed_at", "timer", "graced")

    def __init__(self):
        self.state = PathState.UNKNOWN
        self.last_heard = None  # clock seconds of the last beat on this path
        self.armed_at = None  # clock seconds the deadline counts from
        self.timer = None  # DelayedCall firing at armed_at + timeout
        self.graced = False  # the deadline fired late once and was extended


class _ServerView:
    __slots__ = ("name", "up", "incarnation", "paths")

    def __init__(self, name, paths):
        self.name = name
        self.up = False
        self.incarnation = None
        self.paths = {p: _PathView() for p in paths}


class Membership:
    """Up/down of each peer and state of each heartbeat path to it.

    @param clock: an IReactorTime (the reactor, or a task.Clock in tests).
    @param local: name of the local server; always up, never timed out.
    @param peers: names of the other servers.
    @param paths: heartbeat path (resource) names, or {peer: names} when
        peers are not all on the same paths (a serial line links two servers).
    @param timeout: heartbeat timeout, seconds.
    @param listener: an L{IMembershipListener}.
    @param local_incarnation: the local daemon's incarnation, for L{incarnation}.
    """

    def __init__(self, clock, local, peers, paths, timeout, listener, local_incarnation=None):
        if timeout <= 0:
            raise ValueError("the heartbeat timeout must be positive")
        self._clock = clock
        self._local = local
        every = sorted({p for ps in paths.values() for p in ps}) if isinstance(paths, dict) else paths
        self._paths = tuple(every)
        self._timeout = float(timeout)
        self._listener = listener
        self._local_incarnation = local_incarnation
        self._servers = {p: _ServerView(p, paths.get(p, ()) if isinstance(paths, dict) else self._paths)
                         for p in peers if p != local}
        self._stopped = False

    # -- input -------------------------------------------------------------

    def beat(self, server, path, incarnation, age=0.0):
        """An authentic, fresh heartbeat from C{server} arrived on C{path}.

        @param incarnation: the sender's incarnation, or None when the path
            cannot tell (a BMC's view): such a beat keeps an up server up but
            does not bring a down one up, since nothing says which run of
            the daemon it stands for.
        @param age: seconds since the server was seen alive, for paths that
            report a view (a witness, a BMC); the deadline counts from then.
        @return: True if it counted; False if ignored (unknown server or
            path, the local server, an incarnation older than the newest
            seen, a view older than the one held, or after L{stop}).
        """
        view = self._servers.get(server)
        if self._stopped or view is None or path not in view.paths:
            return False
        now = self._clock.seconds()
        if incarnation is None or age:
            if incarnation is None and not view.up:
                return False
            pv = view.paths[path]
            heard = now - max(0.0, float(age))
            if now - heard >= self._timeout or (pv.last_heard is not None and heard <= pv.last_heard):
                return False
            if incarnation is None:
                self._heard(view, path, pv, heard)
                return True
        else:
            heard = now
        if view.incarnation is not None and incarnation < view.incarnation:
            # A late packet of the previous run on a path whose replay guard
            # has not yet seen the new one: it proves nothing about liveness.
            log.debug(
                "ignoring beat of old incarnation {old} from {server} on {path}",
                old=incarnation,
                server=server,
                path=path,
            )
            return False

        previous = view.incarnation
        view.incarnation = incarnation
        if view.up and previous != incarnation:
            self._restarted(view, previous, incarnation)

        pv = view.paths[path]
        self._heard(view, path, pv, heard)

        if not view.up:
            # Watch the paths never heard so far: a path still silent one
            # timeout after the server came up is reported as broken.
            for other, opv in view.paths.items():
                if opv.state is PathState.UNKNOWN and opv.timer is None:
                    self._arm(view, other, opv, now)
            self._server_transition(view, True)
        return True

    def _heard(self, view, path, pv, heard):
        pv.last_heard = heard
        self._arm(view, path, pv, heard)
        if pv.state is not PathState.NORMAL:
            self._path_transition(view, path, pv, PathState.NORMAL)

    def reset_timeout(self, timeout):
        """Use a new timeout from now on; running deadlines move accordingly."""
        if timeout <= 0:
            raise ValueError("the heartbeat timeout must be positive")
        self._timeout = float(timeout)
        now = self._clock.seconds()
        for view in self._servers.values():
            for pv in view.paths.values():
                if pv.timer is not None and pv.timer.active():
                    remaining = pv.armed_at + self._timeout - now
                    pv.graced = remaining < 0  # due already: not a stall, no grace
                    pv.timer.reset(max(0.0, remaining))

    def stop(self):
        """Cancel every timer; the machine ignores beats from now on."""
        self._stopped = True
        for view in self._servers.values():
            for pv in view.paths.values():
                if pv.timer is not None and pv.timer.active():
                    pv.timer.cancel()
                pv.timer = None

    # -- queries -----------------------------------------------------------

    @property
    def timeout(self):
        return self._timeout

    def is_up(self, server):
        if server == self._local:
            return True
        view = self._servers.get(server)
        return bool(view and view.up)

    def live_servers(self):
        """Names of the servers up now, the local one included."""
        return [self._local] + [v.name for v in self._servers.values() if v.up]

    def server_state(self, server):
        """ONLINE, CAUTION (up, some path not NORMAL), OFFLINE, or UNKNOWN (not a member)."""
        if server == self._local:
            return ServerState.ONLINE
        view = self._servers.get(server)
        if view is None:
            return ServerState.UNKNOWN
        if not view.up:
            return ServerState.OFFLINE
        if all(pv.state is PathState.NORMAL for pv in view.paths.values()):
            return ServerState.ONLINE
        return ServerState.CAUTION

    def path_states(self, server):
        """{path name: PathState} for C{server}; all NORMAL for the local server."""
        if server == self._local:
            return {p: PathState.NORMAL for p in self._paths}
        view = self._servers.get(server)
        if view is None:
            return {}
        return {p: pv.state for p, pv in view.paths.items()}

    def last_heard(self, server, path=None):
        """Clock seconds of the last beat from C{server} (on C{path}, or any), or None."""
        view = self._servers.get(server)
        if view is None:
            return None
        if path is not None:
            pv = view.paths.get(path)
            return pv.last_heard if pv else None
        heard = [pv.last_heard for pv in view.paths.values() if pv.last_heard is not None]
        return max(heard) if heard else None

    def incarnation(self, server):
        """The newest incarnation heard from C{server}, or None."""
        if server == self._local:
            return self._local_incarnation
        view = self._servers.get(server)
        return view.incarnation if view else None

    # -- timers --------------------------------------------------------------

    def _arm(self, view, path, pv, since):
        pv.armed_at = since
        pv.graced = False
        delay = max(0.0, since + self._timeout - self._clock.seconds())
        if pv.timer is not None and pv.timer.active():
            pv.timer.reset(delay)
        else:
            pv.timer = self._clock.callLater(delay, self._expired, view, path)

    def _expired(self, view, path):
        pv = view.paths[path]
        pv.timer = None
        if pv.armed_at is not None and not pv.graced:
            late = self._clock.seconds() - (pv.armed_at + self._timeout)
            if late > self._timeout / 2:
                # The deadline fired far too late: this process was stalled (or
                # the clock jumped), and the peer's beats may be waiting unread
                # in the socket. Give them half a timeout before judging.
                pv.graced = True
                log.warn("heartbeat deadline of {path} to {server} fired {late:.3f}s late "
                         "(this server was stalled?): waiting {grace}s more",
                         path=path, server=view.name, late=late, grace=self._timeout / 2)
                pv.timer = self._clock.callLater(self._timeout / 2, self._expired, view, path)
                return
        self._path_transition(view, path, pv, PathState.ERROR)
        if view.up and not any(p.state is PathState.NORMAL for p in view.paths.values()):
            self._server_transition(view, False)

    # -- transitions -----------------------------------------------------------

    def _path_transition(self, view, path, pv, new):
        old = pv.state
        if old is new:
            return
        pv.state = new
        log_at = log.warn if new is PathState.ERROR and view.up else log.info
        log_at(
            "heartbeat path {path} to {server}: {old} -> {new}",
            path=path,
            server=view.name,
            old=old.value,
            new=new.value,
        )
        self._tell("path_state_changed", view.name, path, old, new)

    def _server_transition(self, view, up):
        if view.up == up:
            return
        view.up = up
        if up:
            log.info(
                "server {server}: down -> up (incarnation {inc})",
                server=view.name,
                inc=view.incarnation,
            )
            self._tell("server_up", view.name, view.incarnation)
        else:
            log.warn(
                "server {server}: up -> down (every heartbeat path silent for {timeout}s)",
                server=view.name,
                timeout=self._timeout,
            )
            self._tell("server_down", view.name)

    def _restarted(self, view, old, new):
        log.warn(
            "server {server} restarted: incarnation {old} -> {new}",
            server=view.name,
            old=old,
            new=new,
        )
        self._tell("server_restarted", view.name, old, new)

    def _tell(self, method, *args):
        # A failing listener must not leave the machine half-updated or
        # raise into the reactor from a timer.
        try:
            getattr(self._listener, method)(*args)
        except Exception:
            log.failure("membership listener {method} failed", method=method)
