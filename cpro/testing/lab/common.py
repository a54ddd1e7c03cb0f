"""What the labs of real daemons share (the loopback lab and the network-namespace lab).

- L{run}: a short external command, asynchronously.
- L{LabProcess}: a process the lab started (its output logged), with a
  Deferred for its end.
- L{DaemonCluster}: a mixin driving real `twistd -n cpro` daemons: start,
  stop, kill, signal, the admin port (JSON replies), polling the cluster
  status until a condition holds, the marks file of the lab's scripts, and
  the exec-resource XML of the simple group descriptions both labs accept.
- L{run_with_cleanup}: run a lab program (demo, benchmark) so that Ctrl-C
  never skips the clean-up.

Everything is asynchronous (Twisted): nothing here blocks the reactor.
"""

import json
import os
import signal
import sys
import tempfile
import textwrap

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.procutils import which

import cpro

# The directory that holds the cpro package in use (a checkout or
# site-packages): the daemons the lab spawns import the same copy.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(cpro.__file__)))
# sun_path holds 108 bytes; trial's temp directories are often deeper than that.
MAX_SOCKET_PATH = 100
# Output kept in memory by a LabProcess without a log file.
MAX_CAPTURE = 64 * 1024


class LabError(Exception):
    pass


def is_root():
    return os.geteuid() == 0


def tool(name):
    """Absolute path of a system tool (ip, nft, ping), also when PATH lacks the sbin directories."""
    found = which(name)
    if found:
        return found[0]
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    raise LabError(f"{name} is not installed")


