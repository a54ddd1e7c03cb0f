"""Cost of many monitors in one daemon: reactor lag, CPU share, memory (`make bench`).

    python bench/monitors.py [--seconds 300] [--per-type 100] [--interval 5] [--no-netns] [--keep]
    CPRO_BENCH_MONITOR_SECONDS=40 python bench/monitors.py      (a short smoke run)

One real `twistd cpro` daemon (the loopback lab with one server, in a private
network namespace when root) with 5 x --per-type monitors, every --interval
seconds:

- pidw on the resident process of an asynchronous exec resource (one group
  holds --per-type execs whose start script is `exec sleep 86399`);
- psw looking for those processes by name;
- genw running a trivial script (`exit 0`) at every check;
- ipw pinging a loopback address (127.0.2.N), raw ICMP socket as root;
- diskw reading 512 bytes of a small file (one file per monitor).

The daemon starts, every monitor reaches Normal, and the run goes on until
--seconds have passed since the daemon was started; the first 10 % (at most
30 s) is warm-up and not measured. Measured over the rest:

- reactor lag: the daemon's own samples (MonitorService: a timer set every
  second, how late it fired), read from the admin status (`reactor_lag`),
  p50 / p99 / max;
- CPU share of the daemon process (user + system time over wall time, psutil;
  the check scripts' own CPU is reported separately);
- RSS of the daemon at the end (and the peak, sampled every second);
- sanity: monitors not Normal at the end, rm 9 (error) and rm 71 (delay
  warning) alerts during the run, genw script runs per second (each run
  appends a byte to a file).

Goals: lag p99 under 20 ms, CPU under 15 % of one core. Prints the figures,
then as the last line one JSON object with them. Exits 1 (the JSON then has
"error") when the lab did not behave.
"""

import argparse
import os
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # this checkout, as the daemons the lab spawns use

from twisted.internet import task  # noqa: E402

from cpro.testing.lab.benchkit import daemon_process, destroy_lab, percentile, run_benchmark, say  # noqa: E402
from cpro.testing.lab.loopback import LabError, LoopbackCluster  # noqa: E402

TYPES = ("pidw", "psw", "genw", "ipw", "diskw")
GROUP = "bench"
RESIDENT = "sleep 86399"  # the async execs' processes, as psw sees them
GOAL_LAG_P99_MS = 20.0
GOAL_CPU_PERCENT = 15.0
POLL_SECONDS = 20.0  # status polls for lag samples (the status keeps the newest 60)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bench/monitors.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("CPRO_BENCH_MONITOR_SECONDS", 300)),
                        help="length of the run from the daemon's start (default 300, or "
                             "$CPRO_BENCH_MONITOR_SECONDS)")
    parser.add_argument("--per-type", type=int, default=100, help="monitors of each of the 5 types (default 100)")
    parser.add_argument("--interval", type=int, default=5, help="polling interval of every monitor, s (default 5)")
    parser.add_argument("--types", default=",".join(TYPES),
                        help=f"comma-separated monitor types to run (default {','.join(TYPES)})")
    parser.add_argument("--no-netns", action="store_true", help="as root too, run on the host's loopback")
    parser.add_argument("--keep", action="store_true", help="keep the lab directory afterwards")
    return parser.parse_args(argv)








def monitors_xml(n, interval, genw_path, disk_dir, types=TYPES):
    """The <monitor> content: n of each type, every one on the group (no recovery step but 'none')."""
    common = (f"<polling><interval>{interval}</interval><timeout>{max(20, 2 * interval)}</timeout></polling>"
              f"<relation><type>grp</type><name>{GROUP}</name></relation>"
              f"<emergency><threshold><restart>0</restart><fo>0</fo></threshold><action>1</action></emergency>")
    out = [f'<types name="{t}"/>' for t in types]
    for i in range(1, n + 1):
        body = {
            "pidw": f"<target>exec{i}</target>",
            "psw": f"<parameters><processname>{RESIDENT}</processname></parameters>",
            "genw": f"<parameters><path>{genw_path}</path></parameters>",
            "ipw": f'<parameters><list id="0"><ip>127.0.2.{i % 250 + 1}</ip></list></parameters>',
            "diskw": f'<parameters><object>{os.path.join(disk_dir, f"{i}.img")}</object></parameters>',
        }
        out.extend(f'<{t} name="{t}{i}">{common}{body[t]}</{t}>' for t in types)
    return "".join(out)


