"""Integration: heartbeat paths beyond the LAN keep a cluster together (root).

Two servers in the namespace lab with both LAN heartbeats (interconnect and
public LAN) and one more path: a serial line (comhb, a socat pty pair with a
relay that can "pull the cable"), a shared disk (diskhb, one loop device
seen by both namespaces), or the servers' BMCs (bmchb, an ipmi_sim per
server in its own lab host on the public LAN). srv1 holds a group. Cutting
every LAN heartbeat of srv1 must not fail anything over: the other path
keeps both servers up, both report the LAN paths in error and the extra path
normal. Pulling the cable as well (comhb) leaves no path: srv2 then declares
srv1 down. (The witness path has its own test: test_witness_lab.)
"""

import os

from twisted.internet import defer, reactor

from cpro.testing.lab.common import group_current, run, tool
from cpro.testing.lab.ipmisim import IpmiSimulator
from cpro.testing.lab.serial import SerialCable
from test.integration.test_floating_ip import FloatingIPTestCase, sleep

TIMEOUT_S = 0.5


def path_state(statuses, observer, server, path):
    for s in statuses[observer]["servers"]:
        if s["name"] == server:
            for hb in s["heartbeats"]:
                if hb["name"] == path:
                    return hb["status"]
    return None


def server_state(statuses, observer, server):
    return next(s["status"] for s in statuses[observer]["servers"] if s["name"] == server)


@defer.inlineCallbacks
def cut_lan_between_servers(lab):
    """Each server drops what it sends to the other on both links; both still reach other hosts."""
    cuts = [lab.block_between(a, lab.address(b, dev), dev)
            for a, b in (("srv1", "srv2"), ("srv2", "srv1")) for dev in ("eth0", "eth1")]
    yield defer.gatherResults(cuts, consumeErrors=True)


class ExtraPathTests(FloatingIPTestCase):
    @defer.inlineCallbacks
    def lab_with(self, heartbeat_xml, server_xml, setup=None, **kw):
        lab = yield self.make_lab(**kw)
        if setup is not None:
            server_xml = yield setup(lab)
        lab.heartbeat_xml = heartbeat_xml
        lab.server_xml = server_xml
        lab.write_config()
        yield self.start_on_srv1(lab)
        return lab

    @defer.inlineCallbacks
    def cut_every_lan_path_of_srv1(self, lab, path, timeout=TIMEOUT_S, cut=None):
        yield (cut or (lambda: lab.isolate("srv1")))()
        yield lab.wait_until(lambda st: path_state(st, "srv2", "srv1", "lanhb1") == "Error"
                             and path_state(st, "srv2", "srv1", "lanhb2") == "Error", names=["srv2"],
                             timeout=5 + timeout, what="srv2 seeing both LAN paths to srv1 in error")
        # Several heartbeat timeouts with only the extra path alive.
        yield sleep(4 * timeout)
        statuses = yield lab.status_all(["srv2"])
        self.assertEqual(path_state(statuses, "srv2", "srv1", path), "Normal")
        self.assertEqual(server_state(statuses, "srv2", "srv1"), "Caution")
        self.assertEqual(group_current(statuses, "failover1", "srv2"), "srv1")
        self.assertEqual(self.starts(lab), [("srv1", "START")], "nothing may fail over")
        self.assertEqual((yield lab.addresses("srv2")), [lab.address("srv2")])

    @defer.inlineCallbacks
    def test_serial_line_keeps_the_cluster_together(self):
        cable = SerialCable(reactor, os.path.abspath(self.mktemp()))
        os.makedirs(os.path.dirname(cable.end_a), exist_ok=True)
        yield cable.start()
        self.addCleanup(cable.stop)
        lab = yield self.lab_with(
            '<comhb name="comhb1"><priority>5</priority><device>200</device><baudrate>115200</baudrate></comhb>',
            {"srv1": f'<device id="200"><type>com</type><info>{cable.end_a}</info></device>',
             "srv2": f'<device id="200"><type>com</type><info>{cable.end_b}</info></device>'})
        yield lab.wait_until(lambda st: path_state(st, "srv2", "srv1", "comhb1") == "Normal", names=["srv2"],
                             timeout=5, what="comhb1 normal")
        yield self.cut_every_lan_path_of_srv1(lab, "comhb1")

        # The last path goes too: srv1 is declared down and its group fails over.
        cable.pull()
        yield lab.wait_until(lambda st: server_state(st, "srv2", "srv1") == "Offline", names=["srv2"],
                             timeout=5, what="srv2 declaring srv1 down once the cable is pulled")

    @defer.inlineCallbacks
    def test_shared_disk_keeps_the_cluster_together(self):
        image = os.path.abspath(self.mktemp())
        with open(image, "wb") as f:
            f.truncate(16 * 1024 * 1024)
        code, out = yield run(reactor, [tool("losetup"), "-f", "--show", image])
        self.assertEqual(code, 0, out)
        device = out.strip()
        self.addCleanup(run, reactor, [tool("losetup"), "-d", device])
        lab = yield self.lab_with(
            '<diskhb name="diskhb1"><priority>5</priority><device>300</device></diskhb>',
            {name: f'<device id="300"><type>disk</type><info>{device}</info></device>' for name in ("srv1", "srv2")})
        yield lab.wait_until(lambda st: path_state(st, "srv2", "srv1", "diskhb1") == "Normal", names=["srv2"],
                             timeout=5, what="diskhb1 normal")
        yield self.cut_every_lan_path_of_srv1(lab, "diskhb1")

    @defer.inlineCallbacks
    def test_bmcs_keep_the_cluster_together(self):
        def start_bmcs(lab):
            xml = {}
            starting = []
            for server in lab.names:
                host = f"bmc{server[-1]}"
                bmc = IpmiSimulator(reactor, lab.address(host), 623, "cpro", "hb-pass", netns=lab.netns(host),
                                    name=host)
                self.addCleanup(bmc.stop)
                starting.append(bmc.start())
                xml[server] = (f'<device id="600"><type>bmc</type><info>{bmc.address}</info>'
                               f'<user>cpro</user><password>hb-pass</password></device>')
            return defer.gatherResults(starting, consumeErrors=True).addCallback(lambda _: xml)

        # IPMI requests through pyghmi take milliseconds but now and then stall for up to a
        # second, longer on a loaded machine (docs/partitions.md): a BMC path needs a
        # timeout of several seconds.
        lab = yield self.lab_with('<bmchb name="bmchb1"><priority>5</priority><device>600</device></bmchb>',
                                  None, setup=start_bmcs, extra_hosts=("bmc1", "bmc2"), timeout_ms=5000)
        yield lab.wait_until(lambda st: path_state(st, "srv2", "srv1", "bmchb1") == "Normal"
                             and path_state(st, "srv1", "srv2", "bmchb1") == "Normal", timeout=10,
                             what="bmchb1 normal both ways")
        yield self.cut_every_lan_path_of_srv1(lab, "bmchb1", timeout=5.0, cut=lambda: cut_lan_between_servers(lab))
