"""Text views of the status and alert payloads, in the original clpstat layouts.

Pure functions: dicts in (the REST-shaped payloads the daemon's admin handler
returns), text out. Used by the admin shell (text mode) and by clpstat.

Status payload::

    {"cluster": {"name": "demo", "status": "Online"},
     "local": "srv1",
     "servers": [{"name", "status", "priority", "config_generation"?,
                  "heartbeats": [{"name", "status", "type"?}]}],
     "groups": [{"name", "status", "current", "resources": [names]}],
     "resources": [{"name", "type", "status", "current", "group"}],
     "monitors": [{"name", "type", "status",
                   "servers": [{"name", "status", "duration"?, "error"?, "retries"?, "restarts"?,
                                "failovers"?, "final_action_done"?, "dummy"?, "suspended"?,
                                "last_event"? (epoch seconds, event-fed monitors)}]}],
     "monitor_recovery": {server: bool}}   (optional: recovery actions enabled per server)

Alerts payload: {"alerts": [{"time", "server", "module", "id", "level", "message"}]}.
"""

import datetime
import re

WIDTH = 69  # of the '=' rules, as in the original
COLUMN = 20  # where the ':' of "name ....: value" lines sits (widened for long names)
STATUS_WIDTH = 17  # status word column before a heartbeat's description

HEARTBEAT_DESCRIPTIONS = {
    "lanhb": "LAN Heartbeat",
    "lankhb": "Kernel Mode LAN Heartbeat",
    "diskhb": "DISK Heartbeat",
    "comhb": "COM Heartbeat",
    "bmchb": "BMC Heartbeat",
    "witnesshb": "Witness Heartbeat",
    "pingnp": "ping resolution",
    "httpnp": "http resolution",
}

# Symbols of the -g / -m maps. The original's legend was not available; these
# keep '[o]' = online, which scripts grep for.
SERVER_SYMBOLS = {
    "Online": "o",
    "Caution": "c",
    "Suspend": "s",
    "Offline": "x",
    "Unknown": "-",
}
GROUP_SYMBOLS = {
    "Online": "o",
    "Offline": "x",
    "Online Pending": "p",
    "Offline Pending": "p",
    "Online Failure": "e",
    "Offline Failure": "e",
    "Unknown": "-",
}


