"""The cluster lab: servers, a client and extra hosts as network namespaces, real daemons, faults.

Topology (every name prefixed with the lab's id, see L{PREFIX}):

    switch namespace:  bridge "ic"  (interconnect)   bridge "pub" (public LAN)
                         |  |                           |  |  |  |
    srvN namespace:    eth0 192.168.100.N/24          eth1 10.0.0.N/24
    client namespace:                                 eth1 10.0.0.200/24
    extra hosts:                                      eth1 10.0.0.201/24, .202 ...

Each NIC is a veth whose peer is a port of a bridge in the switch
namespace, so no host's link state depends on another host's (a veth end
going down takes its peer's carrier down). Floating addresses for tests
come from 10.0.0.100-199 (public LAN) and land on eth1 by subnet.

Faults, all silent to the daemons (carrier stays up, sends succeed):
L{NetnsLab.block_link} and the helpers built on it drop frames with an
nftables netdev table at the host's switch ports (ingress: from the host,
egress: to the host), ARP included. Dropping at the switch, not in the
host, keeps the host's own firewall free for the software under test and
never makes a send fail with ENOBUFS, which a cut cable would not do.

Power off (L{NetnsLab.server_down}, also what the lab's OS-action command
cpro.testing.lab.poweroff does when a daemon powers off its server): the host's
switch ports go down (the switch sees the link drop; the host's NICs lose
carrier, so nothing it still had queued, not even a FIN of its dying
sockets, leaves it), every process in its namespace is SIGKILLed, and its
network returns to the boot state (lab addresses only). L{NetnsLab.power_on}
sets the ports up again; starting the daemon is a separate step.

Clean-up: L{NetnsLab.destroy} kills every process in the lab's namespaces
and deletes them (bridges, veths and nft tables go with them); labs not
destroyed when the process exits are removed by an atexit handler (Twisted
turns SIGINT/SIGTERM into a normal exit); labs of a process that died
(SIGKILL) are removed by L{cleanup_stale}, which every new lab runs first.

The API is asynchronous (Deferreds); blocking work (scanning /proc) runs
in a thread pool, commands through reactor.spawnProcess.
"""

import atexit
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
from xml.sax.saxutils import escape

from twisted.internet import defer, threads

from cpro.testing.lab import poweroff
from cpro.testing.lab.common import DaemonCluster, LabError, LabProcess, is_root, lab_env, run, tool
from cpro.testing.lab.poweroff import NETNS_DIR, PREFIX

INTERCONNECT = "192.168.100"
PUBLIC = "10.0.0"
PREFIXLEN = 24
CLIENT_OCTET = 200
EXTRA_OCTET = 201
LINKS = {"eth0": ("ic", INTERCONNECT), "eth1": ("pub", PUBLIC)}
SWITCH = "switch"
_CONNECT = ("import socket, sys\n"
            "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))\n"
            "print(s.makefile().readline().strip())\n")
_HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,14}$")
_NETNS_NAME = re.compile(rf"^{PREFIX}-(\d+)-([0-9a-f]+)-([a-z][a-z0-9]*)$")


