"""Tests for cpro.config: loading clp.conf, defaults, validation, order, digest."""

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from cpro.config import ConfigError, ConfigFileError, load_config, load_config_text
from cpro.config.defaults import DEFAULTS
from cpro.config.model import ClusterConfig, Ports
from cpro.config.order import activation_order
from cpro.config.xmltree import MAX_CONFIG_BYTES, MAX_DEPTH

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CLUSTER = "<cluster><name>c1</name><key>secret text</key></cluster>"
SERVERS = (
    '<server name="srv1"><priority>0</priority>'
    '<device id="0"><type>lan</type><info>127.0.0.1</info></device></server>'
    '<server name="srv2"><priority>1</priority>'
    '<device id="0"><type>lan</type><info>127.0.0.2</info></device></server>'
)
HEARTBEAT = ('<heartbeat><types name="lanhb"/>'
             '<lanhb name="lanhb1"><priority>0</priority><device>0</device></lanhb></heartbeat>')
GROUPS = '<group name="failover1"><resource name="exec@exec1"/></group>'
RESOURCES = '<resource><types name="exec"/><exec name="exec1"/></resource>'


def conf(cluster=CLUSTER, servers=SERVERS, heartbeat=HEARTBEAT, groups=GROUPS,
         resources=RESOURCES, extra=""):
    return f"<root>{cluster}{servers}{heartbeat}{groups}{resources}{extra}</root>"


class ConfigTestMixin:
    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.script("failover1", "exec1")

    def script(self, group, resource, name="start.sh", mode=0o755):
        directory = os.path.join(self.base, "scripts", group, resource)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, mode)
        return path

    def load(self, text=None, **parts):
        return load_config_text(text if text is not None else conf(**parts), self.base)

    def problems(self, text=None, **parts):
        """The ConfigError raised for the text; fails if it loads."""
        return self.assertRaises(ConfigError, self.load, text, **parts)

    def assertProblem(self, problems, path, fragment):
        """One of problems has exactly this path and a message containing fragment."""
        for p in problems:
            if p.path == path and fragment in p.message:
                return p
        self.fail(f"no problem {path}: ...{fragment}... in:\n"
                  + "\n".join(str(p) for p in problems))

    def assertError(self, path, fragment, text=None, **parts):
        error = self.problems(text, **parts)
        return self.assertProblem(error.errors, path, fragment)


class SparseDefaultsTests(ConfigTestMixin, SynchronousTestCase):
    def test_defaults_table(self):
        """The one defaults table holds the documented values."""
        expected = {
            "cluster/heartbeat/interval": 3000, "cluster/heartbeat/timeout": 90000,
            "cluster/syncwait": 300, "cluster/cfwait": 120,
            "exec/parameters/timeout/start": 1800, "exec/parameters/timeout/stop": 1800,
            "exec/act/retry": 0, "exec/act/fo": 1, "exec/act/action": 1,
            "exec/deact/retry": 0, "exec/deact/action": 4,
            "group/start": 1, "group/failover": 1, "group/failback": 0, "group/exclusive": 0,
        }
        for key, value in expected.items():
            self.assertEqual(DEFAULTS[key], value, key)

    def test_sparse_file_gets_defaults(self):
        config, warnings = self.load()
        self.assertIsInstance(config, ClusterConfig)
        self.assertEqual(warnings, ())
        self.assertEqual(config.name, "c1")
        self.assertEqual(config.key, b"secret text")
        self.assertEqual(config.hb_interval, 3.0)
        self.assertEqual(config.hb_timeout, 90.0)
        self.assertEqual(config.startup_sync_wait, 300.0)
        self.assertEqual(config.config_download_wait, 120.0)
        self.assertEqual(config.ports, Ports(29001, 29002, 29003, 29006))
        self.assertEqual(config.os_actions.shutdown, ("systemctl", "poweroff"))
        self.assertEqual(config.os_actions.reboot, ("systemctl", "reboot"))
        self.assertEqual(config.alert_log_max_bytes, 1_000_000)
        self.assertEqual(config.alert_log_backups, 5)

        group = config.group("failover1")
        self.assertEqual(group.gid, 0)
        self.assertEqual(group.policy, ("srv1", "srv2"))
        self.assertTrue(group.start_auto)
        self.assertTrue(group.failover_auto)
        self.assertFalse(group.failback_auto)
        self.assertEqual(group.exclusive, 0)
        self.assertEqual(group.resources, ("exec1",))

        exec1 = config.resource("exec1")
        self.assertEqual((exec1.type, exec1.group, exec1.depends), ("exec", "failover1", None))
        self.assertEqual((exec1.act_retry, exec1.act_fo, exec1.act_action), (0, 1, 1))
        self.assertEqual((exec1.deact_retry, exec1.deact_action), (0, 4))
        params = exec1.params
        self.assertEqual(params.start_path,
                         os.path.join(self.base, "scripts", "failover1", "exec1", "start.sh"))
        self.assertIsNone(params.stop_path)  # no stop.sh: nothing to run
        self.assertTrue(params.start_sync)
        self.assertTrue(params.stop_sync)
        self.assertEqual((params.start_timeout, params.stop_timeout), (1800.0, 1800.0))
        self.assertIsNone(params.userlog)
        self.assertEqual(config.group_resources("failover1"), (exec1,))

    def test_default_stop_script_used_when_present(self):
        stop = self.script("failover1", "exec1", "stop.sh")
        config, _ = self.load()
        self.assertEqual(config.resource("exec1").params.stop_path, stop)

    def test_servers_sorted_by_priority_and_address_default(self):
        servers = (
            '<server name="b"><priority>1</priority>'
            '<device id="3"><type>lan</type><info>127.0.3.2</info></device>'
            '<device id="0"><type>lan</type><info>127.0.0.2</info></device></server>'
            '<server name="a"><priority>0</priority>'
            '<device id="0"><type>lan</type><info>127.0.0.1</info></device>'
            '<address>127.0.9.1</address></server>')
        config, _ = self.load(servers=servers)
        self.assertEqual([s.name for s in config.servers], ["a", "b"])
        self.assertEqual(config.master.name, "a")
        self.assertEqual(config.server("a").address, "127.0.9.1")
        self.assertEqual(config.server("b").address, "127.0.0.2")  # lowest-id lan device
        self.assertEqual([d.id for d in config.server("b").devices], [0, 3])
        self.assertEqual(config.server("b").device(3).info, "127.0.3.2")
        self.assertEqual(config.group("failover1").policy, ("a", "b"))


