"""Heartbeat paths other than LAN, network-partition resolution and forced stop
in clp.conf: reading, checking and building their part of the model.

  - server devices: com (serial line), disk (shared partition), bmc (IPMI
    over LAN, with cpro's <user>/<password>), witness, ping and http (use
    flags of the NP resources);
  - <heartbeat>: comhb, diskhb, bmchb and witnesshb next to lanhb/lankhb;
  - <networkpartition>: pingnp and httpnp;
  - <cluster><networkpartition>: npaction (+ cpro's releasegrace,
    witness/use) and cpro's <cluster><forcestop>.
"""

import ipaddress
import os
from types import SimpleNamespace

from cpro.config.model import (
    BmcConfig,
    ForcedStopConfig,
    HttpNPConfig,
    LAN_HEARTBEAT_KINDS,
    HttpTarget,
    NetworkPartitionConfig,
    PingTarget,
)
from cpro.config.xmltree import Subtree, check_integer, unsupported_parameter

# The device type each heartbeat kind runs over.
DEVICE_OF_KIND = {
    "lanhb": "lan",
    "lankhb": "lan",
    "comhb": "com",
    "diskhb": "disk",
    "bmchb": "bmc",
    "witnesshb": "witness",
}
LAN_KINDS = LAN_HEARTBEAT_KINDS
DEVICE_TYPES = ("com", "disk", "bmc", "witness", "ping", "http")
# IPMI requests through pyghmi stall for up to a second, longer on a busy server.
MIN_BMC_HEARTBEAT_TIMEOUT_MS = 5000

NP_ACTIONS = {0: "none", 1: "stop the cluster service", 2: "stop the cluster service and shut down the OS",
              3: "stop the cluster service and reboot the OS"}
FORCED_STOP_METHODS = ("bmc", "script")
BMC_ACTIONS = ("off", "reset", "cycle", "nmi")
BAUD_RATES = frozenset({1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200})


def _ms(value):
    return value / 1000.0


# -- server devices ----------------------------------------------------------------


def read_device(report, node, dev_type, info):
    """Check a com/disk/bmc/witness/ping/http device; return its extras (a dict)."""
    path = f"{node.path}/info"
    extras = {}
    if dev_type in ("com", "disk"):
        what = "serial device" if dev_type == "com" else "block device"
        if not info:
            report.error(path, f"the {what} path is required")
        elif not info.startswith("/"):
            report.error(path, f"the {what} path {info!r} must be absolute")
        node.finish()
    elif dev_type == "bmc":
        extras["bmc"] = _read_bmc(report, node, info)
    else:  # witness, ping, http: info says whether this server uses the resource
        if info not in ("0", "1"):
            report.error(path, f"{info!r} is not 0 or 1 (whether this server uses the {dev_type} resource)")
        extras["use"] = info == "1"
        node.finish()
    return extras


def _read_bmc(report, node, info):
    address = None
    try:
        ip = ipaddress.ip_address(info)
    except ValueError:
        report.error(f"{node.path}/info", f"BMC address {info!r} is not an IPv4 address")
    else:
        if ip.version != 4:
            report.error(f"{node.path}/info", f"BMC address {ip} is IPv6: IPMI over LAN is IPv4 only")
        elif ip.is_unspecified or ip.is_multicast or ip.is_link_local:
            report.error(f"{node.path}/info", f"BMC address {ip} is not a unicast routable address")
        else:
            address = str(ip)
    port = 623
    extend = node.string("extend", "")
    if extend:
        port = check_integer(extend, f"{node.path}/extend", report, (1, 65535)) or 623
    user = node.string("user", "")
    password = node.string("password")
    password_file = node.child("passwordfile")
    if password is not None and password_file is not None:
        report.error(password_file.path, "give either <password> or <passwordfile>, not both")
    elif password_file is not None:
        password = _read_secret(report, password_file)
    node.finish()
    if address is None:
        return None
    return BmcConfig(address=address, port=port, user=user, password=password or "")