class NetnsLab(DaemonCluster):
    """Servers srv1..srvN (interconnect eth0 + public eth1), a client and extra hosts
    (public eth1 only), each a network namespace; cpro daemons and other processes in them.

    clp.conf fragments (XML text, inserted as given into the generated clp.conf;
    change the attributes of the same names and call write_config() to regenerate):
      cluster_xml: inside <cluster>;  server_xml: {server: XML inside its <server>};
      heartbeat_xml: inside the root <heartbeat> of the paths (lanhb1 on eth0 and lanhb2 on
        eth1, or those of heartbeat_devices only: ("eth0",) = the interconnect alone);
      root_xml: inside <root> (groups, other sections);  resource_xml: inside <resource>;
      monitor_xml: inside <monitor>;  groups: simple exec groups as in LoopbackCluster.

    start_supervised(server) runs a daemon under cpro-supervise (cpro.supervisor).
    """

    def __init__(self, reactor, workdir, servers=2, client=True, extra_hosts=(), *, interval_ms=100,
                 timeout_ms=500, sync_wait=20, key="lab-key", groups=(), cluster_xml="", server_xml=None,
                 heartbeat_xml="", root_xml="", resource_xml="", monitor_xml="", threadpool=None,
                 heartbeat_devices=("eth0", "eth1")):
        if not 0 <= servers < 100:
            raise ValueError("servers: 0 to 99 (addresses 10.0.0.100-199 are left for floating IPs)")
        self.reactor = reactor
        self.workdir = os.path.abspath(workdir)
        self.id = f"{os.getpid()}-{random.getrandbits(24):06x}"
        self.names = [f"srv{i + 1}" for i in range(servers)]
        self.client = "client" if client else None
        self.extra_hosts = list(extra_hosts)
        self.hosts = self.names + ([self.client] if client else []) + self.extra_hosts
        for host in self.hosts:
            if not _HOST_NAME.match(host) or host == SWITCH:
                raise ValueError(f"bad host name {host!r}: lower-case letters and digits, not {SWITCH!r}")
        if len(set(self.hosts)) != len(self.hosts):
            raise ValueError(f"host names must be unique: {self.hosts}")
        if EXTRA_OCTET + len(self.extra_hosts) > 255:
            raise ValueError("too many extra hosts")
        if not heartbeat_devices or set(heartbeat_devices) - set(LINKS):
            raise ValueError(f"heartbeat_devices: some of {sorted(LINKS)}, not {heartbeat_devices!r}")
        self.heartbeat_devices = tuple(heartbeat_devices)
        self.interval_ms = interval_ms
        self.timeout_ms = timeout_ms
        self.sync_wait = sync_wait
        self.key = key
        self.groups = list(groups)
        self.cluster_xml = cluster_xml
        self.server_xml = dict(server_xml or {})
        self.heartbeat_xml = heartbeat_xml
        self.root_xml = root_xml
        self.resource_xml = resource_xml
        self.monitor_xml = monitor_xml
        self.threadpool = threadpool
        self.processes = {}  # server -> its daemon's LabProcess (its supervisor's when supervised)
        self._supervise = {}  # server -> cpro-supervise options, while start_supervised() starts it
        self.spawned = {host: [] for host in self.hosts}  # every LabProcess started in host
        self.faults = {}  # (host, dev) -> (direction, loss)
        self.powered_off = set()  # hosts server_down() powered off (see poweroffs() for the OS action's)
        self.config_path = os.path.join(self.workdir, "clp.conf")
        self.state_path = os.path.join(self.workdir, "lab.json")
        self.poweroff_log_path = os.path.join(self.workdir, "poweroff.log")
        self.poweroff_command_path = os.path.join(self.workdir, "bin", "poweroff")
        self.state = self._describe()
        self.created = False
        self.destroyed = False

    # -- names and addresses ------------------------------------------------------------

    def netns(self, host):
        """The network namespace name of host (or of the switch: netns('switch'))."""
        return f"{PREFIX}-{self.id}-{host}"

    @property
    def switch_netns(self):
        return self.netns(SWITCH)

    def namespaces(self):
        return [self.switch_netns] + [self.netns(h) for h in self.hosts]

    def devices(self, host):
        return list(self.state["hosts"][host]["links"])

    def address(self, host, dev="eth1"):
        """IPv4 address (no prefix) of host's NIC dev: eth0 interconnect, eth1 public LAN."""
        return self.state["hosts"][host]["links"][dev]["address"]

    def mac(self, host, dev="eth1"):
        return self.state["hosts"][host]["links"][dev]["mac"]

    def port(self, host, dev="eth1"):
        """Name of host's switch port for dev (in the switch namespace)."""
        return self.state["hosts"][host]["links"][dev]["port"]

    def _octet(self, host):
        if host in self.names:
            return self.names.index(host) + 1
        if host == self.client:
            return CLIENT_OCTET
        return EXTRA_OCTET + self.extra_hosts.index(host)

    def _describe(self):
        """The lab as data (also written to lab.json for cpro.testing.lab.poweroff)."""
        hosts = {}
        for k, host in enumerate(self.hosts):
            octet = self._octet(host)
            devs = ("eth0", "eth1") if host in self.names else ("eth1",)
            links = {}
            for dev in devs:
                bridge, net = LINKS[dev]
                links[dev] = {"address": f"{net}.{octet}", "prefixlen": PREFIXLEN, "bridge": bridge,
                              "port": f"p{k}e{dev[-1]}", "mac": f"02:00:00:00:{int(dev[-1]):02x}:{octet:02x}"}
            hosts[host] = {"netns": self.netns(host), "links": links}
        return {"id": self.id, "switch": self.switch_netns, "log": self.poweroff_log_path, "hosts": hosts}

    # -- set-up and clean-up ----------------------------------------------------------------

    def _in_thread(self, f, *args):
        pool = self.threadpool or self.reactor.getThreadPool()
        return threads.deferToThreadPool(self.reactor, pool, f, *args)

    @defer.inlineCallbacks
    def _ip_batch(self, text, netns=None):
        argv = [tool("ip")] + (["-n", netns] if netns else []) + ["-batch", "-"]
        code, out = yield run(self.reactor, argv, stdin=text)
        if code != 0:
            raise LabError(f"ip {' '.join(argv[1:])}: {out.strip()}\n{text}")

    @defer.inlineCallbacks
    def create(self):
        """Build the topology and write lab.json, the power-off command and (with servers) clp.conf."""
        if not is_root():
            raise LabError("the network-namespace lab needs root")
        if self.created:
            return
        yield self._in_thread(cleanup_stale)
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.state_path, "w") as f:
            json.dump(self.state, f, indent=1)
        self._write_poweroff_command()
        _live_labs[self.id] = self
        self.created = True
        sw = self.switch_netns
        top = [f"netns add {ns}" for ns in self.namespaces()]
        top += [f"link add {br} netns {sw} type bridge stp_state 0 mcast_snooping 0" for br in ("ic", "pub")]
        switch = ["link set ic up", "link set pub up"]
        per_host = {}
        for host, entry in self.state["hosts"].items():
            lines = ["link set lo up"]
            for dev, link in entry["links"].items():
                top.append(f"link add {dev} netns {entry['netns']} address {link['mac']} type veth "
                           f"peer name {link['port']} netns {sw}")
                switch.append(f"link set {link['port']} master {link['bridge']} up")
                lines += [f"address add {link['address']}/{link['prefixlen']} dev {dev}", f"link set {dev} up"]
            per_host[entry["netns"]] = lines
        yield self._ip_batch("\n".join(top) + "\n")
        yield defer.gatherResults(
            [self._ip_batch("\n".join(switch) + "\n", sw)]
            + [self._ip_batch("\n".join(lines) + "\n", ns) for ns, lines in per_host.items()],
            consumeErrors=True).addErrback(lambda f: f.value.subFailure.raiseException())
        if self.names:
            self.write_config()

    def _write_poweroff_command(self):
        path = self.poweroff_command_path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # OS actions run with a minimal environment: say which cpro and which python.
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\n# Harmless OS action of the lab: powers off only this lab host's namespace.\n"
                    f"PYTHONPATH={shlex.quote(lab_env()['PYTHONPATH'])} exec {shlex.quote(sys.executable)} "
                    f"-m cpro.testing.lab.poweroff {shlex.quote(self.state_path)} \"$@\"\n")
        os.chmod(path, 0o755)

    @defer.inlineCallbacks
    def destroy(self):
        """Kill every process in the lab's namespaces and delete them. Idempotent."""
        if self.destroyed or not self.created:
            self.destroyed = True
            return
        self.destroyed = True
        # By PID first: a process still between fork and entering its namespace
        # is not found by the namespace scan, and would keep the namespace alive.
        for proto in self._lab_processes():
            proto.send_signal(signal.SIGKILL)
        for ns in self.namespaces():
            yield self._in_thread(poweroff.kill_namespace, ns)
        code, out = yield run(self.reactor, [tool("ip"), "-force", "-batch", "-"],
                              stdin="".join(f"netns del {ns}\n" for ns in self.namespaces()))
        yield defer.DeferredList([p.ended for p in self._lab_processes()])
        _live_labs.pop(self.id, None)
        self._remove_run_dir()
        leftovers = [ns for ns in self.namespaces() if poweroff.netns_identity(ns) is not None]
        if leftovers:
            raise LabError(f"could not delete namespaces {leftovers}: {out.strip()}")

    def _lab_processes(self, host=None):
        """Every LabProcess the lab started (in host): spawned ones and daemons."""
        hosts = [host] if host else self.hosts
        out = [p for h in hosts for p in self.spawned[h]]
        return out + [p for name, p in self.processes.items() if name in hosts]

    def destroy_now(self):
        """destroy() without the reactor, blocking (for atexit)."""
        if self.destroyed or not self.created:
            return
        self.destroyed = True
        for proto in self._lab_processes():
            proto.send_signal(signal.SIGKILL)
        _delete_namespaces(self.namespaces())
        _live_labs.pop(self.id, None)
        self._remove_run_dir()

    def _remove_run_dir(self):
        if self._short_run_dir:
            shutil.rmtree(self._short_run_dir, ignore_errors=True)

    # -- processes in hosts ---------------------------------------------------------------

    def in_host(self, host, argv):
        """argv run inside host's namespace."""
        return [tool("ip"), "netns", "exec", self.netns(host), *argv]

    def spawn(self, host, argv, env=None, log_path=None, stdin=None):
        """Start argv inside host, leading its own process group. Returns its LabProcess:
        .pid, .ended (Deferred of the exit code, None when a signal ended it: see .signal),
        .send_signal(sig) and .kill() (to its whole group), .stop(reactor, timeout),
        .output (when no log_path: the first 64 KiB)."""
        proto = LabProcess(log_path, stdin=stdin, group=True)
        full = self.in_host(host, [tool("setsid"), *argv])
        self.reactor.spawnProcess(proto, full[0], full, env=env if env is not None else lab_env())
        self.spawned[host].append(proto)
        return proto

    @defer.inlineCallbacks
    def run(self, host, argv, timeout=30, env=None, stdin=None):
        """Run a short command inside host; Deferred (exit code, output). SIGKILLed after timeout
        seconds (exit code 128 + 9 then)."""
        proto = self.spawn(host, argv, env=env, stdin=stdin)
        timer = self.reactor.callLater(timeout, proto.send_signal, signal.SIGKILL)
        code = yield proto.ended
        if timer.active():
            timer.cancel()
        return (code if code is not None else 128 + (proto.signal or 0)), proto.output.decode(errors="replace")

    def serve(self, host, port, name=None):
        """Start cpro.testing.lab.probe's TCP service in host: it answers each connection with name
        (default: host) and closes. Returns its LabProcess."""
        return self.spawn(host, [sys.executable, "-m", "cpro.testing.lab.probe", "serve", "--port", str(port),
                                 "--name", name or host])

    @defer.inlineCallbacks
    def client_connect(self, address, port, host=None, timeout=1.0):
        """Connect from host (default: the client) to address:port and read one line;
        Deferred of that line, or None if the connection failed or timed out."""
        code, out = yield self.run(host or self.client, [sys.executable, "-c", _CONNECT, address, str(port),
                                                         str(timeout)], timeout=timeout + 10)
        return out.strip() if code == 0 else None

    def daemon_argv(self, name, argv):
        if name in self._supervise:
            argv = [sys.executable, "-m", "cpro.supervisor", *self._supervise[name], "--", *argv]
        return self.in_host(name, argv)

    def start_supervised(self, name, action=None, supervisor_args=(), extra_args=()):
        """start(name) with cpro-supervise as the daemon's parent: it acts on a crash as
        pm/exec0/recover in clp.conf says (action: restart|shutdown|reboot overrides it; the
        lab's shutdown and reboot power off this host only). Returns the supervisor's
        LabProcess (also processes[name]); the daemon is its child."""
        self._supervise[name] = [*(["--action", action] if action else []), *supervisor_args]
        try:
            return self.start(name, extra_args)
        finally:
            del self._supervise[name]

    @defer.inlineCallbacks
    def ping(self, host, address, timeout=0.5):
        """True if address answers one ICMP echo from host within timeout seconds."""
        code, _ = yield self.run(host, [tool("ping"), "-n", "-q", "-c", "1", "-W", str(timeout), address],
                                 timeout=timeout + 5)
        return code == 0

    @defer.inlineCallbacks
    def neighbour(self, host, address):
        """MAC address host's neighbour table holds for address, or None (none, or unresolved)."""
        code, out = yield self.run(host, [tool("ip"), "-j", "neigh", "show", address])
        if code != 0:
            raise LabError(f"ip neigh show {address} in {host}: {out.strip()}")
        for entry in json.loads(out or "[]"):
            if entry.get("dst") == address and entry.get("lladdr"):
                return entry["lladdr"]
        return None

    @defer.inlineCallbacks
    def flush_neighbours(self, host):
        """Empty host's neighbour (ARP) table: an unanswered address stays INCOMPLETE for
        about 3 s, during which new packets to it send no ARP request."""
        code, out = yield self.run(host, [tool("ip"), "neigh", "flush", "all"])
        if code != 0:
            raise LabError(f"ip neigh flush all in {host}: {out.strip()}")

    @defer.inlineCallbacks
    def addresses(self, host, dev="eth1"):
        """IPv4 addresses (no prefix) on host's NIC dev, the lab's own first."""
        code, out = yield self.run(host, [tool("ip"), "-j", "-4", "address", "show", "dev", dev])
        if code != 0:
            raise LabError(f"ip address show dev {dev} in {host}: {out.strip()}")
        found = [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])]
        return sorted(found, key=lambda a: a != self.address(host, dev))

    @defer.inlineCallbacks
    def holders(self, address, hosts=None):
        """Hosts (servers by default) with address on one of their NICs."""
        out = []
        for host in hosts or self.names:
            for dev in self.devices(host):
                if address in (yield self.addresses(host, dev)):
                    out.append(host)
                    break
        return out

    # -- faults -----------------------------------------------------------------------------

    def _table(self, host):
        return f"{PREFIX}_{host}"

    @defer.inlineCallbacks
    def nft(self, script):
        """Run an nft script in the switch namespace."""
        code, out = yield run(self.reactor, [tool("ip"), "netns", "exec", self.switch_netns, tool("nft"), "-f", "-"],
                              stdin=script)
        if code != 0:
            raise LabError(f"nft: {out.strip()}\n{script}")

    def _chains(self, host, dev, direction):
        port = self.port(host, dev)
        chains = []
        if direction in ("both", "out"):
            chains.append((f"{dev}_from_host", "ingress", port))
        if direction in ("both", "in"):
            chains.append((f"{dev}_to_host", "egress", port))
        return chains

    @defer.inlineCallbacks
    def block_link(self, host, dev, direction="both", loss=None):
        """Drop frames on host's link dev at its switch port: direction "both", "out" (sent by
        host) or "in" (to host); loss: percentage (0.1-100) dropped at random instead of all."""
        if direction not in ("both", "in", "out"):
            raise ValueError(f"direction: both, in or out, not {direction!r}")
        if loss is not None and not 0 < loss <= 100:
            raise ValueError(f"loss: a percentage above 0, up to 100, not {loss!r}")
        # Per mille: numgen compares integers, and 100 % must be a plain drop (mod 1000 < 1000 is invalid).
        verdict = "drop" if loss is None or loss >= 100 else f"numgen random mod 1000 < {max(1, round(loss * 10))} drop"
        table = self._table(host)
        lines = [f"add table netdev {table}"]
        for chain, hook, port in self._chains(host, dev, "both"):
            lines += [f"add chain netdev {table} {chain} {{ type filter hook {hook} device \"{port}\" "
                      f"priority 0 ; policy accept ; }}", f"flush chain netdev {table} {chain}"]
        for chain, _, _ in self._chains(host, dev, direction):
            lines.append(f"add rule netdev {table} {chain} {verdict}")
        yield self.nft("\n".join(lines) + "\n")
        self.faults[(host, dev)] = (direction, loss)

    @defer.inlineCallbacks
    def block_between(self, host, address, dev="eth1"):
        """Drop what host sends to address on dev (IPv4 and ARP) at its switch port: host can no
        longer reach address while everyone else still can. heal(host) removes it."""
        table = self._table(host)
        chain = f"{dev}_to_{address.replace('.', '_')}"
        yield self.nft(
            f"add table netdev {table}\n"
            f"add chain netdev {table} {chain} {{ type filter hook ingress device \"{self.port(host, dev)}\" "
            f"priority -1 ; policy accept ; }}\n"
            f"flush chain netdev {table} {chain}\n"
            f"add rule netdev {table} {chain} ip daddr {address} drop\n"
            f"add rule netdev {table} {chain} arp daddr ip {address} drop\n")
        self.faults[(host, f"{dev}>{address}")] = ("out", None)

    @defer.inlineCallbacks
    def block_interconnect(self, server=None, **kw):
        """Drop all traffic on server's interconnect (eth0), or on every server's when server is None."""
        for name in [server] if server else self.names:
            yield self.block_link(name, "eth0", **kw)

    def block_public(self, host, **kw):
        """Drop all traffic on host's public LAN link (eth1)."""
        return self.block_link(host, "eth1", **kw)

    @defer.inlineCallbacks
    def isolate(self, host, **kw):
        """Drop all traffic on every link of host (a silent, total partition; carrier stays)."""
        for dev in self.devices(host):
            yield self.block_link(host, dev, **kw)

    @defer.inlineCallbacks
    def heal(self, host=None, dev=None):
        """Remove the drop rules of host's link dev (all its links when dev is None; every
        host's when host is None)."""
        if host is None:
            for h in sorted({h for h, _ in self.faults}):
                yield self.heal(h)
            return
        table = self._table(host)
        if dev is None:
            # "add" first: deleting a table that does not exist is an error.
            yield self.nft(f"add table netdev {table}\ndelete table netdev {table}\n")
            for key in [k for k in self.faults if k[0] == host]:
                del self.faults[key]
            return
        lines = [f"add table netdev {table}"]
        for chain, hook, port in self._chains(host, dev, "both"):
            lines += [f"add chain netdev {table} {chain} {{ type filter hook {hook} device \"{port}\" "
                      f"priority 0 ; policy accept ; }}", f"flush chain netdev {table} {chain}"]
        yield self.nft("\n".join(lines) + "\n")
        self.faults.pop((host, dev), None)

    def heal_all(self):
        return self.heal()

    @defer.inlineCallbacks
    def server_down(self, host):
        """Power host off (see the module docstring). Fires with the PIDs killed, once the
        lab's own processes in host have ended."""
        self.powered_off.add(host)
        yield self._ip_batch(poweroff.port_batch(self.state, host, up=False), self.switch_netns)
        killed = yield self._in_thread(poweroff.kill_namespace, self.netns(host))
        yield self._ip_batch(poweroff.reset_batch(self.state, host), self.netns(host))
        yield defer.DeferredList([p.ended for p in self._lab_processes(host)])
        return killed

    @defer.inlineCallbacks
    def power_on(self, host):
        """Reconnect a powered-off host (its daemon is started separately: start(host))."""
        yield self._ip_batch(poweroff.port_batch(self.state, host, up=True), self.switch_netns)
        self.powered_off.discard(host)

    def daemon_crash(self, server):
        """SIGKILL server's cpro daemon only (host and addresses stay); fires when it has ended."""
        return self.kill(server)

    def stall(self, server):
        """SIGSTOP server's daemon (a stalled process: its sockets stay open)."""
        self.signal(server, signal.SIGSTOP)

    def resume(self, server):
        self.signal(server, signal.SIGCONT)

    def poweroffs(self):
        """Power-offs done by the lab's OS-action command: [(time, host, action)]."""
        try:
            with open(self.poweroff_log_path) as f:
                return [(float(t), h, a) for t, h, a in (line.split() for line in f if line.strip())]
        except FileNotFoundError:
            return []

    # -- clp.conf -----------------------------------------------------------------------------

    def write_config(self, path=None):
        """Write clp.conf (path or config_path) from the lab and its fragments; returns the path."""
        servers = []
        heartbeats = "".join(f'<lanhb name="lanhb{d + 1}"><priority>{d}</priority><device>{d}</device></lanhb>'
                             for d, dev in enumerate(("eth0", "eth1")) if dev in self.heartbeat_devices)
        for i, name in enumerate(self.names):
            devices = "".join(
                f'<device id="{p}"><type>lan</type><info>{self.address(name, dev)}</info></device>'
                for p, dev in enumerate(("eth0", "eth1")))
            servers.append(f'<server name="{name}"><priority>{i}</priority>{devices}'
                           f'{self.server_xml.get(name, "")}</server>')
        groups, exec_resources = self._groups_xml(self.groups)
        types = '<types name="exec"/>' if exec_resources else ""
        command = escape(shlex.quote(self.poweroff_command_path))
        monitor = f"<monitor>{self.monitor_xml}</monitor>" if self.monitor_xml else ""
        xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<root>
  <cluster>
    <name>lab</name>
    <key>{escape(self.key)}</key>
    <heartbeat><interval>{self.interval_ms}</interval><timeout>{self.timeout_ms}</timeout></heartbeat>
    <syncwait>{self.sync_wait}</syncwait>
    <cfwait>{self.sync_wait}</cfwait>
    <osaction><shutdown>{command}</shutdown><reboot>{command}</reboot></osaction>
    {self.cluster_xml}
  </cluster>
  {''.join(servers)}
  <heartbeat><types name="lanhb"/>
    {heartbeats}
    {self.heartbeat_xml}
  </heartbeat>
  {groups}
  {self.root_xml}
  <resource>{types}{exec_resources}{self.resource_xml}</resource>
  {monitor}
