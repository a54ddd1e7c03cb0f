"""`make demo`: a two-server cluster on this machine fails over in front of you.

    python -m cpro.testing.demo [--interval-ms 200] [--timeout-ms 1000] [--keep] [--loopback] [--no-netns]

As root (unless --loopback) it runs the network-namespace demo of
cpro.testing.demo_lab: servers and a client in their own namespaces, a floating IP,
a server powered off, and the outage the client saw. Otherwise it builds a
LoopbackCluster (cpro.testing.lab.loopback: two real `twistd cpro` daemons on
loopback addresses, inside a private network namespace when run as root) with
one failover group whose exec resource starts a small TCP service
asynchronously. It shows the cluster status (the real `clpstat`), asks the
service who answers, SIGKILLs the active server's daemon, times how long the
group takes to come Online on the other server, and shows status and service
again. The lab is destroyed at the end, on failure and on Ctrl-C alike; the
lab's configuration sets harmless OS actions, so no final action can shut the
host down.

Exit status: 0 when the failover happened, 1 when something failed (the
message says what, and the lab's files are kept for reading), 130 when
interrupted.
"""

import argparse
import os
import shutil
import sys
import tempfile

from twisted.internet import defer, task

from cpro.testing.lab.loopback import LabError, LoopbackCluster, group_current, run, run_with_cleanup

GROUP = "failover1"
RESOURCE = "web"
SERVICE_PORT_OFFSET = 79  # lab ports are base+0..5; base+79 is 29080 inside the namespace

# The exec resource's start script. It runs as the resident (asynchronous)
# process of the resource, so it *is* the service: a blocking accept loop is
# fine here, it is not cpro's reactor.
SERVICE_SCRIPT = '''\
#!{python}
"""cpro demo service: answers every TCP connection with one line naming its server."""
import os, socket, time
server = os.environ.get("CPRO_SERVER_NAME", "unknown")
event = os.environ.get("CLP_EVENT", "?")
address = {addresses!r}.get(server, "127.0.0.1")
with open({marks!r}, "a") as marks:
    marks.write("%.6f %s START {resource} %s %s\\n" % (time.time(), server, event, os.environ.get("CLP_SERVER")))
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((address, {port}))
listener.listen(16)
print("serving on %s:{port} (event %s)" % (address, event), flush=True)
while True:
    conn, _ = listener.accept()
    with conn:
        conn.sendall(("hello from %s (pid %d, started by %s)\\n" % (server, os.getpid(), event)).encode())
'''

# Runs as a subprocess (inside the namespace when there is one): one request, one line.
CLIENT_SCRIPT = '''\
import socket, sys
try:
    conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print(conn.recv(200).decode().strip())
except OSError as e:
    print("no answer: %s" % e)
    sys.exit(1)
'''


class DemoError(Exception):
    """A step of the demo did not turn out as expected; str() says which."""


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m cpro.testing.demo",
                                     description="Two cpro servers on this machine; kill one, watch the failover.")
    parser.add_argument("--interval-ms", type=int, default=200, help="heartbeat interval (default 200)")
    parser.add_argument("--timeout-ms", type=int, default=1000, help="heartbeat timeout (default 1000)")
    parser.add_argument("--keep", action="store_true", help="keep the lab directory (logs, config) afterwards")
    parser.add_argument("--no-netns", action="store_true",
                        help="with --loopback as root: use the host's loopback, not a private network namespace")
    parser.add_argument("--loopback", action="store_true",
                        help="as root too, run the loopback demo instead of the network-namespace lab")
    args = parser.parse_args(argv)
    if args.no_netns:
        args.loopback = True
    return args


def step(text):
    print(f"\n==> {text}", flush=True)


def say(text=""):
    print(text, flush=True)


def indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.rstrip().splitlines())


