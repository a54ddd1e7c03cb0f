"""Integration: network partitions in the namespace lab, resolved by pingnp (root).

Two servers whose only heartbeat path is the interconnect (eth0) run a group
with the floating IP 10.0.0.100 and an exec resource. Both stay on the
public LAN (eth1) with the client; the ping target "gw" is on the public LAN
too. Each round cuts the interconnect and, at the same moment, makes the
ping target unreachable from one server chosen at random (the isolated
side), at a random moment of the heartbeat cycle. Then:

  - the isolated side finds it cannot ping the target, releases what it
    holds and takes the NP action (npaction 2: the lab's harmless power-off
    of its own namespace);
  - the healthy side keeps the group, or takes it once the isolated side
    had time to release it;
  - a client on the public LAN asks "who has 10.0.0.100?" every 20 ms for
    the whole test (cpro.testing.lab.arpwatch): two servers answering in one round
    would be a group active on two servers at once. There must be none.

Then the faults heal, the powered-off server boots (its daemon restarts) and
rejoins, and the next round starts from wherever the group is.
"""

import os
import random
import sys
import time

from twisted.internet import defer, reactor
from twisted.logger import Logger

from cpro.testing.lab.arpwatch import read_watch
from cpro.testing.lab.common import group_current
from test.integration.test_floating_ip import VIP, FloatingIPTestCase, sleep, wait_for

log = Logger()

ROUNDS = int(os.environ.get("CPRO_PARTITION_ROUNDS", "50"))
PING_TIMEOUT_MS = 300
PING_INTERVAL_MS = 50
RELEASE_GRACE_MS = 300

NP_CLUSTER = (f"<networkpartition><npaction>2</npaction><releasegrace>{RELEASE_GRACE_MS}</releasegrace>"
              "</networkpartition>")
PING_DEVICE = '<device id="10200"><type>ping</type><info>1</info></device>'
NP_XML = ('<networkpartition><types name="pingnp"/><pingnp name="pingnp1"><priority>0</priority>'
          '<device>10200</device><grp id="0"><list id="0"><ip>{gw}</ip></list></grp>'
          f'<parameters><interval>{PING_INTERVAL_MS}</interval><timeout>{PING_TIMEOUT_MS}</timeout></parameters>'
          '</pingnp></networkpartition>')


class ArpWatch:
    """cpro.testing.lab.arpwatch in the client: who answers ARP for the VIP, every 20 ms."""

    def __init__(self, lab):
        self.lab = lab
        self.path = os.path.join(lab.workdir, "arpwatch.log")
        self.process = None

    def start(self):
        self.process = self.lab.spawn(self.lab.client, [
            sys.executable, "-m", "cpro.testing.lab.arpwatch", "--address", VIP, "--dev", "eth1",
            "--interval", "0.02", "--out", self.path])
        return self

    def read(self):
        return read_watch(self.path)

    def stop(self):
        return self.process.stop(reactor, 5) if self.process else defer.succeed(None)


class PartitionTests(FloatingIPTestCase):
    timeout = 60 + ROUNDS * 20

    @defer.inlineCallbacks
    def make_np_lab(self):
        lab = yield self.make_lab(extra_hosts=("gw",), heartbeat_devices=("eth0",))
        lab.cluster_xml = NP_CLUSTER
        lab.server_xml = {name: PING_DEVICE for name in lab.names}
        lab.root_xml += NP_XML.format(gw=lab.address("gw"))
        lab.write_config()
        return lab

    def holder(self, statuses, observer):
        return group_current(statuses, "failover1", observer)

    @defer.inlineCallbacks
    def test_random_partitions_never_run_the_group_twice(self):
        lab = yield self.make_np_lab()
        gw = lab.address("gw")
        yield self.start_on_srv1(lab)
        watch = ArpWatch(lab).start()
        self.addCleanup(watch.stop)
        yield wait_for(lambda: watch.read()[0], 5, "the ARP watch's first answer")
        macs = {lab.mac(n): n for n in lab.names}
        rng = random.Random(os.environ.get("CPRO_PARTITION_SEED"))
        holder = "srv1"
        takeovers = []
        for round_no in range(1, ROUNDS + 1):
            isolated = rng.choice(lab.names)
            healthy = next(n for n in lab.names if n != isolated)
            poweroffs_before = len(lab.poweroffs())
            yield sleep(rng.uniform(0, 0.1))  # anywhere in the 100 ms heartbeat cycle
            cut = time.time()
            yield defer.gatherResults([lab.block_between(isolated, gw), lab.block_interconnect()],
                                      consumeErrors=True)
            yield wait_for(lambda: len(lab.poweroffs()) > poweroffs_before, 10,
                           f"round {round_no}: {isolated} taking its NP action")
            off = lab.poweroffs()[poweroffs_before:]
            self.assertEqual([h for _, h, _ in off], [isolated], f"round {round_no}: who powered off")
            yield lab.wait_until(lambda st: self.holder(st, healthy) == healthy, names=[healthy], timeout=10,
                                 what=f"round {round_no}: failover1 Online on the healthy {healthy}")
            if holder == isolated:
                took = yield self.online_since(lab, healthy, cut)
                takeovers.append(took - cut)
            holder = healthy
            log.info("partition round {n}: {isolated} isolated, group on {healthy}", n=round_no,
                     isolated=isolated, healthy=healthy)

            # Heal, boot the powered-off server, wait until it has rejoined.
            yield lab.heal()
            yield lab.server_down(isolated)  # the lab's view: its namespace is off (idempotent)
            yield lab.power_on(isolated)
            lab.start(isolated)
            yield lab.wait_until(lambda st: all(self.holder(st, n) == healthy for n in lab.names),
                                 timeout=30, what=f"round {round_no}: {isolated} rejoined")

        yield watch.stop()
        changes, doubles, rounds = watch.read()
        self.assertEqual(doubles, [], "the floating IP answered from two servers at once")
        self.assertGreater(rounds, ROUNDS * 50)  # ~20 ms rounds over several seconds each
        owners = [[macs.get(m, m) for m in ms] for _, ms in changes]
        self.assertTrue(all(len(o) <= 1 for o in owners))
        # The client saw the address move to each new holder.
        self.assertEqual([o[0] for o in owners if o][-1], holder)
        if takeovers:
            log.info("takeover after a cut (heartbeat timeout + resolution + wait): median {m:.3f} s, "
                     "max {x:.3f} s over {k}", m=sorted(takeovers)[len(takeovers) // 2], x=max(takeovers),
                     k=len(takeovers))

    @defer.inlineCallbacks
    def online_since(self, lab, server, after):
        """Time of server's rc 11 'Group failover1 has started' alert after `after`."""
        payload = yield lab.admin(server, "alerts 200")
        times = [a["time"] for a in payload["alerts"]
                 if a["module"] == "rc" and a["id"] == 11 and a["time"] > after]
        self.assertTrue(times, f"no rc 11 alert on {server}")
        return min(times)
