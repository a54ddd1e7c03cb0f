"""What every heartbeat path is built with, and how the service builds one.

Each heartbeat kind lives in its own module (LAN in
L{cpro.services.heartbeat.lanhb}, COM in L{cpro.services.heartbeat.comhb},
...), which registers its path factory with L{cpro.plugins.HEARTBEAT_KINDS}
together with its L{cpro.config.heartbeats.HeartbeatKindSchema}. The
heartbeat service builds one path per configured heartbeat resource with
L{build_path}, that is C{factory(context, heartbeat_config)}; the factory
returns an L{cpro.interfaces.IHeartbeatPath}.
"""

from dataclasses import dataclass
from typing import Any, Callable

from twisted.logger import Logger

from cpro.plugins import HEARTBEAT_KINDS, UnknownType
from cpro.protocols.heartbeat import REPLAY, RESTARTED, STALE

log = Logger()


class HeartbeatConfigError(ValueError):
    """The configuration cannot give this server a heartbeat path."""


class HeartbeatBindError(Exception):
    """A heartbeat socket could not be bound (address in use, not local, no permission)."""

    def __init__(self, path, address, port, reason, errno=None):
        self.path = path
        self.address = address
        self.port = port
        self.errno = errno
        super().__init__(
            f"heartbeat path {path}: cannot bind UDP {format_endpoint(address, port)}: {reason}"
        )


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
    # The cluster keys (cpro.protocols.keyring.Keyring) while a rotation may
    # happen; None: the configuration's key.
    keyring: Any = None

    @property
    def key(self):
        """What the paths sign and check with: the keyring, or the key."""
        return self.keyring if self.keyring is not None else self.config.key

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


def build_path(context, heartbeat):
    """The path of one heartbeat resource, built by its kind's registered factory.

    @raise HeartbeatConfigError: the kind is not registered, or the
        configuration cannot give this server that path.
    """
    try:
        plugin = HEARTBEAT_KINDS.get(heartbeat.kind)
    except UnknownType:
        raise HeartbeatConfigError(f"heartbeat kind {heartbeat.kind!r} is not supported") from None
    return plugin.factory(context, heartbeat)


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


def format_endpoint(address, port):
    """address:port, with IPv6 addresses in brackets."""
    return f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"
