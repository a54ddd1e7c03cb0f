"""Monitor resources (<monitor>): polling, recovery and type parameters, checked and built.

    <monitor>
      <types name="genw"/>
      <genw name="genw1">
        <polling><interval>30</interval><timeout>60</timeout></polling>
        <target>exec1</target>
        <relation><type>rsc</type><name>exec1</name></relation>
        <emergency><threshold><restart>1</restart></threshold><action>3</action></emergency>
        <parameters><path>genw.sh</path></parameters>
        <server name="srv2"><parameters>...</parameters></server>
      </genw>
    </monitor>

L{read_section} reads every monitor (a warning and nothing more for types
cpro does not run), L{check} resolves the names they refer to once
servers, groups and resources are known, and L{build} turns them into
L{MonitorConfig} values in file order. The loader (L{cpro.config.validate})
is passed in as C{loader}: its report, base_dir, servers, groups,
resources and cluster settings.

What is particular to a type (its parameters, its target's type, its own
rules) is its schema, a L{cpro.config.schema.MonitorSchema} that the type's
module registers with L{cpro.plugins.MONITOR_TYPES}; this module names no
type.
"""

import os
import re
from types import SimpleNamespace

from cpro import plugins
from cpro.config.defaults import (
    DEFAULTS,
    MONITOR_FINAL_ACTIONS,
    RANGES,
    UNSUPPORTED_FINAL_ACTIONS,
    monitor_default,
)
from cpro.config.model import MonitorConfig, MonitorRecovery
from cpro.config.xmltree import Subtree, check_integer, unsupported_parameter

RELATION_KINDS = ("rsc", "grp", "cls")
LOCAL_SERVER = "LocalServer"
_NIC = re.compile(r"[^/\s:]{1,15}\Z")
_PERCENT = (0, 100)


def _schema(mtype):
    """The L{MonitorSchema} of a registered monitor type."""
    return plugins.MONITOR_TYPES.get(mtype).schema


def _default(mtype, key):
    return DEFAULTS.get(f"{mtype}/parameters/{key}")


def _common_integer(tree, mtype, key):
    return tree.integer(key, monitor_default(mtype, key), RANGES[f"monitor/{key}"])


# -- reading -----------------------------------------------------------------


def read_section(loader, node):
    """{name: monitor} of the monitors cpro runs, in file order; also sets
    loader.ignored_monitors ({name: type} of those it does not)."""
    monitors, seen = {}, {}
    loader.ignored_monitors = {}
    if node is None:
        return monitors
    node.ignore("types")
    for child in node.unconsumed():
        node.ignore(child.tag)
        name = loader.name_of(child, f"{child.tag} monitor")
        if name is None:
            continue
        if name in seen:
            loader.error(child.path, f"monitor name {name} is already used by {seen[name]}@{name}")
            continue
        seen[name] = child.tag
        if child.tag not in plugins.MONITOR_TYPES:
            loader.warning(child.path, f"monitor type {child.tag!r} is not supported yet: "
                                       f"{name} is ignored")
            loader.ignored_monitors[name] = child.tag
            continue
        monitors[name] = _read_monitor(loader, child, name)
    return monitors


def _read_monitor(loader, node, name):
    mtype = node.tag
    schema = _schema(mtype)
    m = SimpleNamespace(name=name, type=mtype, path=node.path, ignored=False)
    tree = Subtree(node)
    m.interval = _common_integer(tree, mtype, "polling/interval")
    m.timeout = _common_integer(tree, mtype, "polling/timeout")
    m.retry = _common_integer(tree, mtype, "polling/reconfirmation")
    m.timing = _common_integer(tree, mtype, "polling/timing")
    m.timing_path = f"{m.path}/polling/timing"
    m.delay_warning = tree.integer("polling/delaywarning", None,
                                   RANGES["monitor/polling/delaywarning"])
    m.first_wait = _common_integer(tree, mtype, "firstmonwait")
    m.no_retry_on_timeout = _common_integer(tree, mtype, "emergency/timeout/notreconfirmation/use")
    m.no_recovery_on_timeout = _common_integer(tree, mtype, "emergency/timeout/notrecovery/use")
    m.polling_given = {key: tree.given(f"polling/{key}") for key in ("interval", "timeout")}
    m.servers = _read_servers(loader, tree)
    target = tree.string("target")
    m.target = target or None
    m.target_path = f"{m.path}/target"
    _read_recovery(loader, tree, m)
    # <parameters> is read (and finished) by _read_parameters, not through tree.
    m.params, m.param_paths = _read_parameters(loader, schema, node.child("parameters"),
                                               f"{m.path}/parameters")
    m.server_params, m.server_paths = {}, {}
    for override in node.children("server"):
        server = override.attr("name")
        if not server:
            loader.error(override.path, "server has no name attribute")
            continue
        if server in m.server_params:
            loader.error(override.path, f"parameters for server {server} are given twice")
            continue
        if not schema.per_server:
            loader.warning(override.path, f"{mtype} has no per-server parameters: ignored")
            override.ignore(*(c.tag for c in override.element))
            continue
        given, paths = _read_parameters(loader, schema, override.child("parameters"),
                                        f"{override.path}/parameters")
        m.server_params[server] = given
        m.server_paths[server] = (override.path, paths)
        override.finish()
    tree.finish(unsupported_parameter)
    _check_parameters(loader, schema, m)
    return m