def _banner(title):
    inner = f"  {title}  "
    rest = max(0, WIDTH - len(inner))
    left = max(1, (rest - 3) // 2)
    return " " + "=" * left + inner + "=" * max(1, rest - left)


def _rule():
    return " " + "=" * WIDTH


def _dashes():
    return "  " + "-" * (WIDTH - 1)


def _status(item):
    return str(item.get("status") or "Unknown")


def _dotted(prefix, value, column):
    """'   *srv1 ...........: Online' (dots up to the colon column)."""
    dots = column - len(prefix) - 1
    return f"{prefix} {'.' * max(dots, 1)}: {value}".rstrip()


def _padded(prefix, value, column):
    """'      lanhb1         : Normal' (spaces up to the colon column)."""
    if len(prefix) >= column:
        return f"{prefix} : {value}".rstrip()
    return f"{prefix.ljust(column)}: {value}".rstrip()


def _column(prefixes):
    longest = max((len(p) for p in prefixes), default=0)
    return max(COLUMN, longest + 2)


def _kind(heartbeat):
    kind = heartbeat.get("type") or re.sub(r"\d+$", "", str(heartbeat.get("name", "")))
    return HEARTBEAT_DESCRIPTIONS.get(kind, kind)


def _server_prefix(server, local):
    mark = "*" if server.get("name") == local else " "
    return f"   {mark}{server.get('name', '?')}"


def _servers(payload):
    return list(payload.get("servers") or [])


def _cluster_name(payload):
    return (payload.get("cluster") or {}).get("name", "")


def render_status(payload, detail=False):
    """The default clpstat view (CLUSTER STATUS); detail adds priorities, types, owners."""
    local = payload.get("local")
    servers = _servers(payload)
    groups = list(payload.get("groups") or [])
    resources = {r.get("name"): r for r in payload.get("resources") or []}
    monitors = list(payload.get("monitors") or [])

    prefixes = [_server_prefix(s, local) for s in servers]
    prefixes += [f"      {h.get('name', '?')}" for s in servers for h in s.get("heartbeats") or []]
    prefixes += [f"    {g.get('name', '?')}" for g in groups]
    prefixes += [f"      {n}" for g in groups for n in g.get("resources") or []]
    prefixes += [f"    {m.get('name', '?')}" for m in monitors]
    column = _column(prefixes)

    lines = [_banner("CLUSTER STATUS"), f"  Cluster : {_cluster_name(payload)}"]
    if detail:
        lines.append(f"  Status  : {_status(payload.get('cluster') or {})}")
    lines.append("  <server>")
    for server in servers:
        value = _status(server)
        if detail and server.get("priority") is not None:
            value = f"{value:<{STATUS_WIDTH}}priority {server['priority']}"
            if server.get("config_generation") is not None:
                value += f", configuration generation {server['config_generation']}"
        lines.append(_dotted(_server_prefix(server, local), value, column))
        for hb in server.get("heartbeats") or []:
            value = f"{_status(hb):<{STATUS_WIDTH}}{_kind(hb)}"
            lines.append(_padded(f"      {hb.get('name', '?')}", value, column))
    lines.append("  <group>")
    for group in groups:
        lines.append(_dotted(f"    {group.get('name', '?')}", _status(group), column))
        lines.append(_padded("      current", group.get("current") or "None", column))
        for name in group.get("resources") or []:
            resource = resources.get(name, {})
            value = _status(resource)
            if detail:
                value = f"{value:<{STATUS_WIDTH}}[{resource.get('type', '?')}]"
                if resource.get("current"):
                    value += f" on {resource['current']}"
            lines.append(_padded(f"      {name}", value, column))
    lines.append("  <monitor>")
    for monitor in monitors:
        value = _status(monitor)
        if detail:
            value = f"{value:<{STATUS_WIDTH}}[{monitor.get('type', '?')}]"
            per_server = " ".join(
                f"{s.get('name')}={_status(s)}" for s in monitor.get("servers") or []
            )
            if per_server:
                value += " " + per_server
        lines.append(_padded(f"    {monitor.get('name', '?')}", value, column))
    lines.append(_rule())
    return "\n".join(lines) + "\n"


def render_detail(payload):
    """clpstat --detail: the status view with priorities, resource types and owners."""
    return render_status(payload, detail=True)


def _server_index(servers, local):
    """'   *server0 : srv1' lines, as headers of the -g/-n/-m views."""
    lines = []
    for i, server in enumerate(servers):
        mark = "*" if server.get("name") == local else " "
        lines.append(f"   {mark}server{i} : {server.get('name', '?')}")
    return lines


def render_groupmap(payload):
    """clpstat -g: which groups run where, 'server0 [o] : failover1[o]'."""
    local = payload.get("local")
    servers = _servers(payload)
    groups = list(payload.get("groups") or [])
    lines = [_banner("GROUPMAP INFORMATION"), f"  Cluster : {_cluster_name(payload)}"]
    lines += _server_index(servers, local)
    lines.append(_dashes())
    for i, server in enumerate(servers):
        symbol = SERVER_SYMBOLS.get(_status(server), "?")
        running = [
            f"{g.get('name', '?')}[{GROUP_SYMBOLS.get(_status(g), '?')}]"
            for g in groups
            if g.get("current") and g.get("current") == server.get("name")
        ]
        lines.append(f"    server{i} [{symbol}] : {'  '.join(running)}".rstrip())
    lines.append(_rule())
    return "\n".join(lines) + "\n"


def render_heartbeats(payload):
    """clpstat -n: each server's status ('[on server0 : Online]') and its heartbeat paths."""
    local = payload.get("local")
    servers = _servers(payload)
    names = []
    for server in servers:
        for hb in server.get("heartbeats") or []:
            if hb.get("name") not in names:
                names.append(hb.get("name"))
    column = _column([f"      {n}" for n in names])
    lines = [_banner("HEARTBEAT RESOURCE STATUS"), f"  Cluster : {_cluster_name(payload)}"]
    lines += _server_index(servers, local)
    lines.append("")
    lines += [f"    HB{i} : {name}" for i, name in enumerate(names)]
    for i, server in enumerate(servers):
        lines.append("")
        lines.append(f"  [on server{i} : {_status(server)}]")
        for hb in server.get("heartbeats") or []:
            value = f"{_status(hb):<{STATUS_WIDTH}}{_kind(hb)}"
            lines.append(_padded(f"      {hb.get('name', '?')}", value, column))
    lines += _packet_counters(payload.get("counters") or {})
    lines.append(_rule())
    return "\n".join(lines) + "\n"


def _packet_counters(counters):
    """'lanhb1 : received 120, accepted 118, malformed 2' lines (local view): each path's
    counters in its own order (every kind of path has its own: torn records on a disk,
    garbage bytes on a serial line...), the ones at zero left out."""
    if not counters:
        return []
    lines = ["", "  [heartbeat paths on this server]"]
    for path, c in counters.items():
        parts = [f"{k} {v}" for k, v in c.items() if v]
        lines.append(f"      {path:<14}: " + (", ".join(parts) or "nothing yet"))
    return lines


def _monitor_details(entry):
    """'check 0.012 s  retry 1  restarts 1 ...' for one monitor on one server."""
    parts = []
    duration = entry.get("duration")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        parts.append(f"check {duration:.3f} s")
    last_event = entry.get("last_event")  # event-fed monitors
    if isinstance(last_event, (int, float)) and not isinstance(last_event, bool):
        parts.append(f"last event {format_time(last_event)}")
    if entry.get("retries"):
        parts.append(f"retry {entry['retries']}")
    if entry.get("restarts"):
        parts.append(f"restarts {entry['restarts']}")
    if entry.get("failovers"):
        parts.append(f"failovers {entry['failovers']}")
    if entry.get("final_action_done"):
        parts.append("final action done")
    if entry.get("dummy"):
        parts.append("dummy failure")
    return "  ".join(parts)


def render_monitors(payload):
    """clpstat -m: 'Monitor0 [userw : Normal]' then, per server, the monitor's
    status, last check duration, recovery counters and last error."""
    local = payload.get("local")
    servers = _servers(payload)
    index = {s.get("name"): i for i, s in enumerate(servers)}
    lines = [_banner("MONITOR RESOURCE STATUS"), f"  Cluster : {_cluster_name(payload)}"]
    lines += _server_index(servers, local)
    disabled = sorted(str(s) for s, on in (payload.get("monitor_recovery") or {}).items() if not on)
    if disabled:
        lines.append(f"  Recovery action : disabled on {', '.join(disabled)}")
    for i, monitor in enumerate(payload.get("monitors") or []):
        lines.append("")
        lines.append(f"  Monitor{i} [{monitor.get('name', '?')} : {_status(monitor)}]")
        lines.append(_dashes())
        for entry in monitor.get("servers") or []:
            n = index.get(entry.get("name"))
            label = f"server{n}" if n is not None else str(entry.get("name"))
            server_status = _status(servers[n]) if n is not None else "Unknown"
            symbol = SERVER_SYMBOLS.get(server_status, "?")
            prefix = f"    {label} [{symbol}] : "
            details = _monitor_details(entry)
            value = f"{_status(entry):<{STATUS_WIDTH}}{details}" if details else _status(entry)
            lines.append(f"{prefix}{value}".rstrip())
            error = " ".join(str(entry.get("error") or "").split())
            if error:
                lines.append(f"{' ' * len(prefix)}last error: {error}")
    lines.append(_rule())
    return "\n".join(lines) + "\n"


def format_time(when):
    """Local time with milliseconds, as the original's logs: 2024/01/20 16:34:51.571."""
    try:
        stamp = datetime.datetime.fromtimestamp(float(when))
    except (TypeError, ValueError, OverflowError, OSError):
        return str(when)
    return stamp.strftime("%Y/%m/%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"


def render_alerts(payload):
    """clpstat --alerts: one line per alert, oldest first."""
    alerts = list(payload.get("alerts") or [])
    if not alerts:
        return "(no alerts)\n"
    width = max([6] + [len(str(a.get("server", ""))) for a in alerts])
    lines = [f"{'Time':<23}  {'Server':<{width}}  {'Level':<7}  {'Module':<6}  {'ID':>5}  Message"]
    for a in alerts:
        message = str(a.get("message", "")).replace("\n", " ")
        lines.append(
            f"{format_time(a.get('time')):<23}  {str(a.get('server', '')):<{width}}  "
            f"{str(a.get('level', '')):<7}  {str(a.get('module', '')):<6}  "
            f"{str(a.get('id', '')):>5}  {message}"
        )
    return "\n".join(lines) + "\n"


def render_operation(payload, label):
    """Result lines of an operation: 'Start srv1 : Command succeeded.' per server.

    payload may list per-server results as {"servers": [{"name", "code", "message"}]};
    otherwise a single 'Command succeeded.' line (the caller only renders successes
    this way; an overall failure is an error reply).
    """
    results = payload.get("servers")
    if not isinstance(results, list) or not results:
        return "Command succeeded.\n"
    lines = []
    for entry in results:
        if not isinstance(entry, dict):
            continue
        ok = not entry.get("code")
        text = "Command succeeded." if ok else (entry.get("message") or "Command failed.")
        lines.append(f"{label} {entry.get('name', '?')} : {text}")
    return "\n".join(lines) + "\n"


def operation_failed(payload):
    """True when a per-server result in the payload reports a failure."""
    results = payload.get("servers")
    if not isinstance(results, list):
        return False
    return any(isinstance(e, dict) and e.get("code") for e in results)


_NP_KINDS = {"pingnp": "ping resolution", "httpnp": "http resolution", "witness": "witness resolution"}


def render_partition(payload):
    """clpstat -p: this server's network-partition resolvers (last check) and forced stop."""
    np = payload.get("network_partition") or {}
    resolvers = np.get("resolvers") or {}
    column = _column([f"      {name}" for name in resolvers] + ["      forced stop", "      takeover wait"])
    lines = [_banner("NETWORK PARTITION RESOLUTION STATUS"), f"  Cluster : {_cluster_name(payload)}",
             f"  [on {payload.get('local', '?')}]"]
    if not resolvers:
        lines.append("      (no network partition resolution resource on this server)")
    for name, r in resolvers.items():
        healthy = r.get("healthy")
        word = "Unknown" if healthy is None else ("Normal" if healthy else "Error")
        value = f"{word:<{STATUS_WIDTH}}{_NP_KINDS.get(r.get('kind'), r.get('kind', '?'))}"
        if r.get("reason"):
            value += f" ({r['reason']})"
        lines.append(_padded(f"      {name}", value, column))
    lines.append(_padded("      forced stop", np.get("forced_stop") or "off", column))
    if np.get("takeover_delay") is not None:
        lines.append(_padded("      takeover wait", f"{np['takeover_delay']:.3f} s", column))
    for key, words in (("resolving", "resolving the loss of"), ("suppressed", "failover suppressed for")):
        if np.get(key):
            lines.append(f"      {words}: {', '.join(np[key])}")
    lines.append(_rule())
    return "\n".join(lines) + "\n"


# Status views by name (clpstat options, admin 'status VIEW').
VIEWS = {
    "status": render_status,
    "detail": render_detail,
    "groupmap": render_groupmap,
    "heartbeats": render_heartbeats,
    "monitors": render_monitors,
    "partition": render_partition,
}


def render_view(name, payload):
    """The named status view (the default view for None or an unknown name)."""
    return VIEWS.get(name, render_status)(payload)
