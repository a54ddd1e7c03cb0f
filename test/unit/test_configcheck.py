"""Which of two servers with different configurations refuses to run (cpro.cluster.configcheck)."""

from twisted.trial import unittest

from cpro.cluster.configcheck import PeerRun, refusal
from cpro.cluster.states import ClusterServiceState as S
from cpro.protocols.heartbeat import Incarnation

EARLY = Incarnation(1_000, "aa")
LATE = Incarnation(2_000, "aa")


def decide(local="srv2", service=S.STARTING, incarnation=EARLY, master_up=False, peer="srv3",
           peer_run=PeerRun(S.STARTING.value, str(LATE))):
    return refusal(local, service, incarnation, "srv1", master_up, peer, peer_run)


class RefusalTests(unittest.TestCase):
    def test_the_master_never_refuses(self):
        self.assertIsNone(decide(local="srv1", peer="srv2", peer_run=PeerRun("Running", str(EARLY)),
                                 incarnation=LATE))

    def test_a_running_server_never_refuses(self):
        for service in (S.RUNNING, S.SUSPENDED, S.STOPPING):
            self.assertIsNone(decide(service=service, incarnation=LATE,
                                     peer_run=PeerRun("Running", str(EARLY))), service)

    def test_the_masters_configuration_decides(self):
        self.assertEqual(decide(peer="srv1", master_up=True), "the master srv1")
        # Even an earlier start does not beat the master.
        self.assertEqual(decide(peer="srv1", incarnation=EARLY, peer_run=PeerRun("Starting", str(LATE))),
                         "the master srv1")
        # With the master up, a differing non-master peer is refused by the master, not here.
        self.assertIsNone(decide(master_up=True, incarnation=LATE, peer_run=PeerRun("Running", str(EARLY))))

    def test_master_down_a_running_peer_wins(self):
        self.assertEqual(decide(peer_run=PeerRun("Running", str(LATE))), "srv3 (the master srv1 is down)")
        self.assertEqual(decide(service=S.STOPPED, peer_run=PeerRun("Suspended", str(LATE))),
                         "srv3 (the master srv1 is down)")

    def test_master_down_both_starting_the_earlier_daemon_wins(self):
        self.assertIsNone(decide(incarnation=EARLY, peer_run=PeerRun("Starting", str(LATE))))
        self.assertEqual(decide(incarnation=LATE, peer_run=PeerRun("Starting", str(EARLY))),
                         "srv3 (the master srv1 is down)")
        self.assertIsNone(decide(service=S.STOPPED, incarnation=EARLY, peer_run=PeerRun("Stopped", str(LATE))))

    def test_exactly_one_of_two_starting_servers_refuses(self):
        same_time = [Incarnation(5_000, "aa"), Incarnation(5_000, "bb")]
        for one, other in (same_time, (EARLY, LATE), (LATE, EARLY)):
            a = decide(local="srv2", incarnation=one, peer="srv3", peer_run=PeerRun("Starting", str(other)))
            b = decide(local="srv3", incarnation=other, peer="srv2", peer_run=PeerRun("Starting", str(one)))
            self.assertEqual([a is None, b is None].count(True), 1, (one, other, a, b))

    def test_unknown_or_unreadable_peer_counts_as_running(self):
        for run in (None, PeerRun("Dancing", str(LATE)), PeerRun("Starting", "not an incarnation")):
            self.assertEqual(decide(peer_run=run), "srv3 (the master srv1 is down)", run)
