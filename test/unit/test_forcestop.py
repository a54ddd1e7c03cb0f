"""Tests for cpro.services.partition.forcestop: forced stop through the BMC and by script."""

import dataclasses
import os
import stat

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from cpro.config.model import BmcConfig, ForcedStopConfig
from cpro.interfaces import IForcedStop
from cpro.system.runners import run_inline
from cpro.system.ipmi import BmcClient
from cpro.services.partition.forcestop import (
    BmcForcedStop,
    ForcedStopConfigError,
    ForcedStopError,
    ScriptForcedStop,
    make_forced_stop,
)
from cpro.testing.fakes import make_config
from test.unit.test_bmc import FakeBmc


def config_with(forced_stop, without_bmc=()):
    config = make_config(servers=("srv1", "srv2"))
    servers = tuple(dataclasses.replace(s, bmc=None if s.name in without_bmc else
                                        BmcConfig(address=f"192.0.2.{i + 1}", user="u", password="p"))
                    for i, s in enumerate(config.servers))
    return dataclasses.replace(config, servers=servers, forced_stop=forced_stop)


class BmcForcedStopTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.bmcs = {}

    def build(self, action="off", timeout=3.0, without_bmc=(), clock=True, runner=run_inline):
        forced_stop = ForcedStopConfig(enabled=True, method="bmc", bmc_action=action, timeout=timeout)
        config = config_with(forced_stop, without_bmc)
        for server in config.servers:
            if server.bmc is not None:
                self.bmcs[server.name] = FakeBmc()
        by_address = {s.bmc.address: self.bmcs[s.name] for s in config.servers if s.bmc}
        used_clock = self.clock if clock else None

        def client_factory(bmc, timeout):
            return BmcClient(runner, bmc, timeout, clock=used_clock,
                             command_factory=by_address[bmc.address].factory)

        self.stopper = BmcForcedStop(runner, forced_stop, config.servers, clock=used_clock,
                                     client_factory=client_factory)
        return self.stopper

    def tearDown(self):
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_interface(self):
        self.assertTrue(verifyObject(IForcedStop, self.build()))
        self.assertEqual(self.stopper.method, "bmc")

    def test_power_off_confirmed(self):
        self.build()
        self.assertIsNone(self.successResultOf(self.stopper.stop_server("srv2")))
        self.assertEqual(self.bmcs["srv2"].power, "off")
        self.assertEqual(self.bmcs["srv1"].requests, [])
        self.assertIn((0x00, 0x02, [0]), self.bmcs["srv2"].requests)

    def test_power_off_waits_for_the_chassis(self):
        self.build()
        self.bmcs["srv2"].off_takes = 3  # three more reads say "on"
        d = self.stopper.stop_server("srv2")
        self.assertNoResult(d)
        self.clock.advance(0.25)
        self.clock.advance(0.25)
        self.assertNoResult(d)
        self.clock.advance(0.25)
        self.successResultOf(d)

    def test_already_off(self):
        self.build()
        self.bmcs["srv2"].power = "off"
        self.successResultOf(self.stopper.stop_server("srv2"))
        self.assertEqual(self.bmcs["srv2"].requests, [(0x00, 0x01, [])])

    def test_never_off_times_out(self):
        self.build(timeout=2.0)
        self.bmcs["srv2"].off_takes = 10 ** 6
        d = self.stopper.stop_server("srv2")
        self.clock.pump([0.25] * 8)
        failure = self.failureResultOf(d, ForcedStopError)
        self.assertEqual(failure.value.server, "srv2")
        self.assertIn("not confirmed within 2 s", str(failure.value))

    def test_never_off_without_clock(self):
        self.build(clock=False)
        self.bmcs["srv2"].off_takes = 10 ** 6
        failure = self.failureResultOf(self.stopper.stop_server("srv2"), ForcedStopError)
        self.assertIn("still reports the chassis on", failure.value.reason)

    def test_other_actions_need_only_acceptance(self):
        for action, byte in (("reset", 3), ("cycle", 2), ("nmi", 4)):
            self.build(action=action)
            self.successResultOf(self.stopper.stop_server("srv2"))
            self.assertEqual(self.bmcs["srv2"].requests, [(0x00, 0x02, [byte])])

    def test_bmc_refuses(self):
        self.build(action="nmi")
        self.bmcs["srv2"].refuse[(0x00, 0x02)] = (0xCC, "Invalid data field in request")
        failure = self.failureResultOf(self.stopper.stop_server("srv2"), ForcedStopError)
        self.assertEqual(failure.value.server, "srv2")
        self.assertIn("192.0.2.2:623", failure.value.reason)
        self.assertIn("power nmi failed", failure.value.reason)

    def test_bmc_unreachable(self):
        self.build()
        self.bmcs["srv2"].login_error = Exception(None)
        failure = self.failureResultOf(self.stopper.stop_server("srv2"), ForcedStopError)
        self.assertIn("no answer", str(failure.value))

    def test_hung_bmc_times_out(self):
        parked = []

        def parked_runner(fn, *args):
            d = defer.Deferred()
            parked.append(d)
            return d

        self.build(runner=parked_runner, timeout=3.0)
        d = self.stopper.stop_server("srv2")
        self.clock.advance(3)
        failure = self.failureResultOf(d, ForcedStopError)
        self.assertEqual(failure.value.server, "srv2")

    def test_cancel(self):
        self.build()
        self.bmcs["srv2"].off_takes = 10 ** 6
        d = self.stopper.stop_server("srv2")
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)

    def test_server_without_bmc(self):
        self.build(without_bmc=("srv2",))
        failure = self.failureResultOf(self.stopper.stop_server("srv2"), ForcedStopError)
        self.assertIn("no BMC", failure.value.reason)
        failure = self.failureResultOf(self.stopper.stop_server("srv9"), ForcedStopError)
        self.assertIn("not a server", failure.value.reason)

    def test_identify(self):
        self.build()
        self.successResultOf(self.stopper.identify("srv2", 250))
        self.assertEqual(self.bmcs["srv2"].requests, [(0x00, 0x04, [250, 0])])
        self.bmcs["srv2"].refuse[(0x00, 0x04)] = (0xC1, "Invalid command")
        failure = self.failureResultOf(self.stopper.identify("srv2", 5), ForcedStopError)
        self.assertIn("identify", failure.value.reason)
        self.failureResultOf(self.stopper.identify("srv9", 5), ForcedStopError)

    def test_bad_action(self):
        forced_stop = ForcedStopConfig(enabled=True, bmc_action="on")
        self.assertRaises(ForcedStopConfigError, BmcForcedStop, run_inline, forced_stop, ())


