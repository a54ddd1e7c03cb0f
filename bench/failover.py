"""Failover time and idle cost of the cpro daemon (`make bench`).

    python bench/failover.py [--runs 20] [--idle-seconds 60] [--interval-ms 100] [--timeout-ms 500]

On the two-server loopback cluster (cpro.testing.lab.loopback: real `twistd cpro`
daemons, in a private network namespace when root) with one failover group:

1. Idle cost: CPU share (user+system time over wall time) and resident memory
   of each daemon over --idle-seconds, the cluster settled and nothing
   happening but heartbeats.
2. Failover time, --runs times: SIGKILL the daemon holding the group, then time
   until the survivor reports the group Online (its admin status polled every
   10 ms); also the time until the survivor's start script ran (the script
   appends `date +%s.%N` to the lab's marks file; same clock as the kill).
   The killed daemon is restarted and the cluster left to settle (both
   servers Online in both views, the group placed) before the next kill; the
   group does not fail back, so the killed server alternates.

Figures per run, then summaries, and as the very last line one JSON object
with every figure and whether the goals were met (p95 failover under 1.0 s;
idle daemon under 1 % of one core and under 80 MB). The benchmark is not a
test: it exits 0 whenever it could measure, goals met or not, and 1 (the JSON
then carries "error") when the cluster did not behave.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run against this checkout (as the daemons the lab spawns do), not an older installed copy.
sys.path.insert(0, REPO_ROOT)

from twisted.internet import task  # noqa: E402

from cpro.testing.lab.benchkit import daemon_process, destroy_lab, percentile, run_benchmark, say  # noqa: E402
from cpro.testing.lab.loopback import LabError, LoopbackCluster, group_current, summary  # noqa: E402

GROUP = "failover1"
GOAL_FAILOVER_P95_S = 1.0
GOAL_IDLE_CPU_PERCENT = 1.0
GOAL_IDLE_RSS_MB = 80.0
POLL_STEP = 0.01


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bench/failover.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="number of SIGKILL failovers (default 20)")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="idle measurement length (default 60)")
    parser.add_argument("--interval-ms", type=int, default=100, help="heartbeat interval (default 100)")
    parser.add_argument("--timeout-ms", type=int, default=500, help="heartbeat timeout (default 500)")
    parser.add_argument("--settle-seconds", type=float, default=1.0,
                        help="extra quiet time after the cluster has settled, before each kill (default 1)")
    parser.add_argument("--no-netns", action="store_true", help="as root too, run on the host's loopback")
    parser.add_argument("--keep", action="store_true", help="keep the lab directory afterwards")
    return parser.parse_args(argv)






def holder(statuses, observers):
    """The server every observer sees holding the group Online, else None."""
    seen = {group_current(statuses, GROUP, o) for o in observers}
    return seen.pop() if len(seen) == 1 else None


def settled(names):
    def check(statuses):
        return (all(statuses[n]["cluster"]["status"] == "Online" for n in names)
                and all(s["status"] == "Online" for n in names for s in statuses[n]["servers"])
                and holder(statuses, names) is not None)
    return check




class Benchmark:
    def __init__(self, reactor, args):
        self.reactor = reactor
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="cpro-bench-")
        self.lab = LoopbackCluster(reactor, self.workdir, servers=2,
                                   groups=[{"name": GROUP, "resources": [{"name": "exec1"}]}],
                                   interval_ms=args.interval_ms, timeout_ms=args.timeout_ms,
                                   netns="" if args.no_netns else None)
        self.results = {
            "benchmark": "failover",
            "interval_ms": args.interval_ms,
            "timeout_ms": args.timeout_ms,
            "netns": None,
            "runs": 0,
        }

    def sleep(self, seconds):
        return task.deferLater(self.reactor, seconds, lambda: None)

    def check_alive(self):
        for name, proto in self.lab.processes.items():
            if proto.ended.called and not getattr(proto, "killed_by_bench", False):
                raise LabError(f"the daemon of {name} exited with code {proto.exit_code} "
                               f"(see {os.path.join(self.workdir, name + '.out')})")
        return True

    async def settle(self, timeout=60):
        names = self.lab.names
        st = await self.lab.wait_until(lambda st: self.check_alive() and settled(names)(st), timeout=timeout,
                                       what="both servers Online in both views and the group placed")
        await self.sleep(self.args.settle_seconds)
        return holder(st, names)

    async def run(self):
        lab, args = self.lab, self.args
        await lab.create()
        self.results["netns"] = bool(lab.netns)
        say(f"cpro failover benchmark: 2 servers on loopback{' in netns ' + lab.netns if lab.netns else ''}, "
            f"heartbeat interval {args.interval_ms} ms, timeout {args.timeout_ms} ms, {args.runs} kills")
        for name in lab.names:
            lab.start(name)
        await self.settle(timeout=lab.sync_wait + 30)
        await self.measure_idle()
        await self.measure_failovers()

    async def measure_idle(self):
        args = self.args
        await self.sleep(2.0)  # past start-up work: imports done, first placement made
        procs = {name: daemon_process(self.lab.pid(name)) for name in self.lab.names}
        say(f"\nidle: measuring {', '.join(f'{n} (pid {p.pid})' for n, p in procs.items())} "
            f"for {args.idle_seconds:g} s")
        first = {n: p.cpu_times() for n, p in procs.items()}
        peak_rss = {n: p.memory_info().rss for n, p in procs.items()}
        start = self.reactor.seconds()
        while self.reactor.seconds() - start < args.idle_seconds:
            await self.sleep(min(1.0, max(0.0, args.idle_seconds - (self.reactor.seconds() - start))))
            self.check_alive()
            for n, p in procs.items():
                peak_rss[n] = max(peak_rss[n], p.memory_info().rss)
        wall = self.reactor.seconds() - start
        per = {}
        for n, p in procs.items():
            last = p.cpu_times()
            used = (last.user - first[n].user) + (last.system - first[n].system)
            per[n] = {"cpu_percent": round(100.0 * used / wall, 3), "rss_mb": round(peak_rss[n] / 2**20, 1)}
            say(f"  {n}: {per[n]['cpu_percent']:.2f} % of one core, peak RSS {per[n]['rss_mb']:.1f} MB")
        st = await self.lab.status_all()
        active = holder(st, self.lab.names)
        self.results.update({
            "idle_seconds": round(wall, 1),
            "idle_cpu_percent": max(v["cpu_percent"] for v in per.values()),
            "idle_rss_mb": max(v["rss_mb"] for v in per.values()),
            "idle_per_daemon": per,
            "idle_group_on": active,
        })

    async def measure_failovers(self):
        lab, args = self.lab, self.args
        online, started = [], []
        self.results.update({"failover_s": online, "start_script_s": started})
        say("\nfailovers (SIGKILL of the active daemon -> group Online on the survivor):")
        for i in range(args.runs):
            st = await lab.status_all()
            active = holder(st, lab.names)
            if active is None:
                raise LabError(f"run {i + 1}: no agreed group holder: {json.dumps(summary(st))}")
            survivor = next(n for n in lab.names if n != active)
            marks_before = len(lab.marks())
            lab.processes[active].killed_by_bench = True
            t0 = self.reactor.seconds()
            ended = lab.kill(active)
            await lab.wait_until(lambda st: group_current(st, GROUP, survivor) == survivor, names=[survivor],
                                 step=POLL_STEP, timeout=args.timeout_ms / 1000.0 + 30,
                                 what=f"{GROUP} Online on {survivor}")
            took = self.reactor.seconds() - t0
            await ended
            marks = [m for m in lab.marks()[marks_before:] if len(m) > 2 and m[1] == survivor and m[2] == "START"]
            script = float(marks[0][0]) - t0 if marks else None
            online.append(round(took, 4))
            if script is not None:
                started.append(round(script, 4))
            self.results["runs"] = len(online)
            say(f"  run {i + 1:2d}: killed {active}, {GROUP} Online on {survivor} after {took:.3f} s"
                + (f" (start script ran at {script:.3f} s)" if script is not None else ""))
            lab.start(active)
            await self.settle()
        self.summarise(online, started)

    def summarise(self, online, started):
        r = self.results
        timeout = self.args.timeout_ms / 1000.0
        r.update({
            "failover_median_s": round(statistics.median(online), 3),
            "failover_p95_s": round(percentile(online, 95), 3),
            "failover_min_s": round(min(online), 3),
            "failover_max_s": round(max(online), 3),
            # The heartbeat timeout is the floor (the baseline) of any failover.
            "failover_median_over_timeout": round(statistics.median(online) / timeout, 2),
        })
        if started:
            r["start_script_median_s"] = round(statistics.median(started), 3)
            r["start_script_p95_s"] = round(percentile(started, 95), 3)

    def goals(self):
        r = self.results
        met = {}
        if "failover_p95_s" in r:
            met["failover_p95_under_1s"] = r["failover_p95_s"] < GOAL_FAILOVER_P95_S
        if "idle_cpu_percent" in r:
            met["idle_cpu_under_1_percent"] = r["idle_cpu_percent"] < GOAL_IDLE_CPU_PERCENT
            met["idle_rss_under_80mb"] = r["idle_rss_mb"] < GOAL_IDLE_RSS_MB
        return met

    def report(self):
        r = self.results
        say("\nsummary:")
        if "failover_p95_s" in r:
            say(f"  failover over {r['runs']} kills: median {r['failover_median_s']:.3f} s, "
                f"p95 {r['failover_p95_s']:.3f} s, min {r['failover_min_s']:.3f} s, max {r['failover_max_s']:.3f} s "
                f"(goal: p95 < {GOAL_FAILOVER_P95_S} s)")
            say(f"  median / heartbeat timeout ({r['timeout_ms']} ms, the floor): "
                f"{r['failover_median_over_timeout']:.2f}")
            if "start_script_median_s" in r:
                say(f"  survivor's start script ran after: median {r['start_script_median_s']:.3f} s, "
                    f"p95 {r['start_script_p95_s']:.3f} s")
        if "idle_cpu_percent" in r:
            say(f"  idle daemon (worst of the two over {r['idle_seconds']:g} s): {r['idle_cpu_percent']:.2f} % "
                f"of one core (goal < {GOAL_IDLE_CPU_PERCENT} %), {r['idle_rss_mb']:.1f} MB RSS "
                f"(goal < {GOAL_IDLE_RSS_MB:g} MB)")
        met = self.goals()
        r["goals"] = {"failover_p95_s": GOAL_FAILOVER_P95_S, "idle_cpu_percent": GOAL_IDLE_CPU_PERCENT,
                      "idle_rss_mb": GOAL_IDLE_RSS_MB}
        r["goals_met"] = met
        say("  goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()))

    async def destroy(self):
        await destroy_lab(self.lab, self.workdir, keep=self.args.keep or "error" in self.results)


def main(reactor, *argv):
    args = parse_args(list(argv))
    return run_benchmark(reactor, lambda: Benchmark(reactor, args))


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
