"""Tests for cpro.services.heartbeat.bmchb: beating on the own BMC's watchdog and reading the peers'."""

import dataclasses

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from cpro.config.model import BmcConfig, HeartbeatConfig
from cpro.interfaces import IHeartbeatPath
from cpro.plugins import HEARTBEAT_KINDS
from cpro.system.runners import run_inline
from cpro.services.heartbeat import base as hbpath
from cpro.system.ipmi import BmcClient
from cpro.services.heartbeat.bmchb import SPAN, BmcHeartbeatPath, bmc_path, countdown_base
from cpro.testing.fakes import make_config
from test.unit.test_bmc import FakeBmc

BMCHB = HeartbeatConfig(name="bmchb1", kind="bmchb", priority=4, device=600)


def config_with_bmcs(servers=("srv1", "srv2"), without=(), hb_timeout=5.0):
    config = make_config(servers=servers, hb_interval=1.0, hb_timeout=hb_timeout)
    with_bmc = []
    for i, server in enumerate(config.servers):
        bmc = None if server.name in without else BmcConfig(address=f"192.0.2.{i + 1}", user="u", password="p")
        with_bmc.append(dataclasses.replace(server, bmc=bmc))
    return dataclasses.replace(config, servers=tuple(with_bmc), heartbeats=config.heartbeats + (BMCHB,))


