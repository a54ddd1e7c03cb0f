"""Live reconfiguration (cpro.services.reconfig): two servers' parts wired
together in memory, the real configuration loader and files on disk."""

import base64
import json
import os
import shutil

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from cpro.cluster.controller import OperationError
from cpro.cluster.states import ClusterServiceState
from cpro.config import load_config
from cpro.config.bundle import read_bundle
from cpro.protocols.keyring import Keyring
from cpro.services import reconfig
from cpro.services.reconfig import Reconfiguration
from test.unit.test_config_diff import EXAMPLE_DIR, MONITOR

# The example directory and a monitor to add, as the diff tests use them.


def sync_runner(fn, *args):
    return defer.maybeDeferred(fn, *args)


class FakeApplier:
    def __init__(self, config):
        self.config = config
        self.keyring = Keyring(config.key)
        self.applied = []
        self.keys_seen_at_commit = []

    def apply_config(self, new_config, plan):
        self.applied.append(plan)
        self.keys_seen_at_commit.append(self.keyring.accepted)
        self.keyring.switch(new_config.key)
        self.config = new_config
        return defer.succeed([str(c) for c in plan.changes])


class FakeRequests:
    def __init__(self, log):
        self.log = log

    def group_stop(self, name=None, server=None):
        self.log.append(("group_stop", name))
        return defer.succeed({})

    def group_start(self, name=None, server=None):
        self.log.append(("group_start", name, server))
        return defer.succeed({})

    def cluster(self, action, all_servers=False):
        self.log.append(("cluster", action, all_servers))
        return defer.succeed({})


class FakeController:
    """Routes call(server, op) to that server's Reconfiguration."""

    def __init__(self, local, network, holders):
        self.local = local
        self.network = network
        self.holders = holders
        self.service = ClusterServiceState.RUNNING
        self.down = set()

    @property
    def config(self):
        return self.network[self.local].applier.config

    @property
    def groups_by_name(self):
        return {g.name: g for g in self.config.groups}

    def holders_of(self, group):
        return [self.holders[group]] if group in self.holders else []

    def peer_up(self, server):
        return server not in self.down

    def call(self, server, op, **args):
        if server in self.down:
            return defer.fail(OperationError(f"server {server} is not running"))
        return defer.maybeDeferred(self.network[server].handle_call, op, args)