class MakeForcedStopTests(SynchronousTestCase):
    def test_disabled(self):
        config = config_with(ForcedStopConfig(enabled=False))
        self.assertIsNone(make_forced_stop(task.Clock(), config, "srv1", run_inline))

    def test_bmc(self):
        config = config_with(ForcedStopConfig(enabled=True, method="bmc"), without_bmc=("srv1",))
        stopper = make_forced_stop(task.Clock(), config, "srv1", run_inline)
        self.assertIsInstance(stopper, BmcForcedStop)
        self.assertTrue(verifyObject(IForcedStop, stopper))

    def test_script(self):
        config = config_with(ForcedStopConfig(enabled=True, method="script", script="/bin/true"))
        stopper = make_forced_stop(task.Clock(), config, "srv1", run_inline)
        self.assertIsInstance(stopper, ScriptForcedStop)
        self.assertTrue(verifyObject(IForcedStop, stopper))
        self.assertEqual(stopper.environment("srv2"), {
            "CLP_SERVER_DOWN": "srv2", "CLP_SERVER_LOCAL": "srv1", "CLP_FORCESTOP_MODE": "1"})

    def test_script_missing(self):
        config = config_with(ForcedStopConfig(enabled=True, method="script", script=None))
        self.assertRaises(ForcedStopConfigError, make_forced_stop, task.Clock(), config, "srv1", run_inline)

    def test_unknown_method(self):
        config = config_with(ForcedStopConfig(enabled=True, method="stonith"))
        self.assertRaises(ForcedStopConfigError, make_forced_stop, task.Clock(), config, "srv1", run_inline)


class ScriptForcedStopTests(TestCase):
    """Real scripts run through cpro.system.process (short, harmless)."""

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def tearDown(self):
        return task.deferLater(reactor, 0, lambda: None)

    def script(self, body):
        path = os.path.join(self.dir, "forcestop.sh")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        return path

    def stopper(self, path, timeout=10.0):
        forced_stop = ForcedStopConfig(enabled=True, method="script", script=path, timeout=timeout)
        return ScriptForcedStop(reactor, forced_stop, "srv1")

    @defer.inlineCallbacks
    def test_success_and_environment(self):
        out = os.path.join(self.dir, "env.txt")
        path = self.script(f'env > "{out}"\nexit 0\n')
        result = yield self.stopper(path).stop_server("srv2")
        self.assertIsNone(result)
        with open(out) as f:
            env = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
        self.assertEqual(env["CLP_SERVER_DOWN"], "srv2")
        self.assertEqual(env["CLP_SERVER_LOCAL"], "srv1")
        self.assertEqual(env["CLP_FORCESTOP_MODE"], "1")
        self.assertNotIn("HOME", env)  # nothing inherited from the daemon

    @defer.inlineCallbacks
    def test_failure_exit_code(self):
        path = self.script("exit 3\n")
        with self.assertRaises(ForcedStopError) as caught:
            yield self.stopper(path).stop_server("srv2")
        self.assertEqual(caught.exception.server, "srv2")
        self.assertIn("exited with code 3", caught.exception.reason)

    @defer.inlineCallbacks
    def test_timeout_kills_the_script(self):
        path = self.script("sleep 30\n")
        with self.assertRaises(ForcedStopError) as caught:
            yield self.stopper(path, timeout=0.3).stop_server("srv2")
        self.assertIn("timed out", caught.exception.reason)

    @defer.inlineCallbacks
    def test_cannot_run(self):
        with self.assertRaises(ForcedStopError) as caught:
            yield self.stopper(os.path.join(self.dir, "missing.sh")).stop_server("srv2")
        self.assertIn("no such file", caught.exception.reason)

    @defer.inlineCallbacks
    def test_identify_is_a_no_op(self):
        result = yield self.stopper("/bin/true").identify("srv2", 10)
        self.assertIsNone(result)