</root>
"""
        path = path or self.config_path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(xml)
        return path


# -- labs left behind ---------------------------------------------------------------------------

_live_labs = {}  # id -> NetnsLab created and not yet destroyed by this process


def _delete_namespaces(names):
    """Kill every process in the namespaces, then delete them (blocking)."""
    for ns in names:
        poweroff.kill_namespace(ns)
    if names:
        subprocess.run([poweroff.ip_path(), "-force", "-batch", "-"],
                       input="".join(f"netns del {ns}\n" for ns in names).encode(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)


def _owner_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def lab_namespaces():
    """{namespace name: owner pid} of every namespace named like a lab's."""
    try:
        entries = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return {}
    return {name: int(m.group(1)) for name in entries if (m := _NETNS_NAME.match(name))}


def cleanup_stale(include_live=False):
    """Remove the namespaces (with their bridges, veths, nft tables and processes) of labs
    whose process has died; with include_live, of every lab except this process's own.
    Blocking. Returns the namespace names removed."""
    stale = sorted(name for name, owner in lab_namespaces().items()
                   if not _owner_alive(owner) or (include_live and owner != os.getpid()))
    _delete_namespaces(stale)
    return stale


@atexit.register
def _destroy_live_labs():
    for lab in list(_live_labs.values()):
        lab.destroy_now()