def _read_servers(loader, tree):
    """[(server name, path)] from polling/servers@i/name, or None for every server."""
    polling = tree.section("polling")
    if polling is None:
        return None
    entries = polling.children("servers")
    if not entries:
        return None
    found = []
    for entry in entries:
        name = entry.string("name")
        entry.finish()
        if not name:
            loader.error(f"{entry.path}/name", "<name> is required: a server name")
            continue
        found.append((name, entry.path))
    return found


def _read_recovery(loader, tree, m):
    kind = tree.string("relation/type")
    target = tree.string("relation/name")
    m.relation_path = f"{m.path}/relation"
    if not kind and not target:
        kind = _schema(m.type).default_relation
    if not kind:
        loader.error(f"{m.relation_path}/type", "relation/type is required: rsc (a group "
                                                "resource), grp (a group) or cls (the server)")
    elif kind not in RELATION_KINDS:
        loader.error(f"{m.relation_path}/type", f"relation type {kind!r} is not one of "
                                                "rsc, grp, cls")
        kind = None
    if kind == "cls":
        if target and target != LOCAL_SERVER:
            loader.error(f"{m.relation_path}/name", f"relation type cls needs the name "
                                                    f"{LOCAL_SERVER}, not {target!r}")
        target = LOCAL_SERVER
    elif kind and not target:
        loader.error(f"{m.relation_path}/name", f"relation/name is required: the "
                                                f"{'resource' if kind == 'rsc' else 'group'} "
                                                "to recover")
    m.relation_kind = kind
    m.relation_name = target or None

    m.restart = _common_integer(tree, m.type, "emergency/threshold/restart")
    m.failover = _common_integer(tree, m.type, "emergency/threshold/fo")
    if kind == "cls":
        for key in ("restart", "fo"):
            if tree.given(f"emergency/threshold/{key}") and (
                    m.restart if key == "restart" else m.failover):
                loader.warning(f"{m.path}/emergency/threshold/{key}",
                               "ignored: the recovery target is the local server, so only "
                               "the final action applies")
        m.restart = m.failover = 0
    m.action_path = f"{m.path}/emergency/action"
    m.action = tree.integer("emergency/action", DEFAULTS["monitor/emergency/action"])
    if m.action is not None:
        if m.action in UNSUPPORTED_FINAL_ACTIONS:
            loader.error(m.action_path, f"final action {m.action} (sysrq, keepalive, BMC or "
                                        "I/O fencing) is not supported on this platform")
            m.action = None
        elif m.action not in MONITOR_FINAL_ACTIONS:
            allowed = ", ".join(str(a) for a in sorted(MONITOR_FINAL_ACTIONS))
            loader.error(m.action_path, f"{m.action} is not one of {allowed}")
            m.action = None
    if m.action == 2 and kind == "cls":
        loader.error(m.action_path, "final action 2 (stop group) needs relation/type rsc "
                                    "or grp")
    if m.action == 16 and kind in ("grp", "cls"):
        loader.error(m.action_path, "final action 16 (stop resource) needs relation/type rsc")

    flags = {}
    for key in ("userestart", "usefailover", "use"):
        flags[key] = _common_integer(tree, m.type, f"emergency/preaction/{key}") == 1
    m.script_flags = flags
    m.script_timeout = _common_integer(tree, m.type, "emergency/preaction/timeout")
    path_text = tree.string("emergency/preaction/path")
    preaction = tree.section("emergency/preaction")
    if preaction is not None:
        # 1 = the product's script, 0 = a user's: the path says which anyway.
        preaction.ignore("default")
    m.script = None
    if any(flags.values()):
        text = path_text or DEFAULTS["monitor/emergency/preaction/path"]
        m.script = monitor_script(loader, m.name, text)
        loader.check_executable(m.script, f"{m.path}/emergency/preaction/path",
                                "recovery script")


def monitor_script(loader, name, text):
    """A monitor's script path: relative ones live in scripts/monitor.s/<monitor>/."""
    if os.path.isabs(text):
        return os.path.normpath(text)
    return os.path.normpath(os.path.join(loader.base_dir, "scripts", "monitor.s", name, text))


