"""cpro.config.diff: what applying a new configuration needs, change by change."""

import os

from twisted.trial.unittest import SynchronousTestCase

from cpro.config import load_config_text
from cpro.config.diff import Need, diff, plan

EXAMPLE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "examples", "two-server")
with open(os.path.join(EXAMPLE_DIR, "clp.conf")) as f:
    BASE = f.read()

MONITOR = """
  <monitor>
    <types name="genw"/>
    <genw name="genw1">
      <polling><interval>30</interval><timeout>60</timeout></polling>
      <relation><type>cls</type><name>LocalServer</name></relation>
      <parameters><path>/bin/true</path></parameters>
    </genw>
  </monitor>
</root>"""

GROUP2 = """
  <group name="failover2">
    <resource name="exec@exec2"/>
    <start>{start}</start>
    <policy name="srv2"><order>0</order></policy>
  </group>"""

EXEC2 = """
    <exec name="exec2">
      <parameters>
        <act><path>{dir}/scripts/failover1/exec1/start.sh</path></act>
        <deact><path>{dir}/scripts/failover1/exec1/stop.sh</path></deact>
      </parameters>
    </exec>
  </resource>"""


def load(text):
    return load_config_text(text, EXAMPLE_DIR)[0]


def changed(*replacements, text=BASE):
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return load(text)


class DiffTests(SynchronousTestCase):
    def setUp(self):
        self.old = load(BASE)

    def only(self, new):
        changes = diff(self.old, new)
        self.assertEqual(len(changes), 1, [str(c) for c in changes])
        return changes[0]

    def test_same_configuration_no_change(self):
        self.assertEqual(diff(self.old, load(BASE)), [])
        self.assertTrue(plan([]).empty)
        self.assertIsNone(plan([]).need)

    def test_monitor_added_is_live(self):
        c = self.only(changed(("</root>", MONITOR)))
        self.assertEqual((c.path, c.need), ("/root/monitor/genw@genw1", Need.LIVE))
        self.assertIn("added", c.what)

    def test_monitor_changed_names_its_fields(self):
        old = changed(("</root>", MONITOR))
        new = changed(("</root>", MONITOR.replace("<interval>30", "<interval>10")))
        c, = diff(old, new)
        self.assertEqual(c.need, Need.LIVE)
        self.assertIn("interval", c.what)

    def test_heartbeat_timeout_is_live(self):
        c = self.only(changed(("<timeout>5000</timeout>", "<timeout>3000</timeout>")))
        self.assertEqual((c.path, c.need), ("/root/cluster/heartbeat/timeout", Need.LIVE))
        self.assertEqual(c.what, "heartbeat timeout 5 s -> 3 s")

    def test_resource_timeout_is_live(self):
        c = self.only(changed(("<start>30</start>", "<start>60</start>")))
        self.assertEqual(c.need, Need.LIVE)
        self.assertEqual(c.path, "/root/resource/exec@exec1/parameters/timeout")

    def test_changed_resource_restarts_its_group(self):
        c = self.only(changed(("<sync>0</sync>", "<sync>1</sync>")))
        self.assertEqual((c.need, c.group), (Need.GROUP_RESTART, "failover1"))
        p = plan([c])
        self.assertEqual((p.need, p.groups_to_restart), (Need.GROUP_RESTART, ("failover1",)))

    def test_new_manual_group_is_live_and_an_automatic_one_needs_suspend(self):
        manual = changed(("</group>", "</group>" + GROUP2.format(start=0)), ("</resource>", EXEC2.format(dir=EXAMPLE_DIR)))
        c = self.only(manual)
        self.assertEqual((c.path, c.need), ("/root/group@failover2", Need.LIVE))
        auto = changed(("</group>", "</group>" + GROUP2.format(start=1)), ("</resource>", EXEC2.format(dir=EXAMPLE_DIR)))
        self.assertEqual(self.only(auto).need, Need.SUSPEND_RESUME)

    def test_policy_change_needs_suspend_and_resume(self):
        new = changed(('<policy name="srv1"><order>0</order></policy>', '<policy name="srv1"><order>2</order></policy>'))
        c = self.only(new)
        self.assertEqual((c.path, c.need), ("/root/group@failover1/policy", Need.SUSPEND_RESUME))

    def test_server_removed_needs_a_service_restart(self):
        three = changed(("</server>\n  <heartbeat>", """</server>
  <server name="srv3">
    <priority>2</priority>
    <device id="0"><type>lan</type><info>127.0.0.3</info></device>
    <device id="1"><type>lan</type><info>127.0.1.3</info></device>
  </server>
  <heartbeat>"""))
        changes = diff(three, self.old)
        self.assertEqual([(c.path, c.need) for c in changes], [("/root/server@srv3", Need.SERVICE_RESTART)])
        self.assertEqual(plan(changes).need, Need.SERVICE_RESTART)

    def test_ports_need_a_service_restart(self):
        c = self.only(changed(("<syncwait>", "<ports><internal>29101</internal></ports><syncwait>")))
        self.assertEqual(c.need, Need.SERVICE_RESTART)

    def test_new_key_is_rotated_live(self):
        p = plan(diff(self.old, changed(("cpro-example-two-server-key", "a-new-key"))))
        self.assertEqual((p.need, p.key_rotation), (Need.LIVE, True))

    def test_plan_takes_the_most_disruptive_need(self):
        new = changed(("<timeout>5000</timeout>", "<timeout>3000</timeout>"), ("<sync>0</sync>", "<sync>1</sync>"),
                      ("</root>", MONITOR))
        p = plan(diff(self.old, new))
        self.assertEqual(len(p.changes), 3)
        self.assertEqual(p.need, Need.GROUP_RESTART)
