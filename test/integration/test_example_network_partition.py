"""Integration: examples/network-partition runs as it is in the network-namespace lab (root).

Both daemons run the example's clp.conf unchanged. srv1 serves group web on
the floating IP; then every link of srv1 is cut at the switch (a silent,
total partition: carriers stay up). srv1 cannot ping the gateway (the lab's
client, 10.0.0.200): it releases web, stops its cluster service and runs its
(harmless, logging) shutdown command. srv2 still can: it starts web after the
takeover wait, and the client is served by srv2. The floating IP is never
on both servers.
"""

import os

from twisted.internet import defer, reactor

from cpro.testing.lab.common import group_current
from cpro.testing.lab.netns import NetnsLab
from test.integration import REPO_ROOT
from test.integration import test_example_floating_ip as fip_example
from test.integration.test_floating_ip import HolderWatch, wait_for

EXAMPLE = os.path.join(REPO_ROOT, "examples", "network-partition", "clp.conf")
VIP, PORT, CONNECT_TIMEOUT = fip_example.VIP, fip_example.PORT, fip_example.CONNECT_TIMEOUT


class NetworkPartitionExampleTests(fip_example.NetnsExampleTestCase):
    @defer.inlineCallbacks
    def test_cut_off_server_releases_and_the_other_takes_over(self):
        lab = NetnsLab(reactor, os.path.abspath(self.mktemp()), servers=2, client=True)
        self.addCleanup(self.destroy_and_check, lab)
        yield lab.create()
        for name in lab.names:
            lab.start(name, config=EXAMPLE)
        yield lab.wait_until(lambda st: all(group_current(st, "web", n) == "srv1" for n in lab.names),
                             timeout=40, step=0.2, what="web Online on srv1 for both servers")
        reply = yield wait_for(lambda: lab.client_connect(VIP, PORT, timeout=CONNECT_TIMEOUT), 10, "the service")
        self.assertTrue(reply.startswith("hello from srv1"), reply)
        watch = HolderWatch(lab, VIP).start()
        self.addCleanup(watch.stop)

        yield lab.isolate("srv1")
        reply = yield wait_for(lambda: defer.maybeDeferred(lab.client_connect, VIP, PORT, timeout=CONNECT_TIMEOUT)
                               .addCallback(lambda r: r if r and r.startswith("hello from srv2") else None),
                               20, "srv2's answer on the floating IP")
        self.assertIn("event FAILOVER", reply)
        statuses = yield lab.status_all()
        self.assertEqual(statuses["srv1"]["service"], "Stopped")
        alerts = yield lab.admin("srv1", "alerts 100")
        self.assertIn(("nm", 30), {(a["module"], a["id"]) for a in alerts["alerts"]})
        yield watch.stop()
        self.assertEqual(watch.doubles(), [], f"{VIP} on two servers at once")
        self.assertEqual(watch.seen(), ["srv1", "srv2"])