def _read_secret(report, node):
    name = node.text()
    try:
        with open(name, encoding="utf-8") as f:
            return f.read(4096).strip()
    except OSError as e:
        report.error(node.path, f"cannot read {name}: {e.strerror or e}")
        return None


# -- heartbeats ----------------------------------------------------------------------


def read_heartbeat(report, child, kind):
    """Read the kind-specific children of a heartbeat element; return model keywords."""
    extras = {}
    if kind == "comhb":
        baud = child.integer("baudrate", 19200, BAUD_RATES)
        extras["baud_rate"] = baud or 19200
    elif kind == "witnesshb":
        extras["witness"] = read_http_target(report, child, "witness server")
    return extras


def read_http_target(report, node, what, with_path=False):
    """host, port, ssl/use, ssl/cafile, httptimeout (+ path) of a witnesshb or httpnp."""
    tree = Subtree(node)
    host = tree.string("host", "")
    if not host:
        report.error(f"{node.path}/host", f"<host> is required: the {what}'s host name or address")
    port = tree.integer("port", 80, (1, 65535))
    tls = tree.integer("ssl/use", 0, frozenset({0, 1}))
    ca_file = tree.string("ssl/cafile", "") or None
    if ca_file is not None and not os.path.isfile(ca_file):
        report.error(f"{node.path}/ssl/cafile", f"CA file {ca_file} does not exist")
    timeout = tree.integer("httptimeout", 3000, (100, 600_000))
    path = "/"
    if with_path:
        path = tree.string("path", "/")
        if not path.startswith("/"):
            report.error(f"{node.path}/path", f"path {path!r} must start with '/'")
    if not host or port is None:
        return None
    return HttpTarget(host=host, port=port, tls=bool(tls), ca_file=ca_file,
                      timeout=_ms(timeout or 3000), path=path)


def check_bmc_heartbeat_timeout(report, heartbeats, timeout_ms):
    """Warn about a BMC heartbeat with a heartbeat timeout shorter than IPMI's stalls allow."""
    if timeout_ms is None or timeout_ms >= MIN_BMC_HEARTBEAT_TIMEOUT_MS:
        return
    for hb in heartbeats.values():
        if hb.kind == "bmchb":
            report.warning(hb.path, f"heartbeat {hb.name} goes through BMCs, whose IPMI requests can "
                                    f"stall for seconds, but the heartbeat timeout is {timeout_ms} ms: "
                                    f"use at least {MIN_BMC_HEARTBEAT_TIMEOUT_MS} ms "
                                    f"(cluster/heartbeat/timeout) or it may declare live servers down")


def check_heartbeat_devices(report, heartbeats, servers):
    """Each heartbeat kind has its device of the right type where it must."""
    for hb in heartbeats.values():
        if hb.device is None:
            continue
        wanted = DEVICE_OF_KIND[hb.kind]
        having = []
        for server in servers.values():
            device = server.devices.get(hb.device)
            if device is None:
                if hb.kind in LAN_KINDS:
                    report.error(f"{server.path}/device@{hb.device}",
                                 f"device {hb.device} is missing: heartbeat {hb.name} uses it on every server")
                continue
            if device.type != wanted:
                report.error(device.path, f"device {hb.device} is of type {device.type!r} but heartbeat "
                                          f"{hb.name} needs a {wanted} device")
                continue
            if hb.kind == "witnesshb" and not device.use:
                continue
            having.append(server.name)
        if hb.kind in LAN_KINDS:
            continue
        if len(having) < 2 and len(servers) >= 2:
            report.error(hb.path, f"heartbeat {hb.name} links fewer than two servers: give device {hb.device} "
                                  f"({wanted}) to at least two")
        elif hb.kind == "comhb" and len(having) > 2:
            report.error(hb.path, f"heartbeat {hb.name} is a serial line between two servers, but "
                                  f"{', '.join(having)} have device {hb.device}")


