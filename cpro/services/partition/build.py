"""Building network-partition resolution for one server from the configuration:
its resolvers and its forced stop.

The resolver types (pingnp, httpnp, the witness view) are those registered
with L{cpro.plugins.NP_RESOLVERS} (see L{cpro.services.partition.base}); the
forced-stop methods those registered with L{cpro.plugins.FORCED_STOP_METHODS}
(L{cpro.services.partition.forcestop}). The decisions are in
L{cpro.cluster.partition}.
"""

from cpro.cluster.partition import PartitionResolution
from cpro.plugins import NP_RESOLVERS
from cpro.services.partition.base import ResolverContext


def build_resolvers(reactor, config, local, heartbeat_paths=()):
    """The INPResolvers this server runs, type by type in the types' order
    (ping, http, witness), each type's in the configuration's priority order."""
    context = ResolverContext(reactor, config, local, tuple(heartbeat_paths))
    resolvers = []
    for plugin in sorted(NP_RESOLVERS.plugins(), key=lambda p: p.schema.order):
        resolvers.extend(plugin.factory(context))
    return resolvers


def build_forced_stop(reactor, config, local, runner):
    """The IForcedStop of this server, or None when forced stop is off."""
    if not config.forced_stop.enabled:
        return None
    from cpro.services.partition.forcestop import make_forced_stop

    return make_forced_stop(reactor, config, local, runner)


def build_partition(reactor, config, local, alerts, runner, heartbeat_paths=()):
    return PartitionResolution(
        reactor, local, build_resolvers(reactor, config, local, heartbeat_paths),
        build_forced_stop(reactor, config, local, runner), config.network_partition, config.forced_stop,
        config.hb_interval, alerts)
