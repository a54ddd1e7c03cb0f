"""Integration: the witness server as a heartbeat path and a partition resolver (root).

A real `cpro-witness` runs in the lab host "witness" on the public LAN. Two
servers have both LAN heartbeats and a witness heartbeat; srv1 holds a
group with a floating IP.

- Every LAN heartbeat between the two servers is cut (each drops what it
  sends to the other), but both still reach the witness: the witness path
  keeps them together, nothing fails over.
- The witness is gone and then every LAN heartbeat is cut: neither server
  can prove the other is down, so neither takes the other's groups; both
  take the NP action (the lab's power-off of their own namespace), as the
  original does when the witness and the heartbeats are lost together. The
  group is never started on srv2.
"""

import json
import os
import sys

from twisted.internet import defer, reactor

from cpro.testing.lab.common import group_current
from test.integration.test_floating_ip import FloatingIPTestCase, sleep, wait_for
from test.integration.test_heartbeat_paths_lab import cut_lan_between_servers, path_state, server_state

WITNESS_PORT = 8080
TIMEOUT_S = 0.5


class WitnessLabTests(FloatingIPTestCase):
    @defer.inlineCallbacks
    def make_witness_lab(self):
        lab = yield self.make_lab(extra_hosts=("witness",))
        address = lab.address("witness")
        ready = os.path.join(lab.workdir, "witness.ready")
        self.witness = lab.spawn("witness", [
            sys.executable, "-m", "cpro.witness.main", "--listen", f"{address}:{WITNESS_PORT}",
            "--ready-file", ready], log_path=os.path.join(lab.workdir, "witness.out"))
        self.addCleanup(lambda: self.witness.stop(reactor, 5))
        yield wait_for(lambda: os.path.exists(ready), 10, "the witness server listening")
        lab.heartbeat_xml = (f'<witnesshb name="witnesshb1"><priority>5</priority><device>700</device>'
                             f'<host>{address}</host><port>{WITNESS_PORT}</port><httptimeout>300</httptimeout>'
                             '</witnesshb>')
        lab.server_xml = {n: f'<device id="700"><type>witness</type><info>1</info>'
                             f'<extend>{address}:{WITNESS_PORT}</extend></device>' for n in lab.names}
        lab.cluster_xml = "<networkpartition><npaction>2</npaction></networkpartition>"
        lab.write_config()
        yield self.start_on_srv1(lab)
        yield lab.wait_until(lambda st: path_state(st, "srv2", "srv1", "witnesshb1") == "Normal", names=["srv2"],
                             timeout=5, what="witnesshb1 normal")
        return lab

    @defer.inlineCallbacks
    def test_witness_keeps_the_cluster_together(self):
        lab = yield self.make_witness_lab()
        yield cut_lan_between_servers(lab)
        yield lab.wait_until(lambda st: path_state(st, "srv2", "srv1", "lanhb1") == "Error"
                             and path_state(st, "srv2", "srv1", "lanhb2") == "Error", names=["srv2"],
                             timeout=5, what="srv2 seeing both LAN paths to srv1 in error")
        yield sleep(4 * TIMEOUT_S)
        statuses = yield lab.status_all()
        for me, peer in (("srv1", "srv2"), ("srv2", "srv1")):
            self.assertEqual(path_state(statuses, me, peer, "witnesshb1"), "Normal")
            self.assertEqual(server_state(statuses, me, peer), "Caution")
        self.assertEqual(group_current(statuses, "failover1", "srv2"), "srv1")
        self.assertEqual(self.starts(lab), [("srv1", "START")], "nothing may fail over")
        self.assertEqual(lab.poweroffs(), [])
        self.assertIn("witness", json.dumps(statuses["srv1"]["network_partition"]))

    @defer.inlineCallbacks
    def test_witness_and_heartbeats_lost_nobody_takes_over(self):
        lab = yield self.make_witness_lab()
        yield self.witness.stop(reactor, 5)
        yield lab.wait_until(lambda st: path_state(st, "srv2", "srv1", "witnesshb1") == "Error", names=["srv2"],
                             timeout=5, what="the witness path in error once the witness is gone")
        yield cut_lan_between_servers(lab)
        yield wait_for(lambda: {h for _, h, _ in lab.poweroffs()} == {"srv1", "srv2"}, 10,
                       "both servers taking their NP action")
        yield sleep(2)  # longer than any takeover wait
        self.assertEqual(self.starts(lab), [("srv1", "START")], "srv2 must not take a group it cannot prove free")
        self.assertEqual((yield lab.addresses("srv2")), [lab.address("srv2")])