class FullFileTests(ConfigTestMixin, SynchronousTestCase):
    FULL = """<?xml version="1.0" encoding="UTF-8"?>
<root>
  <all><charset>ASCII</charset><serveros>linux</serveros></all>
  <trekking><configid>1</configid></trekking>
  <webmgr><client><objectnumber>9</objectnumber></client></webmgr>
  <cluster>
    <name>demo</name><comment>demo cluster</comment><uuid>1234</uuid>
    <keyfile>keys/cluster.key</keyfile>
    <heartbeat><interval>100</interval><timeout>500</timeout></heartbeat>
    <syncwait>30</syncwait><cfwait>10</cfwait>
    <ports><internal>30001</internal><lanhb>30002</lanhb><alert>30003</alert><lankhb>30006</lankhb></ports>
    <osaction><shutdown>logger -t cpro "would shut down"</shutdown><reboot>/bin/true reboot</reboot></osaction>
    <alertlog><maxsize>50000</maxsize><backups>2</backups></alertlog>
  </cluster>
  <server name="srv1">
    <priority>0</priority><comment>first</comment>
    <device id="0"><type>lan</type><info>127.0.0.1</info></device>
    <device id="1"><type>lan</type><info>::1</info></device>
    <ports><internal>31001</internal></ports>
  </server>
  <server name="srv2">
    <priority>1</priority>
    <device id="0"><type>lan</type><info>127.0.0.2</info></device>
    <device id="1"><type>lan</type><info>127.0.1.2</info></device>
  </server>
  <heartbeat>
    <types name="lanhb"/><types name="lankhb"/>
    <lankhb name="lankhb1"><priority>1</priority><device>1</device></lankhb>
    <lanhb name="lanhb1"><priority>0</priority><device>0</device></lanhb>
  </heartbeat>
  <group name="g2">
    <gid>7</gid><comment>second</comment>
    <resource name="exec@exec1"/>
    <policy name="srv2"><order>0</order></policy>
    <policy name="srv1"><order>1</order></policy>
    <start>0</start><failover>0</failover><failback>1</failback><exclusive>2</exclusive>
  </group>
  <group name="g1">
    <type>failover</type>
    <resource name="exec@exec2"/>
  </group>
  <resource>
    <types name="exec"/>
    <exec name="exec1">
      <comment>web</comment>
      <parameters>
        <act><path>go.sh</path><sync>0</sync></act>
        <deact><path>/opt/stop-it</path><sync>0</sync></deact>
        <timeout><start>10</start><stop>20</stop></timeout>
        <userlog>/var/log/exec1.log</userlog>
      </parameters>
      <act><retry>3</retry><fo>2</fo><action>5</action></act>
      <deact><retry>1</retry><action>0</action></deact>
    </exec>
    <exec name="exec2"/>
  </resource>
</root>
"""

    def setUp(self):
        super().setUp()
        self.script("g2", "exec1", "go.sh")
        self.script("g1", "exec2")
        os.makedirs(os.path.join(self.base, "keys"))
        with open(os.path.join(self.base, "keys", "cluster.key"), "wb") as f:
            f.write(b"key from file\n")
        self.stop = os.path.join(self.base, "stop-it")

    def load_full(self):
        self.script("x", "y")  # unrelated
        stop = self.script("g2", "exec1", "stop-it")
        return self.load(self.FULL.replace("/opt/stop-it", stop)), stop

    def test_every_value_read(self):
        (config, warnings), stop = self.load_full()
        self.assertEqual(warnings, ())
        self.assertEqual(config.name, "demo")
        self.assertEqual(config.key, b"key from file")
        self.assertEqual(config.hb_interval, 0.1)  # sub-second works
        self.assertEqual(config.hb_timeout, 0.5)
        self.assertEqual(config.startup_sync_wait, 30.0)
        self.assertEqual(config.config_download_wait, 10.0)
        self.assertEqual(config.ports, Ports(30001, 30002, 30003, 30006))
        self.assertEqual(config.server("srv1").ports, Ports(31001, 30002, 30003, 30006))
        self.assertEqual(config.server("srv2").ports, Ports(30001, 30002, 30003, 30006))
        self.assertEqual(config.server("srv1").device(1).info, "::1")
        self.assertEqual(config.os_actions.shutdown, ("logger", "-t", "cpro", "would shut down"))
        self.assertEqual(config.os_actions.reboot, ("/bin/true", "reboot"))
        self.assertEqual((config.alert_log_max_bytes, config.alert_log_backups), (50000, 2))
        self.assertEqual([(h.name, h.kind, h.priority, h.device) for h in config.heartbeats],
                         [("lanhb1", "lanhb", 0, 0), ("lankhb1", "lankhb", 1, 1)])

        # g1 has no <gid>: its index in file order (1); g2 says 7.
        self.assertEqual([(g.name, g.gid) for g in config.groups], [("g1", 1), ("g2", 7)])
        g2 = config.group("g2")
        self.assertEqual(g2.policy, ("srv2", "srv1"))
        self.assertEqual((g2.start_auto, g2.failover_auto, g2.failback_auto, g2.exclusive),
                         (False, False, True, 2))
        exec1 = config.resource("exec1")
        self.assertEqual((exec1.act_retry, exec1.act_fo, exec1.act_action), (3, 2, 5))
        self.assertEqual((exec1.deact_retry, exec1.deact_action), (1, 0))
        self.assertEqual(exec1.params.start_path,
                         os.path.join(self.base, "scripts", "g2", "exec1", "go.sh"))
        self.assertEqual(exec1.params.stop_path, stop)  # absolute path stays
        self.assertFalse(exec1.params.start_sync)
        self.assertFalse(exec1.params.stop_sync)
        self.assertEqual((exec1.params.start_timeout, exec1.params.stop_timeout), (10.0, 20.0))
        self.assertEqual(exec1.params.userlog, "/var/log/exec1.log")
        self.assertEqual([r.name for r in config.resources], ["exec2", "exec1"])

    def test_source_kept(self):
        (config, _), _ = self.load_full()
        self.assertIn("<name>demo</name>", config.source)
        self.assertEqual(len(config.digest), 64)

    def test_load_config_from_file(self):
        stop = self.script("g2", "exec1", "stop-it")
        path = os.path.join(self.base, "clp.conf")
        with open(path, "w") as f:
            f.write(self.FULL.replace("/opt/stop-it", stop))
        config, warnings = load_config(path)
        self.assertEqual(config.name, "demo")
        self.assertEqual(config.key, b"key from file")  # relative to the file's directory

    def test_encoded_bytes(self):
        """A file saved as EUC-JP (as CLUSTERPRO may do) is decoded per its declaration."""
        text = ('<?xml version="1.0" encoding="EUC-JP"?>'
                + conf(cluster="<cluster><name>c1</name><key>k</key>"
                               "<comment>\u30af\u30e9\u30b9\u30bf</comment></cluster>"))
        path = os.path.join(self.base, "clp.conf")
        with open(path, "wb") as f:
            f.write(text.encode("euc-jp"))
        config, _ = load_config(path)
        self.assertIn("\u30af\u30e9\u30b9\u30bf", config.source)