# -- <networkpartition> --------------------------------------------------------------


def read_section(loader, node):
    """<networkpartition> -> ([ping ns], [http ns])."""
    pings, https = [], []
    if node is None:
        return pings, https
    report = loader.report
    node.ignore("types")
    seen = {}
    for child in node.unconsumed():
        node.ignore(child.tag)
        if child.tag not in ("pingnp", "httpnp"):
            loader.warning(child.path, f"network partition resource {child.tag!r} is not supported: "
                                       f"{child.attr('name') or child.tag} is ignored")
            continue
        name = loader.name_of(child, "network partition resource")
        priority = child.integer("priority", 0, (0, 999))
        device = child.integer("device", None, (0, 99999), required=True)
        if child.tag == "pingnp":
            item = _read_ping(report, child)
        else:
            target = read_http_target(report, child, "HTTP target", with_path=True)
            item = SimpleNamespace(target=target)
        child.finish(unsupported_parameter)
        if name is None:
            continue
        if name in seen:
            loader.error(child.path, f"network partition resource {name} is defined more than once")
            continue
        seen[name] = True
        item.name, item.priority, item.device, item.path, item.kind = name, priority, device, child.path, child.tag
        (pings if child.tag == "pingnp" else https).append(item)
    return pings, https


def _read_ping(report, node):
    groups = []
    for grp in node.children("grp"):
        addresses = []
        for lst in grp.children("list"):
            text = lst.string("ip", "")
            lst.finish()
            ip = _ping_address(report, text, f"{lst.path}/ip")
            if ip is not None:
                addresses.append(ip)
        grp.finish()
        if addresses:
            groups.append(tuple(addresses))
        else:
            report.error(grp.path, "the group has no ping target address (list@N/ip)")
    if not groups and not node.children("grp"):
        report.error(node.path, "pingnp needs at least one target: grp@0/list@0/ip")
    tree = Subtree(node.child("parameters")) if node.child("parameters") is not None else None
    interval = tree.integer("interval", 200, (10, 60_000)) if tree else 200
    timeout = tree.integer("timeout", 1000, (50, 600_000)) if tree else 1000
    if tree is not None:
        tree.finish(unsupported_parameter)
    if interval and timeout and interval > timeout:
        report.error(f"{node.path}/parameters/interval",
                     f"interval {interval} ms is longer than the timeout {timeout} ms")
    return SimpleNamespace(groups=tuple(groups), interval=_ms(interval or 200), timeout=_ms(timeout or 1000))


def _ping_address(report, text, path):
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        report.error(path, f"ping target {text!r} is not an IPv4 or IPv6 address")
        return None
    if ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        report.error(path, f"ping target {ip} must be a routable unicast address (not link-local)")
        return None
    return str(ip)


def check_np_devices(loader, pings, https, servers):
    """Which servers use each NP resource: those whose device@<device> says 1."""
    for item in list(pings) + list(https):
        wanted = "ping" if item.kind == "pingnp" else "http"
        item.servers = []
        for server in servers.values():
            device = server.devices.get(item.device)
            if device is None:
                continue
            if device.type != wanted:
                loader.error(device.path, f"device {item.device} is of type {device.type!r} but "
                                          f"{item.name} needs a {wanted} device")
            elif device.use:
                item.servers.append(server.name)


# -- <cluster><networkpartition> and <cluster><forcestop> ---------------------------------


