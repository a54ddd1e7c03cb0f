"""A cluster of real cpro daemons on one machine, for tests, the demo and benchmarks.

Each server is a real `twistd -n cpro` process on its own loopback address
(127.0.0.1, 127.0.0.2, ...), with two heartbeat paths (127.0.0.N and
127.0.1.N). As root the whole cluster runs inside a private network
namespace, so its ports cannot clash with anything on the host and
heartbeat paths can be cut with nftables rules inside it; otherwise it runs
on the host's loopback with a random port block.

Everything is asynchronous (Twisted): nothing here blocks the reactor.
"""

import os
import random
import shutil
import signal
from xml.sax.saxutils import escape

from twisted.internet import defer

from cpro.testing.lab.common import (PACKAGE_ROOT, DaemonCluster, LabError, group_current, is_root, run,
                             run_with_cleanup, summary, tool)

# Names other modules import from here.
__all__ = ["LoopbackCluster", "LabError", "PACKAGE_ROOT", "group_current", "is_root", "run", "run_with_cleanup",
           "summary"]


class LoopbackCluster(DaemonCluster):
    """N servers, groups of exec resources, fault injection.

    @param groups: list of dicts {name, policy (server names), start_auto,
        failback_auto, exclusive, resources: [{name, start (script text),
        stop (script text), sync (bool), act_retry, act_fo, act_action}]}.
    @param monitor_xml: monitor elements (<genw name=...>...</genw>) put in <monitor>.
    @param resource_xml: more resource elements put in <resource>.
    """

    def __init__(self, reactor, workdir, servers=2, groups=(), interval_ms=100, timeout_ms=500,
                 sync_wait=20, key="lab-key", netns=None, extra_cluster_xml="", monitor_xml="", resource_xml=""):
        self.reactor = reactor
        self.workdir = os.path.abspath(workdir)
        self.names = [f"srv{i + 1}" for i in range(servers)]
        self.groups = list(groups)
        self.interval_ms = interval_ms
        self.timeout_ms = timeout_ms
        self.sync_wait = sync_wait
        self.key = key
        self.netns = (f"cprolab{os.getpid()}{random.randint(0, 9999)}" if (netns is None and is_root())
                      else (netns or None))
        self.base_port = 29001 if self.netns else random.randint(30000, 60000) // 10 * 10
        self.extra_cluster_xml = extra_cluster_xml
        # Fragments written as they are: monitors inside <monitor>, more resources inside <resource>.
        self.monitor_xml = monitor_xml
        self.resource_xml = resource_xml
        self.processes = {}
        self.config_path = os.path.join(self.workdir, "clp.conf")
        self._nft_ready = False
        self._short_run_dir = None

    # -- set-up ----------------------------------------------------------------

    def address(self, name, path=0):
        return f"127.0.{path}.{self.names.index(name) + 1}"

    def port(self, kind):
        return self.base_port + {"internal": 0, "lanhb": 1, "alert": 2, "lankhb": 5}[kind]

    def write_config(self):
        os.makedirs(self.run_dir(), exist_ok=True)
        servers = []
        for i, name in enumerate(self.names):
            devices = "".join(
                f'<device id="{p}"><type>lan</type><info>{self.address(name, p)}</info></device>' for p in (0, 1))
            servers.append(f'<server name="{name}"><priority>{i}</priority>{devices}</server>')
        groups, resources = self._groups_xml(self.groups)
        types = '<types name="exec"/>' if resources else ""
        xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<root>
  <cluster>
    <name>lab</name>
    <key>{escape(self.key)}</key>
    <heartbeat><interval>{self.interval_ms}</interval><timeout>{self.timeout_ms}</timeout></heartbeat>
    <syncwait>{self.sync_wait}</syncwait>
    <cfwait>{self.sync_wait}</cfwait>
    <ports><internal>{self.port("internal")}</internal><lanhb>{self.port("lanhb")}</lanhb><alert>{self.port("alert")}</alert><lankhb>{self.port("lankhb")}</lankhb></ports>
    <osaction><shutdown>{escape(self._script("osaction-shutdown", self._marker_script("OSACTION shutdown")))}</shutdown><reboot>{escape(self._script("osaction-reboot", self._marker_script("OSACTION reboot")))}</reboot></osaction>
    {self.extra_cluster_xml}
  </cluster>
  {''.join(servers)}
  <heartbeat><types name="lanhb"/>
    <lanhb name="lanhb1"><priority>0</priority><device>0</device></lanhb>
    <lanhb name="lanhb2"><priority>1</priority><device>1</device></lanhb>
  </heartbeat>
  {groups}
  <resource>{types}{resources}{self.resource_xml}</resource>
  <monitor>{self.monitor_xml}</monitor>
