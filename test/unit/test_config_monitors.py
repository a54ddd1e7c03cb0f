"""Tests for cpro.config: <monitor> resources and pm/exec0/recover."""

import os

from twisted.trial.unittest import SynchronousTestCase

from cpro import plugins
from cpro.config import ConfigError
from cpro.config.defaults import DEFAULTS, MONITOR_TIMINGS
from cpro.config.model import MonitorRecovery

from test.unit.test_config import ConfigTestMixin

SERVERS = (
    '<server name="srv1"><priority>0</priority>'
    '<device id="0"><type>lan</type><info>127.0.0.1</info></device>'
    '<device id="1"><type>lan</type><info>10.0.0.1</info></device></server>'
    '<server name="srv2"><priority>1</priority>'
    '<device id="0"><type>lan</type><info>127.0.0.2</info></device>'
    '<device id="1"><type>lan</type><info>10.0.0.2</info></device></server>'
)
GROUPS = ('<group name="failover1"><resource name="exec@exec1"/><resource name="exec@exec2"/>'
          '<resource name="fip@fip1"/><resource name="vip@vip1"/></group>')
RESOURCES = ('<resource><exec name="exec1"/>'
             '<exec name="exec2"><parameters><act><sync>0</sync></act></parameters></exec>'
             '<fip name="fip1"><parameters><ip>10.0.0.100</ip></parameters></fip>'
             '<vip name="vip1"/></resource>')

REL_GRP = "<relation><type>grp</type><name>failover1</name></relation>"
REL_CLS = "<relation><type>cls</type><name>LocalServer</name></relation>"

# A valid monitor of every type: (type, body without relation).
MINIMAL = {
    "pidw": "<target>exec2</target>",
    "psw": "<parameters><processname>sshd</processname></parameters>",
    "genw": "<parameters><path>genw.sh</path></parameters>",
    "ipw": '<parameters><list id="0"><ip>127.0.0.1</ip></list></parameters>',
    "miiw": "<parameters><object>eth0</object></parameters>",
    "diskw": "<parameters><object>/dev/sdb</object></parameters>",
    "userw": "",
    "sraw": "",
    "psrw": "<parameters><processname>java</processname></parameters>",
    "mtw": '<parameters><list id="0"><name>psw1</name></list></parameters>',
    "fipw": "<target>fip1</target>",
    "arpw": "<target>fip1</target>",
}


def monitor(mtype, name=None, body=None, relation=REL_GRP):
    name = name or f"{mtype}1"
    body = MINIMAL[mtype] if body is None else body
    return f'<{mtype} name="{name}">{body}{relation}</{mtype}>'


def section(*monitors):
    return "<monitor>" + "".join(f'<types name="{t}"/>' for t in ("genw",)) \
        + "".join(monitors) + "</monitor>"


class MonitorTestMixin(ConfigTestMixin):
    def setUp(self):
        super().setUp()
        self.script("failover1", "exec2")
        self.genw_script("genw1")

    def genw_script(self, name, script="genw.sh", mode=0o755):
        return self.script("monitor.s", name, script, mode)

    def load_monitors(self, *monitors, cluster=None, extra=""):
        parts = dict(servers=SERVERS, groups=GROUPS, resources=RESOURCES,
                     extra=section(*monitors) + extra)
        if cluster is not None:
            parts["cluster"] = cluster
        config, warnings = self.load(**parts)
        # vip1 is there to be an ignored resource; its own warning is not news.
        return config, tuple(w for w in warnings if w.path != "/root/resource/vip@vip1")

    def one(self, *monitors, **kwargs):
        config, warnings = self.load_monitors(*monitors, **kwargs)
        self.assertEqual(len(config.monitors), len(monitors))
        return config.monitors[0], warnings

    def monitor_error(self, path, fragment, *monitors, **kwargs):
        error = self.assertRaises(ConfigError, self.load_monitors, *monitors, **kwargs)
        return self.assertProblem(error.errors, path, fragment)


SUPPORTED_MONITOR_TYPES = plugins.MONITOR_TYPES.names()


