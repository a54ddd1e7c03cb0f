"""clp.conf tree -> validated ClusterConfig, collecting every problem in one pass.

Each section reader takes a L{Node}, reads what cpro understands (merging
over L{cpro.config.defaults.DEFAULTS}), records an error for every bad value
and a warning for every element cpro does not act on, and keeps going.
Cross-references (heartbeat devices, policies, group members, dependencies,
scripts, port clashes) are checked once all sections are read. The model is
built only when no error was found.
"""

import ipaddress
import os
import re
import shlex
from types import SimpleNamespace

from cpro import plugins
from cpro.config import heartbeats, monitors, order, partition
from cpro.config.defaults import (
    DAEMON_FAILURE_ACTIONS,
    DEFAULTS,
    MAX_SERVERS,
    RANGES,
)
from cpro.config.model import (
    ClusterConfig,
    Device,
    GroupConfig,
    HeartbeatConfig,
    OSActionCommands,
    Ports,
    ResourceConfig,
    ServerConfig,
)
from cpro.config.xmltree import ConfigSyntaxError, Node, check_integer, read_small_file
from cpro.config.xmltree import unsupported_parameter as _unsupported_parameter

PORT_PURPOSES = ("internal", "lanhb", "alert", "lankhb")
MAX_KEYFILE_BYTES = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,62}\Z")

# Top-level sections accepted silently: GUI and bookkeeping metadata.
_SILENT_SECTIONS = frozenset({"all", "trekking", "webmgr"})
_UNSUPPORTED_SECTIONS = {
    "messages": "alert destination settings are not supported yet: <messages> is ignored",
}


def load_tree(root, base_dir, report):
    """Validate the <root> element; return a ClusterConfig or None if errors were found.

    base_dir resolves relative script paths and the keyfile. Findings go to
    report (a L{cpro.config.xmltree.Report}); digest and source are left for
    the caller to fill in.
    """
    return _Loader(root, base_dir, report).load()


