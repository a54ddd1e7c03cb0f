"""IPMI against real BMC simulators (OpenIPMI ipmi_sim on 127.0.0.x), cross-checked with ipmitool.

Needs the Debian packages openipmi (ipmi_sim) and ipmitool; no root (the
simulators listen on high UDP ports of loopback addresses).
"""

import dataclasses
import itertools
import os
import stat
import time

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from cpro.config.model import ForcedStopConfig, HeartbeatConfig
from cpro.interfaces import IForcedStop, IHeartbeatPath
from cpro.plugins import HEARTBEAT_KINDS
from cpro.testing.lab.common import tool
from cpro.testing.lab.ipmisim import IpmiSimulator
from cpro.system.runners import thread_runner
from cpro.services.heartbeat import base as hbpath
from cpro.system.ipmi import BmcClient, BmcError
from cpro.services.partition.forcestop import ScriptForcedStop, make_forced_stop
from cpro.testing.fakes import make_config


def _missing():
    for name in ("ipmi_sim", "ipmitool"):
        try:
            tool(name)
        except Exception:
            return f"{name} is not installed (Debian packages openipmi, ipmitool)"
    return None


# Each simulator gets its own loopback address: pyghmi caches sessions per
# address, and a session to an earlier simulator must not be reused.
_ADDRESSES = (f"127.0.{third}.{fourth}" for third, fourth in itertools.product(range(90, 100), range(2, 250)))
PORT = 16623
BMCHB = HeartbeatConfig(name="bmchb1", kind="bmchb", priority=4, device=600)


