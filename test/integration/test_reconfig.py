"""Live reconfiguration with real daemons: `clpcfctrl --push` and `--pull`
driven as an operator would, against a two-server loopback lab in which each
server has its own configuration directory (workdir/etc-srvN), as in a real
deployment.

Each push is run by the real command (cpro.cli.clpcfctrl.main, in a thread:
it is a blocking client) through srv1's admin socket unless said otherwise.
The marks file of the lab's start and stop scripts tells which groups were
(re)started.
"""

import io
import os
import shutil
import signal

from twisted.internet import defer, reactor, threads

from cpro.cli import clpcfctrl
from test.integration.test_cluster import ClusterTestCase, online_on

MONITOR = """<types name="genw"/>
<genw name="genw1">
  <polling><interval>1</interval><timeout>10</timeout></polling>
  <relation><type>cls</type><name>LocalServer</name></relation>
  <parameters><path>/bin/true</path></parameters>
</genw>"""


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def group(name, resource, **kw):
    return {"name": name, "resources": [{"name": resource}], **kw}


def starts(lab, resource):
    """(server, event) of every start of resource, in order."""
    return [(m[1], m[4]) for m in lab.marks() if m[2] == "START" and m[3] == resource]


def generations(status):
    return {s["name"]: s.get("config_generation") for s in status["servers"]}


