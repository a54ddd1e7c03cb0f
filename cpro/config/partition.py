"""Server devices other than LAN, network-partition resolution and forced stop
in clp.conf: reading, checking and building their part of the model.

  - server devices: com (serial line), disk (shared partition), bmc (IPMI
    over LAN, with cpro's <user>/<password>), witness, ping and http (use
    flags of the NP resources); the heartbeat kinds that run over them are
    read through their schemas (L{cpro.config.heartbeats});
  - the HTTP target shared by the witness heartbeat and httpnp;
  - <networkpartition>: pingnp and httpnp;
  - <cluster><networkpartition>: npaction (+ cpro's releasegrace,
    witness/use) and cpro's <cluster><forcestop>, whose methods are those
    registered with L{cpro.plugins.FORCED_STOP_METHODS}.
"""

import ipaddress
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Optional

from cpro.config.model import (
    BmcConfig,
    ForcedStopConfig,
    HttpNPConfig,
    HttpTarget,
    NetworkPartitionConfig,
    PingTarget,
)
from cpro.config.xmltree import ConfigSyntaxError, Subtree, check_integer, read_small_file, unsupported_parameter
from cpro.plugins import FORCED_STOP_METHODS

DEVICE_TYPES = ("com", "disk", "bmc", "witness", "ping", "http")
MAX_PASSWORD_FILE_BYTES = 4096  # an IPMI password is at most 20 bytes

NP_ACTIONS = {0: "none", 1: "stop the cluster service", 2: "stop the cluster service and shut down the OS",
              3: "stop the cluster service and reboot the OS"}
BMC_ACTIONS = ("off", "reset", "cycle", "nmi")
DEFAULT_FORCED_STOP_METHOD = "bmc"


@dataclass(frozen=True)
class ForcedStopSchema:
    """The clp.conf part of a forced-stop method (C{<cluster><forcestop><method>}),
    declared by the method's module when it registers with
    L{cpro.plugins.FORCED_STOP_METHODS}. Both checks run only when forced
    stop is on (C{<use>1</use>}) with this method.

    - C{check(loader, config, node_path)}: rules on the
      L{cpro.config.model.ForcedStopConfig} read from the C{<forcestop>} at
      node_path (a script that must exist, ...).
    - C{check_servers(report, servers)}: rules on every server (namespaces
      with name, path and devices), once every section is read.
    """

    check: Optional[Callable] = None
    check_servers: Optional[Callable] = None


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
    """The password held in the file node names (UTF-8, blanks around it removed)."""
    name = node.text()
    try:
        data = read_small_file(name, MAX_PASSWORD_FILE_BYTES, "password file")
    except ConfigSyntaxError as e:
        report.error(node.path, str(e))
        return None
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        report.error(node.path, f"password file {name} is not UTF-8 text (byte {e.start})")
        return None


# -- the HTTP target of witnesshb and httpnp --------------------------------------


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
    method = tree.string("method", DEFAULT_FORCED_STOP_METHOD)
    if method not in FORCED_STOP_METHODS:
        report.error(f"{node.path}/method", f"forced stop method {method!r} is not "
                                            f"{' or '.join(FORCED_STOP_METHODS.names())}")
        method = DEFAULT_FORCED_STOP_METHOD
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
    if script is not None:
        script = os.path.join(loader.base_dir, script)
    tree.finish(unsupported_parameter)
    config = ForcedStopConfig(
        enabled=bool(use), method=method, bmc_action=action, script=script,
        timeout=_ms(timeout or 10_000), suppress_failover_on_failure=suppress != 0,
        identify_on_failure=bool(identify), identify_seconds=duration or 250)
    check = FORCED_STOP_METHODS.get(method).schema.check
    if config.enabled and check is not None:
        check(loader, config, node.path)
    return config


def check_forced_stop(report, settings, servers):
    """The forced-stop method's rules on every server, when forced stop is on."""
    fs = settings.forced_stop
    if not fs.enabled:
        return
    check = FORCED_STOP_METHODS.get(fs.method).schema.check_servers
    if check is not None:
        check(report, servers)


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