class MonitorDefaultsTests(MonitorTestMixin, SynchronousTestCase):
    def test_every_registered_type_has_timing_defaults(self):
        self.assertEqual(sorted(MONITOR_TIMINGS), SUPPORTED_MONITOR_TYPES)

    def test_every_type_with_its_defaults(self):
        for mtype in SUPPORTED_MONITOR_TYPES:
            extra = (monitor("psw"),) if mtype == "mtw" else ()
            config, warnings = self.load_monitors(monitor(mtype), *extra)
            self.assertEqual(warnings, (), mtype)
            m = config.monitor(f"{mtype}1")
            interval, timeout, retry, no_retry, no_recover, timing = MONITOR_TIMINGS[mtype]
            if mtype == "userw":  # usehb 1: the heartbeat's interval and timeout
                interval, timeout = 3, 90
            self.assertEqual((m.type, m.interval, m.timeout, m.retry),
                             (mtype, float(interval), float(timeout), retry), mtype)
            self.assertEqual((m.timeout_retry, m.timeout_recover),
                             (not no_retry, not no_recover), mtype)
            self.assertEqual(m.timing, timing, mtype)
            self.assertEqual((m.first_wait, m.servers, m.delay_warning), (0.0, None, 80), mtype)
            self.assertEqual(m.recovery, MonitorRecovery(
                kind="grp", target="failover1", restart_threshold=3, failover_threshold=1,
                final_action=1), mtype)
            self.assertEqual(m.server_params, {}, mtype)

    def test_documented_timing_defaults(self):
        self.assertEqual(MONITOR_TIMINGS["genw"][:3], (60, 120, 1))
        self.assertEqual(MONITOR_TIMINGS["pidw"][:3], (5, 60, 0))
        self.assertEqual(MONITOR_TIMINGS["fipw"][:3], (60, 180, 0))
        for mtype in ("pidw", "psw", "fipw"):
            self.assertEqual(MONITOR_TIMINGS[mtype][3:5], (1, 1), mtype)
        for mtype in set(MONITOR_TIMINGS) - {"pidw", "psw", "fipw"}:
            self.assertEqual(MONITOR_TIMINGS[mtype][3:5], (0, 0), mtype)

    def test_type_parameter_defaults(self):
        config, _ = self.load_monitors(*(monitor(t) for t in SUPPORTED_MONITOR_TYPES))
        params = {m.type: m.params for m in config.monitors}
        self.assertEqual(params["pidw"], {})
        self.assertEqual(params["psw"], {"processname": "sshd", "processnum": 1})
        self.assertEqual(params["genw"], {
            "path": os.path.join(self.base, "scripts", "monitor.s", "genw1", "genw.sh"),
            "sync": True, "normalval": 0, "waitmonstart": 0.0, "userlog": None})
        self.assertEqual(params["ipw"], {"addresses": ("127.0.0.1",)})
        self.assertEqual(params["miiw"], {"object": "eth0"})
        self.assertEqual(params["diskw"], {"object": "/dev/sdb", "size": 512, "method": "read"})
        self.assertEqual(params["userw"], {"usehb": True, "method": "keepalive",
                                           "action": "RESET"})
        self.assertEqual(params["sraw"], {"cpu": 90, "memory": 90, "swap": 0, "openfiles": 0,
                                          "processes": 0, "threads": 0, "duration": 3600.0,
                                          "disks": ()})
        self.assertEqual(params["psrw"], {"processname": "java", "cpu": 90, "memory": 0,
                                          "openfiles": 0, "threads": 0, "duration": 3600.0})
        self.assertEqual(params["mtw"], {"members": ("psw1",), "errorthreshold": 1,
                                         "warnthreshold": 1})
        self.assertEqual(params["fipw"], {"monmii": False})
        self.assertEqual(params["arpw"], {"count": 1})

    def test_file_order(self):
        config, _ = self.load_monitors(monitor("psw", "b"), monitor("userw", "a"),
                                       monitor("psw", "c"))
        self.assertEqual([m.name for m in config.monitors], ["b", "a", "c"])

    def test_no_monitor_section(self):
        config, _ = self.load()
        self.assertEqual(config.monitors, ())

    def test_userw_defaults_to_local_server(self):
        m, _ = self.one(monitor("userw", relation=""))
        self.assertEqual((m.recovery.kind, m.recovery.target), ("cls", "LocalServer"))
        self.assertEqual((m.recovery.restart_threshold, m.recovery.failover_threshold), (0, 0))

    def test_original_sample_shape(self):
        """The shape CLUSTERPRO X 5.3 writes: empty <target/>, relation name before type."""
        self.genw_script("genw", "genw.sh")
        self.script("monitor.s", "genw", "preaction.sh")
        body = ("<comment/><polling><interval>10</interval></polling><target/>"
                "<parameters><path>genw.sh</path></parameters><emergency><preaction>"
                "<path>preaction.sh</path></preaction><threshold><restart>0</restart>"
                "</threshold></emergency><relation><name>failover1</name><type>grp</type>"
                "</relation>")
        userw = ('<userw name="userw"><comment/><target/><relation><type>cls</type>'
                 '<name>LocalServer</name></relation></userw>')
        config, warnings = self.load_monitors(userw, f'<genw name="genw">{body}</genw>')
        self.assertEqual(warnings, ())
        genw = config.monitor("genw")
        self.assertIsNone(genw.target)
        self.assertEqual((genw.interval, genw.recovery.restart_threshold), (10.0, 0))
        self.assertIsNone(genw.recovery.script)  # no preaction/use flag set


