"""Floating IP resources (<resource><fip>): their parameters and the subnet rule.

The original requires a floating address to lie in the subnet of an
interconnect. cpro checks it on every server that may run the fip's group
(its policy), against the subnets of that server's C{lan} devices: the
prefix given in the device info (cpro: C{<info>10.0.0.1/24</info>}) or,
when none is given, /24 for IPv4 and /64 for IPv6.
"""

import ipaddress

from cpro.config.defaults import DEFAULT_PREFIX, DEFAULTS, RANGES
from cpro.config.model import FipParams
from cpro.config.xmltree import Subtree, unsupported_parameter

# (path under <parameters>, FipParams field, conversion from the clp.conf value).
_EXTENSIONS = (
    ("probe/count", "probe_count", int),
    ("probe/interval", "probe_interval", lambda ms: ms / 1000.0),
    ("probe/wait", "probe_wait", lambda ms: ms / 1000.0),
    ("ping/use", "ping_check", bool),
    ("ping/timeout", "ping_timeout", lambda ms: ms / 1000.0),
    ("garp/count", "garp_count", int),
    ("garp/interval", "garp_interval", lambda ms: ms / 1000.0),
    ("garp/repeat/delay", "garp_repeat_delay", lambda ms: ms / 1000.0),
    ("garp/repeat/count", "garp_repeat_count", int),
)


def floating_address(report, text, path):
    """The address of a floating IP in normal form, or None after an error naming path."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        hint = " (give the address without a prefix length)" if "/" in text else ""
        report.error(path, f"floating address {text!r} is not an IPv4 or IPv6 address{hint}")
        return None
    if ip.is_link_local:
        report.error(path, f"floating address {ip} is link-local (169.254.0.0/16, fe80::/10)")
    elif ip.is_multicast:
        report.error(path, f"floating address {ip} is a multicast address")
    elif ip.is_loopback:
        report.error(path, f"floating address {ip} is a loopback address")
    elif ip.is_unspecified:
        report.error(path, f"floating address {ip} is the unspecified address")
    else:
        return str(ip)
    return None


def read_parameters(report, node, resource):
    """Read <fip><parameters> into resource.ip, .ip_path and .fip_values (FipParams keywords)."""
    resource.ip = None
    resource.ip_path = f"{node.path}/parameters/ip"
    resource.fip_values = {}
    params = node.child("parameters")
    tree = Subtree(params) if params is not None else None
    text = tree.string("ip") if tree is not None else None
    if not text:
        report.error(resource.ip_path, "<ip> is required: the floating address")
    else:
        resource.ip = floating_address(report, text, resource.ip_path)
    for relative, field, convert in _EXTENSIONS:
        key = f"fip/parameters/{relative}"
        value = DEFAULTS[key]
        if tree is not None:
            value = tree.integer(relative, value, RANGES[key])
        if value is not None:
            resource.fip_values[field] = convert(value)
    if tree is not None:
        tree.finish(unsupported_parameter)


def build_params(resource):
    return FipParams(ip=resource.ip, **resource.fip_values)


def lan_networks(server):
    """[(network, device id)] of a server's valid lan devices (see the module doc)."""
    found = []
    for dev_id, device in sorted(server.devices.items()):
        if device.type != "lan" or not device.valid_info:
            continue
        address = ipaddress.ip_address(device.valid_info)
        prefix = device.prefix or DEFAULT_PREFIX[address.version]
        found.append((ipaddress.ip_network((address, prefix), strict=False), dev_id))
    return found


def check(report, fips, groups, servers):
    """Cross-checks of the fips in a group: duplicates, server addresses, subnets.

    fips: the fip resources read (SimpleNamespaces with name, ip, ip_path,
    group); groups and servers as the loader holds them.
    """
    owners = {}
    for r in fips:
        if r.ip is None or r.group is None:
            continue
        if r.ip in owners:
            report.error(r.ip_path, f"floating address {r.ip} is also used by fip {owners[r.ip]}")
            continue
        owners[r.ip] = r.name
        ip = ipaddress.ip_address(r.ip)
        for server in servers.values():
            addresses = {d.valid_info: f"device@{i}" for i, d in server.devices.items()
                         if d.type == "lan" and d.valid_info}
            if server.address and server.address not in addresses:
                addresses[server.address] = "address"
            if r.ip in addresses:
                report.error(r.ip_path, f"floating address {r.ip} is server {server.name}'s own "
                                        f"address ({addresses[r.ip]})")
        group = groups.get(r.group)
        if group is None:
            continue
        if group.policy is None:
            candidates = list(servers)
        else:
            candidates = [name for _, name, _ in group.policy if name in servers]
        for name in candidates:
            networks = [n for n, _ in lan_networks(servers[name]) if n.version == ip.version]
            if any(ip in n for n in networks):
                continue
            where = ", ".join(str(n) for n in networks) or f"no IPv{ip.version} lan device"
            report.error(r.ip_path, f"floating address {r.ip} is outside every lan subnet of "
                                    f"server {name} ({where}), which may run group {r.group}")
