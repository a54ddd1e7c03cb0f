"""Integration: the COM heartbeat path on real ptys made by socat.

Two ComHeartbeatPath instances in this process, one per server, talk over
a socat pty pair (or two pairs joined by a relay that can pull the cable
and inject line noise). Needs socat (Debian: socat); CI installs it.
socat processes are started and stopped by PID, also when a test fails.
"""

import dataclasses
import shutil
import tempfile

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cpro.config.model import Device, HeartbeatConfig
from cpro.testing.lab.serial import SerialCable, SocatPair, socat_available
from cpro.protocols.heartbeat import StateDigest, new_incarnation
from cpro.services.heartbeat.comhb import ComHeartbeatPath
from cpro.testing.fakes import make_config

HB = HeartbeatConfig(name="comhb1", kind="comhb", priority=2, device=200, baud_rate=19200)
BOOTS = {"srv1": new_incarnation(1700000000.0, nonce="aaaa"),
         "srv2": new_incarnation(1700000001.0, nonce="bbbb")}
DIGEST = StateDigest("0" * 64, 1, "running")
BEAT_EVERY = 0.05
REOPEN = 0.2


class ComHeartbeatLineTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        if not socat_available():
            raise unittest.SkipTest("needs socat (Debian package socat) to make pty pairs")
        self.dir = tempfile.mkdtemp(prefix="cprocom-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.beats = []  # (receiving server, path name, sender, seq)

    def tearDown(self):
        # One reactor turn after each test: works around trial losing the
        # SIGCHLD handler when a test ends while the reactor is starting.
        return task.deferLater(reactor, 0, lambda: None)

    # -- helpers ---------------------------------------------------------------------

    def config(self, tty1, tty2):
        config = make_config(servers=("srv1", "srv2"))
        ttys = {"srv1": tty1, "srv2": tty2}
        servers = tuple(
            dataclasses.replace(s, devices=s.devices + (Device(id=200, type="com", info=ttys[s.name]),))
            for s in config.servers)
        return dataclasses.replace(config, servers=servers, heartbeats=(HB,))

    def paths(self, tty1, tty2):
        """Both servers' paths, listening, beating every BEAT_EVERY seconds."""
        config = self.config(tty1, tty2)
        paths = []
        for local in ("srv1", "srv2"):
            path = ComHeartbeatPath(
                reactor, config, local, HB, BOOTS[local],
                lambda name, packet, local=local: self.beats.append((local, name, packet.sender, packet.seq)),
                reopen_delay=REOPEN)
            path.start_listening()
            self.addCleanup(path.stop_listening)
            paths.append(path)
        loop = task.LoopingCall(lambda: [p.send_beat(DIGEST) for p in paths])
        loop.clock = reactor
        self.loop = loop
        loop.start(BEAT_EVERY, now=True).addErrback(self.fail)
        self.addCleanup(lambda: loop.running and loop.stop())
        return paths

    def heard(self, local):
        return [b for b in self.beats if b[0] == local]

    @defer.inlineCallbacks
    def wait_for(self, condition, what, timeout=3.0):
        waited = 0.0
        while not condition():
            if waited >= timeout:
                self.fail(f"after {timeout} s: {what}")
            yield task.deferLater(reactor, 0.02, lambda: None)
            waited += 0.02

    def sleep(self, seconds):
        return task.deferLater(reactor, seconds, lambda: None)

    @defer.inlineCallbacks
    def both_hear(self, after=None):
        """Wait until each server heard a beat (later than index after[server])."""
        after = after or {"srv1": 0, "srv2": 0}
        yield self.wait_for(lambda: all(len(self.heard(s)) > after[s] for s in after),
                            f"beats both ways (heard: {len(self.heard('srv1'))}, "
                            f"{len(self.heard('srv2'))})")

    @defer.inlineCallbacks
    def socat_pair(self):
        pair = SocatPair(reactor, f"{self.dir}/ttyA", f"{self.dir}/ttyB")
        self.addCleanup(pair.stop)
        yield pair.start()
        return pair

    @defer.inlineCallbacks
    def cable(self):
        cable = SerialCable(reactor, self.dir)
        self.addCleanup(cable.stop)
        yield cable.start()
        return cable

    # -- tests -------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_beats_over_a_pty_pair(self):
        pair = yield self.socat_pair()
        p1, p2 = self.paths(pair.link_a, pair.link_b)
        yield self.both_hear()
        self.assertEqual({(b[1], b[2]) for b in self.heard("srv1")}, {("comhb1", "srv2")})
        self.assertEqual({(b[1], b[2]) for b in self.heard("srv2")}, {("comhb1", "srv1")})
        seqs = [b[3] for b in self.heard("srv2")]
        self.assertEqual(seqs, sorted(seqs))
        for path in (p1, p2):
            c = path.counters()
            self.assertEqual(c["opened"], 1)
            bad = {k: c[k] for k in ("malformed", "unauthenticated", "foreign", "unknown_sender",
                                     "replayed", "stale", "open_errors", "line_lost")}
            self.assertEqual(bad, dict.fromkeys(bad, 0))

    @defer.inlineCallbacks
    def test_pulled_cable_is_silence_and_plugging_it_back_resumes(self):
        cable = yield self.cable()
        p1, p2 = self.paths(cable.end_a, cable.end_b)
        yield self.both_hear()
        cable.pull()
        yield self.sleep(0.2)  # what was already on its way
        before = {s: len(self.heard(s)) for s in ("srv1", "srv2")}
        yield self.sleep(0.5)
        self.assertEqual({s: len(self.heard(s)) for s in before}, before, "beats through a pulled cable")
        self.assertTrue(p1.is_open() and p2.is_open(), "a pulled cable is silence, not a closed line")
        self.assertGreater(cable.relay.dropped["left"] + cable.relay.dropped["right"], 0)
        cable.plug()
        yield self.both_hear(after=before)
        self.assertEqual(p1.counters()["line_lost"] + p2.counters()["line_lost"], 0)

    @defer.inlineCallbacks
    def test_noise_is_counted_and_the_next_frame_gets_through(self):
        cable = yield self.cable()
        p1, p2 = self.paths(cable.end_a, cable.end_b)
        yield self.both_hear()
        self.loop.stop()
        yield self.sleep(0.2)  # let the last beats arrive whole
        before = p1.counters()
        heard = len(self.heard("srv1"))
        noise = b"\x00\xff\x55\xaa line noise \x13\x11" * 4
        cable.inject("a", noise)
        yield self.wait_for(lambda: p1.counters()["garbage_bytes"] >= before["garbage_bytes"] + len(noise),
                            "the noise counted as garbage")
        p2.send_beat(DIGEST)
        yield self.wait_for(lambda: len(self.heard("srv1")) > heard, "the beat after the noise")
        after = p1.counters()
        self.assertEqual(after["garbage_bytes"] - before["garbage_bytes"], len(noise))
        self.assertEqual(after["resync"] - before["resync"], 1)
        self.assertEqual(after["accepted"] - before["accepted"], 1)

    @defer.inlineCallbacks
    def test_socat_killed_and_restarted_the_line_comes_back(self):
        pair = yield self.socat_pair()
        p1, p2 = self.paths(pair.link_a, pair.link_b)
        yield self.both_hear()
        yield pair.kill()
        yield self.wait_for(lambda: not p1.is_open() and not p2.is_open(), "both ends see the line lost")
        self.assertEqual((p1.counters()["line_lost"], p2.counters()["line_lost"]), (1, 1))
        yield self.sleep(3 * REOPEN)  # reopen attempts fail while socat is away
        self.assertFalse(p1.is_open() or p2.is_open())
        self.assertGreater(p1.counters()["open_errors"], 0)
        before = {s: len(self.heard(s)) for s in ("srv1", "srv2")}
        yield pair.start()
        yield self.wait_for(lambda: p1.is_open() and p2.is_open(), "both ends reopened")
        yield self.both_hear(after=before)
        self.assertEqual((p1.counters()["opened"], p2.counters()["opened"]), (2, 2))