class CommonParameterTests(MonitorTestMixin, SynchronousTestCase):
    def test_every_common_parameter(self):
        self.script("monitor.s", "psw1", "pre.sh")
        body = ("<polling><interval>7</interval><timeout>9</timeout>"
                "<reconfirmation>2</reconfirmation><timing>1</timing>"
                "<delaywarning>50</delaywarning>"
                '<servers id="0"><name>srv2</name></servers></polling>'
                "<target>exec1</target><firstmonwait>11</firstmonwait>"
                "<emergency><timeout><notreconfirmation><use>0</use></notreconfirmation>"
                "<notrecovery><use>0</use></notrecovery></timeout>"
                "<threshold><restart>2</restart><fo>0</fo></threshold><action>16</action>"
                "<preaction><userestart>1</userestart><usefailover>1</usefailover><use>1</use>"
                "<default>1</default><path>pre.sh</path><timeout>30</timeout></preaction>"
                "</emergency><parameters><processname>sshd</processname></parameters>")
        relation = "<relation><type>rsc</type><name>exec1</name></relation>"
        m, warnings = self.one(monitor("psw", body=body, relation=relation))
        self.assertEqual(warnings, ())
        self.assertEqual((m.interval, m.timeout, m.retry, m.timing, m.delay_warning),
                         (7.0, 9.0, 2, 1, 50))
        self.assertEqual((m.servers, m.target, m.first_wait), (("srv2",), "exec1", 11.0))
        self.assertTrue(m.timeout_retry)
        self.assertTrue(m.timeout_recover)
        self.assertEqual(m.recovery, MonitorRecovery(
            kind="rsc", target="exec1", restart_threshold=2, failover_threshold=0,
            final_action=16,
            script=os.path.join(self.base, "scripts", "monitor.s", "psw1", "pre.sh"),
            script_before_restart=True, script_before_failover=True, script_before_final=True,
            script_timeout=30.0))
        self.assertTrue(m.runs_on("srv2"))
        self.assertFalse(m.runs_on("srv1"))

    def test_cluster_delay_warning(self):
        cluster = ("<cluster><name>c1</name><key>k</key><monitor><delaywarning>0</delaywarning>"
                   "</monitor></cluster>")
        config, _ = self.load_monitors(
            monitor("psw"), monitor("psw", "psw2", body=MINIMAL["psw"]
                                    + "<polling><delaywarning>100</delaywarning></polling>"),
            cluster=cluster)
        self.assertEqual([m.delay_warning for m in config.monitors], [0, 100])

    def test_cluster_delay_warning_range(self):
        cluster = ("<cluster><name>c1</name><key>k</key><monitor><delaywarning>101</delaywarning>"
                   "</monitor></cluster>")
        self.monitor_error("/root/cluster/monitor/delaywarning", "out of range (0-100)",
                           cluster=cluster)

    def test_ranges(self):
        for xml, path, fragment in (
                ("<polling><interval>0</interval></polling>", "polling/interval", "out of range"),
                ("<polling><timeout>0</timeout></polling>", "polling/timeout", "out of range"),
                ("<polling><interval>x</interval></polling>", "polling/interval",
                 "not an integer"),
                ("<polling><reconfirmation>1000</reconfirmation></polling>",
                 "polling/reconfirmation", "out of range"),
                ("<polling><timing>2</timing></polling>", "polling/timing", "not one of 0, 1"),
                ("<polling><delaywarning>101</delaywarning></polling>", "polling/delaywarning",
                 "out of range"),
                ("<firstmonwait>-1</firstmonwait>", "firstmonwait", "out of range"),
                ("<emergency><timeout><notrecovery><use>2</use></notrecovery></timeout>"
                 "</emergency>", "emergency/timeout/notrecovery/use", "not one of"),
                ("<emergency><threshold><restart>100</restart></threshold></emergency>",
                 "emergency/threshold/restart", "out of range"),
                ("<emergency><threshold><fo>100</fo></threshold></emergency>",
                 "emergency/threshold/fo", "out of range"),
                ("<emergency><preaction><timeout>0</timeout></preaction></emergency>",
                 "emergency/preaction/timeout", "out of range")):
            self.monitor_error(f"/root/monitor/psw@psw1/{path}", fragment,
                               monitor("psw", body=MINIMAL["psw"] + xml))

    def test_timeout_may_be_shorter_than_interval(self):
        m, _ = self.one(monitor("psw", body=MINIMAL["psw"] + "<polling><interval>60</interval>"
                                "<timeout>5</timeout></polling>"))
        self.assertEqual((m.interval, m.timeout), (60.0, 5.0))

    def test_final_actions(self):
        for action in (1, 2, 3, 4, 5):
            m, _ = self.one(monitor("psw", body=MINIMAL["psw"]
                                    + f"<emergency><action>{action}</action></emergency>"))
            self.assertEqual(m.recovery.final_action, action)
        path = "/root/monitor/psw@psw1/emergency/action"
        for action in range(8, 16):
            self.monitor_error(path, f"final action {action} (sysrq, keepalive, BMC or I/O "
                                     "fencing) is not supported on this platform",
                               monitor("psw", body=MINIMAL["psw"]
                                       + f"<emergency><action>{action}</action></emergency>"))
        for action in (0, 6, 7, 17):
            self.monitor_error(path, "is not one of 1, 2, 3, 4, 5, 16",
                               monitor("psw", body=MINIMAL["psw"]
                                       + f"<emergency><action>{action}</action></emergency>"))

    def test_final_action_needs_matching_relation(self):
        path = "/root/monitor/psw@psw1/emergency/action"
        self.monitor_error(path, "stop group) needs relation/type rsc or grp",
                           monitor("psw", body=MINIMAL["psw"]
                                   + "<emergency><action>2</action></emergency>",
                                   relation=REL_CLS))
        self.monitor_error(path, "stop resource) needs relation/type rsc",
                           monitor("psw", body=MINIMAL["psw"]
                                   + "<emergency><action>16</action></emergency>"))

    def test_servers_must_exist(self):
        body = MINIMAL["psw"] + ('<polling><servers id="0"><name>srv9</name></servers>'
                                 '<servers id="1"><name>srv1</name></servers>'
                                 '<servers id="2"><name>srv1</name></servers></polling>')
        error = self.assertRaises(ConfigError, self.load_monitors, monitor("psw", body=body))
        self.assertProblem(error.errors, "/root/monitor/psw@psw1/polling/servers@0",
                           "unknown server srv9")
        self.assertProblem(error.errors, "/root/monitor/psw@psw1/polling/servers@2",
                           "listed twice")

    def test_target_must_exist(self):
        self.monitor_error("/root/monitor/psw@psw1/target", "target ghost is not a group resource",
                           monitor("psw", body=MINIMAL["psw"] + "<target>ghost</target>"))

    def test_timing_1_needs_target(self):
        self.monitor_error("/root/monitor/psw@psw1/polling/timing", "needs a target",
                           monitor("psw", body=MINIMAL["psw"]
                                   + "<polling><timing>1</timing></polling>"))

    def test_relation_errors(self):
        rel = "/root/monitor/psw@psw1/relation"
        for relation, path, fragment in (
                ("", f"{rel}/type", "relation/type is required"),
                ("<relation><type>srv</type></relation>", f"{rel}/type", "not one of rsc, grp"),
                ("<relation><type>rsc</type></relation>", f"{rel}/name", "relation/name is "
                                                                         "required"),
                ("<relation><type>rsc</type><name>ghost</name></relation>", f"{rel}/name",
                 "recovery target ghost is not a group resource"),
                ("<relation><type>grp</type><name>ghost</name></relation>", f"{rel}/name",
                 "recovery target ghost is not a group"),
                ("<relation><type>grp</type><name>exec1</name></relation>", f"{rel}/name",
                 "not a group"),
                ("<relation><type>cls</type><name>srv1</name></relation>", f"{rel}/name",
                 "needs the name LocalServer")):
            self.monitor_error(path, fragment, monitor("psw", relation=relation))

    def test_cls_needs_no_name(self):
        m, _ = self.one(monitor("psw", relation="<relation><type>cls</type></relation>"))
        self.assertEqual(m.recovery.target, "LocalServer")

    def test_cls_thresholds_ignored(self):
        body = MINIMAL["psw"] + "<emergency><threshold><restart>2</restart></threshold></emergency>"
        m, warnings = self.one(monitor("psw", body=body, relation=REL_CLS))
        self.assertProblem(warnings, "/root/monitor/psw@psw1/emergency/threshold/restart",
                           "only the final action applies")
        self.assertEqual((m.recovery.restart_threshold, m.recovery.failover_threshold), (0, 0))

    def test_recovery_script_checked(self):
        body = MINIMAL["psw"] + "<emergency><preaction><use>1</use></preaction></emergency>"
        p = self.monitor_error("/root/monitor/psw@psw1/emergency/preaction/path",
                               "recovery script", monitor("psw", body=body))
        self.assertIn(os.path.join("monitor.s", "psw1", "preaction.sh"), p.message)
        script = self.script("monitor.s", "psw1", "preaction.sh")
        m, _ = self.one(monitor("psw", body=body))
        self.assertEqual(m.recovery.script, script)
        self.assertTrue(m.recovery.script_before_final)
        self.assertFalse(m.recovery.script_before_restart)

    def test_duplicate_name(self):
        self.monitor_error("/root/monitor/genw@psw1", "already used by psw@psw1",
                           monitor("psw"), monitor("genw", "psw1"))

    def test_unknown_type_warned_and_ignored(self):
        config, warnings = self.load_monitors(monitor("psw"), '<mdw name="mdw1"><parameters>'
                                              '<object>md1</object></parameters></mdw>')
        self.assertProblem(warnings, "/root/monitor/mdw@mdw1",
                           "monitor type 'mdw' is not supported yet: mdw1 is ignored")
        self.assertEqual([m.name for m in config.monitors], ["psw1"])

    def test_unknown_parameters_warned(self):
        body = ("<parameters><processname>x</processname><colour>red</colour></parameters>"
                "<emergency><dumpcollect><use>1</use></dumpcollect></emergency>"
                "<polling><speed>1</speed></polling><bogus/>")
        _, warnings = self.one(monitor("psw", body=body))
        for path in ("parameters/colour", "emergency/dumpcollect", "polling/speed", "bogus"):
            self.assertProblem(warnings, f"/root/monitor/psw@psw1/{path}", "")
        self.assertEqual(len(warnings), 4)

    def test_target_or_relation_ignored_resource(self):
        config, warnings = self.load_monitors(
            monitor("psw", body=MINIMAL["psw"] + "<target>vip1</target>"),
            monitor("psw", "psw2", relation="<relation><type>rsc</type><name>vip1</name>"
                                            "</relation>"))
        self.assertProblem(warnings, "/root/monitor/psw@psw1/target",
                           "target vip1 is ignored")
        self.assertProblem(warnings, "/root/monitor/psw@psw2/relation/name",
                           "monitor psw2 is ignored")
        self.assertEqual(config.monitors, ())

    def test_relation_ignored_group(self):
        extra = '<group name="hg"><type>hybrid</type></group>'
        config, warnings = self.load_monitors(
            monitor("psw", relation="<relation><type>grp</type><name>hg</name></relation>"),
            extra=extra)
        self.assertProblem(warnings, "/root/monitor/psw@psw1/relation/name", "is ignored")
        self.assertEqual(config.monitors, ())


