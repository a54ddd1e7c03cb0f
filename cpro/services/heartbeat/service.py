"""The heartbeat service: runs every heartbeat path of this server.

L{HeartbeatService} builds one path per heartbeat resource this server is on
(through the kind registered with L{cpro.plugins.HEARTBEAT_KINDS}: LAN in
L{cpro.services.heartbeat.lanhb}, COM, disk, BMC, witness in their own
modules), opens them all or none, and sends a beat carrying the current state
digest on every path at the heartbeat interval. What a received beat
I{means} is decided by the caller's C{on_beat} (normally
L{cpro.cluster.membership.Membership.beat}) and C{on_alive}.

A path that fails to send never stops the beats on the other paths, and a
failing digest provider never stops the beats at all.
"""

from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.logger import Logger

from cpro.plugins import HEARTBEAT_KINDS
from cpro.protocols.heartbeat import StateDigest
from cpro.services.heartbeat.base import HeartbeatBindError, HeartbeatConfigError, HeartbeatContext, build_path
from cpro.system.runners import thread_runner

__all__ = ["HeartbeatBindError", "HeartbeatConfigError", "HeartbeatService"]

log = Logger()


class HeartbeatService(MultiService):
    """Sends heartbeats on every path at the interval and receives the peers' ones.

    One path per heartbeat resource this server takes part in, of any kind
    registered with L{cpro.plugins.HEARTBEAT_KINDS}.

    @param reactor: IReactorUDP + IReactorTime.
    @param config: the L{cpro.config.model.ClusterConfig}.
    @param local: name of the local server.
    @param incarnation: the local daemon's L{Incarnation}.
    @param digest_provider: no-argument callable returning the current
        L{StateDigest}; called once per beat round.
    @param on_beat: C{on_beat(path_name, packet)} for each accepted packet.
    @param on_alive: C{on_alive(path_name, server, incarnation, age)} for each
        view that a peer is alive (witness, BMC paths).
    @param runner: runs blocking calls off the reactor thread (default: the
        reactor's thread pool).
    """

    def __init__(self, reactor, config, local, incarnation, digest_provider, on_beat,
                 on_alive=None, runner=None, keyring=None):
        super().__init__()
        if not config.hb_interval > 0:
            raise HeartbeatConfigError("the heartbeat interval must be positive")
        if not config.key:
            raise HeartbeatConfigError("the cluster key is empty")
        self._reactor = reactor
        self._interval = config.hb_interval
        self._digest_provider = digest_provider
        self._digest = StateDigest(config.digest, 0, "")
        self._digest_failing = False
        self._loop = None
        context = HeartbeatContext(
            reactor=reactor, config=config, local=local, incarnation=incarnation,
            on_beat=on_beat, on_alive=on_alive or (lambda *args: None),
            runner=runner or thread_runner(reactor), keyring=keyring)
        self.paths = tuple(build_path(context, hb) for hb in config.heartbeats
                           if config.takes_part(hb, local))
        if not any(HEARTBEAT_KINDS.get(p.kind).schema.every_server for p in self.paths):
            log.warn("no LAN heartbeat path is configured for {server}", server=local)

    @property
    def path_names(self):
        return [p.name for p in self.paths]

    def path(self, name):
        for p in self.paths:
            if p.name == name:
                return p
        return None

    def counters(self):
        """{path name: {counter: value}}."""
        return {p.name: p.counters() for p in self.paths}

    def forget(self, server):
        """Forget C{server}'s incarnation and sequence on every path.

        Meant for after the server was declared down: a daemon restarted
        with a wall clock set back (an older start time) is otherwise
        refused as stale. The cost: packets of its previous run, if
        captured and replayed, are accepted again once.
        """
        for p in self.paths:
            p.forget(server)

    def start_listening(self):
        """Bind every path's socket; all or none.

        @raise HeartbeatBindError: for the first path that cannot bind (the
            ones already bound are closed again).
        """
        bound = []
        for p in self.paths:
            try:
                p.start_listening()
            except HeartbeatBindError:
                for q in bound:
                    q.stop_listening()
                raise
            bound.append(p)

    def startService(self):
        self.start_listening()
        super().startService()
        self._start_loop(now=True)

    def _start_loop(self, now):
        self._loop = task.LoopingCall(self._beat_round)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=now).addErrback(
            lambda f: log.failure("heartbeat loop stopped: peers will see this server as down", f)
        )

    def stopService(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        children = defer.maybeDeferred(super().stopService)
        sockets = [p.stop_listening() for p in reversed(self.paths)]
        return defer.gatherResults([children] + sockets, consumeErrors=True)

    def set_interval(self, interval):
        """Send at a new interval from the next beat on (live reconfiguration)."""
        if not interval > 0:
            raise HeartbeatConfigError("the heartbeat interval must be positive")
        self._interval = interval
        if self._loop is not None and self._loop.running:
            self._loop.stop()
            self._start_loop(now=False)

    def send_now(self):
        """Send an extra beat round now (e.g. after a placement change, so peers converge fast)."""
        if self._loop is not None:
            self._beat_round()

    def _beat_round(self):
        digest = self._current_digest()
        for p in self.paths:
            try:
                p.send_beat(digest)
            except Exception:
                log.failure("heartbeat path {path}: send_beat failed", path=p.name)

    def _current_digest(self):
        # Liveness comes first: a failing provider must not stop the beats,
        # so the last good digest goes out instead.
        try:
            digest = self._digest_provider()
            if not isinstance(digest, StateDigest):
                raise TypeError(f"digest provider returned {digest!r}")
        except Exception:
            if not self._digest_failing:
                log.failure("state digest unavailable; sending the last known one")
            self._digest_failing = True
            return self._digest
        if self._digest_failing:
            log.info("state digest available again")
        self._digest_failing = False
        self._digest = digest
        return digest
