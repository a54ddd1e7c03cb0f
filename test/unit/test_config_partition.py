"""Tests for cpro.config.partition: heartbeat kinds beyond LAN, NP resources,
the NP action and forced stop in clp.conf."""

import os

from twisted.trial.unittest import SynchronousTestCase

from cpro.config.model import BmcConfig, HttpTarget
from test.unit.test_config import ConfigTestMixin


def server(name, priority, n, extra_devices=""):
    return (f'<server name="{name}"><priority>{priority}</priority>'
            f'<device id="0"><type>lan</type><info>10.0.0.{n}/24</info></device>'
            f'{extra_devices}</server>')


def devices(n, com=True, disk=True, bmc=True, witness="1", ping="1", http="1"):
    out = ""
    if com:
        out += '<device id="200"><type>com</type><info>/dev/ttyS0</info></device>'
    if disk:
        out += f'<device id="300"><type>disk</type><info>/dev/sdb{n}</info></device>'
    if bmc:
        out += (f'<device id="600"><type>bmc</type><info>192.168.0.{n}</info><extend>6230</extend>'
                f'<user>admin</user><password>pw{n}</password></device>')
    if witness is not None:
        out += f'<device id="700"><type>witness</type><info>{witness}</info><extend>10.0.0.250:8080</extend></device>'
    if ping is not None:
        out += f'<device id="10200"><type>ping</type><info>{ping}</info></device>'
    if http is not None:
        out += f'<device id="10700"><type>http</type><info>{http}</info></device>'
    return out


EVERY_HEARTBEAT = (
    '<heartbeat><types name="lanhb"/>'
    '<lanhb name="lanhb1"><priority>0</priority><device>0</device></lanhb>'
    '<comhb name="comhb1"><priority>1</priority><device>200</device><baudrate>38400</baudrate></comhb>'
    '<diskhb name="diskhb1"><priority>2</priority><device>300</device></diskhb>'
    '<bmchb name="bmchb1"><priority>3</priority><device>600</device></bmchb>'
    '<witnesshb name="witnesshb1"><priority>4</priority><device>700</device><host>10.0.0.250</host>'
    '<port>8080</port><httptimeout>2000</httptimeout></witnesshb>'
    '</heartbeat>')

NP = ('<networkpartition><types name="pingnp"/><types name="httpnp"/>'
      '<pingnp name="pingnp1"><priority>0</priority><device>10200</device>'
      '<grp id="0"><list id="0"><ip>10.0.0.254</ip></list><list id="1"><ip>10.0.0.253</ip></list></grp>'
      '<grp id="1"><list id="0"><ip>192.168.100.254</ip></list></grp>'
      '<parameters><interval>100</interval><timeout>800</timeout></parameters></pingnp>'
      '<httpnp name="httpnp1"><priority>1</priority><device>10700</device><host>10.0.0.250</host>'
      '<port>8080</port><path>/</path></httpnp>'
      '</networkpartition>')

CLUSTER = ('<cluster><name>c1</name><key>k</key>'
           '<networkpartition><npaction>1</npaction><releasegrace>250</releasegrace>'
           '<checkinterval>0</checkinterval></networkpartition>'
           '<forcestop><use>1</use><method>bmc</method><action>cycle</action><timeout>5000</timeout>'
           '<suppress>0</suppress><identify><use>1</use><duration>60</duration></identify></forcestop>'
           '</cluster>')