</root>
"""
        with open(self.config_path, "w") as f:
            f.write(xml)
        return self.config_path

    @defer.inlineCallbacks
    def create(self):
        """Write the configuration and, as root, create the network namespace."""
        self.write_config()
        if self.netns:
            yield self._ip("netns", "add", self.netns)
            yield self._ip("-n", self.netns, "link", "set", "lo", "up")

    @defer.inlineCallbacks
    def _ip(self, *args):
        code, out = yield run(self.reactor, [tool("ip"), *args])
        if code != 0:
            raise LabError(f"ip {' '.join(args)}: {out.strip()}")
        return out

    def daemon_argv(self, name, argv):
        return self.in_netns(argv)

    def in_netns(self, argv):
        if not self.netns:
            return list(argv)
        return [tool("ip"), "netns", "exec", self.netns, *argv]

    @defer.inlineCallbacks
    def destroy(self):
        """Stop everything this lab started and remove the namespace."""
        for name, proto in list(self.processes.items()):
            if not proto.ended.called:
                self.signal(name, signal.SIGKILL)
                yield proto.ended
        if self._nft_ready:
            try:
                yield self.nft("delete", "table", "inet", "cprolab")
            except LabError:
                pass
        if self.netns:
            yield self.kill_namespace_processes()
            try:
                yield self._ip("netns", "del", self.netns)
            except LabError:
                pass
        yield self.kill_scripts()
        if self._short_run_dir:
            shutil.rmtree(self._short_run_dir, ignore_errors=True)

    @defer.inlineCallbacks
    def kill_namespace_processes(self):
        """SIGKILL every process inside the lab's namespace (whatever scripts,
        from whatever directory, the servers started)."""
        try:
            out = yield self._ip("netns", "pids", self.netns)
        except LabError:
            return
        for pid in out.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass

    @defer.inlineCallbacks
    def kill_scripts(self):
        """Kill leftover processes started from this lab's scripts directory."""
        import psutil

        scripts = os.path.join(self.workdir, "scripts")
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(scripts in part for part in (p.info["cmdline"] or [])):
                    os.killpg(p.info["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        yield defer.succeed(None)

    # -- faults --------------------------------------------------------------------

    @defer.inlineCallbacks
    def nft(self, *args):
        if not self.netns:
            raise LabError("fault injection with nftables needs root (a private network namespace)")
        code, out = yield run(self.reactor, self.in_netns([tool("nft"), *args]))
        if code != 0:
            raise LabError(f"nft {' '.join(args)}: {out.strip()}")
        return out

    @defer.inlineCallbacks
    def _ensure_table(self):
        if not self._nft_ready:
            yield self.nft("add", "table", "inet", "cprolab")
            yield self.nft("add", "chain", "inet", "cprolab", "input",
                           "{ type filter hook input priority 0 ; policy accept ; }")
            self._nft_ready = True

    @defer.inlineCallbacks
    def block_path(self, name, path):
        """Drop every heartbeat packet to server name on heartbeat path index path."""
        yield self._ensure_table()
        yield self.nft("add", "rule", "inet", "cprolab", "input", "ip", "daddr", self.address(name, path),
                       "udp", "dport", str(self.port("lanhb")), "drop")

    @defer.inlineCallbacks
    def isolate(self, name):
        """Drop every packet to and from server name's addresses (a cut cable)."""
        yield self._ensure_table()
        for p in (0, 1):
            addr = self.address(name, p)
            yield self.nft("add", "rule", "inet", "cprolab", "input", "ip", "saddr", addr, "drop")
            yield self.nft("add", "rule", "inet", "cprolab", "input", "ip", "daddr", addr, "drop")

    @defer.inlineCallbacks
    def heal(self):
        if self._nft_ready:
            yield self.nft("flush", "table", "inet", "cprolab")


