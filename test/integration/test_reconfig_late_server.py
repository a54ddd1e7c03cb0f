"""Live reconfiguration, real daemons: a server that was down during a push
runs the new configuration after it starts (it adopts the master's newer
generation and restarts in place); a new cluster key is rotated without a
failover."""

import os
import shutil

from twisted.internet import defer

from test.integration.test_cluster import ClusterTestCase, one_group, online_on
from test.integration.test_reconfig import MONITOR, read


def monitor_status(status, name):
    for m in status.get("monitors") or []:
        if m.get("name") == name:
            return m
    return None


class LateServerTests(ClusterTestCase):
    @defer.inlineCallbacks
    def start_with_own_directories(self):
        lab = yield self.make_cluster(groups=[one_group()])
        etc = {}
        for name in lab.names:  # each server its own configuration directory, as in production
            etc[name] = os.path.join(lab.workdir, f"etc-{name}")
            os.makedirs(etc[name])
            shutil.copy(lab.config_path, os.path.join(etc[name], "clp.conf"))
            lab.start(name, config=os.path.join(etc[name], "clp.conf"))
        yield lab.wait_until(online_on("failover1", "srv1", lab.names), timeout=60, what="failover1 on srv1")
        return lab, etc

    @defer.inlineCallbacks
    def test_a_server_stopped_during_the_push_runs_the_new_configuration_after_it_starts(self):
        lab, etc = yield self.start_with_own_directories()
        yield lab.stop("srv2")
        yield lab.wait_until(lambda st: all(hb["status"] != "Normal" for s in st["srv1"]["servers"]
                                            if s["name"] == "srv2" for hb in s["heartbeats"]),
                             names=["srv1"], what="srv1 hears srv2 no more")

        new = os.path.join(lab.workdir, "new")
        os.makedirs(new)
        with open(os.path.join(new, "clp.conf"), "w") as f:
            f.write(read(lab.config_path).replace("<monitor>", "<monitor>" + MONITOR))
        report = yield lab.admin("srv1", f"config push {new}")
        self.assertEqual(report["result"]["code"], 0, report)
        self.assertEqual(report["absent"], ["srv2"])
        self.assertNotIn("genw1", read(os.path.join(etc["srv2"], "clp.conf")))

        lab.start("srv2", config=os.path.join(etc["srv2"], "clp.conf"))  # with its old file
        yield lab.wait_until(
            lambda st: all(s["status"] == "Online" and s["config_generation"] == 1
                           for n in lab.names for s in st[n]["servers"])
            and all((monitor_status(st[n], "genw1") or {}).get("status") == "Normal" for n in lab.names),
            timeout=60, what="srv2 back with the new configuration, genw1 Normal on both")
        self.assertEqual(read(os.path.join(etc["srv2"], "clp.conf")), read(os.path.join(new, "clp.conf")))
        self.assertTrue(os.path.exists(os.path.join(etc["srv2"], "clp.conf.prev")))
        status = yield lab.admin("srv1", "status")
        self.assertEqual({s["name"]: s["config_generation"] for s in status["servers"]}, {"srv1": 1, "srv2": 1})
        self.assertIn("configuration generation 1 adopted from srv1", read(os.path.join(lab.workdir, "srv2.out")))

    @defer.inlineCallbacks
    def test_a_new_key_is_rotated_without_a_failover(self):
        lab, etc = yield self.start_with_own_directories()
        new = os.path.join(lab.workdir, "new")
        os.makedirs(new)
        with open(os.path.join(new, "clp.conf"), "w") as f:
            f.write(read(lab.config_path).replace(f"<key>{lab.key}</key>", "<key>a-rotated-key</key>"))
        report = yield lab.admin("srv1", f"config push {new}")
        self.assertEqual(report["result"]["code"], 0, report)
        self.assertEqual(report["need"], "live")
        # Heartbeats keep flowing for several timeouts: every path stays Normal.
        for _ in range(20):
            status = yield lab.status_all()
            for name in lab.names:
                self.assertEqual({hb["status"] for s in status[name]["servers"] for hb in s["heartbeats"]},
                                 {"Normal"}, name)
            yield self.sleep(0.1)
        self.assertEqual([m[1] for m in lab.marks() if m[2] == "START"], ["srv1"])  # never moved
        alerts = yield lab.admin("srv1", "alerts 1000")
        self.assertEqual([a for a in alerts["alerts"] if (a["module"], a["id"]) == ("nm", 80)], [])
        # A restarted daemon reads the new key from its file and joins with it.
        yield lab.stop("srv2")
        lab.start("srv2", config=os.path.join(etc["srv2"], "clp.conf"))
        yield lab.wait_until(lambda st: all(s["status"] == "Online" for n in lab.names for s in st[n]["servers"]),
                             timeout=60, what="srv2 back with the rotated key, seen Online by both")
        moved = yield lab.admin("srv1", "group move failover1 --server srv2")
        self.assertEqual(moved["result"]["code"], 0, moved)
        yield lab.wait_until(online_on("failover1", "srv2", lab.names), timeout=30, what="failover1 on srv2")
