"""Benchmark: the outage a client sees when the active server dies, cpro against keepalived.

Both run in the same network-namespace lab (cpro.testing.lab.netns): two servers
with an interconnect (eth0) and a public LAN (eth1), and a client on the
public LAN. A TCP service runs on both servers; the client connects to the
floating IP 10.0.0.100 every 10 ms (cpro.testing.lab.probe). The active server is
powered off (NetnsLab.server_down: every process in its namespace killed,
its switch ports down) and the client's outage is measured, RUNS times for
each. Same detection budget:

- cpro: heartbeat interval 100 ms, timeout 300 ms, on both links; a group
  holding the floating IP (default fip settings: ARP probe, GARP burst);
- keepalived (Debian's package, VRRPv3): advert_int 0.1 s, 3 missed
  adverts (plus VRRP's skew time), nopreempt, on the public LAN.

Prints the figures and, as the last line, one JSON object with them.
Needs root (namespaces); without root it says so and prints {"skipped": ...}.

    python bench/failover_vs_keepalived.py            (RUNS=20)
    CPRO_BENCH_RUNS=5 python bench/failover_vs_keepalived.py
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from cpro.testing.lab.benchkit import percentile  # noqa: E402
from cpro.testing.lab.common import is_root  # noqa: E402
from cpro.testing.lab.netns import NetnsLab  # noqa: E402
from cpro.testing.lab.probe import outage, read_probes  # noqa: E402

VIP = "10.0.0.100"
PORT = 8080
RUNS = int(os.environ.get("CPRO_BENCH_RUNS", "20"))
SIDES = os.environ.get("CPRO_BENCH_SIDES", "cpro,keepalived").split(",")
SETTLE = 0.5  # s of steady service before each fault
PROBE_TIMEOUT = 0.5  # s: a connection not answered by then is a failed probe
RECOVERY_LIMIT = 10.0  # s: a run whose client is not served again by then counts as failed

FIP_GROUP = """
<group name="failover1"><resource name="fip@fip1"/></group>
"""
FIP_RESOURCE = f"""<types name="fip"/><fip name="fip1"><parameters><ip>{VIP}</ip></parameters></fip>"""

KEEPALIVED_CONF = """
global_defs {{
    router_id {name}
    vrrp_version 3
    script_user root
    enable_script_security
}}
vrrp_instance VI_1 {{
    state BACKUP
    nopreempt
    interface eth1
    virtual_router_id 51
    priority {priority}
    advert_int 0.1
    virtual_ipaddress {{
        {vip}/24 dev eth1
    }}
}}
"""




class Prober:
    """The client's probe process and its output file."""

    def __init__(self, lab, path):
        self.lab = lab
        self.path = path
        self.process = None

    def start(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.process = self.lab.spawn(self.lab.client, [
            sys.executable, "-m", "cpro.testing.lab.probe", "probe", "--target", f"{VIP}:{PORT}",
            "--interval", "0.01", "--timeout", str(PROBE_TIMEOUT), "--out", self.path])

    def rows(self):
        try:
            return read_probes(self.path)
        except FileNotFoundError:
            return []

    def stop(self):
        return self.process.stop(self.lab.reactor, 5) if self.process else defer.succeed(None)


@defer.inlineCallbacks
def sleep(reactor, seconds):
    yield task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_for(reactor, predicate, timeout, step=0.02):
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            return False
        yield sleep(reactor, step)
    return True


@defer.inlineCallbacks
def holder(lab, timeout=30):
    """The one server holding the VIP (waits until exactly one does)."""
    deadline = lab.reactor.seconds() + timeout
    while True:
        held = yield lab.holders(VIP, hosts=lab.names)
        if len(held) == 1:
            return held[0]
        if lab.reactor.seconds() > deadline:
            raise RuntimeError(f"{VIP} is held by {held or 'nobody'} after {timeout} s")
        yield sleep(lab.reactor, 0.05)


@defer.inlineCallbacks
def measure(lab, prober, bring_up):
    """One run: steady service, power off the holder, measure, power it on again."""
    yield holder(lab)
    prober.start()
    served = yield wait_for(lab.reactor, lambda: any(r[1] for r in prober.rows()), 10)
    if not served:
        raise RuntimeError("the client is not served before the fault")
    yield sleep(lab.reactor, SETTLE)
    # The server that serves the client now is the one to take down (an
    # election that was still settling may have moved the address).
    active = [r for r in prober.rows() if r[1]][-1][2]
    if (yield holder(lab)) != active:
        raise RuntimeError(f"the client is served by {active}, which does not hold {VIP}")
    fault = time.time()
    yield lab.server_down(active)

    def recovered():
        rows = prober.rows()
        return any(r[1] and r[0] > fault and r[2] != active for r in rows)

    ok = yield wait_for(lab.reactor, recovered, RECOVERY_LIMIT)
    # Probes still waiting for an answer are written when their timeout
    # passes: keep the prober until every probe started before recovery is in.
    yield sleep(lab.reactor, PROBE_TIMEOUT + 0.3)
    yield prober.stop()
    seconds, before, after = outage(prober.rows(), fault)
    yield lab.power_on(active)
    yield bring_up(active)
    return (seconds if ok else None), before, after


@defer.inlineCallbacks
def measure_runs(label, lab, prober, bring_up):
    outages = []
    for i in range(RUNS):
        seconds, before, after = yield measure(lab, prober, bring_up)
        outages.append(seconds)
        print(f"{label} run {i + 1:2d}: {before} -> {after}: "
              f"{'not recovered' if seconds is None else f'{seconds * 1000:.0f} ms'}", flush=True)
    return outages


@defer.inlineCallbacks
def bench_cpro(reactor, workdir):
    lab = NetnsLab(reactor, os.path.join(workdir, "cpro"), servers=2, interval_ms=100, timeout_ms=300,
                   sync_wait=10, root_xml=FIP_GROUP, resource_xml=FIP_RESOURCE)
    yield lab.create()
    try:
        lab.write_config()
        for name in lab.names:
            lab.serve(name, PORT)
        yield lab.start_all()
        prober = Prober(lab, os.path.join(lab.workdir, "probe.log"))

        @defer.inlineCallbacks
        def bring_up(server):
            lab.serve(server, PORT)
            lab.start(server)
            yield lab.wait_until(lambda st: all(st[n]["cluster"]["status"] == "Online"
                                                and st[n].get("service") == "Running" for n in lab.names),
                                 timeout=60, what="both servers Online with their cluster service Running")

        outages = yield measure_runs("cpro", lab, prober, bring_up)
        return outages
    finally:
        yield lab.destroy()


@defer.inlineCallbacks
def bench_keepalived(reactor, workdir):
    lab = NetnsLab(reactor, os.path.join(workdir, "keepalived"), servers=2)
    yield lab.create()
    keepalived = shutil.which("keepalived") or "/usr/sbin/keepalived"
    try:
        def start(server):
            conf = os.path.join(lab.workdir, f"{server}-keepalived.conf")
            priority = 150 - 50 * lab.names.index(server)
            with open(conf, "w") as f:
                f.write(KEEPALIVED_CONF.format(name=server, priority=priority, vip=VIP))
            pidfiles = [os.path.join(lab.workdir, f"{server}-{what}.pid") for what in ("keepalived", "vrrp")]
            for path in pidfiles:  # left by the powered-off instance: keepalived would refuse to start
                if os.path.exists(path):
                    os.unlink(path)
            lab.serve(server, PORT)
            lab.spawn(server, [keepalived, "-n", "-l", "-D", "-P", "-f", conf,
                               "-p", pidfiles[0], "-r", pidfiles[1]],
                      log_path=os.path.join(lab.workdir, f"{server}-keepalived.log"))

        for name in lab.names:
            start(name)
        yield sleep(reactor, 2.0)  # the first election
        yield holder(lab)
        prober = Prober(lab, os.path.join(lab.workdir, "probe.log"))

        @defer.inlineCallbacks
        def bring_up(server):
            start(server)
            yield sleep(reactor, 1.0)  # let it settle as backup (nopreempt: the VIP stays)
            yield holder(lab)

        outages = yield measure_runs("keepalived", lab, prober, bring_up)
        return outages
    finally:
        yield lab.destroy()


def figures(outages):
    done = [o for o in outages if o is not None]
    if not outages:
        return {"runs": 0}
    if not done:
        return {"runs": len(outages), "failed": len(outages)}
    return {"runs": len(outages), "failed": len(outages) - len(done),
            "median_s": round(statistics.median(done), 4), "p95_s": round(percentile(done, 95), 4),
            "max_s": round(max(done), 4)}


@defer.inlineCallbacks
def main(reactor):
    if not is_root():
        print("failover_vs_keepalived: needs root (network namespaces); skipped")
        print(json.dumps({"benchmark": "failover_vs_keepalived", "skipped": "needs root"}))
        return
    workdir = tempfile.mkdtemp(prefix="cpro-bench-ka-")
    try:
        cpro = yield bench_cpro(reactor, workdir) if "cpro" in SIDES else []
        ka = yield bench_keepalived(reactor, workdir) if "keepalived" in SIDES else []
    finally:
        if os.environ.get("CPRO_BENCH_KEEP"):
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    c, k = figures(cpro), figures(ka)
    result = {"benchmark": "failover_vs_keepalived", "runs": RUNS,
              "detection": "cpro hb 100/300 ms; keepalived VRRPv3 advert 0.1 s x3", "cpro": c, "keepalived": k}
    if c.get("median_s") and k.get("median_s"):
        result["ratio_median"] = round(c["median_s"] / k["median_s"], 3)
        result["ratio_p95"] = round(c["p95_s"] / k["p95_s"], 3)
        result["goal_met"] = c["p95_s"] <= k["p95_s"] and c["p95_s"] < 0.5 and c["failed"] == 0
    print()
    print("client outage (s)       median     p95     max  failed")
    for name, f in (("cpro", c), ("keepalived", k)):
        if "p95_s" in f:
            print(f"  {name:<20} {f['median_s']:7.3f} {f['p95_s']:7.3f} {f['max_s']:7.3f}  {f['failed']:6d}")
    if "ratio_p95" in result:
        print(f"  cpro/keepalived: median {result['ratio_median']}, p95 {result['ratio_p95']}")
    print(json.dumps(result))


if __name__ == "__main__":
    task.react(main)