# -- command line ---------------------------------------------------------------------------------

def _hold(reactor, options):
    """Create a lab, optionally a `sleep` in every host, print it as JSON and wait for a signal;
    the lab is removed at exit (by the atexit handler)."""
    lab = NetnsLab(reactor, options.workdir, servers=options.servers, extra_hosts=options.extra)

    @defer.inlineCallbacks
    def go():
        yield lab.create()
        if options.sleepers:
            for host in lab.hosts:
                lab.spawn(host, ["sleep", "3600"])
        print(json.dumps({"id": lab.id, "namespaces": lab.namespaces(),
                          "hosts": {h: lab.state["hosts"][h] for h in lab.hosts}}), flush=True)
        yield defer.Deferred()  # until the reactor stops

    return go()


def main(argv=None):
    import argparse
    import tempfile

    from twisted.internet import task

    parser = argparse.ArgumentParser(prog="python -m cpro.testing.lab.netns", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    clean = sub.add_parser("cleanup", help="remove labs left by dead processes")
    clean.add_argument("--all", action="store_true", help="also labs of running processes")
    hold = sub.add_parser("hold", help="create a lab and keep it until SIGINT/SIGTERM")
    hold.add_argument("--servers", type=int, default=2)
    hold.add_argument("--extra", action="append", default=[], help="an extra host (repeatable)")
    hold.add_argument("--sleepers", action="store_true", help="run a sleep in every host")
    hold.add_argument("--workdir", default=None)
    options = parser.parse_args(argv)
    if options.command == "cleanup":
        for name in cleanup_stale(include_live=options.all):
            print(name)
        return 0
    options.workdir = options.workdir or tempfile.mkdtemp(prefix="cpronl-")
    task.react(_hold, [options])


if __name__ == "__main__":
    sys.exit(main())