class ClusterErrorTests(ConfigTestMixin, SynchronousTestCase):
    def test_missing_cluster(self):
        self.assertError("/root/cluster", "required", cluster="")

    def test_missing_name(self):
        self.assertError("/root/cluster/name", "cluster name is required",
                         cluster="<cluster><key>k</key></cluster>")

    def test_missing_key(self):
        self.assertError("/root/cluster/key", "cluster key is required",
                         cluster="<cluster><name>c</name></cluster>")

    def test_empty_key(self):
        self.assertError("/root/cluster/key", "empty",
                         cluster="<cluster><name>c</name><key> </key></cluster>")

    def test_key_and_keyfile(self):
        self.assertError("/root/cluster/keyfile", "not both",
                         cluster="<cluster><name>c</name><key>k</key>"
                                 "<keyfile>k.key</keyfile></cluster>")

    def test_keyfile_missing(self):
        p = self.assertError("/root/cluster/keyfile", "cannot read keyfile",
                             cluster="<cluster><name>c</name><keyfile>nope.key</keyfile></cluster>")
        self.assertIn(os.path.join(self.base, "nope.key"), p.message)

    def test_duplicate_element(self):
        self.assertError("/root/cluster/name", "more than once",
                         cluster="<cluster><name>a</name><name>b</name><key>k</key></cluster>")

    def hb(self, interval, timeout):
        return (f"<cluster><name>c</name><key>k</key><heartbeat><interval>{interval}</interval>"
                f"<timeout>{timeout}</timeout></heartbeat></cluster>")

    def test_timeout_not_above_interval(self):
        self.assertError("/root/cluster/heartbeat/timeout", "longer than the interval",
                         cluster=self.hb(3000, 3000))

    def test_interval_too_small(self):
        self.assertError("/root/cluster/heartbeat/interval", "out of range",
                         cluster=self.hb(9, 3000))

    def test_interval_not_integer(self):
        self.assertError("/root/cluster/heartbeat/interval", "'1.5' is not an integer",
                         cluster=self.hb("1.5", 3000))

    def test_port_out_of_range(self):
        error = self.problems(cluster="<cluster><name>c</name><key>k</key><ports>"
                                      "<internal>0</internal><alert>65536</alert></ports></cluster>")
        self.assertProblem(error.errors, "/root/cluster/ports/internal", "out of range (1-65535)")
        self.assertProblem(error.errors, "/root/cluster/ports/alert", "out of range")

    def test_osaction_bad_quoting(self):
        self.assertError("/root/cluster/osaction/reboot", "cannot split",
                         cluster="<cluster><name>c</name><key>k</key><osaction>"
                                 "<reboot>echo 'x</reboot></osaction></cluster>")

    def test_osaction_empty(self):
        self.assertError("/root/cluster/osaction/shutdown", "empty",
                         cluster="<cluster><name>c</name><key>k</key><osaction>"
                                 "<shutdown></shutdown></osaction></cluster>")