class Benchmark:
    def __init__(self, reactor, args):
        self.reactor = reactor
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="cpro-bench-monitors-")
        n = args.per_type
        resources = [{"name": f"exec{i}", "sync": False, "start": f"#!/bin/sh\nexec {RESIDENT}\n",
                      "stop": "#!/bin/sh\nexit 0\n"} for i in range(1, n + 1)]
        self.lab = LoopbackCluster(reactor, self.workdir, servers=1, groups=[{"name": GROUP, "resources": resources}],
                                   netns="" if args.no_netns else None)
        disk_dir = os.path.join(self.workdir, "disks")
        os.makedirs(disk_dir)
        for i in range(1, n + 1):
            with open(os.path.join(disk_dir, f"{i}.img"), "wb") as f:
                f.write(os.urandom(4096))
        # Each run appends one byte: the file's size counts the genw checks.
        self.genw_count = os.path.join(self.workdir, "genw.count")
        genw = self.lab._script("genw-trivial.sh", f"#!/bin/sh\necho >> {self.genw_count}\nexit 0\n")
        self.types = [t.strip() for t in args.types.split(",") if t.strip()]
        unknown = set(self.types) - set(TYPES)
        if unknown or not self.types:
            raise SystemExit(f"--types: choose among {', '.join(TYPES)}")
        self.lab.monitor_xml = monitors_xml(n, args.interval, genw, disk_dir, self.types)
        self.total = len(self.types) * n
        self.lag = {}  # sample number -> ms
        self.status_ms = []  # admin status round trips (the daemon builds a 500-monitor payload)
        self.results = {"benchmark": "monitors", "monitors": self.total, "per_type": n, "types": self.types,
                        "interval_s": args.interval, "seconds": args.seconds, "netns": None}

    def sleep(self, seconds):
        return task.deferLater(self.reactor, seconds, lambda: None)

    def check_alive(self):
        proto = self.lab.processes.get("srv1")
        if proto is not None and proto.ended.called:
            raise LabError(f"the daemon exited with code {proto.exit_code} "
                           f"(see {os.path.join(self.workdir, 'srv1.out')})")

    async def status(self):
        self.check_alive()
        t = self.reactor.seconds()
        st = await self.lab.admin("srv1", "status", timeout=30)
        self.status_ms.append((self.reactor.seconds() - t) * 1000)
        lag = st.get("reactor_lag") or {}
        recent = lag.get("recent_ms") or []
        first = lag.get("count", 0) - len(recent) + 1
        for k, ms in enumerate(recent):
            self.lag[first + k] = ms
        return st

    @staticmethod
    def states(st):
        out = {}
        for m in st["monitors"]:
            out[m["status"]] = out.get(m["status"], 0) + 1
        return out

    async def run(self):
        lab, args = self.lab, self.args
        await lab.create()
        self.results["netns"] = bool(lab.netns)
        say(f"cpro monitor benchmark: {self.total} monitors ({args.per_type} each of {', '.join(self.types)}), "
            f"interval {args.interval} s, one daemon on loopback"
            f"{' in netns ' + lab.netns if lab.netns else ''}, {args.seconds:g} s")
        t_start = self.reactor.seconds()
        lab.start("srv1")
        await lab.wait_until(lambda st: self.check_alive() is None and st["srv1"]["cluster"]["status"] == "Online",
                             names=["srv1"], timeout=lab.sync_wait + 60, what="the daemon Online")
        st = await lab.wait_until(lambda st: self.check_alive() is None
                                  and self.states(st["srv1"]).get("Normal", 0) == self.total,
                                  names=["srv1"], timeout=120, step=1.0, what=f"all {self.total} monitors Normal")
        all_normal = self.reactor.seconds() - t_start
        say(f"  daemon up and all {self.total} monitors Normal after {all_normal:.1f} s")
        self.results["all_normal_after_s"] = round(all_normal, 1)

        warmup = min(30.0, args.seconds / 10.0)
        wait = t_start + warmup - self.reactor.seconds()
        if wait > 0:
            await self.sleep(wait)
        proc = daemon_process(lab.pid("srv1"))
        st = await self.status()
        lag_from = st["reactor_lag"]["count"]  # samples after this one are measured
        alerts_from = await self.alert_count()
        genw_before = self.genw_runs()
        first = proc.cpu_times()
        peak_rss = proc.memory_info().rss
        t0 = self.reactor.seconds()
        end = t_start + args.seconds
        say(f"  measuring daemon pid {proc.pid} from {t0 - t_start:.1f} s to {args.seconds:g} s")
        next_poll = t0 + POLL_SECONDS
        while self.reactor.seconds() < end:
            await self.sleep(min(1.0, max(0.0, end - self.reactor.seconds())))
            self.check_alive()
            peak_rss = max(peak_rss, proc.memory_info().rss)
            if self.reactor.seconds() >= next_poll:
                await self.status()
                next_poll += POLL_SECONDS
        last = proc.cpu_times()
        wall = self.reactor.seconds() - t0
        rss = proc.memory_info().rss
        st = await self.status()
        own = (last.user - first.user) + (last.system - first.system)
        children = (last.children_user - first.children_user) + (last.children_system - first.children_system)
        samples = [ms for k, ms in sorted(self.lag.items()) if k > lag_from]
        if not samples:
            raise LabError("no reactor lag samples were read from the daemon's status")
        alerts = await self.new_alerts(alerts_from)
        self.results.update({
            "measured_s": round(wall, 1),
            "warmup_s": round(t0 - t_start, 1),
            "lag_samples": len(samples),
            "lag_sample_interval_s": st["reactor_lag"]["interval_s"],
            "lag_p50_ms": round(percentile(samples, 50), 2),
            "lag_p99_ms": round(percentile(samples, 99), 2),
            "lag_max_ms": round(max(samples), 2),
            "lag_worst_ms": sorted(samples)[-5:][::-1],
            "status_round_trip_max_ms": round(max(self.status_ms), 1),
            "cpu_percent": round(100.0 * own / wall, 2),
            "scripts_cpu_percent": round(100.0 * children / wall, 2),
            "rss_mb": round(rss / 2**20, 1),
            "peak_rss_mb": round(peak_rss / 2**20, 1),
            "monitor_states_at_end": self.states(st),
            "error_alerts": sum(1 for a in alerts if a["module"] == "rm" and a["id"] == 9),
            "delay_warnings": sum(1 for a in alerts if a["module"] == "rm" and a["id"] == 71),
        })
        if "genw" in self.types:
            self.results["genw_runs_per_s"] = round((self.genw_runs() - genw_before) / wall, 1)
            self.results["genw_runs_expected_per_s"] = round(args.per_type / args.interval, 1)
        await self.lab.stop("srv1", timeout=60)  # a clean stop ends the resident sleeps with their group

    async def alert_count(self):
        reply = await self.lab.admin("srv1", "alerts 1000")
        return len(reply["alerts"])

    async def new_alerts(self, before):
        reply = await self.lab.admin("srv1", "alerts 1000")
        alerts = reply["alerts"]
        if len(alerts) >= 1000:
            return alerts  # more than the log returns: count what it has
        return alerts[before:]

    def genw_runs(self):
        try:
            return os.path.getsize(self.genw_count)
        except OSError:
            return 0

    def goals(self):
        r = self.results
        met = {}
        if "lag_p99_ms" in r:
            met["lag_p99_under_20ms"] = r["lag_p99_ms"] < GOAL_LAG_P99_MS
        if "cpu_percent" in r:
            met["cpu_under_15_percent"] = r["cpu_percent"] < GOAL_CPU_PERCENT
        return met

    def report(self):
        r = self.results
        say("\nsummary:")
        if "lag_p99_ms" in r:
            say(f"  reactor lag over {r['lag_samples']} samples ({r['lag_sample_interval_s']:g} s apart, "
                f"{r['measured_s']:g} s after {r['warmup_s']:g} s of warm-up): p50 {r['lag_p50_ms']:.2f} ms, "
                f"p99 {r['lag_p99_ms']:.2f} ms, max {r['lag_max_ms']:.2f} ms (goal: p99 < {GOAL_LAG_P99_MS:g} ms)")
            say(f"  daemon CPU: {r['cpu_percent']:.2f} % of one core (goal < {GOAL_CPU_PERCENT:g} %); "
                f"check scripts: {r['scripts_cpu_percent']:.2f} %")
            say(f"  admin status round trip (every {POLL_SECONDS:g} s, to read the lag samples): "
                f"max {r['status_round_trip_max_ms']:.1f} ms")
            say(f"  daemon RSS: {r['rss_mb']:.1f} MB at the end, peak {r['peak_rss_mb']:.1f} MB")
            say(f"  monitors at the end: {r['monitor_states_at_end']}; during the run: {r['error_alerts']} errors "
                f"(rm 9), {r['delay_warnings']} delay warnings (rm 71)")
            if "genw_runs_per_s" in r:
                say(f"  genw scripts run: {r['genw_runs_per_s']:.1f}/s (expected about "
                    f"{r['genw_runs_expected_per_s']:.1f}/s)")
        met = self.goals()
        r["goals"] = {"lag_p99_ms": GOAL_LAG_P99_MS, "cpu_percent": GOAL_CPU_PERCENT}
        r["goals_met"] = met
        say("  goals: " + (", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()) or "not measured"))

    async def destroy(self):
        await destroy_lab(self.lab, self.workdir, keep=self.args.keep or "error" in self.results)


def main(reactor, *argv):
    args = parse_args(list(argv))
    return run_benchmark(reactor, lambda: Benchmark(reactor, args))


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
