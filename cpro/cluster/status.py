"""The status payload of a server's view of the cluster (what clpstat shows),
in the shapes of the original product's REST API."""

from cpro.cluster.controller import TAKING_GROUPS
from cpro.cluster.states import ClusterServiceState, GroupState, PathState, ServerState


def server_status(c, server):
    """ServerState of server as the controller c sees it."""
    if server == c.local:
        return {
            ClusterServiceState.RUNNING: ServerState.ONLINE,
            ClusterServiceState.STARTING: ServerState.ONLINE,
            ClusterServiceState.SUSPENDED: ServerState.SUSPEND,
        }.get(c.service, ServerState.OFFLINE)
    if not c.peer_up(server):
        return ServerState.OFFLINE
    report = c.reports.get(server)
    if report is None:
        return ServerState.UNKNOWN
    if report.service == ClusterServiceState.SUSPENDED.value:
        return ServerState.SUSPEND
    if report.service not in TAKING_GROUPS:
        return ServerState.OFFLINE
    states = c.membership.path_states(server).values()
    if any(s is not PathState.NORMAL for s in states):
        return ServerState.CAUTION
    return ServerState.ONLINE


def cluster_status(c):
    """The status payload of the controller c: cluster, servers with their
    heartbeat paths, groups, resources, monitors."""
    view = c.view()
    servers = []
    for s in c.config.servers:
        if s.name == c.local:
            paths = {hb.name: PathState.NORMAL for hb in c.config.heartbeats}
        elif c.membership is not None:
            paths = c.membership.path_states(s.name)
        else:
            paths = {}
        servers.append({
            "name": s.name, "status": server_status(c, s.name).value, "priority": s.priority,
            "heartbeats": [{"name": hb.name, "type": hb.kind,
                            "status": paths.get(hb.name, PathState.UNKNOWN).value}
                           for hb in c.config.heartbeats],
        })
    groups, resources = [], []
    for g in sorted(c.config.groups, key=lambda g: g.gid):
        holders = c.holders_of(g.name)
        current = holders[0] if holders else ""
        state = view[current][g.name] if current else GroupState.OFFLINE.value
        groups.append({"name": g.name, "status": state, "current": current,
                       "resources": list(g.resources)})
        for rname in g.resources:
            rcfg = c.config.resource(rname)
            if current == c.local:
                rstate = c.groups[g.name].resource_states[rname].value
            elif current:
                rstate = c.reports[current].resources.get(rname, "Unknown")
            else:
                rstate = "Offline"
            resources.append({"name": rname, "type": rcfg.type, "status": rstate,
                              "current": current, "group": g.name})
    local_state = server_status(c, c.local)
    return {
        "cluster": {"name": c.config.name,
                    "status": "Online" if local_state in (ServerState.ONLINE, ServerState.CAUTION)
                    else local_state.value},
        "local": c.local,
        "service": c.service.value,
        "servers": servers,
        "groups": groups,
        "resources": resources,
        "monitors": [],
    }
