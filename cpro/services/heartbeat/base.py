"""The registry of heartbeat path kinds, and what every path is built with.

Each kind lives in its own module (LAN in L{cpro.services.heartbeat.service}, COM in
L{cpro.services.heartbeat.comhb}, ...), which registers a factory with
L{heartbeat_kind}. The heartbeat service builds one path per configured
heartbeat resource with C{factory(context, heartbeat_config)}; the factory
returns an L{cpro.interfaces.IHeartbeatPath}.
"""

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from twisted.logger import Logger

from cpro.protocols.heartbeat import REPLAY, RESTARTED, STALE

log = Logger()

# kind -> module that registers it (imported on first use).
KIND_MODULES = {
    "lanhb": "cpro.services.heartbeat.service",
    "lankhb": "cpro.services.heartbeat.service",
    "comhb": "cpro.services.heartbeat.comhb",
    "diskhb": "cpro.services.heartbeat.diskhb",
    "bmchb": "cpro.services.heartbeat.bmchb",
    "witnesshb": "cpro.services.heartbeat.witnesshb",
}

_FACTORIES = {}


class HeartbeatConfigError(ValueError):
    """The configuration cannot give this server a heartbeat path."""


@dataclass
class HeartbeatContext:
    """What a heartbeat path is built with.

    @ivar reactor: the reactor (IReactorTime, IReactorUDP, IReactorFDSet, ...).
    @ivar config: the L{cpro.config.model.ClusterConfig}.
    @ivar local: name of the local server.
    @ivar incarnation: the local daemon's L{cpro.protocols.heartbeat.Incarnation}.
    @ivar on_beat: C{on_beat(path_name, packet)} for each authentic, fresh
        L{cpro.protocols.heartbeat.HeartbeatPacket} from a peer.
    @ivar on_alive: C{on_alive(path_name, server, incarnation_or_None, age_seconds)}
        for a view that a peer was alive C{age} seconds ago.
    @ivar runner: C{runner(fn, *args)} -> Deferred, for blocking calls
        (disk I/O, IPMI): L{cpro.system.runners.thread_runner} in the daemon.
    """

    reactor: Any
    config: Any
    local: str
    incarnation: Any
    on_beat: Callable
    on_alive: Callable
    runner: Callable

    @property
    def interval(self):
        return self.config.hb_interval

    @property
    def timeout(self):
        return self.config.hb_timeout

    def peers(self):
        """The other servers' L{cpro.config.model.ServerConfig}s."""
        return [s for s in self.config.servers if s.name != self.local]

    def me(self):
        return self.config.server(self.local)


def heartbeat_kind(*kinds):
    """Class or function decorator: register a path factory for C{kinds}."""

    def register(factory):
        for kind in kinds:
            _FACTORIES[kind] = factory
        return factory

    return register


def factory(kind):
    """The factory of heartbeat kind C{kind}; raises HeartbeatConfigError if unknown."""
    if kind not in _FACTORIES and kind in KIND_MODULES:
        importlib.import_module(KIND_MODULES[kind])
    try:
        return _FACTORIES[kind]
    except KeyError:
        raise HeartbeatConfigError(f"heartbeat kind {kind!r} is not supported") from None


def deliver(path_name, guard, packet, counters, drop, on_beat, logger=log):
    """The last steps every packet-carrying path shares: the replay guard, the
    count, the hand-over to C{on_beat}. C{drop(kind, reason)} is the path's
    own drop (it counts and logs); C{logger} is the path module's. Never raises."""
    verdict = guard.accept(packet)
    if verdict == REPLAY:
        return drop("replayed", f"{packet.sender} seq {packet.seq}")
    if verdict == STALE:
        return drop("stale", f"{packet.sender} incarnation {packet.incarnation}")
    if verdict == RESTARTED:
        logger.info("heartbeat path {path}: {server} runs a new incarnation {incarnation}",
                    path=path_name, server=packet.sender, incarnation=packet.incarnation)
    counters["accepted"] += 1
    try:
        on_beat(path_name, packet)
    except Exception:
        logger.failure("heartbeat path {path}: on_beat failed", path=path_name)
