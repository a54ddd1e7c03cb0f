"""The difference between two configurations, and what applying it needs.

L{diff} compares the running L{ClusterConfig} with a new one and returns one
L{Change} per difference, each with the least disruptive way to apply it
(L{Need}), in the original's terms:

  - LIVE: applied while everything runs (monitors added, removed or changed;
    resource and monitor timeouts; alert and log settings; the heartbeat
    interval and timeout; a new group that does not start by itself; OS
    action commands; the cluster key, which servers rotate by accepting the
    old and the new key until every server signs with the new one);
  - GROUP_RESTART: the groups named in the change are stopped and started
    again (a changed resource of that group, other than its timeouts);
  - SUSPEND_RESUME: the cluster is suspended and resumed (dependencies,
    exclusion rules, failover policies, a new group that starts by itself,
    network-partition and forced-stop settings);
  - SERVICE_RESTART: the cluster service restarts on every server (ports,
    servers added or removed or their addresses, heartbeat paths added or
    removed, the cluster name).

Pure: no I/O, no clock. L{plan} sums a list of changes up.
"""

import dataclasses
import enum
from dataclasses import dataclass
from typing import Optional


class Need(enum.IntEnum):
    """What applying a change needs, least disruptive first."""

    LIVE = 0
    GROUP_RESTART = 1
    SUSPEND_RESUME = 2
    SERVICE_RESTART = 3

    @property
    def describe(self):
        return {Need.LIVE: "applied live", Need.GROUP_RESTART: "restart of the group",
                Need.SUSPEND_RESUME: "cluster suspend and resume",
                Need.SERVICE_RESTART: "restart of the cluster service"}[self]


@dataclass(frozen=True)
class Change:
    """One difference: the element path it concerns, what changed, what it needs."""

    path: str  # e.g. /root/monitor/pidw@pidw1
    what: str  # one line, e.g. "monitor pidw1 added"
    need: Need
    group: Optional[str] = None  # the group to restart (GROUP_RESTART)

    def __str__(self):
        target = f" {self.group}" if self.need is Need.GROUP_RESTART and self.group else ""
        return f"{self.path}: {self.what} -> {self.need.describe}{target}"


@dataclass(frozen=True)
class Plan:
    """What a set of changes needs as a whole."""

    changes: tuple
    need: Optional[Need]  # the most disruptive need; None = no change
    groups_to_restart: tuple  # groups restarted (GROUP_RESTART), in name order
    key_rotation: bool  # the cluster key changes

    @property
    def empty(self):
        return not self.changes


def plan(changes):
    changes = tuple(changes)
    need = max((c.need for c in changes), default=None)
    groups = tuple(sorted({c.group for c in changes if c.need is Need.GROUP_RESTART and c.group}))
    return Plan(changes, need, groups, any(c.path == "/root/cluster/key" for c in changes))


# -- the comparison -----------------------------------------------------------

# Resource fields whose change is applied live; any other is a group restart.
_LIVE_RESOURCE_PARAMS = frozenset(("start_timeout", "stop_timeout"))
# Group fields that change the cluster's decisions (suspend and resume).
_POLICY_FIELDS = ("policy", "failover_auto", "failback_auto", "exclusive", "resources")


def diff(old, new):
    """The L{Change}s that turn configuration old into new, in a stable order."""
    changes = []
    changes += _cluster(old, new)
    changes += _servers(old, new)
    changes += _heartbeats(old, new)
    changes += _groups(old, new)
    changes += _resources(old, new)
    changes += _monitors(old, new)
    return changes


def _cluster(old, new):
    out = []
    if old.name != new.name:
        out.append(Change("/root/cluster/name", f"cluster name {old.name} -> {new.name}", Need.SERVICE_RESTART))
    if old.key != new.key:
        out.append(Change("/root/cluster/key", "cluster key changed (rotated: the old and the new one are "
                                               "accepted until every server signs with the new one)", Need.LIVE))
    for attr, path, what in (
            ("hb_interval", "/root/cluster/heartbeat/interval", "heartbeat interval"),
            ("hb_timeout", "/root/cluster/heartbeat/timeout", "heartbeat timeout"),
            ("startup_sync_wait", "/root/cluster/syncwait", "startup synchronisation wait"),
            ("config_download_wait", "/root/cluster/cfwait", "configuration download wait"),
            ("alert_log_max_bytes", "/root/cluster/alertlog/maxsize", "alert log size"),
            ("alert_log_backups", "/root/cluster/alertlog/backups", "alert log backups"),
            ("daemon_failure_action", "/root/pm/exec0/recover", "action on a daemon failure")):
        a, b = getattr(old, attr), getattr(new, attr)
        if a != b:
            out.append(Change(path, f"{what} {_show(a)} -> {_show(b)}", Need.LIVE))
    if old.os_actions != new.os_actions:
        out.append(Change("/root/cluster/osaction", "OS action commands changed", Need.LIVE))
    if old.ports != new.ports:
        out.append(Change("/root/cluster/ports", "ports changed", Need.SERVICE_RESTART))
    if old.network_partition != new.network_partition:
        out.append(Change("/root/cluster/networkpartition", "network partition resolution changed",
                          Need.SUSPEND_RESUME))
    if old.forced_stop != new.forced_stop:
        out.append(Change("/root/cluster/forcestop", "forced stop changed", Need.SUSPEND_RESUME))
    return out