class ReconfigTestCase(ClusterTestCase):
    timeout = 60

    @defer.inlineCallbacks
    def start_lab(self, groups, **kw):
        """A running two-server lab, each server reading its own copy of clp.conf."""
        lab = yield self.make_cluster(groups=groups, **kw)
        self.etc = {}
        for name in lab.names:
            self.etc[name] = os.path.join(lab.workdir, f"etc-{name}")
            os.makedirs(self.etc[name])
            shutil.copy(lab.config_path, os.path.join(self.etc[name], "clp.conf"))
            lab.start(name, config=os.path.join(self.etc[name], "clp.conf"))
        yield lab.wait_until(lambda st: all(online_on(g["name"], "srv1", lab.names)(st)
                                            for g in groups if g.get("start_auto", True)),
                             timeout=40, what="the groups Online on srv1")
        return lab

    def running_conf(self, name):
        return os.path.join(self.etc[name], "clp.conf")

    def new_config(self, lab, dirname="new", **changes):
        """A configuration directory holding the lab's configuration with
        changes (LoopbackCluster attributes: groups, timeout_ms, monitor_xml...),
        written as the lab writes its own (scripts included)."""
        directory = os.path.join(lab.workdir, dirname)
        os.makedirs(directory)
        saved = {k: getattr(lab, k) for k in ("config_path", *changes)}
        try:
            for k, v in dict(changes, config_path=os.path.join(directory, "clp.conf")).items():
                setattr(lab, k, v)
            lab.write_config()
        finally:
            for k, v in saved.items():
                setattr(lab, k, v)
        return directory

    @defer.inlineCallbacks
    def clpcfctrl(self, lab, *argv, server="srv1"):
        """Run clpcfctrl argv against server's daemon: (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        code = yield threads.deferToThread(clpcfctrl.main, [*argv, "--admin", lab.admin_endpoint(server)],
                                           stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    @defer.inlineCallbacks
    def push(self, lab, directory, server="srv1"):
        code, out, err = yield self.clpcfctrl(lab, "--push", "-x", directory, "--force", server=server)
        self.assertEqual(code, 0, out + err)
        return out

    @defer.inlineCallbacks
    def assert_generation_everywhere(self, lab, generation):
        """Every server sees generation on every server; a push left clp.conf.prev."""
        for name in lab.names:
            status = yield lab.admin(name, "status")
            self.assertEqual(generations(status), {n: generation for n in lab.names}, name)
            self.assertEqual(os.path.exists(self.running_conf(name) + ".prev"), generation > 0, name)


class LiveChangeTests(ReconfigTestCase):
    @defer.inlineCallbacks
    def test_a_monitor_added_live_checks_on_every_server_without_touching_the_groups(self):
        lab = yield self.start_lab([group("g1", "r1")])
        new = self.new_config(lab, monitor_xml=MONITOR)
        out = yield self.push(lab, new)
        self.assertIn("monitor genw1 added\n      -> applied live", out)
        self.assertIn("Everything is applied live; nothing stops.", out)
        self.assertIn("srv1: configuration generation 1 applied", out)
        self.assertIn("srv2: configuration generation 1 applied", out)

        def genw1_normal(st):
            servers = [m["servers"] for m in st["srv1"]["monitors"] if m["name"] == "genw1"][0]
            return {s["name"]: s["status"] for s in servers} == {"srv1": "Normal", "srv2": "Normal"}

        yield lab.wait_until(genw1_normal, timeout=10, what="genw1 Normal on both servers")
        for name in lab.names:
            self.assertEqual(read(self.running_conf(name)), read(os.path.join(new, "clp.conf")))
        yield self.assert_generation_everywhere(lab, 1)
        st = yield lab.status_all()
        self.assertTrue(online_on("g1", "srv1", lab.names)(st))
        self.assertEqual(starts(lab, "r1"), [("srv1", "START")])
        self.assertEqual([m for m in lab.marks() if m[2] == "STOP"], [])

    @defer.inlineCallbacks
    def test_a_longer_heartbeat_timeout_takes_effect_on_both_servers(self):
        lab = yield self.start_lab([group("g1", "r1")])  # timeout 500 ms
        out = yield self.push(lab, self.new_config(lab, timeout_ms=3000))
        self.assertIn("heartbeat timeout 0.5 s -> 3 s", out)
        # srv2 with the new timeout: a 1.5 s stall of srv1 is no failure.
        lab.signal("srv1", signal.SIGSTOP)
        yield self.sleep(1.5)
        lab.signal("srv1", signal.SIGCONT)
        yield self.sleep(0.3)
        alerts = yield lab.admin("srv2", "alerts 200")
        self.assertEqual([a for a in alerts["alerts"] if (a["module"], a["id"]) == ("nm", 2)], [])
        self.assertEqual(starts(lab, "r1"), [("srv1", "START")])
        # srv1 with the new timeout: a killed srv2 is declared down after 3 s, not 0.5 s.
        killed = reactor.seconds()
        yield lab.kill("srv2")
        yield lab.wait_until(lambda st: st["srv1"]["servers"][1]["status"] == "Offline", names=["srv1"],
                             timeout=10, what="srv1 declares srv2 down")
        elapsed = reactor.seconds() - killed
        self.assertGreater(elapsed, 2.5)
        self.assertLess(elapsed, 6.0)

    @defer.inlineCallbacks
    def test_a_changed_exec_resource_restarts_only_its_group(self):
        lab = yield self.start_lab([group("g1", "r1"), group("g2", "r2")])
        changed = [{"name": "g1", "resources": [{"name": "r1", "sync": False}]}, group("g2", "r2")]
        out = yield self.push(lab, self.new_config(lab, groups=changed))
        self.assertIn("resource r1 changed (start_sync)\n      -> restart of the group g1", out)
        self.assertIn("Groups restarted: g1.", out)
        yield lab.wait_until(lambda st: all(online_on(g, "srv1", lab.names)(st) for g in ("g1", "g2")),
                             timeout=10, what="g1 and g2 Online on srv1")
        self.assertEqual(starts(lab, "r1"), [("srv1", "START"), ("srv1", "START")])
        self.assertEqual(starts(lab, "r2"), [("srv1", "START")])
        self.assertEqual([(m[1], m[3]) for m in lab.marks() if m[2] == "STOP"], [("srv1", "r1")])
        yield self.assert_generation_everywhere(lab, 1)

    @defer.inlineCallbacks
    def test_a_new_group_appears_and_can_be_started(self):
        lab = yield self.start_lab([group("g1", "r1")])
        groups = [group("g1", "r1"), group("g2", "r2", start_auto=False)]
        out = yield self.push(lab, self.new_config(lab, groups=groups))
        self.assertIn("group g2 added (does not start by itself)\n      -> applied live", out)
        st = yield lab.status_all()
        for name in lab.names:
            self.assertEqual([(g["name"], g["status"]) for g in st[name]["groups"] if g["name"] == "g2"],
                             [("g2", "Offline")], name)
        self.assertEqual(starts(lab, "r2"), [])
        reply = yield lab.admin("srv2", "group start g2")  # on the first server of its policy
        self.assertEqual(reply["result"]["code"], 0, reply)
        yield lab.wait_until(online_on("g2", "srv1", lab.names), timeout=10, what="g2 Online on srv1")
        self.assertEqual(starts(lab, "r2"), [("srv1", "START")])
        self.assertEqual(starts(lab, "r1"), [("srv1", "START")])

    @defer.inlineCallbacks
    def test_a_policy_change_goes_through_suspend_and_resume(self):
        lab = yield self.start_lab([group("g1", "r1")])
        out = yield self.push(lab, self.new_config(lab, groups=[group("g1", "r1", policy=["srv1"])]))
        self.assertIn("group g1 policy changed\n      -> cluster suspend and resume", out)
        self.assertIn("The cluster is suspended and resumed around the change (groups keep running).", out)
        st = yield lab.status_all()
        self.assertTrue(online_on("g1", "srv1", lab.names)(st))
        self.assertEqual({s["status"] for n in lab.names for s in st[n]["servers"]}, {"Online"})
        self.assertEqual(starts(lab, "r1"), [("srv1", "START")])
        self.assertEqual([m for m in lab.marks() if m[2] == "STOP"], [])
        # The new policy is in effect: srv2 may no longer run g1.
        moved = yield lab.admin("srv1", "group move g1")
        self.assertEqual(moved["result"], {"code": 1, "message": "no other server can take group g1"})


class RefusalTests(ReconfigTestCase):
    @defer.inlineCallbacks
    def test_a_broken_file_changes_nothing_and_names_its_errors(self):
        lab = yield self.start_lab([group("g1", "r1")])
        before = {n: read(self.running_conf(n), "rb") for n in lab.names}
        new = self.new_config(lab, timeout_ms="soon", groups=[group("g1", "r1", policy=["srv1", "srv9"])])
        code, out, err = yield self.clpcfctrl(lab, "--push", "-x", new, "--force")
        self.assertEqual(code, 1, out + err)
        self.assertIn("/root/cluster/heartbeat/timeout", err)
        self.assertIn("/root/group@g1/policy@srv9", err)
        self.assertEqual(out, "")
        for name in lab.names:
            self.assertEqual(read(self.running_conf(name), "rb"), before[name], name)
        yield self.assert_generation_everywhere(lab, 0)

    @defer.inlineCallbacks
    def test_two_pushes_at_once_one_is_refused(self):
        # Both restart g1 (r1 changed), whose stop script takes a second:
        # whichever push holds srv1 first holds it for that second at least.
        slow = {"name": "r1", "stop": "#!/bin/sh\nsleep 1\n"}
        lab = yield self.start_lab([{"name": "g1", "resources": [slow]}])
        changed = [{"name": "g1", "resources": [dict(slow, sync=False)]}]
        a = self.new_config(lab, "a", groups=changed)
        b = self.new_config(lab, "b", groups=changed, monitor_xml=MONITOR)
        results = yield defer.gatherResults([
            self.clpcfctrl(lab, "--push", "-x", a, "--force", server="srv1"),
            self.clpcfctrl(lab, "--push", "-x", b, "--force", server="srv2")])
        codes = [code for code, _, _ in results]
        self.assertEqual(sorted(codes), [0, 1], results)
        winner, loser = (a, results[1]) if codes[0] == 0 else (b, results[0])
        self.assertIn("another configuration push", loser[2])
        self.assertIn("in progress", loser[2])
        for name in lab.names:
            self.assertEqual(read(self.running_conf(name)), read(os.path.join(winner, "clp.conf")), name)
        yield self.assert_generation_everywhere(lab, 1)


class DryRunAndPullTests(ReconfigTestCase):
    @defer.inlineCallbacks
    def test_dry_run_prints_and_pull_writes_the_running_file(self):
        lab = yield self.start_lab([group("g1", "r1")])
        new = self.new_config(lab, monitor_xml=MONITOR)
        code, out, err = yield self.clpcfctrl(lab, "--push", "-x", new, "--dry-run")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("monitor genw1 added", out)
        self.assertNotIn("generation 1 applied", out)
        pulled = os.path.join(lab.workdir, "pulled")
        code, out, err = yield self.clpcfctrl(lab, "--pull", "-x", pulled, server="srv2")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("(generation 0) was written to " + pulled, out)
        self.assertEqual(read(os.path.join(pulled, "clp.conf"), "rb"), read(self.running_conf("srv2"), "rb"))
        self.assertNotIn(b"genw1", read(self.running_conf("srv2"), "rb"))
        yield self.assert_generation_everywhere(lab, 0)