def lab_env(extra=None):
    """The environment of lab processes: ours, with this checkout first on PYTHONPATH
    (a copy of cpro installed in the virtualenv may be older than the tree under test)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def run(reactor, argv, env=None, stdin=None):
    """Run a short command; Deferred (exit code, output). stdin: text written to its input."""
    proto = LabProcess(stdin=stdin)
    reactor.spawnProcess(proto, argv[0], list(argv), env=env or os.environ)
    d = proto.ended
    d.addCallback(lambda code: (code if code is not None else 128 + (proto.signal or 0),
                                proto.output.decode(errors="replace")))
    return d


class LabProcess(protocol.ProcessProtocol):
    """A process started by a lab: output appended to log_path (or kept, bounded, in
    .output), .ended fires with the exit code (None if a signal ended it; see .signal)
    once it has exited and its output pipes are closed.

    group: the process leads its own process group (started through setsid):
    signals go to the whole group, so a kill also ends the children that hold
    its output pipes open.
    """

    def __init__(self, log_path=None, stdin=None, group=False):
        self.log = open(log_path, "ab") if log_path else None
        self.stdin = stdin
        self.group = group
        self.output = b""
        self.ended = defer.Deferred()
        self.exit_code = None
        self.signal = None
        self.pid = None  # kept after the end (transport.pid is not)

    def connectionMade(self):
        self.pid = self.transport.pid
        if self.stdin is not None:
            self.transport.write(self.stdin.encode())
        self.transport.closeStdin()

    def outReceived(self, data):
        if self.log is not None:
            self.log.write(data)
            self.log.flush()
        elif len(self.output) < MAX_CAPTURE:
            self.output += data[:MAX_CAPTURE - len(self.output)]

    errReceived = outReceived

    def processEnded(self, reason):
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.signal = getattr(reason.value, "signal", None)
        if self.log is not None:
            self.log.close()
        self.ended.callback(self.exit_code)

    def send_signal(self, sig):
        """Signal the process if it still runs; True if sent."""
        pid = None if self.ended.called else self.transport.pid
        if not pid:
            return False
        try:
            if self.group:
                try:
                    os.killpg(pid, sig)
                    return True
                except ProcessLookupError:
                    pass  # not (yet) a group leader: the process alone
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self):
        """SIGKILL (its group with group=True); Deferred that fires when it has ended."""
        self.send_signal(signal.SIGKILL)
        return self.ended

    @defer.inlineCallbacks
    def stop(self, reactor, timeout=10):
        """SIGTERM, SIGKILL after timeout seconds; fires with the exit code when it has ended."""
        if self.ended.called:
            return self.exit_code
        self.send_signal(signal.SIGTERM)
        timer = reactor.callLater(timeout, self.send_signal, signal.SIGKILL)
        code = yield self.ended
        if timer.active():
            timer.cancel()
        return code


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
            try:
                self.reply.callback(json.loads(line.decode()))
            except ValueError as e:
                self.reply.errback(LabError(f"admin reply is not JSON: {e}"))
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.reply.called:
            self.reply.errback(reason)


def admin_request(reactor, socket_path, line, timeout=60):
    """Send one admin line in json mode to the admin socket; Deferred of the reply dict."""
    endpoint = UNIXClientEndpoint(reactor, socket_path, timeout=5)
    proto = _OneReply(f"json {line}")
    d = connectProtocol(endpoint, proto)
    d.addCallback(lambda _: proto.reply)
    d.addTimeout(timeout, reactor)
    return d


def twistd_path():
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    return candidate if os.path.exists(candidate) else which("twistd")[0]


class DaemonCluster:
    """Mixin: real cpro daemons of a lab.

    The lab provides: reactor, workdir, names (server names), processes
    (name -> LabProcess), config_path and daemon_argv(name, argv) (how to run
    argv as server name's daemon: in its namespace, ...). Admin sockets live
    in run_dir() (remove _short_run_dir when set), state in workdir/NAME.
    """

    sync_wait = 20
    _short_run_dir = None

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

    def twistd(self):
        return twistd_path()

    def admin_endpoint(self, name):
        return f"unix:{self.admin_path(name)}"

    def start(self, name, extra_args=(), config=None):
        """Spawn the daemon of server name. Returns its LabProcess."""
        os.makedirs(self.state_dir(name), exist_ok=True)
        os.makedirs(os.path.dirname(self.admin_path(name)), exist_ok=True)
        proto = LabProcess(os.path.join(self.workdir, f"{name}.out"))
        argv = self.daemon_argv(name, [
            self.twistd(), "-n", "--pidfile=", "--logfile", os.path.join(self.state_dir(name), "cpro.log"),
            "cpro", "--config", config or self.config_path, "--server", name,
            "--admin", self.admin_endpoint(name), "--state-dir", self.state_dir(name), *extra_args])
        self.reactor.spawnProcess(proto, argv[0], argv, env=lab_env())
        self.processes[name] = proto
        return proto

    def pid(self, name):
        proto = self.processes.get(name)
        return proto.pid if proto is not None and not proto.ended.called else None

    def signal(self, name, sig):
        proto = self.processes.get(name)
        if proto is not None:
            proto.send_signal(sig)

    def kill(self, name):
        """SIGKILL the daemon: a crash as abrupt as a power loss for the cluster."""
        proto = self.processes.get(name)
        return proto.kill() if proto is not None else defer.succeed(None)

    def stop(self, name, timeout=30):
        proto = self.processes.get(name)
        if proto is None:
            return defer.succeed(None)
        return proto.stop(self.reactor, timeout)

    @defer.inlineCallbacks
    def start_all(self, wait=True):
        for name in self.names:
            self.start(name)
        if wait:
            yield self.wait_until(lambda st: all(st[n]["cluster"]["status"] == "Online" for n in self.names),
                                  timeout=self.sync_wait + 30, what="every server Online")

    # -- admin -------------------------------------------------------------------

    def admin(self, name, line, timeout=60):
        """Send one admin line in json mode to server name; Deferred of the reply dict."""
        return admin_request(self.reactor, self.admin_path(name), line, timeout)

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

    # -- scripts and the marks file --------------------------------------------------

    def marks_path(self):
        return os.path.join(self.workdir, "marks.log")

    def marks(self):
        """Lines of the marks file, split: time server WHAT ..."""
        try:
            with open(self.marks_path()) as f:
                return [line.split() for line in f if line.strip()]
        except FileNotFoundError:
            return []

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

    def _groups_xml(self, groups):
        """(group elements, exec resource elements) of simple group descriptions:
        {name, policy (server names), start_auto, failback_auto, exclusive,
        resources: [{name, start, stop (script text), sync, act_retry, act_fo, act_action}]}."""
        out_groups, out_resources = [], []
        for g in groups:
            policy = "".join(f'<policy name="{s}"><order>{o}</order></policy>'
                             for o, s in enumerate(g.get("policy", self.names)))
            members = "".join(f'<resource name="exec@{r["name"]}"/>' for r in g["resources"])
            out_groups.append(
                f'<group name="{g["name"]}">{members}{policy}<start>{int(g.get("start_auto", True))}</start>'
                f'<failback>{int(g.get("failback_auto", False))}</failback>'
                f'<exclusive>{int(g.get("exclusive", 0))}</exclusive></group>')
            for r in g["resources"]:
                out_resources.append(self._exec_xml(g["name"], r))
        return "".join(out_groups), "".join(out_resources)


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