class BmcHeartbeatTests(SynchronousTestCase):
    local = "srv1"

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.bmcs = {}  # address -> FakeBmc
        self.alive = []
        self.runner = run_inline

    def build(self, config=None, **kwargs):
        config = config or config_with_bmcs(**kwargs)
        for server in config.servers:
            if server.bmc is not None:
                self.bmcs.setdefault(server.bmc.address, FakeBmc())
        self.context = hbpath.HeartbeatContext(
            reactor=self.clock, config=config, local=self.local, incarnation=None,
            on_beat=lambda *a: self.fail("bmchb carries no packets"),
            on_alive=lambda *a: self.alive.append(a), runner=self.runner)

        def client_factory(bmc, timeout):
            return BmcClient(self.runner, bmc, timeout, clock=self.clock,
                             command_factory=self.bmcs[bmc.address].factory)

        self.path = BmcHeartbeatPath(self.context, BMCHB, client_factory=client_factory)
        self.path.start_listening()
        return self.path

    def tearDown(self):
        if getattr(self, "path", None) is not None:
            self.successResultOf(self.path.stop_listening())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @property
    def own(self):
        return self.bmcs["192.0.2.1"]

    @property
    def peer(self):
        return self.bmcs["192.0.2.2"]

    def beat(self):
        self.path.send_beat(None)

    def test_interface(self):
        self.build()
        self.assertTrue(verifyObject(IHeartbeatPath, self.path))
        self.assertEqual((self.path.name, self.path.kind), ("bmchb1", "bmchb"))

    def test_registered_kind(self):
        self.assertIs(HEARTBEAT_KINDS.get("bmchb").factory, bmc_path)

    def test_factory_builds_a_path_on_the_context_runner(self):
        config = config_with_bmcs()
        context = hbpath.HeartbeatContext(self.clock, config, "srv1", None, lambda *a: None,
                                          lambda *a: None, run_inline)
        path = HEARTBEAT_KINDS.get("bmchb").factory(context, BMCHB)
        self.assertTrue(verifyObject(IHeartbeatPath, path))
        self.assertEqual(path.peers(), {"srv2": "192.0.2.2:623"})

    def test_not_a_bmchb(self):
        config = config_with_bmcs()
        context = hbpath.HeartbeatContext(self.clock, config, "srv1", None, lambda *a: None,
                                          lambda *a: None, run_inline)
        self.assertRaises(hbpath.HeartbeatConfigError, BmcHeartbeatPath, context,
                          dataclasses.replace(BMCHB, kind="lanhb"))

    def test_beat_sets_a_changing_countdown_with_no_action(self):
        self.build()
        base = countdown_base(5.0)
        self.assertGreaterEqual(base, 150)  # 10 s more than the 5 s timeout
        seen = []
        for _ in range(3):
            self.beat()
            self.assertEqual(self.own.wd_action, 0)
            self.assertEqual(self.own.wd_use, 5)
            seen.append(self.own.wd_initial)
        self.assertEqual(len(set(seen)), 3)
        self.assertTrue(all(base <= v < base + SPAN for v in seen))
        self.assertEqual(self.path.counters()["sent"], 3)
        # Set then Reset, nothing else, on the local BMC.
        self.assertEqual({(n, c) for n, c, _ in self.own.requests}, {(0x06, 0x24), (0x06, 0x22)})

    def test_countdown_base_is_bounded(self):
        self.assertEqual(countdown_base(1.0), 110)
        self.assertEqual(countdown_base(30.0), 600)
        self.assertEqual(countdown_base(10 ** 6), 0xFFFF - SPAN)

    def test_running_timer_gives_the_age(self):
        self.build()
        self.peer.wd_use, self.peer.wd_running = 5, True
        self.peer.wd_initial, self.peer.wd_present = 300, 280
        self.beat()
        self.assertEqual(self.alive, [("bmchb1", "srv2", None, 2.0)])
        self.assertEqual(self.path.last_heard("srv2"), 998.0)

    def test_running_timer_too_old(self):
        self.build()
        self.peer.wd_use, self.peer.wd_running = 5, True
        self.peer.wd_initial, self.peer.wd_present = 300, 240  # 6 s ago, timeout 5 s
        self.beat()
        self.assertEqual(self.alive, [])
        self.assertEqual(self.path.counters()["received"], 1)

    def test_stopped_timer_unchanged_is_no_evidence(self):
        """A real BMC whose timer expired (the peer stopped beating): running bit clear."""
        self.build()
        self.peer.wd_use, self.peer.wd_running, self.peer.wd_initial = 5, False, 300
        for _ in range(3):
            self.beat()
            self.clock.advance(1)
        self.assertEqual(self.alive, [])

    def test_token_changes_prove_liveness(self):
        """ipmi_sim: the timer never runs with action none; the countdown value changes."""
        self.build()
        self.peer.report_present = False
        self.peer.wd_use, self.peer.wd_initial = 5, 200
        self.beat()  # first read: nothing to compare with
        self.assertEqual(self.alive, [])
        self.clock.advance(1)
        self.peer.wd_initial = 201
        self.beat()
        # The change happened after the previous read, one second ago at most.
        self.assertEqual(self.alive, [("bmchb1", "srv2", None, 1.0)])
        # The peer stops: the age grows until the timeout, then nothing.
        for expected_age in (2.0, 3.0, 4.0):
            self.clock.advance(1)
            self.beat()
            self.assertEqual(self.alive[-1], ("bmchb1", "srv2", None, expected_age))
        count = len(self.alive)
        self.clock.advance(1)
        self.beat()
        self.assertEqual(len(self.alive), count)
        # It comes back.
        self.clock.advance(1)
        self.peer.wd_initial = 202
        self.beat()
        self.assertEqual(self.alive[-1], ("bmchb1", "srv2", None, 1.0))

    def test_running_bit_without_present_countdown_uses_the_token(self):
        """ipmi_sim echoes the don't-stop bit as "running" but gives no present countdown."""
        self.build()
        self.peer.report_present = False
        self.peer.wd_use, self.peer.wd_running, self.peer.wd_initial = 5, True, 200
        self.beat()
        self.clock.advance(1)
        self.beat()
        self.assertEqual(self.alive, [])

    def test_two_paths_beat_and_read_each_other(self):
        """The token written by one server's path is what the other's path reads."""
        self.build()
        self.peer.report_present = False
        other = BmcHeartbeatTests("test_interface")
        other.clock, other.bmcs, other.alive, other.runner = self.clock, self.bmcs, [], run_inline
        other.local = "srv2"
        peer_path = other.build()
        for _ in range(3):
            peer_path.send_beat(None)  # srv2 beats (and reads srv1)
            self.beat()  # srv1 reads srv2
            self.clock.advance(1)
        self.assertEqual([a[:3] for a in self.alive], [("bmchb1", "srv2", None)] * 2)
        self.successResultOf(peer_path.stop_listening())

    def test_other_watchdog_user_is_no_evidence(self):
        self.build()
        self.peer.wd_use, self.peer.wd_running = 4, True  # SMS/OS: an OS watchdog daemon
        self.peer.wd_initial, self.peer.wd_present = 300, 299
        self.beat()
        self.assertEqual(self.alive, [])
        self.assertEqual(self.path.counters()["not_armed"], 1)

    def test_unreachable_peer_is_counted_not_raised(self):
        self.build()
        self.peer.login_error = Exception(None)
        for _ in range(12):
            self.beat()
        counters = self.path.counters()
        self.assertEqual(counters["receive_errors"], 12)
        self.assertEqual(counters["sent"], 12)  # the own BMC still works
        self.assertEqual(self.alive, [])
        self.peer.login_error = None
        self.peer.wd_use, self.peer.wd_running = 5, True
        self.peer.wd_initial, self.peer.wd_present = 300, 300
        self.beat()
        self.assertEqual(self.alive, [("bmchb1", "srv2", None, 0.0)])

    def test_own_bmc_failure_is_counted(self):
        self.build()
        self.own.refuse[(0x06, 0x24)] = (0xC1, "Invalid command")
        self.beat()
        self.beat()
        self.assertEqual(self.path.counters()["send_errors"], 2)
        self.assertEqual(self.path.counters()["sent"], 0)

    def test_on_alive_failure_does_not_escape(self):
        self.build()
        self.context.on_alive = lambda *a: 1 / 0
        self.peer.wd_use, self.peer.wd_running = 5, True
        self.peer.wd_initial, self.peer.wd_present = 300, 300
        self.beat()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_server_without_bmc_is_skipped(self):
        self.build(servers=("srv1", "srv2", "srv3"), without=("srv3",))
        self.assertEqual(self.path.skipped, ["srv3"])
        self.assertEqual(set(self.path.peers()), {"srv2"})
        self.beat()

    def test_local_server_without_bmc_still_reads_peers(self):
        self.build(without=("srv1",))
        self.peer.wd_use, self.peer.wd_running = 5, True
        self.peer.wd_initial, self.peer.wd_present = 300, 295
        self.beat()
        self.assertEqual(self.alive, [("bmchb1", "srv2", None, 0.5)])
        self.assertEqual(self.path.counters()["sent"], 0)

    def test_busy_bmc_is_skipped_not_queued(self):
        parked = []

        def parked_runner(fn, *args):
            d = defer.Deferred()
            parked.append((d, fn, args))
            return d

        self.runner = parked_runner
        self.build()
        self.beat()
        self.assertEqual(len(parked), 2)  # one beat, one read
        self.beat()
        self.beat()
        self.assertEqual(len(parked), 2)
        self.assertEqual(self.path.counters()["skipped_busy"], 4)
        # The requests time out; the threads are still in pyghmi: still skipped.
        self.clock.advance(5)
        self.beat()
        self.assertEqual(len(parked), 2)
        self.assertEqual(self.path.counters()["receive_errors"], 1)
        self.assertEqual(self.path.counters()["send_errors"], 1)
        for d, fn, args in parked:
            d.callback(fn(*args))
        del parked[:]
        self.beat()
        self.assertEqual(len(parked), 2)
        for d, fn, args in parked:
            d.callback(fn(*args))

    def test_forget(self):
        self.build()
        self.peer.report_present = False
        self.peer.wd_use, self.peer.wd_initial = 5, 200
        self.beat()
        self.clock.advance(1)
        self.path.forget("srv2")
        self.peer.wd_initial = 201
        self.beat()
        self.assertEqual(self.alive, [])  # nothing to compare with after forget
        self.path.forget("nobody")

    def test_stopped_path_does_nothing(self):
        self.build()
        self.successResultOf(self.path.stop_listening())
        self.beat()
        self.assertEqual(self.own.requests, [])
        self.path.start_listening()
        self.path.start_listening()
        self.beat()
        self.assertEqual(self.path.counters()["sent"], 1)