class TargetRuleTests(MonitorTestMixin, SynchronousTestCase):
    def test_pidw(self):
        m, _ = self.one(monitor("pidw"))
        self.assertEqual((m.target, m.timing), ("exec2", 1))
        target = "/root/monitor/pidw@pidw1/target"
        self.monitor_error(target, "pidw needs a target", monitor("pidw", body=""))
        self.monitor_error(target, "pidw needs an asynchronous exec (parameters/act/sync 0): "
                                   "exec1 is synchronous",
                           monitor("pidw", body="<target>exec1</target>"))
        self.monitor_error(target, "pidw watches exec resources, and fip1 is of type fip",
                           monitor("pidw", body="<target>fip1</target>"))
        self.monitor_error("/root/monitor/pidw@pidw1/polling/timing", "must be 1",
                           monitor("pidw", body="<target>exec2</target>"
                                                "<polling><timing>0</timing></polling>"))

    def test_fipw_and_arpw(self):
        for mtype in ("fipw", "arpw"):
            m, _ = self.one(monitor(mtype))
            self.assertEqual((m.target, m.timing), ("fip1", 1))
            target = f"/root/monitor/{mtype}@{mtype}1/target"
            self.monitor_error(target, "watches fip resources, and exec1 is of type exec",
                               monitor(mtype, body="<target>exec1</target>"))
            self.monitor_error(target, f"{mtype} needs a target", monitor(mtype, body=""))