def read_cluster_settings(loader, cluster):
    """Read the NP action and the forced stop settings under <cluster>."""
    report = loader.report
    settings = SimpleNamespace(action=2, release_grace=0.5, use_witness=True, check_interval=10.0,
                               forced_stop=ForcedStopConfig())
    np_node = cluster.child("networkpartition")
    if np_node is not None:
        tree = Subtree(np_node)
        action = tree.integer("npaction", 2, (0, 11))
        if action is not None and action not in NP_ACTIONS:
            report.error(f"{np_node.path}/npaction",
                         f"NP action {action} is not supported by cpro: use 0 (none), 1 (stop the cluster "
                         "service), 2 (stop and shut down the OS, the default) or 3 (stop and reboot)")
        settings.action = action if action in NP_ACTIONS else 2
        grace = tree.integer("releasegrace", 500, (0, 600_000))
        settings.release_grace = _ms(grace if grace is not None else 500)
        settings.use_witness = bool(tree.integer("witness/use", 1, frozenset({0, 1})))
        check = tree.integer("checkinterval", 10_000, (0, 3_600_000))
        settings.check_interval = _ms(check if check is not None else 10_000)
        tree.finish(unsupported_parameter)
    fs_node = cluster.child("forcestop")
    if fs_node is not None:
        settings.forced_stop = _read_forced_stop(loader, fs_node)
    return settings


def _read_forced_stop(loader, node):
    report = loader.report
    tree = Subtree(node)
    use = tree.integer("use", 0, frozenset({0, 1}))
    method = tree.string("method", "bmc")
    if method not in FORCED_STOP_METHODS:
        report.error(f"{node.path}/method", f"forced stop method {method!r} is not bmc or script")
        method = "bmc"
    action = tree.string("action", "off")
    if action not in BMC_ACTIONS:
        report.error(f"{node.path}/action", f"forced stop action {action!r} is not one of "
                                            f"{', '.join(BMC_ACTIONS)}")
        action = "off"
    timeout = tree.integer("timeout", 10_000, (100, 3_600_000))
    suppress = tree.integer("suppress", 1, frozenset({0, 1}))
    identify = tree.integer("identify/use", 0, frozenset({0, 1}))
    duration = tree.integer("identify/duration", 250, (1, 255))
    script = tree.string("script", "") or None
    script_path = f"{node.path}/script"
    if script is not None:
        script = os.path.join(loader.base_dir, script)
    tree.finish(unsupported_parameter)
    config = ForcedStopConfig(
        enabled=bool(use), method=method, bmc_action=action, script=script,
        timeout=_ms(timeout or 10_000), suppress_failover_on_failure=suppress != 0,
        identify_on_failure=bool(identify), identify_seconds=duration or 250)
    if config.enabled and method == "script":
        if script is None:
            report.error(script_path, "forced stop method script needs <script>: the script's path")
        else:
            loader.check_executable(script, script_path, "forced stop script")
    return config


def check_forced_stop(report, settings, servers):
    fs = settings.forced_stop
    if not fs.enabled or fs.method != "bmc":
        return
    for server in servers.values():
        bmcs = [d for d in server.devices.values() if d.type == "bmc"]
        if not bmcs:
            report.error(server.path, f"forced stop through the BMC is on, but server {server.name} has no "
                                      "bmc device (<device id=\"600\"><type>bmc</type>...)")


def server_bmc(report, server):
    """The BmcConfig of a server (its one bmc device), or None."""
    bmcs = [d for _, d in sorted(server.devices.items()) if d.type == "bmc"]
    for extra in bmcs[1:]:
        report.error(extra.path, "a server has at most one bmc device")
    return bmcs[0].bmc if bmcs else None


# -- the model -------------------------------------------------------------------------


def build(settings, pings, https):
    ping_targets = tuple(
        PingTarget(name=p.name, priority=p.priority, device=p.device, groups=p.groups,
                   interval=p.interval, timeout=p.timeout, servers=tuple(p.servers))
        for p in sorted(pings, key=lambda p: p.priority))
    http_targets = tuple(
        HttpNPConfig(name=h.name, priority=h.priority, device=h.device, target=h.target,
                     servers=tuple(h.servers))
        for h in sorted(https, key=lambda h: h.priority) if h.target is not None)
    np_config = NetworkPartitionConfig(ping=ping_targets, http=http_targets, use_witness=settings.use_witness,
                                       action=settings.action, release_grace=settings.release_grace,
                                       check_interval=settings.check_interval)
    return np_config, settings.forced_stop
