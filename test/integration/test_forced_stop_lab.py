"""Integration: forced stop through the servers' BMCs (IPMI over LAN) in the lab (root).

Each server has a BMC: an OpenIPMI ipmi_sim in its own lab host (bmc1,
bmc2) on the public LAN, whose chassis control powers the server's
namespace off (the lab's harmless power-off) and records every request with
its time. srv1 holds a group; then it is cut from every network (a hung or
cut-off server that keeps its resources).

- With a working BMC, srv2 powers srv1 off through bmc1 before anything
  else: the simulator's record of the power-off comes before srv2 starts the
  group (the exec script's own time stamp), and srv2 raises nm 40 then 41.
- With bmc1 gone and "suppress on failure" (the default), srv2's forced stop
  fails: alerts nm 42 and 43, and the group is not started on srv2.
"""

import shlex

from twisted.internet import defer, reactor

from cpro.testing.lab.ipmisim import IpmiSimulator
from test.integration.test_floating_ip import FloatingIPTestCase, sleep, wait_for

USER, PASSWORD = "cpro", "fence-me"


class ForcedStopLabTests(FloatingIPTestCase):
    timeout = 90

    @defer.inlineCallbacks
    def make_fenced_lab(self, fs_timeout_ms=5000):
        lab = yield self.make_lab(extra_hosts=("bmc1", "bmc2"))
        self.bmcs = {}
        for server in lab.names:
            host = f"bmc{server[-1]}"
            # The chassis control powers the server's namespace off on off/reset/soft-off.
            hook = ["sh", "-c", f'case "$1" in off|reset|soft-off) exec {shlex.quote(lab.poweroff_command_path)} '
                                f'{server};; esac', "chassis-hook"]
            bmc = IpmiSimulator(reactor, lab.address(host), 623, USER, PASSWORD, netns=lab.netns(host),
                                hook=hook, name=host)
            yield bmc.start()
            self.addCleanup(bmc.stop)
            self.bmcs[server] = bmc
        lab.server_xml = {
            server: (f'<device id="600"><type>bmc</type><info>{bmc.address}</info><extend>{bmc.port}</extend>'
                     f'<user>{USER}</user><password>{PASSWORD}</password></device>')
            for server, bmc in self.bmcs.items()}
        lab.cluster_xml = (f"<forcestop><use>1</use><method>bmc</method><action>off</action>"
                           f"<timeout>{fs_timeout_ms}</timeout></forcestop>")
        lab.write_config()
        yield self.start_on_srv1(lab)
        return lab

    @defer.inlineCallbacks
    def alert_ids(self, lab, server):
        payload = yield lab.admin(server, "alerts 200")
        return [(a["module"], a["id"], a["time"]) for a in payload["alerts"]]

    @defer.inlineCallbacks
    def test_power_off_before_the_failover(self):
        lab = yield self.make_fenced_lab()
        yield lab.isolate("srv1")
        yield wait_for(lambda: ("srv2", "FAILOVER") in self.starts(lab), 15, "failover1 started on srv2")
        offs = [t for t, action, _ in self.bmcs["srv1"].chassis_log() if action == "off"]
        self.assertEqual(len(offs), 1, self.bmcs["srv1"].chassis_log())
        started = [float(m[0]) for m in lab.marks() if m[1] == "srv2" and m[2] == "START"]
        self.assertEqual(len(started), 1)
        self.assertLess(offs[0], started[0], "the power-off must come before the failover starts")
        self.assertFalse(self.bmcs["srv1"].power_is_on())
        self.assertEqual([h for _, h, _ in lab.poweroffs()], ["srv1"])
        alerts = yield self.alert_ids(lab, "srv2")
        nm = [i for m, i, _ in alerts if m == "nm" and i in (40, 41, 42, 43)]
        self.assertEqual(nm, [40, 41])
        self.assertEqual(self.bmcs["srv2"].chassis_log(), [], "srv2's own BMC is never touched")

    @defer.inlineCallbacks
    def test_failing_bmc_suppresses_the_failover(self):
        lab = yield self.make_fenced_lab(fs_timeout_ms=2000)
        yield self.bmcs["srv1"].kill()
        yield lab.isolate("srv1")
        yield wait_for(lambda: self.alert_ids(lab, "srv2").addCallback(
            lambda alerts: ("nm", 43) in {(m, i) for m, i, _ in alerts}), 15, "nm 43 on srv2")
        yield sleep(1.5)
        alerts = yield self.alert_ids(lab, "srv2")
        self.assertEqual([i for m, i, _ in alerts if m == "nm" and i in (40, 41, 42, 43)], [40, 42, 43])
        self.assertEqual(self.starts(lab), [("srv1", "START")], "no failover after a failed forced stop")
        self.assertEqual((yield lab.addresses("srv2")), [lab.address("srv2")])
        statuses = yield lab.status_all(["srv2"])
        self.assertEqual(statuses["srv2"]["network_partition"]["suppressed"], ["srv1"])
