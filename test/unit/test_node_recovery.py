"""ClusterNode.recover_from_crash: crash notes, leftovers, and when the node
rejoins without auto-starting groups. The node is built but not started
(MemoryReactorClock: nothing binds)."""

import json
import os

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from cpro import crashnote
from cpro.resources.ledger import ADDRESS, LEDGER_NAME, Ledger, boot_id
from cpro.services.node import ClusterNode
from cpro.testing.fakes import make_config


class RecoverFromCrashTests(SynchronousTestCase):
    def setUp(self):
        self.state_dir = os.path.abspath(self.mktemp())
        os.makedirs(self.state_dir)
        self.removed = []

    def node(self, after_crash=False):
        node = ClusterNode(MemoryReactorClock(), make_config(), "srv1", self.state_dir,
                           "unix:" + os.path.join(self.state_dir, "s.sock"), after_crash=after_crash)
        node.alerts._syslog = None  # keep the host's syslog out of unit tests
        node.removers = {ADDRESS: lambda ip: self.removed.append(ip) or defer.succeed(["eth0"])}
        return node

    def recover(self, node):
        return self.successResultOf(node.recover_from_crash())

    def alerts(self, node):
        return [(a.module, a.event_id, a.level.value, a.message) for a in node.alerts.recent(100)]

    def test_nothing_to_do_after_a_clean_stop(self):
        node = self.node()
        self.recover(node)
        self.assertIsNone(node.controller._skip_auto_start)
        self.assertEqual(self.alerts(node), [])
        with open(os.path.join(self.state_dir, LEDGER_NAME)) as f:
            self.assertEqual(json.load(f)["pid"], os.getpid())  # claimed: the supervisor sees it started

    def test_resources_share_the_node_ledger(self):
        node = self.node()
        for group in node.controller.groups.values():
            for resource in group._resources.values():
                self.assertIs(resource.ledger, node.ledger)

    def test_crash_note_of_this_boot_is_reported_and_groups_wait(self):
        crashnote.add_note(self.state_dir, 123, None, 9, "restart", boot_id())
        node = self.node()
        self.recover(node)
        [(module, event, level, message)] = self.alerts(node)
        self.assertEqual((module, event, level), ("pm", 20, "ERROR"))
        self.assertIn("(pid 123) was terminated abnormally", message)
        self.assertEqual(node.controller._skip_auto_start, "the previous cluster daemon ended abnormally")
        self.assertEqual(crashnote.take_notes(self.state_dir), [])  # reported once

    def test_crash_note_of_an_earlier_boot_is_reported_only(self):
        crashnote.add_note(self.state_dir, 123, None, 9, "shutdown", "another-boot")
        node = self.node()
        self.recover(node)
        self.assertEqual([a[:2] for a in self.alerts(node)], [("pm", 20)])
        self.assertIsNone(node.controller._skip_auto_start)

    def test_leftovers_are_removed_and_groups_wait(self):
        Ledger(os.path.join(self.state_dir, LEDGER_NAME)).record("fip1", ADDRESS, "10.0.0.5")
        node = self.node()
        report = self.recover(node)
        self.assertEqual(self.removed, ["10.0.0.5"])
        self.assertEqual(report.removed, ["address 10.0.0.5 of fip1"])
        [(module, event, level, message)] = self.alerts(node)
        self.assertEqual((module, event, level), ("pm", 21, "WARNING"))
        self.assertIn("removed address 10.0.0.5 of fip1", message)
        self.assertEqual(node.controller._skip_auto_start, "the previous cluster daemon did not stop cleanly")
        self.assertEqual(Ledger(os.path.join(self.state_dir, LEDGER_NAME)).leftovers(), [])

    def test_after_crash_option(self):
        node = self.node(after_crash=True)
        self.recover(node)
        self.assertEqual(node.controller._skip_auto_start, "the previous cluster daemon ended abnormally")