def xml_name(param):
    """The element under <parameters> that holds param."""
    if param.kind == "disk_list":
        return "disks"
    return param.xml[0] if param.xml else param.key


def _read_parameters(loader, schema, node, path):
    """({key: value given}, {key: element path}) of one <parameters> section (None: none)."""
    values, paths = {}, {}
    if node is None:
        return values, paths
    for param in schema.params:
        value = _read_value(loader, node, param, path)
        if value is not None:
            values[param.key] = value
            paths[param.key] = f"{path}/{xml_name(param)}"
    node.finish(unsupported_parameter)
    return values, paths


def _read_value(loader, node, param, path):
    """The typed value of param under node, None when absent or invalid (after an error)."""
    report = loader.report
    if param.kind in ("ip_list", "name_list"):
        tag, leaf = param.xml
        entries = node.children(tag)
        if not entries:
            return None
        items = []
        for entry in entries:
            text = entry.string(leaf)
            entry.finish()
            if not text:
                report.error(f"{entry.path}/{leaf}", f"<{leaf}> is required")
            elif param.kind == "ip_list":
                address = loader.address(text, f"{entry.path}/{leaf}", "address")
                if address is not None:
                    items.append(address)
            else:
                items.append((text, f"{entry.path}/{leaf}"))
        return tuple(items)
    if param.kind == "disk_list":
        disks = node.child("disks")
        if disks is None:
            return None
        items = []
        for entry in disks.children("list"):
            disk_path = entry.string("path")
            percent = entry.integer("percent", 90, _PERCENT)
            entry.finish()
            if not disk_path or not os.path.isabs(disk_path):
                report.error(f"{entry.path}/path", "<path> is required: an absolute path on "
                                                   "the file system to watch")
            elif percent is not None:
                items.append((os.path.normpath(disk_path), percent))
        disks.finish()
        return tuple(items)
    child = node.child(param.key)
    if child is None:
        return None
    text = child.text()
    if param.kind in ("int", "flag", "seconds"):
        limits = frozenset({0, 1}) if param.kind == "flag" else param.limits
        value = check_integer(text, child.path, report, limits)
        if value is None:
            return None
        return bool(value) if param.kind == "flag" else (
            float(value) if param.kind == "seconds" else value)
    if not text:
        return None  # <userlog/>: as if absent (a required one is reported as missing)
    if param.kind == "choice" and text not in param.limits:
        report.error(child.path, f"{text!r} is not one of {', '.join(param.limits)}")
        return None
    if param.kind == "nic" and (not _NIC.match(text) or text in (".", "..")):
        report.error(child.path, f"{text!r} is not a network interface name")
        return None
    if param.kind == "abspath" and not os.path.isabs(text):
        report.error(child.path, f"{text!r} is not an absolute path")
        return None
    return text


def _check_parameters(loader, schema, m):
    """Defaults and the type-specific rules of one monitor (required ones: in check())."""
    m.missing = []
    for param in schema.params:
        if param.key in m.params:
            continue
        default = _default(m.type, param.key)
        if default is not None:
            m.params[param.key] = float(default) if param.kind == "seconds" else (
                bool(default) if param.kind == "flag" else default)
            continue
        if param.required:
            m.missing.append(param)
        m.params[param.key] = () if param.kind.endswith("_list") else None
    if schema.check_parameters is not None:
        schema.check_parameters(loader, m)


def all_parameters(m):
    """(values, paths) of the main parameters and of every per-server override."""
    yield m.params, m.param_paths
    for server, (_, paths) in m.server_paths.items():
        yield m.server_params[server], paths


# -- cross-references ----------------------------------------------------------


def check(loader, monitors):
    """Resolve servers, targets, relations, then the types' cross-checks between
    monitors (mtw members); ignore what depends on ignored things."""
    by_type = {}
    for m in monitors.values():
        _check_servers(loader, m)
        _check_target(loader, m)
        _check_relation(loader, m)
        _check_required(loader, m)
        by_type.setdefault(m.type, []).append(m)
    for mtype in sorted(by_type):
        hook = _schema(mtype).check_monitors
        if hook is not None:
            hook(loader, by_type[mtype], monitors)


def _check_servers(loader, m):
    if m.servers is not None:
        seen = set()
        for name, path in m.servers:
            if name not in loader.servers:
                loader.error(path, f"unknown server {name}")
            elif name in seen:
                loader.error(path, f"server {name} is listed twice")
            seen.add(name)
    for server, (path, _) in m.server_paths.items():
        if server not in loader.servers:
            loader.error(path, f"unknown server {server}")
        elif m.servers is not None and server not in {n for n, _ in m.servers}:
            loader.warning(path, f"{m.name} does not run on server {server} "
                                 "(polling/servers): these parameters are never used")


