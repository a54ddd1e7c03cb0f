"""The status payload of a server's view of the cluster (what clpstat shows),
in the shapes of the original product's REST API."""

from cpro.cluster.controller import TAKING_GROUPS
from cpro.cluster.states import ClusterServiceState, GroupState, MonitorState, PathState, ServerState


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
            paths = {hb.name: PathState.NORMAL for hb in c.config.heartbeats
                     if c.config.takes_part(hb, c.local)}
        elif c.membership is not None:
            paths = c.membership.path_states(s.name)
        else:
            paths = {}
        if s.name == c.local:
            generation = c.config_generation
        else:
            report = c.reports.get(s.name)
            generation = report.config_generation if report is not None and c.peer_up(s.name) else None
        servers.append({
            "name": s.name, "status": server_status(c, s.name).value, "priority": s.priority,
            "config_generation": generation,
            "heartbeats": [{"name": hb.name, "type": hb.kind,
                            "status": paths.get(hb.name, PathState.UNKNOWN).value}
                           for hb in c.config.heartbeats if hb.name in paths or not paths],
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
        "monitors": monitor_status(c),
        "monitor_recovery": monitor_recovery(c),
        "network_partition": c.partition.status() if c.partition is not None else None,
    }


_CHECKED = (MonitorState.NORMAL.value, MonitorState.WARNING.value, MonitorState.ERROR.value)


def _overall(states):
    """One word for a monitor over all servers: Error when every server that
    checks it reports an error, Caution when only some do."""
    checked = [s for s in states if s in _CHECKED]
    if not checked:
        for word in (MonitorState.SUSPENDED.value, MonitorState.UNKNOWN.value):
            if word in states:
                return word
        return MonitorState.STOPPED.value
    if MonitorState.ERROR.value in checked:
        return MonitorState.ERROR.value if set(checked) == {MonitorState.ERROR.value} else "Caution"
    if MonitorState.WARNING.value in checked:
        return MonitorState.WARNING.value
    return MonitorState.NORMAL.value


def monitor_status(c):
    """[{"name", "type", "status", "servers": [{"name", "status", "duration", "error", ...}]}]:
    the local monitors' live status and the peers' as of their last state report."""
    local = c.monitors.report().get("monitors", {}) if c.monitors is not None else {}
    offline = {"status": MonitorState.STOPPED.value}
    out = []
    for m in c.config.monitors:
        entries = []
        for s in c.config.servers:
            if s.name == c.local:
                entry = local.get(m.name, offline)
            elif not c.peer_up(s.name) or s.name not in c.reports:
                entry = offline
            else:
                default = {"status": MonitorState.UNKNOWN.value} if m.runs_on(s.name) else offline
                entry = c.reports[s.name].monitors.get(m.name, default)
            entries.append({"name": s.name, **entry})
        out.append({"name": m.name, "type": m.type, "status": _overall([e["status"] for e in entries]),
                    "servers": entries})
    return out


def monitor_recovery(c):
    """server -> whether monitors' recovery actions are enabled there (live servers only)."""
    out = {}
    if c.monitors is not None:
        out[c.local] = bool(c.monitors.report().get("monitor_recovery", True))
    for server, report in sorted(c.reports.items()):
        if c.peer_up(server):
            out[server] = report.monitor_recovery
    return out