class IpmiTests(TestCase):
    skip = _missing()
    timeout = 90

    def setUp(self):
        self.simulators = []
        self.runner = thread_runner(reactor)

    @defer.inlineCallbacks
    def tearDown(self):
        for sim in self.simulators:
            yield sim.stop()
        yield task.deferLater(reactor, 0, lambda: None)

    @defer.inlineCallbacks
    def simulator(self, **kwargs):
        sim = IpmiSimulator(reactor, next(_ADDRESSES), PORT, name=f"bmc{len(self.simulators) + 1}", **kwargs)
        self.simulators.append(sim)  # stopped in tearDown even if start fails
        yield sim.start()
        return sim

    def config(self, *sims, **kwargs):
        config = make_config(servers=tuple(f"srv{i + 1}" for i in range(len(sims))), **kwargs)
        servers = tuple(dataclasses.replace(s, bmc=sim.bmc_config()) for s, sim in zip(config.servers, sims))
        return dataclasses.replace(config, servers=servers, heartbeats=config.heartbeats + (BMCHB,))

    @defer.inlineCallbacks
    def test_power_off_and_identify(self):
        sim = yield self.simulator()
        client = BmcClient(self.runner, sim.bmc_config(), 5, clock=reactor)
        self.assertEqual((yield client.power_state()), "on")
        before = time.time()
        yield client.power("off")
        after = time.time()
        [(stamp, action, _)] = sim.chassis_log()
        self.assertEqual(action, "off")
        self.assertTrue(before - 0.01 <= stamp <= after + 0.01, (before, stamp, after))
        code, out = yield sim.ipmitool("chassis", "power", "status")
        self.assertEqual((code, out.strip()), (0, "Chassis Power is off"))
        self.assertEqual((yield client.power_state()), "off")
        yield client.identify(5)
        self.assertEqual(sim.chassis_log()[-1][1:], ("identify", "5 0"))
        yield client.power("on")
        code, out = yield sim.ipmitool("chassis", "power", "status")
        self.assertEqual(out.strip(), "Chassis Power is on")

    @defer.inlineCallbacks
    def test_ipmitool_sees_the_watchdog_beat(self):
        sim = yield self.simulator()
        client = BmcClient(self.runner, sim.bmc_config(), 5, clock=reactor)
        yield client.watchdog_beat(345)
        code, out = yield sim.ipmitool("mc", "watchdog", "get")
        self.assertEqual(code, 0, out)
        self.assertIn("No action", out)
        self.assertIn("Initial Countdown:      34.5 sec", out)
        state = yield client.watchdog_state()
        self.assertEqual((state.use, state.action, state.initial_tenths), (5, 0, 345))

    @defer.inlineCallbacks
    def test_nmi_is_refused_by_ipmi_sim(self):
        sim = yield self.simulator()
        client = BmcClient(self.runner, sim.bmc_config(), 5, clock=reactor)
        with self.assertRaises(BmcError) as caught:
            yield client.power("nmi")
        self.assertIn("power nmi failed", str(caught.exception))
        self.assertEqual(sim.chassis_log(), [])

    @defer.inlineCallbacks
    def test_wrong_password(self):
        sim = yield self.simulator()
        bmc = dataclasses.replace(sim.bmc_config(), password="wrong")
        with self.assertRaises(BmcError) as caught:
            yield BmcClient(self.runner, bmc, 5, clock=reactor).power_state()
        self.assertIn(sim.address, str(caught.exception))

    @defer.inlineCallbacks
    def test_dead_bmc_times_out(self):
        sim = yield self.simulator()
        yield sim.kill()
        client = BmcClient(self.runner, sim.bmc_config(), 1, clock=reactor)
        started = reactor.seconds()
        with self.assertRaises(BmcError) as caught:
            yield client.power_state()
        self.assertLess(reactor.seconds() - started, 3)
        self.assertIn(sim.address, str(caught.exception))

    @defer.inlineCallbacks
    def test_bmc_heartbeat_between_two_bmcs(self):
        hb_timeout = 5.0
        sim_a = yield self.simulator()
        sim_b = yield self.simulator()
        config = self.config(sim_a, sim_b, hb_interval=0.5, hb_timeout=hb_timeout)
        alive = {"srv1": [], "srv2": []}
        paths = {}
        for local in ("srv1", "srv2"):
            context = hbpath.HeartbeatContext(
                reactor, config, local, None, lambda *a: None,
                lambda path, server, inc, age, local=local: alive[local].append((reactor.seconds(), server, age)),
                self.runner)
            paths[local] = HEARTBEAT_KINDS.get("bmchb").factory(context, BMCHB)
            self.assertTrue(verifyObject(IHeartbeatPath, paths[local]))
            paths[local].start_listening()

        beating = {"srv1", "srv2"}

        def round_():
            for name in beating:
                paths[name].send_beat(None)

        def seen_by_b():
            return [a for a in alive["srv2"] if a[1] == "srv1"]

        loop = task.LoopingCall(round_)
        loop.start(0.5)
        try:
            # Each side needs a baseline read, then a changed one; the first IPMI
            # sessions are slow on a loaded machine.
            for _ in range(100):
                yield task.deferLater(reactor, 0.1, lambda: None)
                if len(seen_by_b()) >= 2 and any(a[1] == "srv2" for a in alive["srv1"]):
                    break
            self.assertGreaterEqual(len(seen_by_b()), 2, (alive, paths["srv2"].counters()))
            # Typically one beat interval (0.5 s) plus the request latency;
            # more when pyghmi had to retry a request (0.5 to 1 s).
            self.assertLess(min(age for _, _, age in seen_by_b()), 2.5, seen_by_b())
            self.assertTrue(all(age < hb_timeout for _, _, age in seen_by_b()))
            self.assertTrue(any(a[1] == "srv2" for a in alive["srv1"]), (alive, paths["srv1"].counters()))
            # A stops beating (its path is silent, its BMC still answers):
            # B's path reports ever older sightings, then none. The timeout
            # leaves room for several reads even when pyghmi stalls on a loaded machine.
            beating.discard("srv1")
            stopped_at = reactor.seconds()
            yield task.deferLater(reactor, hb_timeout + 1.5, lambda: None)
            after = [a for a in seen_by_b() if a[0] > stopped_at + 0.8]
            self.assertGreaterEqual(len(after), 2, after)
            ages = [age for _, _, age in after]
            self.assertEqual(ages, sorted(ages))
            self.assertTrue(all(age < hb_timeout for age in ages), after)
            self.assertFalse([a for a in after if a[0] > stopped_at + hb_timeout + 1.2], after)
            self.assertEqual(paths["srv2"].counters()["receive_errors"], 0)
            self.assertEqual(paths["srv1"].counters()["send_errors"], 0)
            self.assertEqual(paths["srv2"].counters()["alive"], len([a for a in alive["srv2"]]))
            # Every beat left the watchdog action at "no action" on the real simulator.
            code, out = yield sim_a.ipmitool("mc", "watchdog", "get")
            self.assertIn("No action", out)
        finally:
            loop.stop()
            for path in paths.values():
                yield path.stop_listening()

    @defer.inlineCallbacks
    def test_bmc_forced_stop_runs_the_hook(self):
        marks = os.path.abspath(self.mktemp())
        hook = ["/bin/sh", "-c", f'echo "$1" >> {marks}', "hook"]
        sim_a = yield self.simulator()
        sim_b = yield self.simulator(hook=hook)
        forced_stop = ForcedStopConfig(enabled=True, method="bmc", bmc_action="off", timeout=5.0)
        config = dataclasses.replace(self.config(sim_a, sim_b), forced_stop=forced_stop)
        stopper = make_forced_stop(reactor, config, "srv1", self.runner)
        self.assertTrue(verifyObject(IForcedStop, stopper))
        yield stopper.stop_server("srv2")
        self.assertEqual([e[1] for e in sim_b.chassis_log()], ["off"])
        self.assertEqual(sim_a.chassis_log(), [])
        with open(marks) as f:
            self.assertEqual(f.read().split(), ["off"])
        code, out = yield sim_b.ipmitool("chassis", "power", "status")
        self.assertEqual(out.strip(), "Chassis Power is off")
        yield stopper.identify("srv2", 10)
        self.assertEqual(sim_b.chassis_log()[-1][1:], ("identify", "10 0"))

    @defer.inlineCallbacks
    def test_bmc_forced_stop_reset(self):
        sim = yield self.simulator()
        forced_stop = ForcedStopConfig(enabled=True, method="bmc", bmc_action="reset", timeout=5.0)
        sim2 = yield self.simulator()
        config = dataclasses.replace(self.config(sim2, sim), forced_stop=forced_stop)
        yield make_forced_stop(reactor, config, "srv1", self.runner).stop_server("srv2")
        self.assertEqual([e[1] for e in sim.chassis_log()], ["reset"])

    @defer.inlineCallbacks
    def test_script_forced_stop(self):
        out = os.path.abspath(self.mktemp())
        script = os.path.abspath(self.mktemp())
        with open(script, "w") as f:
            f.write(f'#!/bin/sh\nenv > "{out}"\n')
        os.chmod(script, os.stat(script).st_mode | stat.S_IXUSR)
        config = make_config()
        config = dataclasses.replace(config, forced_stop=ForcedStopConfig(
            enabled=True, method="script", script=script, timeout=5.0))
        stopper = make_forced_stop(reactor, config, "srv1", self.runner)
        self.assertIsInstance(stopper, ScriptForcedStop)
        self.assertTrue(verifyObject(IForcedStop, stopper))
        yield stopper.stop_server("srv2")
        with open(out) as f:
            env = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
        self.assertEqual((env["CLP_SERVER_DOWN"], env["CLP_SERVER_LOCAL"], env["CLP_FORCESTOP_MODE"]),
                         ("srv2", "srv1", "1"))