def _servers(old, new):
    out = []
    for name, a, b in _paired(old.servers, new.servers):
        path = f"/root/server@{name}"
        if a is None:
            out.append(Change(path, f"server {name} added", Need.SERVICE_RESTART))
        elif b is None:
            out.append(Change(path, f"server {name} removed", Need.SERVICE_RESTART))
        elif a.priority != b.priority:
            out.append(Change(path + "/priority", f"server {name} priority {a.priority} -> {b.priority}",
                              Need.SERVICE_RESTART))
        elif dataclasses.replace(a, ports=b.ports) != b:
            out.append(Change(path, f"server {name} addresses or devices changed", Need.SERVICE_RESTART))
        elif a.ports != b.ports and old.ports == new.ports:  # else: reported once, as the cluster's
            out.append(Change(path + "/ports", f"server {name} ports changed", Need.SERVICE_RESTART))
    return out


def _heartbeats(old, new):
    out = []
    for name, a, b in _paired(old.heartbeats, new.heartbeats):
        kind = (a or b).kind
        path = f"/root/heartbeat/{kind}@{name}"
        if a is None or b is None:
            out.append(Change(path, f"heartbeat path {name} {'added' if a is None else 'removed'}",
                              Need.SERVICE_RESTART))
        elif a != b:
            out.append(Change(path, f"heartbeat path {name} changed", Need.SERVICE_RESTART))
    return out


def _groups(old, new):
    out = []
    for name, a, b in _paired(old.groups, new.groups):
        path = f"/root/group@{name}"
        if a is None:
            need = Need.SUSPEND_RESUME if b.start_auto else Need.LIVE
            how = "starts by itself" if b.start_auto else "does not start by itself"
            out.append(Change(path, f"group {name} added ({how})", need))
        elif b is None:
            out.append(Change(path, f"group {name} removed (stopped first)", Need.GROUP_RESTART, group=name))
        else:
            for field in _POLICY_FIELDS:
                if getattr(a, field) != getattr(b, field):
                    what = "resources or their dependencies" if field == "resources" else field.replace("_", " ")
                    out.append(Change(f"{path}/{field}", f"group {name} {what} changed", Need.SUSPEND_RESUME))
            if a.start_auto != b.start_auto or a.gid != b.gid:
                out.append(Change(path, f"group {name} start or id changed", Need.LIVE))
    return out


def _resources(old, new):
    out = []
    new_groups = {g.name for g in new.groups}
    for name, a, b in _paired(old.resources, new.resources):
        r = a or b
        path = f"/root/resource/{r.type}@{name}"
        if a is None:
            # Part of a new group (covered by the group) or a new member of a group.
            if b.group not in {g.name for g in old.groups}:
                continue
            out.append(Change(path, f"resource {name} added to group {b.group}", Need.GROUP_RESTART, group=b.group))
        elif b is None:
            if a.group not in new_groups:
                continue  # the whole group goes
            out.append(Change(path, f"resource {name} removed from group {a.group}", Need.GROUP_RESTART,
                              group=a.group))
        elif a != b:
            out.append(_resource_change(path, a, b))
    return out


def _resource_change(path, a, b):
    if a.type != b.type or a.group != b.group:
        return Change(path, f"resource {a.name} type or group changed", Need.GROUP_RESTART, group=a.group)
    if a.depends != b.depends:
        return Change(path + "/depend", f"resource {a.name} dependencies changed", Need.SUSPEND_RESUME)
    params_changed = _changed_fields(a.params, b.params)
    others = [f for f in ("act_retry", "act_fo", "act_action", "deact_retry", "deact_action")
              if getattr(a, f) != getattr(b, f)]
    if not others and params_changed and set(params_changed) <= _LIVE_RESOURCE_PARAMS:
        return Change(path + "/parameters/timeout", f"resource {a.name} timeouts changed", Need.LIVE)
    if not params_changed and others:
        return Change(path, f"resource {a.name} recovery on activation/deactivation failure changed", Need.LIVE)
    return Change(path + "/parameters", f"resource {a.name} changed ({', '.join(params_changed + others)})",
                  Need.GROUP_RESTART, group=a.group)


def _monitors(old, new):
    out = []
    for name, a, b in _paired(old.monitors, new.monitors):
        m = a or b
        path = f"/root/monitor/{m.type}@{name}"
        if a is None:
            out.append(Change(path, f"monitor {name} added", Need.LIVE))
        elif b is None:
            out.append(Change(path, f"monitor {name} removed", Need.LIVE))
        elif a != b:
            fields = _changed_fields(a, b)
            out.append(Change(path, f"monitor {name} changed ({', '.join(fields)})", Need.LIVE))
    return out


# -- helpers ----------------------------------------------------------------------


def _paired(old_items, new_items):
    """(name, old or None, new or None) for every name in either, old order
    first, then the new names in their order."""
    old_by = {x.name: x for x in old_items}
    new_by = {x.name: x for x in new_items}
    names = [x.name for x in old_items] + [x.name for x in new_items if x.name not in old_by]
    return [(n, old_by.get(n), new_by.get(n)) for n in names]


def _changed_fields(a, b):
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        return [f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]
    return [] if a == b else ["parameters"]


def _show(value):
    return f"{value:g} s" if isinstance(value, float) else str(value)