def _resource_state(loader, name):
    """'ok', 'ignored' or 'unknown' for a resource name a monitor refers to."""
    resource = loader.resources.get(name)
    if resource is not None:
        return "ok" if resource.group is not None else "ignored"
    return "ignored" if name in loader.ignored_resources else "unknown"


def _check_target(loader, m):
    schema = _schema(m.type)
    needed = schema.target_type
    if m.target is None:
        if needed:
            loader.error(m.target_path, f"{m.type} needs a target: the {needed} resource "
                                        "it watches")
        elif m.timing == 1:
            loader.error(m.timing_path, "polling/timing 1 (while the target is active) "
                                        "needs a target")
        return
    state = _resource_state(loader, m.target)
    if state == "unknown":
        loader.error(m.target_path, f"target {m.target} is not a group resource")
        return
    if state == "ignored":
        loader.warning(m.target_path, f"target {m.target} is ignored (unsupported type or "
                                      f"in no group): monitor {m.name} is ignored")
        m.ignored = True
        return
    if needed is None:
        return
    resource = loader.resources[m.target]
    if resource.type != needed:
        loader.error(m.target_path, f"{m.type} watches {needed} resources, and {m.target} "
                                    f"is of type {resource.type}")
    elif schema.check_target is not None:
        schema.check_target(loader, m, resource)
    if m.timing == 0:
        loader.error(m.timing_path, f"{m.type} watches its target only while it is active: "
                                    "polling/timing must be 1")


def _check_relation(loader, m):
    if m.relation_kind == "rsc" and m.relation_name:
        state = _resource_state(loader, m.relation_name)
        if state == "unknown":
            loader.error(f"{m.relation_path}/name", f"recovery target {m.relation_name} is not "
                                                    "a group resource")
        elif state == "ignored" and not m.ignored:
            loader.warning(f"{m.relation_path}/name", f"recovery target {m.relation_name} is "
                                                      f"ignored: monitor {m.name} is ignored")
            m.ignored = True
    elif m.relation_kind == "grp" and m.relation_name:
        if m.relation_name in loader.ignored_groups:
            if not m.ignored:
                loader.warning(f"{m.relation_path}/name", f"recovery target group "
                                                          f"{m.relation_name} is ignored: "
                                                          f"monitor {m.name} is ignored")
            m.ignored = True
        elif m.relation_name not in loader.groups:
            loader.error(f"{m.relation_path}/name", f"recovery target {m.relation_name} is "
                                                    "not a group")


def _check_required(loader, m):
    """A required parameter is given under <parameters>, or per server for every
    server the monitor runs on (e.g. miiw's NIC name when it differs by server)."""
    names = [n for n, _ in m.servers] if m.servers is not None else list(loader.servers)
    for param in m.missing:
        xml = xml_name(param)
        lacking = [n for n in names if param.key not in m.server_params.get(n, {})]
        if not lacking:
            continue
        message = f"<{xml}> is required for {m.type}"
        if any(param.key in v for v in m.server_params.values()):
            message += f": give it here or per server for every server (missing for " \
                       f"{', '.join(lacking)})"
        loader.error(f"{m.path}/parameters/{xml}", message)


# -- the model -----------------------------------------------------------------


def build(loader, monitors):
    """MonitorConfig values of the monitors kept, in file order."""
    cluster = loader.cluster
    built = []
    for m in monitors.values():
        if m.ignored:
            continue
        params = dict(m.params)
        interval, timeout = float(m.interval), float(m.timeout)
        polling = _schema(m.type).polling
        if polling is not None:
            interval, timeout = polling(cluster, m, interval, timeout)
        delay = m.delay_warning if m.delay_warning is not None else cluster.monitor_delaywarning
        recovery = MonitorRecovery(
            kind=m.relation_kind, target=m.relation_name,
            restart_threshold=m.restart, failover_threshold=m.failover,
            final_action=m.action, script=m.script,
            script_before_restart=m.script_flags["userestart"],
            script_before_failover=m.script_flags["usefailover"],
            script_before_final=m.script_flags["use"],
            script_timeout=float(m.script_timeout))
        built.append(MonitorConfig(
            name=m.name, type=m.type, interval=interval, timeout=timeout, retry=m.retry,
            first_wait=float(m.first_wait), timing=m.timing, target=m.target,
            servers=tuple(n for n, _ in m.servers) if m.servers is not None else None,
            delay_warning=delay,
            timeout_retry=m.no_retry_on_timeout == 0,
            timeout_recover=m.no_recovery_on_timeout == 0,
            recovery=recovery, params=params,
            server_params={s: dict(v) for s, v in m.server_params.items() if v}))
    return tuple(built)