class TypeParameterTests(MonitorTestMixin, SynchronousTestCase):
    def params(self, mtype, parameters, name=None, extra=""):
        m, warnings = self.one(monitor(mtype, name, f"<parameters>{parameters}</parameters>"
                                                    + extra))
        return m.params, warnings

    def error(self, mtype, relative, fragment, parameters, extra=""):
        return self.monitor_error(f"/root/monitor/{mtype}@{mtype}1/{relative}", fragment,
                                  monitor(mtype, body=f"<parameters>{parameters}</parameters>"
                                                      + extra))

    def test_psw(self):
        params, _ = self.params("psw", "<processname>nginx: master</processname>"
                                       "<processnum>4</processnum>")
        self.assertEqual(params, {"processname": "nginx: master", "processnum": 4})
        self.error("psw", "parameters/processname", "<processname> is required for psw", "")
        self.error("psw", "parameters/processname", "required",
                   "<processname></processname>")
        self.error("psw", "parameters/processnum", "out of range (1-999)",
                   "<processname>x</processname><processnum>0</processnum>")

    def test_genw(self):
        script = self.genw_script("genw1", "check")
        absolute = self.script("elsewhere", "x", "probe")
        params, _ = self.params("genw", "<path>check</path><sync>0</sync><normalval>3</normalval>"
                                        "<waitmonstart>20</waitmonstart>"
                                        "<userlog>log/genw1.log</userlog>")
        self.assertEqual(params, {"path": script, "sync": False, "normalval": 3,
                                  "waitmonstart": 20.0,
                                  "userlog": os.path.join(self.base, "log", "genw1.log")})
        params, _ = self.params("genw", f"<path>{absolute}</path>")
        self.assertEqual(params["path"], absolute)
        self.error("genw", "parameters/path", "<path> is required for genw", "")
        p = self.error("genw", "parameters/path", "does not exist", "<path>nope.sh</path>")
        self.assertIn(os.path.join(self.base, "scripts", "monitor.s", "genw1", "nope.sh"),
                      p.message)
        self.genw_script("genw1", "plain", mode=0o644)
        self.error("genw", "parameters/path", "not executable", "<path>plain</path>")
        self.error("genw", "parameters/sync", "not one of 0, 1", "<path>genw.sh</path>"
                                                                 "<sync>2</sync>")
        self.error("genw", "parameters/waitmonstart", "out of range (0-9999)",
                   "<path>genw.sh</path><waitmonstart>10000</waitmonstart>")

    def test_ipw(self):
        params, _ = self.params("ipw", '<list id="0"><ip>192.0.2.1</ip></list>'
                                       '<list id="1"><ip>2001:DB8::1</ip></list>')
        self.assertEqual(params["addresses"], ("192.0.2.1", "2001:db8::1"))
        self.error("ipw", "parameters/list", "<list> is required for ipw", "")
        self.error("ipw", "parameters/list@1/ip", "link-local",
                   '<list id="0"><ip>192.0.2.1</ip></list><list id="1"><ip>169.254.0.9</ip></list>')
        self.error("ipw", "parameters/list@0/ip", "not an IPv4 or IPv6",
                   '<list id="0"><ip>gateway</ip></list>')
        self.error("ipw", "parameters/list@0/ip", "<ip> is required", '<list id="0"/>')

    def test_miiw(self):
        self.error("miiw", "parameters/object", "<object> is required for miiw", "")
        self.error("miiw", "parameters/object", "not a network interface name",
                   "<object>eth/0</object>")
        self.error("miiw", "parameters/object", "not a network interface name",
                   "<object>averyveryverylongname</object>")

    def test_per_server_parameters(self):
        overrides = ('<server name="srv1"><parameters><object>ens3</object></parameters></server>'
                     '<server name="srv2"><parameters><object>ens4</object></parameters></server>')
        m, _ = self.one(monitor("miiw", body=overrides))
        self.assertIsNone(m.params["object"])
        self.assertEqual(m.server_params, {"srv1": {"object": "ens3"}, "srv2": {"object": "ens4"}})
        self.assertEqual(m.params_on("srv2"), {"object": "ens4"})

        m, _ = self.one(monitor("miiw", body=MINIMAL["miiw"] + overrides[:overrides.index(
            '<server name="srv2">')]))
        self.assertEqual((m.params_on("srv1"), m.params_on("srv2")),
                         ({"object": "ens3"}, {"object": "eth0"}))

    def test_per_server_required_everywhere(self):
        only_one = '<server name="srv1"><parameters><object>ens3</object></parameters></server>'
        self.monitor_error("/root/monitor/miiw@miiw1/parameters/object",
                           "missing for srv2", monitor("miiw", body=only_one))
        # Enough when the monitor runs on srv1 only.
        body = only_one + '<polling><servers id="0"><name>srv1</name></servers></polling>'
        m, _ = self.one(monitor("miiw", body=body))
        self.assertEqual(m.params_on("srv1")["object"], "ens3")

    def test_per_server_errors(self):
        self.monitor_error("/root/monitor/miiw@miiw1/server@srv9", "unknown server srv9",
                           monitor("miiw", body=MINIMAL["miiw"] + '<server name="srv9">'
                                   '<parameters><object>x</object></parameters></server>'))
        self.monitor_error("/root/monitor/miiw@miiw1/server@srv1/parameters/object",
                           "not a network interface name",
                           monitor("miiw", body=MINIMAL["miiw"] + '<server name="srv1">'
                                   '<parameters><object>a b</object></parameters></server>'))
        twice = '<server name="srv1"><parameters><object>x</object></parameters></server>'
        self.monitor_error("/root/monitor/miiw@miiw1/server@srv1", "given twice",
                           monitor("miiw", body=MINIMAL["miiw"] + twice + twice))
        body = (MINIMAL["miiw"] + '<polling><servers id="0"><name>srv1</name></servers>'
                '</polling><server name="srv2"><parameters><object>x</object></parameters>'
                '</server>')
        _, warnings = self.one(monitor("miiw", body=body))
        self.assertProblem(warnings, "/root/monitor/miiw@miiw1/server@srv2", "never used")

    def test_per_server_genw_path(self):
        other = self.genw_script("genw1", "other.sh")
        body = (MINIMAL["genw"] + '<server name="srv2"><parameters><path>other.sh</path>'
                '</parameters></server>')
        m, _ = self.one(monitor("genw", body=body))
        self.assertEqual(m.params_on("srv2")["path"], other)
        self.monitor_error("/root/monitor/genw@genw1/server@srv2/parameters/path",
                           "does not exist", monitor("genw", body=body.replace("other", "gone")))

    def test_diskw(self):
        params, _ = self.params("diskw", "<object>/dev/sdc</object><size>4096</size>"
                                         "<method>odirect</method>")
        self.assertEqual(params, {"object": "/dev/sdc", "size": 4096, "method": "odirect"})
        self.error("diskw", "parameters/object", "required", "")
        self.error("diskw", "parameters/object", "not an absolute path", "<object>sdc</object>")
        self.error("diskw", "parameters/method", "not one of read, odirect",
                   "<object>/dev/sdc</object><method>tur</method>")
        self.error("diskw", "parameters/size", "multiple of 512",
                   "<object>/dev/sdc</object><size>1000</size><method>odirect</method>")
        params, _ = self.params("diskw", "<object>/srv/f</object><size>1000</size>")
        self.assertEqual(params["size"], 1000)

    def test_userw(self):
        cluster = ("<cluster><name>c1</name><key>k</key><heartbeat><interval>1000</interval>"
                   "<timeout>5000</timeout></heartbeat></cluster>")
        config, _ = self.load_monitors(monitor("userw", relation=REL_CLS), cluster=cluster)
        m = config.monitor("userw1")
        self.assertEqual((m.interval, m.timeout), (1.0, 5.0))
        body = ("<parameters><usehb>0</usehb><method>softdog</method><action>PANIC</action>"
                "</parameters><polling><interval>2</interval><timeout>8</timeout></polling>")
        m, warnings = self.one(monitor("userw", body=body, relation=REL_CLS))
        self.assertEqual(warnings, ())
        self.assertEqual((m.interval, m.timeout), (2.0, 8.0))
        self.assertEqual(m.params, {"usehb": False, "method": "softdog", "action": "PANIC"})
        for method in ("keepalive", "ipmi", "none"):
            params, _ = self.params("userw", f"<method>{method}</method>")
            self.assertEqual(params["method"], method)
        _, warnings = self.one(monitor("userw", body="<polling><interval>2</interval></polling>"))
        self.assertProblem(warnings, "/root/monitor/userw@userw1/polling/interval",
                           "ignored while parameters/usehb is 1")
        self.error("userw", "parameters/method", "not one of", "<method>watchdog</method>")
        self.error("userw", "parameters/action", "not one of RESET, PANIC",
                   "<action>reset</action>")

    def test_sraw(self):
        params, _ = self.params("sraw", "<cpu>80</cpu><memory>0</memory><swap>50</swap>"
                                        "<openfiles>100000</openfiles><processes>4000</processes>"
                                        "<threads>20000</threads><duration>300</duration>"
                                        '<disks><list id="0"><path>/var</path><percent>95</percent>'
                                        '</list><list id="1"><path>/</path></list></disks>')
        self.assertEqual(params, {"cpu": 80, "memory": 0, "swap": 50, "openfiles": 100000,
                                  "processes": 4000, "threads": 20000, "duration": 300.0,
                                  "disks": (("/var", 95), ("/", 90))})
        self.error("sraw", "parameters/cpu", "out of range (0-100)", "<cpu>101</cpu>")
        self.error("sraw", "parameters/duration", "out of range", "<duration>0</duration>")
        self.error("sraw", "parameters/disks/list@0/path", "absolute path",
                   '<disks><list id="0"><path>var</path></list></disks>')
        self.error("sraw", "parameters/disks/list@0/percent", "out of range",
                   '<disks><list id="0"><path>/var</path><percent>101</percent></list></disks>')

    def test_psrw(self):
        params, _ = self.params("psrw", "<processname>java</processname><cpu>50</cpu>"
                                        "<memory>30</memory><openfiles>900</openfiles>"
                                        "<threads>500</threads><duration>60</duration>")
        self.assertEqual(params, {"processname": "java", "cpu": 50, "memory": 30,
                                  "openfiles": 900, "threads": 500, "duration": 60.0})
        self.error("psrw", "parameters/processname", "required", "<cpu>50</cpu>")

    def mtw(self, members, extra="", name="mtw1"):
        lists = "".join(f'<list id="{i}"><name>{n}</name></list>' for i, n in enumerate(members))
        return monitor("mtw", name, f"<parameters>{lists}{extra}</parameters>")

    def test_mtw(self):
        config, _ = self.load_monitors(self.mtw(["psw1", "psw2", "psw3"]), monitor("psw"),
                                       monitor("psw", "psw2"), monitor("psw", "psw3"))
        m = config.monitor("mtw1")
        self.assertEqual(m.params, {"members": ("psw1", "psw2", "psw3"), "errorthreshold": 3,
                                    "warnthreshold": 1})
        config, _ = self.load_monitors(
            self.mtw(["psw1", "psw2"], "<errorthreshold>1</errorthreshold>"
                                       "<warnthreshold>0</warnthreshold>"),
            monitor("psw"), monitor("psw", "psw2"))
        self.assertEqual(config.monitor("mtw1").params["errorthreshold"], 1)
        self.assertEqual(config.monitor("mtw1").params["warnthreshold"], 0)

    def test_mtw_errors(self):
        base = "/root/monitor/mtw@mtw1/parameters"
        self.monitor_error(f"{base}/list", "<list> is required for mtw", self.mtw([]))
        self.monitor_error(f"{base}/list@0/name", "unknown monitor ghost", self.mtw(["ghost"]))
        self.monitor_error(f"{base}/list@1/name", "cannot watch itself",
                           self.mtw(["psw1", "mtw1"]), monitor("psw"))
        self.monitor_error(f"{base}/list@1/name", "listed twice",
                           self.mtw(["psw1", "psw1"]), monitor("psw"))
        self.monitor_error(f"{base}/errorthreshold", "more than the 1 members",
                           self.mtw(["psw1"], "<errorthreshold>2</errorthreshold>"),
                           monitor("psw"))
        self.monitor_error(f"{base}/warnthreshold", "more than the 1 members",
                           self.mtw(["psw1"], "<warnthreshold>2</warnthreshold>"),
                           monitor("psw"))

    def test_mtw_cycle(self):
        p = self.monitor_error("/root/monitor/mtw@a", "mtw members form a cycle",
                               self.mtw(["b"], name="a"), self.mtw(["c"], name="b"),
                               self.mtw(["a", "psw1"], name="c"), monitor("psw"))
        self.assertIn("a -> b -> c -> a", p.message)

    def test_mtw_ignored_member(self):
        config, warnings = self.load_monitors(
            self.mtw(["psw1", "mdw1"]), monitor("psw"), '<mdw name="mdw1"/>')
        self.assertProblem(warnings, "/root/monitor/mtw@mtw1/parameters/list@1/name",
                           "member mdw1 is ignored")
        self.assertEqual(config.monitor("mtw1").params["members"], ("psw1",))
        config, warnings = self.load_monitors(self.mtw(["mdw1"]), '<mdw name="mdw1"/>')
        self.assertProblem(warnings, "/root/monitor/mtw@mtw1", "no member left")
        self.assertIsNone(config.monitor("mtw1"))

    def test_fipw_and_arpw(self):
        params, _ = self.params("fipw", "<monmii>1</monmii>", extra="<target>fip1</target>")
        self.assertEqual(params, {"monmii": True})
        params, _ = self.params("arpw", "<count>3</count>", extra="<target>fip1</target>")
        self.assertEqual(params, {"count": 3})
        self.error("arpw", "parameters/count", "out of range (1-99)", "<count>0</count>",
                   extra="<target>fip1</target>")