class ServerErrorTests(ConfigTestMixin, SynchronousTestCase):
    def server(self, name, priority, *infos, extra=""):
        devices = "".join(f'<device id="{i}"><type>lan</type><info>{info}</info></device>'
                          for i, info in enumerate(infos))
        return f'<server name="{name}"><priority>{priority}</priority>{devices}{extra}</server>'

    def test_no_servers(self):
        self.assertError("/root/server", "at least one", servers="")

    def test_duplicate_name(self):
        self.assertError("/root/server@srv1", "more than once",
                         servers=self.server("srv1", 0, "127.0.0.1")
                         + self.server("srv1", 1, "127.0.0.2"))

    def test_duplicate_priority(self):
        self.assertError("/root/server@srv2/priority", "also used by server srv1",
                         servers=self.server("srv1", 0, "127.0.0.1")
                         + self.server("srv2", 0, "127.0.0.2"))

    def test_missing_priority(self):
        self.assertError("/root/server@srv1/priority", "required",
                         servers='<server name="srv1"><device id="0"><type>lan</type>'
                                 '<info>127.0.0.1</info></device></server>')

    def test_bad_name(self):
        self.assertError("/root/server@a/b", "invalid server name",
                         servers=self.server("a/b", 0, "127.0.0.1"))

    def test_link_local_ipv4(self):
        self.assertError("/root/server@srv2/device@0/info", "link-local",
                         servers=self.server("srv1", 0, "127.0.0.1")
                         + self.server("srv2", 1, "169.254.1.1"))

    def test_link_local_ipv6(self):
        self.assertError("/root/server@srv2/device@0/info", "link-local",
                         servers=self.server("srv1", 0, "127.0.0.1")
                         + self.server("srv2", 1, "fe80::1"))

    def test_not_an_address(self):
        self.assertError("/root/server@srv1/device@0/info", "not an IPv4 or IPv6",
                         servers=self.server("srv1", 0, "server-one"))

    def test_unspecified_address(self):
        self.assertError("/root/server@srv1/device@0/info", "not a unicast",
                         servers=self.server("srv1", 0, "0.0.0.0"))

    def test_heartbeat_device_missing_on_a_server(self):
        heartbeat = ('<heartbeat><lanhb name="lanhb1"><priority>0</priority><device>0</device>'
                     '</lanhb><lanhb name="lanhb2"><priority>1</priority><device>1</device>'
                     '</lanhb></heartbeat>')
        p = self.assertError("/root/server@srv2/device@1", "missing", heartbeat=heartbeat,
                             servers=self.server("srv1", 0, "127.0.0.1", "127.0.1.1")
                             + self.server("srv2", 1, "127.0.0.2"))
        self.assertIn("lanhb2", p.message)

    def test_heartbeat_device_not_lan(self):
        servers = (self.server("srv1", 0, "127.0.0.1")
                   + '<server name="srv2"><priority>1</priority><address>127.0.0.2</address>'
                     '<device id="0"><type>disk</type><info>/dev/sdb1</info></device></server>')
        error = self.problems(servers=servers)
        self.assertProblem(error.errors, "/root/server@srv2/device@0", "needs a lan device")

    def test_no_lan_heartbeat(self):
        self.assertError("/root/heartbeat", "at least one lanhb or lankhb", heartbeat="")
        error = self.problems(heartbeat='<heartbeat><diskhb name="diskhb1"><priority>1</priority>'
                                        '<device>300</device></diskhb></heartbeat>')
        self.assertProblem(error.errors, "/root/heartbeat", "at least one lanhb")

    def test_heartbeat_priority_duplicate(self):
        heartbeat = ('<heartbeat><lanhb name="lanhb1"><priority>0</priority><device>0</device>'
                     '</lanhb><lankhb name="lankhb1"><priority>0</priority><device>0</device>'
                     '</lankhb></heartbeat>')
        self.assertError("/root/heartbeat/lankhb@lankhb1/priority", "also used", heartbeat=heartbeat)

    def test_address_clash_between_servers(self):
        error = self.problems(servers=self.server("srv1", 0, "127.0.0.1")
                              + self.server("srv2", 1, "127.0.0.1"))
        self.assertProblem(error.errors, "/root/server@srv2",
                           "internal communication would listen on 127.0.0.1 tcp port 29001, "
                           "already used by server srv1's internal communication")
        self.assertProblem(error.errors, "/root/server@srv2", "udp port 29003")
        self.assertProblem(error.errors, "/root/server@srv2", "heartbeat lanhb1")
        self.assertEqual(len(error.errors), 3)

    def test_per_server_ports_avoid_clash(self):
        other = ("<ports><internal>39001</internal><lanhb>39002</lanhb>"
                 "<alert>39003</alert></ports>")
        config, _ = self.load(servers=self.server("srv1", 0, "127.0.0.1")
                              + self.server("srv2", 1, "127.0.0.1", extra=other))
        self.assertEqual(config.server("srv2").ports, Ports(39001, 39002, 39003, 29006))
        self.assertEqual(config.server("srv1").ports, Ports())

    def test_same_port_for_two_purposes(self):
        self.assertError("/root/server@srv1", "heartbeat lanhb1",
                         cluster="<cluster><name>c</name><key>k</key><ports>"
                                 "<alert>29002</alert></ports></cluster>")

    def test_no_address(self):
        self.assertError("/root/server@srv1", "no lan device and no <address>",
                         servers='<server name="srv1"><priority>0</priority></server>')