class Demo:
    def __init__(self, reactor, args):
        self.reactor = reactor
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="cpro-demo-")
        self.lab = LoopbackCluster(reactor, self.workdir, servers=2, groups=[], interval_ms=args.interval_ms,
                                   timeout_ms=args.timeout_ms, netns="" if args.no_netns else None)
        self.port = self.lab.base_port + SERVICE_PORT_OFFSET
        addresses = {name: self.lab.address(name) for name in self.lab.names}
        script = SERVICE_SCRIPT.format(python=sys.executable, addresses=addresses, marks=self.lab.marks_path(),
                                       resource=RESOURCE, port=self.port)
        self.lab.groups = [{"name": GROUP, "policy": list(self.lab.names),
                            "resources": [{"name": RESOURCE, "sync": False, "start": script}]}]

    def alive(self, names):
        """True, or DemoError naming a daemon that has exited (no point waiting for it)."""
        for name in names:
            proto = self.lab.processes.get(name)
            if proto is not None and proto.ended.called:
                path = os.path.join(self.workdir, f"{name}.out")
                try:
                    with open(path) as f:
                        last = (f.read().strip().splitlines() or [""])[-1]
                except OSError:
                    last = ""
                raise DemoError(f"the daemon of {name} exited with code {proto.exit_code}: {last}")
        return True

    async def run(self):
        lab, args = self.lab, self.args
        step("Preparing a two-server cluster on this machine")
        await lab.create()
        say(f"    configuration: {lab.config_path}")
        say(f"    servers:       srv1 on {lab.address('srv1')}, srv2 on {lab.address('srv2')}"
            f" (second heartbeat path on {lab.address('srv1', 1)} / {lab.address('srv2', 1)})")
        say(f"    heartbeats:    every {args.interval_ms} ms, a server is declared down after "
            f"{args.timeout_ms} ms of silence on every path")
        say(f"    group:         {GROUP}, policy srv1 then srv2; exec resource '{RESOURCE}' starts (asynchronously)")
        say(f"                   a TCP service on the active server's address, port {self.port}")
        if lab.netns:
            say(f"    running as root: everything lives in the private network namespace {lab.netns}")
        else:
            say("    no network namespace: the daemons use this host's loopback and a random port block")

        step("Starting both daemons (twistd -n cpro --config ... --server srvN)")
        for name in lab.names:
            lab.start(name)
        await lab.wait_until(lambda st: self.alive(lab.names) and all(st[n]["cluster"]["status"] == "Online"
                                                                      for n in lab.names),
                             timeout=lab.sync_wait + 30, what="both servers Online")
        say("    both servers are Online")

        step(f"Waiting for group {GROUP} to be Online")
        st = await lab.wait_until(lambda st: _agreed_holder(st, lab.names) is not None, timeout=30,
                                  what=f"{GROUP} Online on one server, seen by both")
        active = _agreed_holder(st, lab.names)
        standby = next(n for n in lab.names if n != active)
        say(f"    {GROUP} is Online on {active}")

        await self.show_clpstat(active)
        step(f"Asking the service on {active}'s address ({lab.address(active)}:{self.port})")
        say(indent(await self.ask(active)))

        step(f"Killing {active}'s daemon with SIGKILL (as abrupt as a power loss, for the cluster)")
        start = self.reactor.seconds()
        ended = lab.kill(active)
        say(f"    {active}'s daemon is gone; {standby} hears nothing from it from now on")
        step(f"Watching {standby} until {GROUP} is Online there")
        await lab.wait_until(lambda st: group_current(st, GROUP, standby) == standby, names=[standby],
                             step=0.02, timeout=args.timeout_ms / 1000.0 + 30, what=f"{GROUP} Online on {standby}")
        took = self.reactor.seconds() - start
        await ended
        say(f"    {GROUP} is Online on {standby}, {took:.2f} s after the kill "
            f"(the heartbeat timeout alone accounts for {args.timeout_ms / 1000.0:.2f} s at most)")

        await self.show_clpstat(standby)
        step(f"Asking the service on {standby}'s address ({lab.address(standby)}:{self.port})")
        answer = await self.ask(standby)
        say(indent(answer))
        if f"hello from {standby}" not in answer:
            raise DemoError(f"the service on {standby} did not answer as expected: {answer.strip()}")
        started = [float(m[0]) for m in lab.marks() if len(m) > 2 and m[1] == standby and m[2] == "START"]
        if started:
            say(f"    (its process started {started[-1] - start:.2f} s after the kill)")

        step(f"And on {active}'s old address ({lab.address(active)}:{self.port})")
        old = await self.ask(active, tries=1)
        say(indent(old))
        if old.startswith("hello from"):
            say(f"    The old service process on {active} is left behind: a SIGKILLed daemon cannot stop")
            say("    the process it started. Under cpro-supervise (as the service units run it) the")
            say("    restarted daemon removes it first; a dead server's service goes down with the server.")
        say(f"\nfailover took {took:.2f} s")
        return took

    async def show_clpstat(self, name):
        await show_clpstat(self.reactor, self.lab, name)

    async def ask(self, name, tries=50):
        """One request to the service on name's address; retried while the service is still binding."""
        argv = self.lab.in_netns([sys.executable, "-c", CLIENT_SCRIPT, self.lab.address(name), str(self.port)])
        out = ""
        for attempt in range(tries):
            code, out = await run(self.reactor, argv)
            if code == 0:
                return out
            if attempt + 1 < tries:
                await task.deferLater(self.reactor, 0.1, lambda: None)
        if tries > 1:
            raise DemoError(f"the service on {name} does not answer: {out.strip()}")
        return out

    async def destroy(self, keep):
        step("Cleaning up: killing the daemons and the service processes" +
             (", removing the network namespace" if self.lab.netns else ""))
        await self.lab.destroy()
        if keep:
            say(f"    lab files kept in {self.workdir} (daemon logs: srvN/cpro.log, srvN.out)")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