class ReconfigurationTests(TestCase):
    def setUp(self):
        self.root = self.mktemp()
        self.clock = task.Clock()
        self.network = {}
        self.log = []
        holders = {"failover1": "srv1"}
        for name in ("srv1", "srv2"):
            conf_dir = os.path.join(self.root, name, "etc")
            shutil.copytree(EXAMPLE_DIR, conf_dir)
            state = os.path.join(self.root, name, "state")
            os.makedirs(state)
            config, _ = load_config(os.path.join(conf_dir, "clp.conf"))
            controller = FakeController(name, self.network, holders)
            r = Reconfiguration(self.clock, controller, FakeApplier(config), os.path.join(conf_dir, "clp.conf"),
                                state, sync_runner, requests=FakeRequests(self.log))
            self.network[name] = r
        self.new_dir = os.path.join(self.root, "new")
        shutil.copytree(EXAMPLE_DIR, self.new_dir)

    def edit(self, old, new):
        path = os.path.join(self.new_dir, "clp.conf")
        with open(path) as f:
            text = f.read()
        assert old in text
        with open(path, "w") as f:
            f.write(text.replace(old, new, 1))

    def installed(self, server):
        with open(os.path.join(self.root, server, "etc", "clp.conf")) as f:
            return f.read()

    @defer.inlineCallbacks
    def test_check_says_what_applying_needs_and_changes_nothing(self):
        self.edit("</root>", MONITOR)
        before = self.installed("srv1")
        result = yield self.network["srv1"].check(self.new_dir)
        self.assertEqual(result["need"], "live")
        self.assertEqual([c["path"] for c in result["changes"]], ["/root/monitor/genw@genw1"])
        self.assertEqual(self.installed("srv1"), before)
        self.assertEqual(self.network["srv1"].applier.applied, [])

    @defer.inlineCallbacks
    def test_push_installs_and_applies_everywhere_with_a_new_generation(self):
        self.edit("</root>", MONITOR)
        report = yield self.network["srv1"].push(self.new_dir)
        self.assertEqual(report["generation"], 1)
        self.assertEqual(sorted(report["applied"]), ["srv1", "srv2"])
        for server in ("srv1", "srv2"):
            r = self.network[server]
            self.assertIn("genw1", self.installed(server))
            self.assertEqual(r.applier.config.monitor("genw1").type, "genw")
            self.assertEqual(r.generation, 1)
            self.assertEqual(r.generations.read(r.applier.config.digest), 1)
            self.assertTrue(os.path.exists(os.path.join(self.root, server, "etc", "clp.conf.prev")))
            self.assertEqual([p for p in os.listdir(os.path.join(self.root, server, "state"))
                              if p.startswith("config.push")], [])
        self.assertEqual(self.log, [])  # a live change: no group stopped, no suspend

    @defer.inlineCallbacks
    def test_broken_file_changes_nothing_anywhere_and_names_its_errors(self):
        self.edit("<timeout>5000</timeout>", "<timeout>soon</timeout>")
        self.edit("<priority>1</priority>", "<priority>x</priority>")
        before = {s: self.installed(s) for s in ("srv1", "srv2")}
        with self.assertRaises(OperationError) as e:
            yield self.network["srv1"].push(self.new_dir)
        self.assertIn("/root/cluster/heartbeat/timeout", str(e.exception))
        self.assertIn("/root/server@srv2/priority", str(e.exception))
        self.assertIn("nothing was changed", str(e.exception))
        for server in ("srv1", "srv2"):
            self.assertEqual(self.installed(server), before[server])
            self.assertEqual(self.network[server].applier.applied, [])
            self.assertIsNone(self.network[server]._held)

    @defer.inlineCallbacks
    def test_a_changed_resource_restarts_its_group_where_it_ran(self):
        self.edit("<sync>0</sync>", "<sync>1</sync>")
        yield self.network["srv1"].push(self.new_dir)
        self.assertEqual(self.log, [("group_stop", "failover1"), ("group_start", "failover1", "srv1")])

    @defer.inlineCallbacks
    def test_a_policy_change_goes_through_suspend_and_resume(self):
        self.edit('<policy name="srv1"><order>0</order></policy>', '<policy name="srv1"><order>2</order></policy>')
        yield self.network["srv1"].push(self.new_dir)
        self.assertEqual(self.log, [("cluster", "suspend", True), ("cluster", "resume", True)])
        self.assertEqual(len(self.network["srv2"].applier.applied), 1)

    @defer.inlineCallbacks
    def test_two_pushes_at_once_one_is_refused(self):
        self.edit("</root>", MONITOR)
        other = os.path.join(self.root, "other")
        shutil.copytree(EXAMPLE_DIR, other)
        with open(os.path.join(other, "clp.conf")) as f:
            text = f.read().replace("<timeout>5000</timeout>", "<timeout>7000</timeout>")
        with open(os.path.join(other, "clp.conf"), "w") as f:
            f.write(text)
        # srv2 holds a push of its own (prepared, not committed yet).
        srv2 = self.network["srv2"]
        blocked = defer.Deferred()
        srv1_call = srv2.controller.call

        def slow_call(server, op, **args):
            if op == "config_commit":
                return blocked.addCallback(lambda _: srv1_call(server, op, **args))
            return srv1_call(server, op, **args)

        srv2.controller.call = slow_call
        first = srv2.push(other)
        with self.assertRaises(OperationError) as e:
            yield self.network["srv1"].push(self.new_dir)
        self.assertIn("another configuration push (from srv2) is in progress", str(e.exception))
        self.assertNotIn("genw1", self.installed("srv1"))
        blocked.callback(None)
        yield first
        self.assertIn("<timeout>7000</timeout>", self.installed("srv1"))

    @defer.inlineCallbacks
    def test_a_server_that_is_down_is_reported_and_skipped(self):
        self.edit("</root>", MONITOR)
        self.network["srv1"].controller.down.add("srv2")
        report = yield self.network["srv1"].push(self.new_dir)
        self.assertEqual(report["absent"], ["srv2"])
        self.assertNotIn("genw1", self.installed("srv2"))

    @defer.inlineCallbacks
    def test_a_push_that_sent_nothing_is_refused(self):
        srv2 = self.network["srv2"]
        yield srv2.handle_call("config_stage", {"token": "t", "offset": 0, "data": "", "total": 0})
        with self.assertRaises(OperationError):
            yield srv2.handle_call("config_prepare", {"token": "t", "coordinator": "srv1"})
        self.assertIsNone(srv2._held)

    @defer.inlineCallbacks
    def test_a_push_arriving_while_another_is_validated_is_told_so(self):
        self.edit("</root>", MONITOR)
        srv2 = self.network["srv2"]
        blob = json.dumps(read_bundle(self.new_dir).to_wire()).encode()
        for token in ("a", "b"):
            yield srv2.handle_call("config_stage", {"token": token, "offset": 0, "total": len(blob),
                                                    "data": base64.b64encode(blob).decode()})
        validated = defer.Deferred()
        srv2.runner = lambda fn, *args: validated.addCallback(lambda _: fn(*args))
        first = srv2.handle_call("config_prepare", {"token": "a", "coordinator": "srv1"})
        for op, args in (("config_prepare", {"token": "b", "coordinator": "srv3"}),
                         ("config_stage", {"token": "c", "offset": 0, "total": 0, "data": ""})):
            with self.assertRaises(OperationError) as e:
                yield srv2.handle_call(op, args)
            self.assertIn("another configuration push (from srv1) is in progress", str(e.exception))
        srv2.runner = sync_runner
        validated.callback(None)
        yield first
        self.assertEqual(srv2._held.token, "a")

    @defer.inlineCallbacks
    def test_a_held_push_whose_commit_never_comes_expires(self):
        self.edit("</root>", MONITOR)
        srv2 = self.network["srv2"]
        blob = json.dumps(read_bundle(self.new_dir).to_wire()).encode()
        yield srv2.handle_call("config_stage", {"token": "t", "offset": 0, "total": len(blob),
                                                "data": base64.b64encode(blob).decode()})
        yield srv2.handle_call("config_prepare", {"token": "t", "coordinator": "srv1"})
        self.assertIsNotNone(srv2._held)
        with self.assertRaises(OperationError):
            yield self.network["srv1"].push(self.new_dir)
        self.clock.advance(reconfig.HOLD_TIMEOUT)
        self.assertIsNone(srv2._held)
        report = yield self.network["srv1"].push(self.new_dir)
        self.assertEqual(report["generation"], 1)

    @defer.inlineCallbacks
    def test_a_new_key_is_rotated_without_refusing_anyone(self):
        old = self.network["srv1"].applier.config.key
        self.edit("cpro-example-two-server-key", "a-brand-new-key")
        report = yield self.network["srv1"].push(self.new_dir)
        self.assertEqual(report["need"], "live")
        for server in ("srv1", "srv2"):
            applier = self.network[server].applier
            # At its commit, each server already accepted both keys ...
            self.assertEqual(set(applier.keys_seen_at_commit[0]), {old, b"a-brand-new-key"})
            # ... and once every server signed with the new one, only that one.
            self.assertEqual(applier.keyring.accepted, (b"a-brand-new-key",))
            self.assertEqual(applier.keyring.current, b"a-brand-new-key")

    @defer.inlineCallbacks
    def test_an_aborted_rotation_forgets_the_new_key(self):
        self.edit("cpro-example-two-server-key", "a-brand-new-key")
        srv2 = self.network["srv2"]
        blob = json.dumps(read_bundle(self.new_dir).to_wire()).encode()
        yield srv2.handle_call("config_stage", {"token": "t", "offset": 0, "total": len(blob),
                                                "data": base64.b64encode(blob).decode()})
        yield srv2.handle_call("config_prepare", {"token": "t", "coordinator": "srv1"})
        self.assertIn(b"a-brand-new-key", srv2.applier.keyring.accepted)
        yield srv2.handle_call("config_abort", {"token": "t"})
        self.assertNotIn(b"a-brand-new-key", srv2.applier.keyring.accepted)

    @defer.inlineCallbacks
    def test_a_commit_that_fails_says_where_the_new_configuration_runs(self):
        self.edit("</root>", MONITOR)
        srv1 = self.network["srv1"]
        route = srv1.controller.call

        def failing_commit(server, op, **args):
            if server == "srv2" and op == "config_commit":
                return defer.fail(OperationError("connection lost"))
            return route(server, op, **args)

        srv1.controller.call = failing_commit
        with self.assertRaises(OperationError) as e:
            yield srv1.push(self.new_dir)
        self.assertIn("applying the configuration on srv2 failed: connection lost; generation 1 runs on srv1",
                      str(e.exception))
        self.assertIsNone(self.network["srv2"]._held)  # aborted, not left holding until it expires
        self.assertNotIn("genw1", self.installed("srv2"))