class GroupAndResourceErrorTests(ConfigTestMixin, SynchronousTestCase):
    def test_policy_unknown_server(self):
        self.assertError("/root/group@failover1/policy@srv9", "unknown server srv9",
                         groups='<group name="failover1"><resource name="exec@exec1"/>'
                                '<policy name="srv9"><order>0</order></policy></group>')

    def test_policy_duplicate_order(self):
        self.assertError("/root/group@failover1/policy@srv2/order", "also given to server srv1",
                         groups='<group name="failover1"><resource name="exec@exec1"/>'
                                '<policy name="srv1"><order>0</order></policy>'
                                '<policy name="srv2"><order>0</order></policy></group>')

    def test_undefined_group_resource(self):
        self.assertError("/root/group@failover1/resource@exec@exec9", "not defined",
                         groups='<group name="failover1"><resource name="exec@exec1"/>'
                                '<resource name="exec@exec9"/></group>')

    def test_bad_group_resource_reference(self):
        self.assertError("/root/group@failover1/resource@exec1", "type@name",
                         groups='<group name="failover1"><resource name="exec1"/></group>')

    def test_resource_in_two_groups(self):
        self.assertError("/root/group@g2/resource@exec@exec1", "already belongs to group failover1",
                         groups=GROUPS + '<group name="g2"><resource name="exec@exec1"/></group>')

    def test_duplicate_group(self):
        self.assertError("/root/group@failover1", "more than once", groups=GROUPS + GROUPS)

    def test_duplicate_gid(self):
        self.assertError("/root/group@g2", "gid 0",
                         groups=GROUPS + '<group name="g2"><gid>0</gid></group>')

    def test_duplicate_resource_name(self):
        self.assertError("/root/resource/fip@exec1", "already used by exec@exec1",
                         resources='<resource><exec name="exec1"/><fip name="exec1"/></resource>')

    def test_group_values_out_of_range(self):
        error = self.problems(groups='<group name="failover1"><resource name="exec@exec1"/>'
                                     '<start>2</start><failover>x</failover><failback>-1</failback>'
                                     '<exclusive>3</exclusive></group>')
        for tag in ("start", "failover", "failback", "exclusive"):
            self.assertProblem(error.errors, f"/root/group@failover1/{tag}", "")

    def test_exec_values_out_of_range(self):
        resources = ('<resource><exec name="exec1"><parameters>'
                     '<act><sync>2</sync></act><deact><sync>x</sync></deact>'
                     '<timeout><start>0</start><stop>10000</stop></timeout></parameters>'
                     '<act><retry>100</retry><fo>-1</fo><action>6</action></act>'
                     '<deact><retry>99</retry><action>2</action></deact></exec></resource>')
        errors = self.problems(resources=resources).errors
        base = "/root/resource/exec@exec1"
        self.assertProblem(errors, f"{base}/parameters/act/sync", "not one of 0, 1")
        self.assertProblem(errors, f"{base}/parameters/deact/sync", "not an integer")
        self.assertProblem(errors, f"{base}/parameters/timeout/start", "out of range (1-9999)")
        self.assertProblem(errors, f"{base}/parameters/timeout/stop", "out of range (1-9999)")
        self.assertProblem(errors, f"{base}/act/retry", "out of range (0-99)")
        self.assertProblem(errors, f"{base}/act/fo", "out of range (0-99)")
        self.assertProblem(errors, f"{base}/act/action", "not one of 0, 1, 2, 3, 4, 5")
        self.assertProblem(errors, f"{base}/deact/action", "not one of 0, 1, 3, 4, 5")
        self.assertEqual(len(errors), 8)  # deact/retry 99 is fine

    def test_missing_start_script(self):
        os.unlink(os.path.join(self.base, "scripts", "failover1", "exec1", "start.sh"))
        p = self.assertError("/root/resource/exec@exec1/parameters/act/path", "does not exist")
        self.assertIn(os.path.join(self.base, "scripts/failover1/exec1/start.sh"), p.message)

    def test_start_script_not_executable(self):
        self.script("failover1", "exec1", mode=0o644)
        self.assertError("/root/resource/exec@exec1/parameters/act/path", "not executable")

    def test_explicit_stop_script_missing(self):
        self.assertError("/root/resource/exec@exec1/parameters/deact/path", "stop.sh does not exist",
                         resources='<resource><exec name="exec1"><parameters><deact>'
                                   '<path>stop.sh</path></deact></parameters></exec></resource>')

    def test_default_stop_script_not_executable(self):
        self.script("failover1", "exec1", "stop.sh", mode=0o600)
        self.assertError("/root/resource/exec@exec1/parameters/deact/path", "not executable")

    def test_script_is_directory(self):
        os.makedirs(os.path.join(self.base, "d"))
        self.assertError("/root/resource/exec@exec1/parameters/act/path", "not a regular file",
                         resources='<resource><exec name="exec1"><parameters><act><path>'
                                   f'{self.base}/d</path></act></parameters></exec></resource>')

    def test_depend_unknown(self):
        self.assertError("/root/resource/exec@exec1/depend@ghost", "unknown resource ghost",
                         resources='<resource><exec name="exec1"><depend name="ghost"/></exec>'
                                   '</resource>')

    def test_depend_other_group(self):
        self.script("g2", "exec2")
        self.assertError("/root/resource/exec@exec1/depend@exec2", "in group g2",
                         groups=GROUPS + '<group name="g2"><resource name="exec@exec2"/></group>',
                         resources='<resource><exec name="exec1"><depend name="exec2"/></exec>'
                                   '<exec name="exec2"/></resource>')

    def test_dependency_cycle(self):
        for name in ("exec2", "exec3"):
            self.script("failover1", name)
        groups = ('<group name="failover1"><resource name="exec@exec1"/>'
                  '<resource name="exec@exec2"/><resource name="exec@exec3"/></group>')
        resources = ('<resource><exec name="exec1"><depend name="exec3"/></exec>'
                     '<exec name="exec2"><depend name="exec1"/></exec>'
                     '<exec name="exec3"><depend name="exec2"/></exec></resource>')
        self.assertError("/root/resource/exec@exec1", "dependency cycle: exec1 -> exec3 -> exec2 "
                         "-> exec1", groups=groups, resources=resources)

    def test_self_dependency(self):
        self.assertError("/root/resource/exec@exec1", "dependency cycle: exec1 -> exec1",
                         resources='<resource><exec name="exec1"><depend name="exec1"/></exec>'
                                   '</resource>')

    def test_explicit_dependency_order(self):
        for name in ("exec2", "exec3"):
            self.script("failover1", name)
        groups = ('<group name="failover1"><resource name="exec@exec1"/>'
                  '<resource name="exec@exec2"/><resource name="exec@exec3"/></group>')
        resources = ('<resource><exec name="exec1"><depend name="exec3"/></exec>'
                     '<exec name="exec2"/><exec name="exec3"><depend name="exec2"/></exec>'
                     '</resource>')
        config, _ = self.load(groups=groups, resources=resources)
        self.assertEqual(config.group("failover1").resources, ("exec2", "exec3", "exec1"))
        self.assertEqual(config.resource("exec1").depends, ("exec3",))
        self.assertIsNone(config.resource("exec2").depends)


