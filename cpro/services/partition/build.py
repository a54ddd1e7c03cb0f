"""Building network-partition resolution for one server from the configuration:
its resolvers (pingnp, httpnp, the witness view) and its forced stop.

The decisions are in L{cpro.cluster.partition}; the checks in
L{cpro.services.partition.pingnp}, L{cpro.services.partition.httpnp} and
L{cpro.services.heartbeat.witnesshb}; the fencing in L{cpro.services.partition.forcestop}.
"""

from cpro.cluster.partition import PartitionResolution


def build_resolvers(reactor, config, local, heartbeat_paths=()):
    """The INPResolvers this server runs, in priority order (ping, http, witness)."""
    np = config.network_partition
    resolvers = []
    pings = [p for p in np.ping if local in p.servers]
    if pings:
        from cpro.services.partition.pingnp import PingResolver

        resolvers.extend(PingResolver(reactor, p) for p in pings)
    https = [h for h in np.http if local in h.servers]
    if https:
        from cpro.services.partition.httpnp import HttpResolver

        resolvers.extend(HttpResolver(reactor, h) for h in https)
    witnesses = [p for p in heartbeat_paths if p.kind == "witnesshb" and p.used] if np.use_witness else []
    if witnesses:
        from cpro.services.heartbeat.witnesshb import WitnessResolver

        resolvers.extend(WitnessResolver(p, config.hb_timeout) for p in witnesses)
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