class DaemonFailureActionTests(MonitorTestMixin, SynchronousTestCase):
    def pm(self, exec0=None, exec1=None, exec2=None):
        body = "".join(f"<{tag}><recover>{code}</recover></{tag}>"
                       for tag, code in (("exec0", exec0), ("exec1", exec1), ("exec2", exec2))
                       if code is not None)
        return f"<pm>{body}</pm>"

    def test_default_shutdown(self):
        config, _ = self.load()
        self.assertEqual(config.daemon_failure_action, "shutdown")
        config, _ = self.load(extra="<pm/>")
        self.assertEqual(config.daemon_failure_action, "shutdown")

    def test_codes(self):
        for code, action in ((1, "restart"), (2, "shutdown"), (3, "reboot")):
            config, warnings = self.load(extra=self.pm(code, code, code))
            self.assertEqual(config.daemon_failure_action, action)
            self.assertEqual(warnings, ())

    def test_unsupported_codes(self):
        for code in (0, 4, 5, 6, 7, 8, 12, 13):
            self.assertError("/root/pm/exec0/recover", f"recover code {code} is not supported",
                             extra=self.pm(code))
        self.assertError("/root/pm/exec0/recover", "not an integer", extra=self.pm("x"))

    def test_other_processes(self):
        _, warnings = self.load(extra=self.pm(3, 3, 2))
        self.assertProblem(warnings, "/root/pm/exec2/recover",
                           "2 differs from exec0/recover (3) and is ignored")
        self.assertEqual(len(warnings), 1)
        _, warnings = self.load(extra=self.pm(exec1=3))
        self.assertProblem(warnings, "/root/pm/exec1/recover", "differs from exec0/recover (2)")

    def test_unknown_pm_elements(self):
        _, warnings = self.load(extra="<pm><exec0><recover>2</recover><x/></exec0><exec9/></pm>")
        self.assertProblem(warnings, "/root/pm/exec0/x", "")
        self.assertProblem(warnings, "/root/pm/exec9", "unknown element")