class ManyErrorsTests(ConfigTestMixin, SynchronousTestCase):
    def test_all_errors_at_once(self):
        text = conf(
            cluster="<cluster><heartbeat><interval>5</interval></heartbeat></cluster>",
            servers=('<server name="srv1"><priority>0</priority><device id="0"><type>lan</type>'
                     '<info>fe80::1</info></device></server>'
                     '<server name="srv2"><priority>0</priority><device id="0"><type>lan</type>'
                     '<info>127.0.0.2</info></device></server>'),
            groups=('<group name="failover1"><resource name="exec@exec1"/>'
                    '<resource name="exec@nope"/><policy name="srv9"><order>0</order></policy>'
                    '<exclusive>5</exclusive></group>'),
            resources=('<resource><exec name="exec1"><act><retry>100</retry></act>'
                       '<depend name="ghost"/></exec><vip name="vip1"/></resource>'),
            extra='<monitor><bogusw name="bogusw1"/></monitor>')
        error = self.problems(text)
        expected = [
            ("/root/cluster/name", "required"),
            ("/root/cluster/key", "required"),
            ("/root/cluster/heartbeat/interval", "out of range"),
            ("/root/server@srv1/device@0/info", "link-local"),
            ("/root/server@srv2/priority", "also used"),
            ("/root/group@failover1/resource@exec@nope", "not defined"),
            ("/root/group@failover1/policy@srv9", "unknown server"),
            ("/root/group@failover1/exclusive", "not one of"),
            ("/root/resource/exec@exec1/act/retry", "out of range"),
            ("/root/resource/exec@exec1/depend@ghost", "unknown resource"),
        ]
        for path, fragment in expected:
            self.assertProblem(error.errors, path, fragment)
        self.assertEqual(len(error.errors), len(expected))
        self.assertProblem(error.warnings, "/root/monitor/bogusw@bogusw1", "not supported")
        self.assertProblem(error.warnings, "/root/resource/vip@vip1", "not supported")
        # The exception text names every problem too.
        for path, _ in expected:
            self.assertIn(path, str(error))


class WarningTests(ConfigTestMixin, SynchronousTestCase):
    def test_unsupported_sections(self):
        extra = ('<monitor><types name="userw"/><userw name="userw"/></monitor>'
                 '<networkpartition><disknp name="disknp1"/></networkpartition>'
                 '<messages/><bogus/>')
        config, warnings = self.load(extra=extra)
        self.assertProblem(warnings, "/root/networkpartition/disknp@disknp1", "not supported")
        self.assertProblem(warnings, "/root/messages", "not supported yet")
        self.assertProblem(warnings, "/root/bogus", "unknown element <bogus>")
        self.assertEqual(len(warnings), 3)
        self.assertEqual([m.name for m in config.monitors], ["userw"])

    def test_unsupported_resource_type(self):
        groups = '<group name="failover1"><resource name="vip@vip1"/><resource name="exec@exec1"/></group>'
        resources = ('<resource><types name="vip"/><vip name="vip1"><parameters><ip>10.0.0.9</ip>'
                     '</parameters></vip><exec name="exec1"><depend name="vip1"/></exec></resource>')
        config, warnings = self.load(groups=groups, resources=resources)
        self.assertProblem(warnings, "/root/resource/vip@vip1",
                           "resource type 'vip' is not supported yet: vip1 is ignored")
        self.assertProblem(warnings, "/root/resource/exec@exec1/depend@vip1", "ignored")
        self.assertEqual(config.group("failover1").resources, ("exec1",))
        self.assertEqual(config.resource("exec1").depends, ())

    def test_unsupported_heartbeat_kinds(self):
        heartbeat = HEARTBEAT.replace("</heartbeat>", "") + "".join(
            f'<{k} name="{k}1"><priority>9</priority></{k}>'
            for k in ("pigeonhb", "kernelhb")) + "</heartbeat>"
        config, warnings = self.load(heartbeat=heartbeat)
        for kind in ("pigeonhb", "kernelhb"):
            self.assertProblem(warnings, f"/root/heartbeat/{kind}@{kind}1",
                               f"heartbeat kind '{kind}' is not supported: {kind}1 is ignored")
        self.assertEqual([h.name for h in config.heartbeats], ["lanhb1"])

    def test_unknown_elements_everywhere(self):
        cluster = ("<cluster><name>c</name><key>k</key><pm><exec0><recover>2</recover></exec0></pm>"
                   "<heartbeat><interval>1000</interval><delay>1</delay></heartbeat></cluster>")
        servers = SERVERS.replace("<priority>0</priority>", "<priority>0</priority><survive>1</survive>")
        groups = '<group name="failover1"><resource name="exec@exec1"/><colour>red</colour></group>'
        resources = ('<resource><exec name="exec1"><parameters><logrotate><use>1</use></logrotate>'
                     '<act><postrunothers>1</postrunothers></act></parameters>'
                     '<act><timeout>1980</timeout></act>'
                     '<server name="srv1"><parameters/></server></exec></resource>')
        _, warnings = self.load(cluster=cluster, servers=servers, groups=groups,
                                resources=resources)
        for path in ("/root/cluster/pm", "/root/cluster/heartbeat/delay",
                     "/root/server@srv1/survive", "/root/group@failover1/colour",
                     "/root/resource/exec@exec1/parameters/logrotate",
                     "/root/resource/exec@exec1/parameters/act/postrunothers",
                     "/root/resource/exec@exec1/act/timeout",
                     "/root/resource/exec@exec1/server@srv1"):
            self.assertProblem(warnings, path, "")
        self.assertEqual(len(warnings), 8)

    def test_exec_not_in_any_group(self):
        config, warnings = self.load(
            resources='<resource><exec name="exec1"/><exec name="lonely"/></resource>')
        self.assertProblem(warnings, "/root/resource/exec@lonely", "not in any group")
        self.assertIsNone(config.resource("lonely"))

    def test_group_dependencies_warned(self):
        groups = ('<group name="failover1"><resource name="exec@exec1"/><depend><act>'
                  '<depend name="g0"/></act></depend></group>')
        _, warnings = self.load(groups=groups)
        self.assertProblem(warnings, "/root/group@failover1/depend", "not supported yet")

    def test_metadata_is_silent(self):
        extra = ('<all><charset>ASCII</charset></all><trekking><configid>x</configid></trekking>'
                 '<webmgr><client><objectnumber>5</objectnumber></client></webmgr>')
        cluster = "<cluster><name>c</name><key>k</key><comment>hi</comment><uuid>u</uuid></cluster>"
        groups = '<group name="failover1"><comment>x</comment><gid>3</gid><resource name="exec@exec1"/></group>'
        config, warnings = self.load(extra=extra, cluster=cluster, groups=groups)
        self.assertEqual(warnings, ())
        self.assertEqual(config.group("failover1").gid, 3)