class EverythingTests(ConfigTestMixin, SynchronousTestCase):
    def servers(self, **kw):
        return server("srv1", 0, 1, devices(1, **kw)) + server("srv2", 1, 2, devices(2, **kw))

    def test_every_heartbeat_kind_np_and_forced_stop(self):
        config, warnings = self.load(cluster=CLUSTER, servers=self.servers(), heartbeat=EVERY_HEARTBEAT,
                                     extra=NP)
        self.assertEqual(warnings, ())
        kinds = {h.name: h.kind for h in config.heartbeats}
        self.assertEqual(kinds, {"lanhb1": "lanhb", "comhb1": "comhb", "diskhb1": "diskhb",
                                 "bmchb1": "bmchb", "witnesshb1": "witnesshb"})
        hb = {h.name: h for h in config.heartbeats}
        self.assertEqual(hb["comhb1"].baud_rate, 38400)
        self.assertEqual(hb["witnesshb1"].witness, HttpTarget(host="10.0.0.250", port=8080, timeout=2.0))
        srv2 = config.server("srv2")
        self.assertEqual(srv2.bmc, BmcConfig(address="192.168.0.2", port=6230, user="admin", password="pw2"))
        self.assertEqual(srv2.device(300).info, "/dev/sdb2")

        np = config.network_partition
        self.assertEqual(np.action, 1)
        self.assertEqual(np.release_grace, 0.25)
        self.assertEqual(np.check_interval, 0.0)
        (ping,) = np.ping
        self.assertEqual(ping.groups, (("10.0.0.254", "10.0.0.253"), ("192.168.100.254",)))
        self.assertEqual((ping.interval, ping.timeout), (0.1, 0.8))
        self.assertEqual(ping.servers, ("srv1", "srv2"))
        (http,) = np.http
        self.assertEqual((http.target.host, http.target.port, http.target.path), ("10.0.0.250", 8080, "/"))

        fs = config.forced_stop
        self.assertTrue(fs.enabled)
        self.assertEqual((fs.method, fs.bmc_action, fs.timeout), ("bmc", "cycle", 5.0))
        self.assertFalse(fs.suppress_failover_on_failure)
        self.assertTrue(fs.identify_on_failure)
        self.assertEqual(fs.identify_seconds, 60)

    def test_bmc_heartbeat_with_a_short_timeout_is_warned_about(self):
        cluster = CLUSTER.replace("<key>k</key>", "<key>k</key><heartbeat><interval>500</interval>"
                                                  "<timeout>3000</timeout></heartbeat>")
        config, warnings = self.load(cluster=cluster, servers=self.servers(), heartbeat=EVERY_HEARTBEAT)
        self.assertEqual(config.hb_timeout, 3.0)
        (warning,) = warnings
        self.assertEqual(warning.path, "/root/heartbeat/bmchb@bmchb1")
        self.assertIn("at least 5000 ms", warning.message)
        cluster = cluster.replace("<timeout>3000</timeout>", "<timeout>5000</timeout>")
        self.assertEqual(self.load(cluster=cluster, servers=self.servers(), heartbeat=EVERY_HEARTBEAT)[1], ())

    def test_defaults(self):
        config, _ = self.load()
        self.assertEqual(config.network_partition.action, 2)
        self.assertEqual(config.network_partition.release_grace, 0.5)
        self.assertEqual(config.network_partition.check_interval, 10.0)
        self.assertFalse(config.network_partition.configured)
        self.assertFalse(config.forced_stop.enabled)
        self.assertTrue(config.forced_stop.suppress_failover_on_failure)

    def test_np_resource_not_used_by_a_server(self):
        servers = server("srv1", 0, 1, devices(1)) + server("srv2", 1, 2, devices(2, ping="0"))
        config, _ = self.load(servers=servers, extra=NP)
        self.assertEqual(config.network_partition.ping[0].servers, ("srv1",))


