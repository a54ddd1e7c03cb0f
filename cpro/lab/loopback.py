"""A cluster of real cpro daemons on one machine, for tests, the demo and benchmarks.

Each server is a real `twistd -n cpro` process on its own loopback address
(127.0.0.1, 127.0.0.2, ...), with two heartbeat paths (127.0.0.N and
127.0.1.N). As root the whole cluster runs inside a private network
namespace, so its ports cannot clash with anything on the host and
heartbeat paths can be cut with nftables rules inside it; otherwise it runs
on the host's loopback with a random port block.

Everything is asynchronous (Twisted): nothing here blocks the reactor.
"""

import json
import os
import random
import shutil
import signal
import sys
import tempfile
import textwrap
from xml.sax.saxutils import escape

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.procutils import which

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# sun_path holds 108 bytes; trial's temp directories are often deeper than that.
MAX_SOCKET_PATH = 100


class LabError(Exception):
    pass


def is_root():
    return os.geteuid() == 0


class _OneReply(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, line):
        self.line = line
        self.reply = defer.Deferred()

    def connectionMade(self):
        self.sendLine(self.line.encode())

    def lineReceived(self, line):
        if not self.reply.called:
            self.reply.callback(json.loads(line.decode()))
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.reply.called:
            self.reply.errback(reason)


class _DaemonProcess(protocol.ProcessProtocol):
    def __init__(self, log_path):
        self.log = open(log_path, "ab")
        self.ended = defer.Deferred()
        self.exit_code = None

    def outReceived(self, data):
        self.log.write(data)
        self.log.flush()

    errReceived = outReceived

    def processEnded(self, reason):
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.log.close()
        self.ended.callback(self.exit_code)


def run(reactor, argv, env=None):
    """Run a short command; Deferred (exit code, output)."""
    from twisted.internet.utils import getProcessOutputAndValue

    d = getProcessOutputAndValue(argv[0], argv[1:], env=env or os.environ, reactor=reactor)
    d.addCallback(lambda r: (r[2], (r[0] + r[1]).decode(errors="replace")))
    return d


class LoopbackCluster:
    """N servers, groups of exec resources, fault injection.

    @param groups: list of dicts {name, policy (server names), start_auto,
        failback_auto, exclusive, resources: [{name, start (script text),
        stop (script text), sync (bool), act_retry, act_fo, act_action}]}.
    """

    def __init__(self, reactor, workdir, servers=2, groups=(), interval_ms=100, timeout_ms=500,
                 sync_wait=20, key="lab-key", netns=None, extra_cluster_xml=""):
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
        self.processes = {}
        self.config_path = os.path.join(self.workdir, "clp.conf")
        self._nft_ready = False
        self._short_run_dir = None

    # -- set-up ----------------------------------------------------------------

    def address(self, name, path=0):
        return f"127.0.{path}.{self.names.index(name) + 1}"

    def admin_endpoint(self, name):
        return f"unix:{self.admin_path(name)}"

    def admin_path(self, name):
        return os.path.join(self.run_dir(), f"{name}.sock")

    def run_dir(self):
        """Directory of the admin sockets: under workdir, or a short one in /tmp if that is too deep."""
        preferred = os.path.join(self.workdir, "run")
        if len(preferred) + len("/srv99.sock") <= MAX_SOCKET_PATH:
            return preferred
        if self._short_run_dir is None:
            self._short_run_dir = tempfile.mkdtemp(prefix="cprolab-")
        return self._short_run_dir

    def state_dir(self, name):
        return os.path.join(self.workdir, name)

    def port(self, kind):
        return self.base_port + {"internal": 0, "lanhb": 1, "alert": 2, "lankhb": 5}[kind]

    def marks_path(self):
        return os.path.join(self.workdir, "marks.log")

    def write_config(self):
        os.makedirs(self.run_dir(), exist_ok=True)
        servers = []
        for i, name in enumerate(self.names):
            devices = "".join(
                f'<device id="{p}"><type>lan</type><info>{self.address(name, p)}</info></device>' for p in (0, 1))
            servers.append(f'<server name="{name}"><priority>{i}</priority>{devices}</server>')
        groups, resources = [], []
        for g in self.groups:
            policy = "".join(f'<policy name="{s}"><order>{o}</order></policy>'
                             for o, s in enumerate(g.get("policy", self.names)))
            members = "".join(f'<resource name="exec@{r["name"]}"/>' for r in g["resources"])
            groups.append(
                f'<group name="{g["name"]}">{members}{policy}<start>{int(g.get("start_auto", True))}</start>'
                f'<failback>{int(g.get("failback_auto", False))}</failback>'
                f'<exclusive>{int(g.get("exclusive", 0))}</exclusive></group>')
            for r in g["resources"]:
                resources.append(self._exec_xml(g["name"], r))
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
  {''.join(groups)}
  <resource>{types}{''.join(resources)}</resource>