class SyntaxTests(ConfigTestMixin, SynchronousTestCase):
    def test_syntax_error_has_line(self):
        error = self.assertRaises(ConfigError, load_config_text, "<root>\n<cluster>\n</root>",
                                  self.base, source_name="x.conf")
        self.assertEqual(error.errors[0].path, "x.conf")
        self.assertIn("line 3", error.errors[0].message)

    def test_doctype_refused(self):
        text = ('<?xml version="1.0"?><!DOCTYPE root [<!ENTITY a "aaaa">]>'
                "<root><cluster><name>&a;</name></cluster></root>")
        error = self.problems(text)
        self.assertIn("<!DOCTYPE> is not allowed", error.errors[0].message)

    def test_entity_refused(self):
        error = self.problems('<root><!ENTITY x "y"></root>')
        self.assertIn("<!ENTITY> is not allowed", error.errors[0].message)

    def test_wrong_document_element(self):
        error = self.problems("<config/>")
        self.assertIn("expected <root>", error.errors[0].message)

    def test_too_large_text(self):
        error = self.problems("<root>" + " " * MAX_CONFIG_BYTES + "</root>")
        self.assertIn("larger than", error.errors[0].message)

    def test_too_large_file(self):
        path = os.path.join(self.base, "big.conf")
        with open(path, "wb") as f:
            f.write(b"<root>" + b" " * MAX_CONFIG_BYTES + b"</root>")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertNotIsInstance(error, ConfigFileError)
        self.assertEqual(error.errors[0].path, path)
        self.assertIn("larger than", error.errors[0].message)

    def test_unreadable_file(self):
        path = os.path.join(self.base, "missing.conf")
        error = self.assertRaises(ConfigFileError, load_config, path)
        self.assertIsInstance(error, ConfigError)
        self.assertEqual(error.errors[0].path, path)
        self.assertIn("cannot read", error.errors[0].message)

    def test_bad_encoding(self):
        path = os.path.join(self.base, "bad.conf")
        with open(path, "wb") as f:
            f.write(b'<?xml version="1.0" encoding="x-nonsense"?><root/>')
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertIn("unknown encoding", error.errors[0].message)


class DigestTests(ConfigTestMixin, SynchronousTestCase):
    def test_stable_across_whitespace_comments_and_attribute_order(self):
        plain = conf()
        config1, _ = self.load(plain)
        pretty = ('<?xml version="1.0" encoding="UTF-8"?>\n<!-- a comment -->\n'
                  + plain.replace("><", ">\n   <").replace("<name>c1</name>", "<name> c1 </name>"))
        config2, _ = self.load(pretty)
        self.assertEqual(config1.digest, config2.digest)
        self.assertNotEqual(config1.source, config2.source)
        swapped = plain.replace('<device id="0">', '<device  id="0" >')
        self.assertEqual(self.load(swapped)[0].digest, config1.digest)

    def test_changes_with_values(self):
        config1, _ = self.load()
        config2, _ = self.load(cluster=CLUSTER.replace("c1", "c2"))
        self.assertNotEqual(config1.digest, config2.digest)


class ActivationOrderTests(SynchronousTestCase):
    def test_default_type_classes(self):
        members = [("exec1", "exec", None), ("disk1", "disk", None), ("fip1", "fip", None),
                   ("exec2", "exec", None), ("md1", "md", None), ("vip1", "vip", None)]
        order, cycles = activation_order(members)
        self.assertEqual(order, ("fip1", "vip1", "disk1", "md1", "exec1", "exec2"))
        self.assertEqual(cycles, [])

    def test_explicit_depend_only_on_those(self):
        # exec1 names only fip1, so it may start before disk1 (ties by element order).
        members = [("exec1", "exec", ("fip1",)), ("disk1", "disk", None), ("fip1", "fip", None)]
        order, _ = activation_order(members)
        self.assertEqual(order, ("fip1", "exec1", "disk1"))

    def test_explicit_depend_on_nothing(self):
        # An empty explicit list: exec1 waits for nothing, not even fip1.
        members = [("disk1", "disk", None), ("exec1", "exec", ()), ("fip1", "fip", None)]
        self.assertEqual(activation_order(members)[0], ("exec1", "fip1", "disk1"))

    def test_ties_by_group_order(self):
        members = [("b", "exec", None), ("a", "exec", None), ("c", "exec", ("b",))]
        self.assertEqual(activation_order(members)[0], ("b", "a", "c"))

    def test_cycle_through_default_edge(self):
        members = [("fip1", "fip", ("exec1",)), ("exec1", "exec", None)]
        order, cycles = activation_order(members)
        self.assertEqual(order, ())
        self.assertEqual(cycles, [["fip1", "exec1", "fip1"]])

    def test_separate_cycles_and_followers(self):
        members = [("a", "exec", ("b",)), ("b", "exec", ("a",)), ("c", "exec", ("d",)),
                   ("d", "exec", ("c",)), ("e", "exec", ("a",)), ("f", "exec", ())]
        order, cycles = activation_order(members)
        self.assertEqual(order, ("f",))
        self.assertEqual(cycles, [["a", "b", "a"], ["c", "d", "c"]])