class _Loader:
    def __init__(self, root, base_dir, report):
        self.root = Node(root, "/root", report)
        self.base_dir = base_dir
        self.report = report
        self.ignored_groups = set()

    def error(self, path, message):
        self.report.error(path, message)

    def warning(self, path, message):
        self.report.warning(path, message)

    # -- top level ---------------------------------------------------------

    def load(self):
        root = self.root
        cluster = root.child("cluster")
        if cluster is None:
            self.error("/root/cluster", "<cluster> is required")
            self.cluster = None
        else:
            self.cluster = self.read_cluster(cluster)
        self.servers = self.read_servers(root.children("server"))
        heartbeat = root.child("heartbeat")
        self.heartbeats = self.read_heartbeats(heartbeat)
        resource = root.child("resource")
        self.resources, self.ignored_resources = self.read_resources(resource)
        self.groups = self.read_groups(root.children("group"))
        self.monitors = monitors.read_section(self, root.child("monitor"))
        self.np_pings, self.np_https = partition.read_section(self, root.child("networkpartition"))
        self.daemon_failure_action = self.read_pm(root.child("pm"))
        root.ignore(*_SILENT_SECTIONS)
        root.finish(lambda n: _UNSUPPORTED_SECTIONS.get(n.tag))

        heartbeats.check_heartbeat_devices(self.report, self.heartbeats, self.servers)
        partition.check_np_devices(self, self.np_pings, self.np_https, self.servers)
        if self.cluster is not None:
            partition.check_forced_stop(self.report, self.cluster.partition, self.servers)
            heartbeats.check_with_cluster(self.report, self.heartbeats, self.cluster)
        self.check_bindings()
        self.check_memberships()
        self.check_dependencies()
        self.check_resource_types()
        monitors.check(self, self.monitors)
        if self.report.errors:
            return None
        return self.build()

    def name_of(self, node, what):
        """The name attribute of node, checked; None (after an error) if bad."""
        name = node.attr("name")
        if name is None or name == "":
            self.error(node.path, f"{what} has no name attribute")
            return None
        if not _NAME.match(name):
            self.error(node.path, f"invalid {what} name {name!r}: use up to 63 letters, "
                                  "digits, '_', '-' or '.', not starting with '-' or '.'")
            return None
        return name

    def address(self, text, path, what):
        """A unicast, non-link-local IP address in normal form, or None after an error."""
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            self.error(path, f"{what} {text!r} is not an IPv4 or IPv6 address")
            return None
        if ip.is_link_local:
            self.error(path, f"{what} {text} is link-local; use a routable or loopback address")
        elif ip.is_unspecified or ip.is_multicast:
            self.error(path, f"{what} {text} is not a unicast host address")
        else:
            return str(ip)
        return None

    # -- <cluster> ---------------------------------------------------------

    def read_cluster(self, node):
        c = SimpleNamespace()
        c.name = node.string("name")
        if not c.name:
            self.error(f"{node.path}/name", "the cluster name is required")
        c.key = self.read_key(node)

        hb = node.child("heartbeat")
        c.hb_interval = self.cluster_integer(hb, "heartbeat", "interval")
        c.hb_timeout = self.cluster_integer(hb, "heartbeat", "timeout")
        if hb is not None:
            hb.finish()
        if c.hb_interval is not None and c.hb_timeout is not None and c.hb_timeout <= c.hb_interval:
            self.error(f"{node.path}/heartbeat/timeout",
                       f"heartbeat timeout {c.hb_timeout} ms must be longer than "
                       f"the interval {c.hb_interval} ms")
        c.syncwait = self.cluster_integer(node, None, "syncwait")
        c.cfwait = self.cluster_integer(node, None, "cfwait")

        ports = node.child("ports")
        c.ports = {p: (DEFAULTS[f"cluster/ports/{p}"], None) for p in PORT_PURPOSES}
        if ports is not None:
            c.ports.update(self.read_ports(ports))

        osaction = node.child("osaction")
        c.shutdown = self.os_command(osaction, node, "shutdown")
        c.reboot = self.os_command(osaction, node, "reboot")
        if osaction is not None:
            osaction.finish()

        c.partition = partition.read_cluster_settings(self, node)

        monitor = node.child("monitor")
        c.monitor_delaywarning = self.cluster_integer(monitor, "monitor", "delaywarning")
        if monitor is not None:
            monitor.finish()

        alertlog = node.child("alertlog")
        c.alert_maxsize = self.cluster_integer(alertlog, "alertlog", "maxsize")
        c.alert_backups = self.cluster_integer(alertlog, "alertlog", "backups")
        if alertlog is not None:
            alertlog.finish()
        node.finish(_unsupported_parameter)
        return c

    def cluster_integer(self, section, section_name, tag):
        key = f"cluster/{section_name}/{tag}" if section_name else f"cluster/{tag}"
        if section is None:
            return DEFAULTS[key]
        return section.integer(tag, DEFAULTS[key], RANGES[key])

    def read_key(self, node):
        key_node = node.child("key")
        keyfile_node = node.child("keyfile")
        if key_node is not None and keyfile_node is not None:
            self.error(keyfile_node.path, "give either <key> or <keyfile>, not both")
            return None
        if key_node is not None:
            key = key_node.text().encode("utf-8")
            if not key:
                self.error(key_node.path, "the cluster key is empty")
                return None
            return key
        if keyfile_node is None:
            self.error(f"{node.path}/key",
                       "a cluster key is required: <key>TEXT</key> or <keyfile>PATH</keyfile>")
            return None
        name = keyfile_node.text()
        if not name:
            self.error(keyfile_node.path, "the keyfile path is empty")
            return None
        path = os.path.join(self.base_dir, name)
        try:
            key = read_small_file(path, MAX_KEYFILE_BYTES, "keyfile")
        except ConfigSyntaxError as e:
            self.error(keyfile_node.path, str(e))
            return None
        key = key.strip()
        if not key:
            self.error(keyfile_node.path, f"keyfile {path} is empty")
            return None
        return key

    def read_ports(self, node):
        """{purpose: (port, path)} for the ports given under node."""
        found = {}
        for purpose in PORT_PURPOSES:
            child = node.child(purpose)
            if child is not None:
                value = child.as_integer(RANGES["ports"])
                if value is not None:
                    found[purpose] = (value, child.path)
        node.finish()
        return found

    def os_command(self, section, cluster, tag):
        text = DEFAULTS[f"cluster/osaction/{tag}"]
        path = f"{cluster.path}/osaction/{tag}"
        if section is not None:
            given = section.child(tag)
            if given is not None:
                text, path = given.text(), given.path
        try:
            argv = tuple(shlex.split(text))
        except ValueError as e:
            self.error(path, f"cannot split command {text!r}: {e}")
            return None
        if not argv:
            self.error(path, "the command is empty")
            return None
        return argv

    # -- <pm> --------------------------------------------------------------

    def read_pm(self, node):
        """pm/exec0/recover -> 'shutdown' | 'reboot' | 'restart' (None after an error).

        The original has three daemon processes (exec0-2) that operators set
        alike; cpro has one daemon and follows exec0.
        """
        code = DEFAULTS["pm/exec0/recover"]
        if node is None:
            return DAEMON_FAILURE_ACTIONS[code]
        exec0 = node.child("exec0")
        path = f"{node.path}/exec0/recover"
        if exec0 is not None:
            code = exec0.integer("recover", code)
            exec0.finish(_unsupported_parameter)
        action = DAEMON_FAILURE_ACTIONS.get(code)
        if code is not None and action is None:
            self.error(path, f"recover code {code} is not supported: use 2 (shut down the OS), "
                             "3 (reboot) or 1 (restart the cluster daemon, cpro)")
        for other in ("exec1", "exec2"):
            section = node.child(other)
            if section is None:
                continue
            other_code = section.integer("recover")
            section.finish(_unsupported_parameter)
            if other_code is not None and code is not None and other_code != code:
                self.warning(f"{section.path}/recover",
                             f"{other_code} differs from exec0/recover ({code}) and is ignored: "
                             "cpro has one daemon and follows exec0")
        node.finish()
        return action

    # -- <server> ----------------------------------------------------------

    def read_servers(self, nodes):
        servers = {}
        priorities = {}
        if not nodes:
            self.error("/root/server", "at least one <server> is required")
        elif len(nodes) > MAX_SERVERS:
            self.error(nodes[MAX_SERVERS].path, f"more than {MAX_SERVERS} servers")
        for node in nodes:
            server = self.read_server(node)
            if server.name is None:
                continue
            if server.name in servers:
                self.error(node.path, f"server {server.name} is defined more than once")
                continue
            servers[server.name] = server
            if server.priority is not None:
                if server.priority in priorities:
                    self.error(f"{node.path}/priority",
                               f"priority {server.priority} is also used by server "
                               f"{priorities[server.priority]}")
                else:
                    priorities[server.priority] = server.name
        return servers

    def read_server(self, node):
        s = SimpleNamespace(path=node.path, node=node)
        s.name = self.name_of(node, "server")
        s.priority = node.integer("priority", limits=RANGES["server/priority"], required=True)
        s.devices = {}
        for dev in node.children("device"):
            device = self.read_device(dev)
            if device is None:
                continue
            if device.id in s.devices:
                self.error(dev.path, f"device {device.id} is defined more than once")
                continue
            s.devices[device.id] = device
        ports = node.child("ports")
        s.port_overrides = self.read_ports(ports) if ports is not None else {}
        s.address = None
        address = node.child("address")
        if address is not None:
            s.address = self.address(address.text(), address.path, "address")
        else:
            lans = [d for i, d in sorted(s.devices.items()) if d.type == "lan"]
            if lans:
                # An invalid lan info was reported already; None keeps quiet.
                s.address = lans[0].valid_info
            else:
                self.error(node.path, "server has no lan device and no <address>")
        node.finish(_unsupported_parameter)
        return s

    def read_device(self, node):
        id_text = node.attr("id")
        if id_text is None:
            self.error(node.path, "device has no id attribute")
            return None
        dev_id = check_integer(id_text, node.path, self.report, RANGES["device/id"])
        if dev_id is None:
            return None
        dev_type = node.string("type")
        info = node.string("info", "")
        extend = node.string("extend", "")
        if not dev_type:
            self.error(f"{node.path}/type", "device type is required")
            return None
        valid_info, prefix, extras = None, 0, {}
        if dev_type == "lan":
            valid_info, prefix = self.lan_address(info, f"{node.path}/info")
            node.finish()
        elif dev_type in partition.DEVICE_TYPES:
            extras = partition.read_device(self.report, node, dev_type, info)
        else:
            # Their children (e.g. <mdc><info>) belong to features cpro lacks.
            self.warning(node.path, f"device type {dev_type!r} is not used by cpro yet")
            node.ignore(*(c.tag for c in node.element))
        return SimpleNamespace(id=dev_id, type=dev_type, info=info, extend=extend,
                               valid_info=valid_info, prefix=prefix, path=node.path,
                               bmc=extras.get("bmc"), use=extras.get("use", False))

    def lan_address(self, text, path):
        """(address, prefix length or 0) of a lan device's info, (None, 0) after an error.

        cpro extension: the info may carry the interconnect's prefix length
        (10.0.0.1/24), used to check floating addresses against the subnet.
        """
        address, slash, prefix_text = text.partition("/")
        if not slash:
            return self.address(text, path, "lan device address"), 0
        try:
            interface = ipaddress.ip_interface(text)
        except ValueError:
            self.error(path, f"lan device address {text!r} is not an IPv4 or IPv6 address "
                             "with a valid prefix length")
            return None, 0
        valid = self.address(address, path, "lan device address")
        return (valid, interface.network.prefixlen) if valid else (None, 0)

    # -- <heartbeat> -------------------------------------------------------

    def read_heartbeats(self, node):
        found = {}
        if node is None:
            self.error("/root/heartbeat", heartbeats.required_message())
            return found
        node.ignore("types")
        priorities = {}
        for child in node.unconsumed():
            node.ignore(child.tag)
            if not heartbeats.is_supported(child.tag):
                self.warning(child.path, f"heartbeat kind {child.tag!r} is not supported: "
                                         f"{child.attr('name') or child.tag} is ignored")
                continue
            name = self.name_of(child, "heartbeat")
            hb_priority = child.integer("priority", limits=RANGES["heartbeat/priority"],
                                        required=True)
            device = child.integer("device", limits=RANGES["device/id"], required=True)
            extras = heartbeats.read_heartbeat(self.report, child, child.tag)
            child.finish(_unsupported_parameter)
            if name is None:
                continue
            if name in found:
                self.error(child.path, f"heartbeat {name} is defined more than once")
                continue
            if hb_priority is not None:
                if hb_priority in priorities:
                    self.error(f"{child.path}/priority", f"priority {hb_priority} is also used "
                                                         f"by heartbeat {priorities[hb_priority]}")
                priorities.setdefault(hb_priority, name)
            found[name] = SimpleNamespace(name=name, kind=child.tag, priority=hb_priority,
                                          device=device, path=child.path, extras=extras)
        if not heartbeats.has_required(found):
            self.error(node.path, heartbeats.required_message())
        return found

    # -- ports and addresses ----------------------------------------------

    def merged_ports(self, server):
        cluster_ports = self.cluster.ports if self.cluster else {
            p: (DEFAULTS[f"cluster/ports/{p}"], None) for p in PORT_PURPOSES}
        merged = {p: v for p, (v, _) in cluster_ports.items()}
        merged.update({p: v for p, (v, _) in server.port_overrides.items()})
        return merged

    def check_bindings(self):
        """No two listeners (of one server or of two) on one protocol, address and port."""
        taken = {}
        for server in self.servers.values():
            ports = self.merged_ports(server)
            bindings = []
            if server.address:
                bindings.append(("tcp", server.address, ports["internal"], "internal communication"))
                bindings.append(("udp", server.address, ports["alert"], "alert synchronisation"))
            for hb in sorted(self.heartbeats.values(), key=lambda h: h.name):
                port = heartbeats.udp_port(hb.kind)
                if port is None:
                    continue
                device = server.devices.get(hb.device)
                if device is not None and device.valid_info:
                    bindings.append(("udp", device.valid_info, ports[port], f"heartbeat {hb.name}"))
            for proto, address, port, purpose in bindings:
                key = (proto, address, port)
                if key in taken:
                    other_server, other_purpose = taken[key]
                    owner = "" if other_server == server.name else f"server {other_server}'s "
                    self.error(server.path, f"{purpose} would listen on {address} {proto} port "
                                            f"{port}, already used by {owner}{other_purpose}")
                else:
                    taken[key] = (server.name, purpose)

    # -- <resource> --------------------------------------------------------

    def read_resources(self, node):
        """(supported resources by name, {name: type} of resources ignored as unsupported)."""
        resources, ignored, seen = {}, {}, {}
        if node is None:
            return resources, ignored
        node.ignore("types")
        for child in node.unconsumed():
            node.ignore(child.tag)
            name = self.name_of(child, f"{child.tag} resource")
            if name is None:
                continue
            if name in seen:
                self.error(child.path, f"resource name {name} is already used by "
                                       f"{seen[name]}@{name}")
                continue
            seen[name] = child.tag
            try:
                plugin = plugins.RESOURCE_TYPES.get(child.tag)
            except plugins.UnknownType:
                self.warning(child.path, f"resource type {child.tag!r} is not supported yet: "
                                         f"{name} is ignored")
                ignored[name] = child.tag
                continue
            resources[name] = self.read_resource(child, name, plugin.schema)
        return resources, ignored

    def read_resource(self, node, name, schema):
        """One resource of a registered type: its own schema reads its parameters."""
        r = SimpleNamespace(name=name, type=node.tag, path=node.path, group=None, schema=schema)
        schema.read(self, node, r)
        self.read_recovery_and_depends(node, r)
        return r

    def read_recovery_and_depends(self, node, r):
        """What every group resource type shares: act/deact recovery, depend@, the rest."""
        recovery_act = node.child("act")
        recovery_deact = node.child("deact")
        r.act_retry = self.resource_integer(r.type, recovery_act, "act", "retry")
        r.act_fo = self.resource_integer(r.type, recovery_act, "act", "fo")
        r.act_action = self.resource_integer(r.type, recovery_act, "act", "action")
        r.deact_retry = self.resource_integer(r.type, recovery_deact, "deact", "retry")
        r.deact_action = self.resource_integer(r.type, recovery_deact, "deact", "action")
        for section in (recovery_act, recovery_deact):
            if section is not None:
                section.finish(_unsupported_parameter)

        depends = []
        for dep in node.children("depend"):
            target = dep.attr("name")
            if not target:
                self.error(dep.path, "depend has no name attribute")
            else:
                depends.append((target, dep.path))
            dep.finish()
        r.depends = depends if node.children("depend") else None
        for override in node.children("server"):
            self.warning(override.path, "per-server parameters are not supported yet "
                                        "and are ignored")
        node.finish(_unsupported_parameter)

    def resource_integer(self, rtype, section, prefix, tag):
        key = f"{rtype}/{prefix}/{tag}"
        if section is None:
            return DEFAULTS[key]
        return section.integer(tag, DEFAULTS[key], RANGES[key])

    # -- <group> -----------------------------------------------------------

    def read_groups(self, nodes):
        groups = {}
        gids = {}
        for index, node in enumerate(nodes):
            group = self.read_group(node, index)
            if group is None:
                continue
            if group.name in groups:
                self.error(node.path, f"group {group.name} is defined more than once")
                continue
            groups[group.name] = group
            if group.gid is not None:
                if group.gid in gids:
                    self.error(node.path, f"gid {group.gid} is also used by group {gids[group.gid]}")
                else:
                    gids[group.gid] = group.name
        return groups

    def read_group(self, node, index):
        name = self.name_of(node, "group")
        group_type = node.string("type", "failover")
        if group_type != "failover":
            self.warning(node.path, f"group type {group_type!r} is not supported yet: "
                                    f"group {name} and its resources are ignored")
            self.ignored_groups.add(name)
            return None
        g = SimpleNamespace(name=name, path=node.path)
        g.gid = node.integer("gid", index, RANGES["group/gid"])
        for attr in ("start", "failover", "failback", "exclusive"):
            setattr(g, attr, node.integer(attr, DEFAULTS[f"group/{attr}"], RANGES[f"group/{attr}"]))
        g.policy = self.read_policy(node)
        g.members = []
        for member in node.children("resource"):
            ref = member.attr("name") or ""
            rtype, _, rname = ref.partition("@")
            if not rtype or not rname:
                self.error(member.path, f"group resource {ref!r} is not of the form type@name")
                continue
            g.members.append((rtype, rname, member.path))
            member.finish()
        depend = node.child("depend")
        if depend is not None:
            self.warning(depend.path, "group start/stop wait dependencies are not supported "
                                      "yet and are ignored")
        node.finish(_unsupported_parameter)
        return g if name is not None else None

    def read_policy(self, node):
        """[(order, server name, path)] as given; None when absent (all servers)."""
        entries = node.children("policy")
        if not entries:
            return None
        policy, names, orders = [], set(), {}
        for entry in entries:
            server = entry.attr("name")
            position = entry.integer("order", limits=RANGES["group/policy/order"], required=True)
            entry.finish()
            if not server:
                self.error(entry.path, "policy has no name attribute")
                continue
            if server in names:
                self.error(entry.path, f"server {server} is listed twice in the policy")
                continue
            names.add(server)
            if server not in self.servers:
                self.error(entry.path, f"policy names unknown server {server}")
            if position is not None:
                if position in orders:
                    self.error(f"{entry.path}/order", f"order {position} is also given to "
                                                      f"server {orders[position]}")
                orders.setdefault(position, server)
            policy.append((position, server, entry.path))
        return policy

    # -- cross-references --------------------------------------------------

    def check_memberships(self):
        for group in self.groups.values():
            kept = []
            for rtype, rname, path in group.members:
                resource = self.resources.get(rname)
                if resource is not None and resource.type != rtype:
                    self.error(path, f"resource {rname} is of type {resource.type}, "
                                     f"not {rtype}")
                    continue
                if resource is None:
                    if self.ignored_resources.get(rname) == rtype:
                        continue  # warned about under <resource>
                    self.error(path, f"resource {rtype}@{rname} is not defined under "
                                     "/root/resource")
                    continue
                if resource.group is not None:
                    self.error(path, f"resource {rname} already belongs to group "
                                     f"{resource.group}")
                    continue
                resource.group = group.name
                kept.append(rname)
            group.resources = kept
        for resource in self.resources.values():
            if resource.group is None:
                self.warning(resource.path, f"{resource.type} resource {resource.name} is not "
                                            "in any group and is ignored")

    def check_dependencies(self):
        for resource in self.resources.values():
            if resource.group is None or resource.depends is None:
                continue
            kept = []
            for target, path in resource.depends:
                other = self.resources.get(target)
                if target in self.ignored_resources:
                    self.warning(path, f"depends on {target}, which is ignored "
                                       "(its type is not supported yet)")
                elif other is None:
                    self.error(path, f"depends on unknown resource {target}")
                elif other.group != resource.group:
                    where = f"group {other.group}" if other.group else "no group"
                    self.error(path, f"depends on {target}, which is in {where}, not in "
                                     f"group {resource.group}")
                else:
                    kept.append(target)
            resource.depend_names = tuple(kept)
        for group in self.groups.values():
            members = [(n, self.resources[n].type, self.resources[n].depend_names
                        if self.resources[n].depends is not None else None)
                       for n in group.resources]
            group.order, cycles = order.activation_order(members)
            for cycle in cycles:
                self.error(self.resources[cycle[0]].path,
                           "dependency cycle: " + " -> ".join(cycle))

    def check_resource_types(self):
        """Each type's own cross-checks, given every resource of that type (by type name)."""
        by_type = {}
        for r in self.resources.values():
            by_type.setdefault(r.type, []).append(r)
        for rtype in sorted(by_type):
            check = by_type[rtype][0].schema.check
            if check is not None:
                check(self, by_type[rtype])

    def check_executable(self, path, node_path, what):
        if not os.path.exists(path):
            self.error(node_path, f"{what} {path} does not exist")
        elif not os.path.isfile(path):
            self.error(node_path, f"{what} {path} is not a regular file")
        elif not os.access(path, os.X_OK):
            self.error(node_path, f"{what} {path} is not executable")

    # -- the model ---------------------------------------------------------

    def build(self):
        c = self.cluster
        cluster_ports = Ports(**{p: v for p, (v, _) in c.ports.items()})
        servers = []
        for s in sorted(self.servers.values(), key=lambda s: s.priority):
            devices = tuple(Device(id=d.id, type=d.type,
                                   info=d.valid_info if d.valid_info else d.info,
                                   extend=d.extend, prefix=d.prefix)
                            for _, d in sorted(s.devices.items()))
            servers.append(ServerConfig(name=s.name, priority=s.priority, devices=devices,
                                        ports=Ports(**self.merged_ports(s)), address=s.address,
                                        bmc=partition.server_bmc(self.report, s)))
        heartbeat_configs = tuple(
            HeartbeatConfig(name=h.name, kind=h.kind, priority=h.priority, device=h.device, **h.extras)
            for h in sorted(self.heartbeats.values(), key=lambda h: h.priority))
        network_partition, forced_stop = partition.build(c.partition, self.np_pings, self.np_https)
        by_priority = tuple(s.name for s in servers)
        groups, resources = [], []
        for g in sorted(self.groups.values(), key=lambda g: g.gid):
            if g.policy is None:
                policy = by_priority
            else:
                policy = tuple(name for _, name, _ in sorted(g.policy, key=lambda p: p[0]))
            groups.append(GroupConfig(
                name=g.name, gid=g.gid, policy=policy, start_auto=g.start == 1,
                failover_auto=g.failover == 1, failback_auto=g.failback == 1,
                exclusive=g.exclusive, resources=g.order))
            for name in g.order:
                r = self.resources[name]
                resources.append(self.build_resource(r, r.schema.build(r)))
        return ClusterConfig(
            name=c.name, key=c.key,
            hb_interval=c.hb_interval / 1000.0, hb_timeout=c.hb_timeout / 1000.0,
            startup_sync_wait=float(c.syncwait), config_download_wait=float(c.cfwait),
            ports=cluster_ports, servers=tuple(servers), heartbeats=heartbeat_configs,
            groups=tuple(groups), resources=tuple(resources),
            os_actions=OSActionCommands(shutdown=c.shutdown, reboot=c.reboot),
            monitors=monitors.build(self, self.monitors),
            network_partition=network_partition, forced_stop=forced_stop,
            daemon_failure_action=self.daemon_failure_action,
            alert_log_max_bytes=c.alert_maxsize, alert_log_backups=c.alert_backups)

    def build_resource(self, r, params):
        return ResourceConfig(
            name=r.name, type=r.type, group=r.group,
            depends=r.depend_names if r.depends is not None else None,
            act_retry=r.act_retry, act_fo=r.act_fo, act_action=r.act_action,
            deact_retry=r.deact_retry, deact_action=r.deact_action, params=params)