</root>
"""
        with open(self.config_path, "w") as f:
            f.write(xml)
        return self.config_path

    def _marker_script(self, what):
        return f'#!/bin/sh\necho "$(date +%s.%N) $CPRO_SERVER_NAME {what}" >> {self.marks_path()}\n'

    def _script(self, name, text):
        path = os.path.join(self.workdir, "scripts", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        os.chmod(path, 0o755)
        return path

    def _exec_xml(self, group, r):
        marks = self.marks_path()
        default_start = (f'#!/bin/sh\necho "$(date +%s.%N) $CPRO_SERVER_NAME START {r["name"]} '
                         f'$CLP_EVENT $CLP_SERVER" >> {marks}\n')
        default_stop = (f'#!/bin/sh\necho "$(date +%s.%N) $CPRO_SERVER_NAME STOP {r["name"]} '
                        f'$CLP_EVENT" >> {marks}\n')
        start = self._script(f"{group}/{r['name']}/start.sh", r.get("start", default_start))
        stop = self._script(f"{group}/{r['name']}/stop.sh", r.get("stop", default_stop))
        act = "".join(f"<{k}>{r[k2]}</{k}>" for k, k2 in (("retry", "act_retry"), ("fo", "act_fo"),
                                                          ("action", "act_action")) if k2 in r)
        return (f'<exec name="{r["name"]}"><parameters><act><path>{start}</path>'
                f'<sync>{int(r.get("sync", True))}</sync></act><deact><path>{stop}</path></deact>'
                f'<timeout><start>{r.get("start_timeout", 30)}</start><stop>30</stop></timeout></parameters>'
                f'<act>{act}</act><deact><action>1</action></deact></exec>')

    @defer.inlineCallbacks
    def create(self):
        """Write the configuration and, as root, create the network namespace."""
        self.write_config()
        if self.netns:
            yield self._ip("netns", "add", self.netns)
            yield self._ip("-n", self.netns, "link", "set", "lo", "up")

    @defer.inlineCallbacks
    def _ip(self, *args):
        code, out = yield run(self.reactor, [which("ip")[0] if which("ip") else "/usr/sbin/ip", *args])
        if code != 0:
            raise LabError(f"ip {' '.join(args)}: {out.strip()}")
        return out

    def in_netns(self, argv):
        if not self.netns:
            return list(argv)
        return [which("ip")[0] if which("ip") else "/usr/sbin/ip", "netns", "exec", self.netns, *argv]

    # -- daemons -----------------------------------------------------------------

    def twistd(self):
        candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
        return candidate if os.path.exists(candidate) else which("twistd")[0]

    def start(self, name, extra_args=(), config=None):
        """Spawn the daemon of server name. Returns the process protocol."""
        os.makedirs(self.state_dir(name), exist_ok=True)
        proto = _DaemonProcess(os.path.join(self.workdir, f"{name}.out"))
        argv = self.in_netns([
            self.twistd(), "-n", "--pidfile=", "--logfile", os.path.join(self.state_dir(name), "cpro.log"),
            "cpro", "--config", config or self.config_path, "--server", name,
            "--admin", self.admin_endpoint(name), "--state-dir", self.state_dir(name), *extra_args])
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.reactor.spawnProcess(proto, argv[0], argv, env=env)
        self.processes[name] = proto
        return proto

    def pid(self, name):
        proto = self.processes.get(name)
        return proto.transport.pid if proto and proto.transport else None

    def signal(self, name, sig):
        pid = self.pid(name)
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill(self, name):
        """SIGKILL the daemon: a crash as abrupt as a power loss for the cluster."""
        self.signal(name, signal.SIGKILL)
        proto = self.processes.get(name)
        return proto.ended if proto else defer.succeed(None)

    @defer.inlineCallbacks
    def stop(self, name, timeout=30):
        proto = self.processes.get(name)
        if proto is None or proto.ended.called:
            return
        self.signal(name, signal.SIGTERM)
        timer = self.reactor.callLater(timeout, self.signal, name, signal.SIGKILL)
        yield proto.ended
        if timer.active():
            timer.cancel()

    @defer.inlineCallbacks
    def start_all(self, wait=True):
        for name in self.names:
            self.start(name)
        if wait:
            yield self.wait_until(lambda st: all(st[n]["cluster"]["status"] == "Online" for n in self.names),
                                  timeout=self.sync_wait + 30, what="every server Online")

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

    # -- admin -------------------------------------------------------------------

    def admin(self, name, line, timeout=60):
        """Send one admin line in json mode to server name; Deferred of the reply dict."""
        endpoint = UNIXClientEndpoint(self.reactor, self.admin_path(name), timeout=5)
        proto = _OneReply(f"json {line}")
        d = connectProtocol(endpoint, proto)
        d.addCallback(lambda _: proto.reply)
        d.addTimeout(timeout, self.reactor)
        return d

    @defer.inlineCallbacks
    def status_all(self, names=None):
        out = {}
        for name in names or self.names:
            try:
                out[name] = yield self.admin(name, "status", timeout=5)
            except Exception as e:
                out[name] = {"error": str(e), "cluster": {"status": "Unreachable"}, "groups": [],
                             "servers": []}
        return out

    @defer.inlineCallbacks
    def wait_until(self, predicate, timeout=30, step=0.05, names=None, what="condition"):
        """Poll status of every server until predicate(statuses) is true."""
        deadline = self.reactor.seconds() + timeout
        last = None
        while True:
            last = yield self.status_all(names)
            try:
                if predicate(last):
                    return last
            except (KeyError, IndexError, TypeError):
                pass
            if self.reactor.seconds() > deadline:
                raise LabError(f"timed out after {timeout} s waiting for {what}; last status: "
                               f"{json.dumps(summary(last))}")
            yield task.deferLater(self.reactor, step, lambda: None)

    # -- faults --------------------------------------------------------------------

    @defer.inlineCallbacks
    def nft(self, *args):
        if not self.netns:
            raise LabError("fault injection with nftables needs root (a private network namespace)")
        code, out = yield run(self.reactor, self.in_netns([which("nft")[0] if which("nft") else "/usr/sbin/nft",
                                                           *args]))
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

    def marks(self):
        try:
            with open(self.marks_path()) as f:
                return [line.split() for line in f if line.strip()]
        except FileNotFoundError:
            return []


def summary(statuses):
    """Compact view for error messages: server -> (cluster status, {group: current/status})."""
    out = {}
    for name, st in (statuses or {}).items():
        out[name] = {"cluster": st.get("cluster", {}).get("status"),
                     "groups": {g["name"]: f'{g.get("current")}/{g.get("status")}' for g in st.get("groups", [])},
                     "servers": {s["name"]: s["status"] for s in st.get("servers", [])}}
    return out


def group_current(statuses, group, observer):
    for g in statuses[observer]["groups"]:
        if g["name"] == group:
            return g["current"] if g["status"] == "Online" else None
    return None



def run_with_cleanup(reactor, work, on_interrupt=None):
    """Run a lab program (the demo, a benchmark) so that Ctrl-C or SIGTERM
    cancels the current step but never the clean-up.

    @param work: callable(state) -> coroutine; it sets state["cleaning"] = True
        while it destroys its lab, and may read state["interrupted"].
    @return: a Deferred for task.react.
    """
    state = {"interrupted": False, "cleaning": False}
    finished = defer.ensureDeferred(work(state))

    def on_shutdown():
        # The reactor is stopping: cancel the current step (not the clean-up)
        # and keep the reactor alive until the lab is gone.
        if finished.called:
            return None
        state["interrupted"] = True
        if on_interrupt is not None:
            on_interrupt()
        waiter = defer.Deferred()

        def release(result):
            waiter.callback(None)
            return result

        finished.addBoth(release)
        if not state["cleaning"]:
            finished.cancel()
        return waiter

    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    return finished