class ExampleTests(SynchronousTestCase):
    def test_examples_load(self):
        for name, servers, groups in (("two-server", 2, 1), ("three-server", 3, 2), ("floating-ip", 2, 1)):
            config, warnings = load_config(os.path.join(REPO, "examples", name, "clp.conf"))
            self.assertEqual(warnings, ())
            self.assertEqual(len(config.servers), servers)
            self.assertEqual(len(config.groups), groups)
            self.assertEqual((config.hb_interval, config.hb_timeout), (1.0, 5.0))
            self.assertEqual(config.startup_sync_wait, 30.0)
            self.assertEqual([h.name for h in config.heartbeats], ["lanhb1", "lanhb2"])
            self.assertEqual(config.os_actions.shutdown[:3], ("logger", "-t", "cpro-example"))
            for resource in (r for r in config.resources if r.type == "exec"):
                self.assertTrue(os.access(resource.params.start_path, os.X_OK))
                self.assertTrue(os.access(resource.params.stop_path, os.X_OK))

    def test_three_server_groups(self):
        config, _ = load_config(os.path.join(REPO, "examples", "three-server", "clp.conf"))
        f1, f2 = config.group("failover1"), config.group("failover2")
        self.assertEqual(f1.policy, ("srv1", "srv3", "srv2"))
        self.assertEqual(f2.policy, ("srv2", "srv3", "srv1"))
        self.assertEqual((f1.exclusive, f2.exclusive), (1, 1))
        self.assertEqual(f2.resources, ("exec2", "exec3"))


class HostileInputTests(ConfigTestMixin, SynchronousTestCase):
    """Whatever is wrong in an operator's file comes out as a ConfigError
    naming the element or the file, never as another exception."""

    def test_integer_with_thousands_of_digits(self):
        """A digit run past int()'s conversion limit is an error of its element."""
        for digits in ("9" * 5000, "0" * 5000 + "1", "-" + "1" * 100000):
            cluster = ("<cluster><name>c1</name><key>k</key><heartbeat>"
                       f"<interval>{digits}</interval></heartbeat></cluster>")
            problem = self.assertError("/root/cluster/heartbeat/interval", "not an integer", cluster=cluster)
            self.assertLess(len(problem.message), 200)  # the value is shown cut short

    def test_integer_limit_not_changed(self):
        """Loading neither raises nor lifts the interpreter's digit limit."""
        limit = sys.get_int_max_str_digits()
        self.assertError("/root/group@failover1/start", "not an integer",
                         groups=f'<group name="failover1"><resource name="exec@exec1"/><start>{"1" * 4301}</start></group>')
        self.assertEqual(sys.get_int_max_str_digits(), limit)

    def test_unusable_declared_encodings(self):
        """Codecs that are not character sets, or fail in their own way, name the source."""
        for encoding in ("punycode", "undefined", "unicode_escape", "raw_unicode_escape", "idna", "utf-7"):
            data = f'<?xml version="1.0" encoding="{encoding}"?>'.encode("ascii") + conf().encode("ascii")
            error = self.assertRaises(ConfigError, load_config_text, data, self.base, source_name="x.conf")
            self.assertEqual([p.path for p in error.errors], ["x.conf"], encoding)
            self.assertIn(encoding, error.errors[0].message)

    def test_unusable_encoding_in_a_file(self):
        path = os.path.join(self.base, "clp.conf")
        with open(path, "wb") as f:
            f.write(b'<?xml version="1.0" encoding="punycode"?><root/>')
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertNotIsInstance(error, ConfigFileError)
        self.assertEqual(error.errors[0].path, path)

    def test_text_that_cannot_be_xml(self):
        """A str with a lone surrogate (given by a caller) is a syntax problem."""
        error = self.problems(conf(cluster="<cluster><name>c\ud800</name><key>k</key></cluster>"))
        self.assertEqual(error.errors[0].path, "<text>")

    def test_keyfile_not_a_regular_file(self):
        """A keyfile that is a FIFO would block the load forever: refused."""
        fifo = os.path.join(self.base, "key.fifo")
        os.mkfifo(fifo)
        self.assertError("/root/cluster/keyfile", "not a regular file",
                         cluster="<cluster><name>c1</name><keyfile>key.fifo</keyfile></cluster>")

    def test_deep_nesting(self):
        """Elements nested far deeper than clp.conf goes are refused at once
        (the digest's canonicalisation is quadratic in the depth)."""
        deep = "<x>" * 100000 + "</x>" * 100000
        error = self.problems(extra=deep)
        self.assertEqual([p.path for p in error.errors], ["/root" + "/x" * MAX_DEPTH])
        self.assertIn(f"nested more than {MAX_DEPTH} levels", error.errors[0].message)

    def test_nesting_within_the_bound(self):
        _, warnings = self.load(extra="<x>" * (MAX_DEPTH - 1) + "</x>" * (MAX_DEPTH - 1))
        self.assertEqual([w.path for w in warnings], ["/root/x"])