async def show_clpstat(reactor, lab, name):
    """Run the real clpstat against server name's admin socket and print it."""
    from cpro.testing.lab.common import lab_env

    step(f"clpstat on {name}")
    clpstat = os.path.join(os.path.dirname(sys.executable), "clpstat")
    argv = [clpstat] if os.path.exists(clpstat) else [sys.executable, "-m", "cpro.cli.clpstat"]
    code, out = await run(reactor, argv + ["--admin", lab.admin_endpoint(name)], env=lab_env())
    say(indent(out))
    if code != 0:
        raise DemoError(f"clpstat on {name} exited with code {code}")


def _agreed_holder(statuses, observers):
    holders = {group_current(statuses, GROUP, o) for o in observers}
    if len(holders) == 1:
        return holders.pop()
    return None


async def _main(reactor, args, state, make_demo=None):
    """Run a demo (an object with run(), destroy(keep), workdir and lab), clean up
    whatever happens, and end with the documented exit status."""
    demo = (make_demo or Demo)(reactor, args)
    code, keep = 0, args.keep
    try:
        await demo.run()
    except defer.CancelledError:
        say("\ninterrupted")
        code = 130
    except (DemoError, LabError) as e:
        say(f"\ndemo failed: {e}")
        code, keep = 1, True
    except Exception as e:  # the demo must clean up and explain whatever happened
        say(f"\ndemo failed unexpectedly: {type(e).__name__}: {e}")
        code, keep = 1, True
    finally:
        state["cleaning"] = True
        try:
            await demo.destroy(keep)
        except Exception as e:
            say(f"cleanup failed: {e}; look for leftover processes and the namespace {demo.lab.netns}")
            code = code or 1
    if code == 1:
        _print_logs(demo)
    if state["interrupted"] and code == 0:
        code = 130
    raise SystemExit(code)


def _print_logs(demo):
    say(f"lab status summary and logs are in {demo.workdir}")
    for name in demo.lab.names:
        path = os.path.join(demo.lab.workdir, f"{name}.out")
        try:
            with open(path) as f:
                tail = f.read().strip().splitlines()[-5:]
        except OSError:
            continue
        if tail:
            say(f"last lines of {path}:")
            say(indent("\n".join(tail)))


def main(reactor, *argv):
    args = parse_args(list(argv))
    if os.geteuid() == 0 and not args.loopback:
        from cpro.testing import demo_lab

        if "--interval-ms" not in argv:
            args.interval_ms = 100
        if "--timeout-ms" not in argv:
            args.timeout_ms = 500
        return run_with_cleanup(reactor, lambda state: _main(reactor, args, state, demo_lab.LabDemo),
                                on_interrupt=lambda: say("\nstopping: cleaning up first"))
    return run_with_cleanup(reactor, lambda state: _main(reactor, args, state),
                            on_interrupt=lambda: say("\nstopping: cleaning up first"))


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