class ErrorTests(ConfigTestMixin, SynchronousTestCase):
    def test_device_of_the_wrong_type(self):
        servers = (server("srv1", 0, 1, '<device id="200"><type>disk</type><info>/dev/sdb</info></device>')
                   + server("srv2", 1, 2, devices(2)))
        heartbeat = ('<heartbeat><lanhb name="lanhb1"><priority>0</priority><device>0</device></lanhb>'
                     '<comhb name="comhb1"><priority>1</priority><device>200</device></comhb></heartbeat>')
        self.assertError("/root/server@srv1/device@200", "needs a com device", servers=servers,
                         heartbeat=heartbeat)

    def test_heartbeat_linking_one_server(self):
        servers = server("srv1", 0, 1, devices(1)) + server("srv2", 1, 2, devices(2, com=False))
        self.assertError("/root/heartbeat/comhb@comhb1", "fewer than two servers",
                         servers=servers, heartbeat=EVERY_HEARTBEAT)

    def test_witness_unused_everywhere(self):
        servers = server("srv1", 0, 1, devices(1, witness="0")) + server("srv2", 1, 2, devices(2, witness="0"))
        self.assertError("/root/heartbeat/witnesshb@witnesshb1", "fewer than two",
                         servers=servers, heartbeat=EVERY_HEARTBEAT)

    def test_bad_devices(self):
        extra = ('<device id="200"><type>com</type><info>ttyS0</info></device>'
                 '<device id="600"><type>bmc</type><info>fe80::1</info></device>'
                 '<device id="10200"><type>ping</type><info>yes</info></device>')
        error = self.problems(servers=server("srv1", 0, 1, extra) + server("srv2", 1, 2))
        self.assertProblem(error.errors, "/root/server@srv1/device@200/info", "must be absolute")
        self.assertProblem(error.errors, "/root/server@srv1/device@600/info", "IPv4 only")
        self.assertProblem(error.errors, "/root/server@srv1/device@10200/info", "not 0 or 1")

    def test_bad_np(self):
        np = ('<networkpartition><pingnp name="pingnp1"><device>10200</device>'
              '<grp id="0"><list id="0"><ip>169.254.1.1</ip></list></grp>'
              '<parameters><interval>900</interval><timeout>100</timeout></parameters></pingnp>'
              '<httpnp name="httpnp1"><device>10700</device><path>x</path></httpnp>'
              '<disknp name="disknp1"/></networkpartition>')
        error = self.problems(servers=self.two(), extra=np)
        self.assertProblem(error.errors, "/root/networkpartition/pingnp@pingnp1/grp@0/list@0/ip", "link-local")
        self.assertProblem(error.errors, "/root/networkpartition/pingnp@pingnp1/parameters/interval",
                           "longer than the timeout")
        self.assertProblem(error.errors, "/root/networkpartition/httpnp@httpnp1/host", "<host> is required")
        self.assertProblem(error.errors, "/root/networkpartition/httpnp@httpnp1/path", "must start with '/'")
        self.assertProblem(error.warnings, "/root/networkpartition/disknp@disknp1", "not supported")

    def two(self):
        return server("srv1", 0, 1, devices(1)) + server("srv2", 1, 2, devices(2))

    def test_unsupported_np_action(self):
        cluster = '<cluster><name>c</name><key>k</key><networkpartition><npaction>4</npaction></networkpartition></cluster>'
        self.assertError("/root/cluster/networkpartition/npaction", "not supported by cpro", cluster=cluster)

    def test_forced_stop_needs_a_bmc_on_every_server(self):
        servers = server("srv1", 0, 1, devices(1)) + server("srv2", 1, 2, devices(2, bmc=False))
        heartbeat = EVERY_HEARTBEAT.replace(
            '<bmchb name="bmchb1"><priority>3</priority><device>600</device></bmchb>', "")
        self.assertError("/root/server@srv2", "has no bmc device", cluster=CLUSTER, servers=servers,
                         heartbeat=heartbeat)

    def test_forced_stop_script(self):
        cluster = ('<cluster><name>c</name><key>k</key><forcestop><use>1</use><method>script</method>'
                   '<script>scripts/forcestop.sh</script></forcestop></cluster>')
        self.assertError("/root/cluster/forcestop/script", "does not exist", cluster=cluster)
        path = os.path.join(self.base, "scripts", "forcestop.sh")
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o755)
        config, _ = self.load(cluster=cluster)
        self.assertEqual(config.forced_stop.script, path)
        self.assertEqual(config.forced_stop.method, "script")

    def test_bad_forced_stop_values(self):
        cluster = ('<cluster><name>c</name><key>k</key><forcestop><use>1</use><method>pdu</method>'
                   '<action>explode</action></forcestop></cluster>')
        error = self.problems(cluster=cluster)
        self.assertProblem(error.errors, "/root/cluster/forcestop/method", "not bmc or script")
        self.assertProblem(error.errors, "/root/cluster/forcestop/action", "explode")


class PasswordFileTests(ConfigTestMixin, SynchronousTestCase):
    """A BMC password kept in a file (<passwordfile>)."""

    def password_file(self, content):
        path = os.path.join(self.base, "bmc.pw")
        with open(path, "wb") as f:
            f.write(content)
        return path

    def servers(self, path):
        bmc = (f'<device id="600"><type>bmc</type><info>192.168.0.9</info><user>admin</user>'
               f'<passwordfile>{path}</passwordfile></device>')
        return server("srv1", 0, 1, bmc) + server("srv2", 1, 2)

    def test_read(self):
        path = self.password_file("pässword\n".encode("utf-8"))
        config, _ = self.load(servers=self.servers(path))
        self.assertEqual(config.server("srv1").bmc.password, "pässword")

    def test_not_utf8(self):
        """A password file in another encoding is an error naming the element and file."""
        path = self.password_file("pässword\n".encode("latin-1"))
        problem = self.assertError("/root/server@srv1/device@600/passwordfile", "not UTF-8",
                                   servers=self.servers(path))
        self.assertIn(path, problem.message)

    def test_too_large(self):
        """A password file is never silently cut short."""
        path = self.password_file(b"x" * 5000)
        self.assertError("/root/server@srv1/device@600/passwordfile", "larger than",
                         servers=self.servers(path))

    def test_missing(self):
        path = os.path.join(self.base, "none.pw")
        self.assertError("/root/server@srv1/device@600/passwordfile", "cannot read",
                         servers=self.servers(path))