class DocumentationTests(SynchronousTestCase):
    """docs/configuration.md prints the defaults table: the two stay in step."""

    def setUp(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        with open(os.path.join(root, "docs", "configuration.md"), encoding="utf-8") as f:
            self.text = f.read()

    def test_every_default_documented(self):
        generated = {f"{t}/{k}" for t in MONITOR_TIMINGS for k in (
            "polling/interval", "polling/timeout", "polling/reconfirmation", "polling/timing",
            "emergency/timeout/notreconfirmation/use", "emergency/timeout/notrecovery/use")}
        defaults = self.text[self.text.index("## Defaults"):]
        for key in set(DEFAULTS) - generated:
            head, _, last = key.rpartition("/")
            documented = f"`{key}`" in defaults or (
                f"`{head}/" in defaults and f"…/{last}`" in defaults)
            self.assertTrue(documented, key)

    def test_monitor_timing_table(self):
        table = self.text[self.text.index("#### Monitor defaults per type"):]
        for mtype, (interval, timeout, retry, no_retry, no_recover, timing) in \
                MONITOR_TIMINGS.items():
            row = next(line for line in table.splitlines() if line.startswith(f"| {mtype} |"))
            cells = [c.strip() for c in row.strip("|").split("|")]
            behaviour = f"{'no' if no_retry else 'yes'} / {'no' if no_recover else 'yes'}"
            if mtype != "userw":
                self.assertEqual(cells[1:3], [str(interval), str(timeout)], mtype)
            self.assertEqual(cells[3:], [str(retry), behaviour, str(timing)], mtype)
