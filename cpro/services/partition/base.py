"""What every network-partition resolver type is built with.

A resolver type (pingnp, httpnp, the witness view) lives in one module that
registers a factory with L{cpro.plugins.NP_RESOLVERS}::

    @NP_RESOLVERS.register("pingnp", schema=ResolverSchema(order=10))
    def ping_resolvers(context): ...

The factory is called once per daemon start as C{factory(context)} with a
L{ResolverContext} and returns the L{cpro.interfaces.INPResolver}s of its
type that this server runs (none when the configuration gives it none).
"""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResolverSchema:
    """What the daemon needs to know of a resolver type besides its factory.

    @ivar order: where this type's resolvers come in the server's list of
        resolvers (status views and logs list them in that order); lower
        first.
    """

    order: int


@dataclass(frozen=True)
class ResolverContext:
    """What a resolver type's factory is given.

    @ivar reactor: the reactor (IReactorTime, and what the type's checks need:
        raw sockets, TCP, SSL).
    @ivar config: the L{cpro.config.model.ClusterConfig}.
    @ivar local: name of the local server.
    @ivar heartbeat_paths: the L{cpro.interfaces.IHeartbeatPath}s this server
        runs (a resolver may ask through one of them, as the witness does).
    """

    reactor: Any
    config: Any
    local: str
    heartbeat_paths: tuple = ()
