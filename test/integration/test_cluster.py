"""Integration: real twistd daemons on loopback (inside a private network
namespace when root), real heartbeats, real exec scripts.

Each test builds its own LoopbackCluster and destroys it (processes,
namespace, nft table) in cleanup, also on failure.
"""

import os
import signal
import socket

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from cpro.testing.lab.loopback import LoopbackCluster, group_current, is_root, run, summary
from test.integration import REPO_ROOT


def one_group(name="failover1", **kw):
    return {"name": name, "resources": [{"name": "exec1", **kw.pop("resource", {})}], **kw}


def online_on(group, server, observers):
    def check(st):
        return all(group_current(st, group, o) == server for o in observers)
    return check



class ClusterTestCase(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def make_cluster(self, servers=2, groups=(), **kw):
        lab = LoopbackCluster(reactor, self.mktemp(), servers=servers, groups=groups, **kw)
        self.lab = lab
        self.addCleanup(lab.destroy)
        yield lab.create()
        return lab

    def tearDown(self):
        # One reactor turn after each test: works around trial losing the
        # SIGCHLD handler when a test ends while the reactor is starting.
        return task.deferLater(reactor, 0, lambda: None)

    def requires_root(self):
        if not is_root():
            raise unittest.SkipTest("needs root: runs the cluster in a private network namespace "
                                    "to inject faults with nftables")

    @defer.inlineCallbacks
    def sleep(self, seconds):
        yield task.deferLater(reactor, seconds, lambda: None)


class FailoverTests(ClusterTestCase):
    @defer.inlineCallbacks
    def test_failover_after_sigkill_of_active_daemon(self):
        lab = yield self.make_cluster(groups=[one_group()])
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names), what="failover1 on srv1")
        start = reactor.seconds()
        yield lab.kill("srv1")
        st = yield lab.wait_until(online_on("failover1", "srv2", ["srv2"]), names=["srv2"], timeout=10,
                                  what="failover1 on srv2")
        elapsed = reactor.seconds() - start
        self.assertLess(elapsed, 5.0)
        self.assertEqual([s["status"] for s in st["srv2"]["servers"]], ["Offline", "Online"])
        events = [m for m in lab.marks() if m[2] == "START"]
        self.assertEqual([(m[1], m[4]) for m in events], [("srv1", "START"), ("srv2", "FAILOVER")])
        self.assertEqual(events[1][5], "OTHER")

    @defer.inlineCallbacks
    def test_two_of_three_servers_die_at_once(self):
        groups = [{"name": "g1", "policy": ["srv1", "srv2", "srv3"], "resources": [{"name": "r1"}]},
                  {"name": "g2", "policy": ["srv2", "srv1", "srv3"], "resources": [{"name": "r2"}]}]
        lab = yield self.make_cluster(servers=3, groups=groups)
        yield lab.start_all()
        yield lab.wait_until(lambda st: online_on("g1", "srv1", lab.names)(st)
                             and online_on("g2", "srv2", lab.names)(st))
        yield defer.gatherResults([lab.kill("srv1"), lab.kill("srv2")])
        yield lab.wait_until(lambda st: online_on("g1", "srv3", ["srv3"])(st)
                             and online_on("g2", "srv3", ["srv3"])(st), names=["srv3"], timeout=10,
                             what="both groups on srv3")
        starts = sorted((m[1], m[3], m[4]) for m in lab.marks() if m[2] == "START")
        self.assertEqual(starts, [("srv1", "r1", "START"), ("srv2", "r2", "START"),
                                  ("srv3", "r1", "FAILOVER"), ("srv3", "r2", "FAILOVER")])

    @defer.inlineCallbacks
    def test_stalled_standby_does_not_take_over_when_it_wakes(self):
        # SIGSTOP the standby for ten heartbeat timeouts: when it runs again its
        # deadlines are long past, but srv1's beats are waiting in its sockets.
        lab = yield self.make_cluster(groups=[one_group()])
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        lab.signal("srv2", signal.SIGSTOP)
        yield lab.wait_until(lambda st: st["srv1"]["servers"][1]["status"] == "Offline", names=["srv1"])
        yield self.sleep(4.0)
        lab.signal("srv2", signal.SIGCONT)
        st = yield lab.wait_until(lambda st: st["srv2"]["servers"][1]["status"] == "Online"
                                  and st["srv1"]["servers"][1]["status"] == "Online", what="both Online")
        yield self.sleep(1.0)
        st = yield lab.status_all()
        self.assertTrue(online_on("failover1", "srv1", lab.names)(st), summary(st))
        self.assertEqual([m[1] for m in lab.marks() if m[2] == "START"], ["srv1"])
        alerts = yield lab.admin("srv2", "alerts 200")
        self.assertFalse([a for a in alerts["alerts"] if a["server"] == "srv2" and a["module"] == "nm"
                          and a["id"] == 2], "srv2 declared srv1 down after its stall")

    @defer.inlineCallbacks
    def test_target_dies_while_starting_the_group(self):
        slow_on_srv2 = ('#!/bin/sh\necho "$(date +%s.%N) $CPRO_SERVER_NAME START exec1 $CLP_EVENT" >> MARKS\n'
                        '[ "$CPRO_SERVER_NAME" = srv2 ] && exec sleep 30\nexit 0\n')
        lab = yield self.make_cluster(servers=3, groups=[one_group()])
        lab.groups[0]["resources"][0]["start"] = slow_on_srv2.replace("MARKS", lab.marks_path())
        lab.write_config()
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        yield lab.kill("srv1")
        yield lab.wait_until(lambda st: any(m[1] == "srv2" for m in lab.marks()), names=["srv3"],
                             what="srv2 starting the group")
        yield lab.kill("srv2")  # dies with the group Online Pending
        yield lab.wait_until(online_on("failover1", "srv3", ["srv3"]), names=["srv3"], timeout=10)
        self.assertEqual([(m[1], m[4]) for m in lab.marks()],
                         [("srv1", "START"), ("srv2", "FAILOVER"), ("srv3", "FAILOVER")])

    @defer.inlineCallbacks
    def test_no_failover_when_one_of_two_paths_is_blocked(self):
        self.requires_root()
        lab = yield self.make_cluster(groups=[one_group()])
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        yield lab.block_path("srv1", 1)  # srv2 -> srv1 on the second interconnect
        yield lab.block_path("srv2", 1)
        st = yield lab.wait_until(
            lambda st: [h["status"] for h in st["srv2"]["servers"][0]["heartbeats"]] == ["Normal", "Error"],
            what="lanhb2 of srv1 in Error on srv2")
        self.assertEqual(st["srv2"]["servers"][0]["status"], "Caution")
        yield self.sleep(1.5)  # three heartbeat timeouts
        st = yield lab.status_all()
        self.assertEqual(summary(st)["srv2"]["groups"], {"failover1": "srv1/Online"})
        self.assertEqual([m[1] for m in lab.marks() if m[2] == "START"], ["srv1"])
        alerts = yield lab.admin("srv2", "alerts 50")
        self.assertTrue(any("lanhb2" in a["message"] and "srv1" in a["message"] for a in alerts["alerts"]))

    @defer.inlineCallbacks
    def test_restarted_server_rejoins_without_stealing(self):
        lab = yield self.make_cluster(groups=[one_group()])
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        yield lab.kill("srv1")
        yield lab.wait_until(online_on("failover1", "srv2", ["srv2"]), names=["srv2"])
        lab.start("srv1")
        yield lab.wait_until(lambda st: st["srv1"]["cluster"]["status"] == "Online"
                             and online_on("failover1", "srv2", lab.names)(st), what="srv1 back, group on srv2")
        yield self.sleep(1.0)
        st = yield lab.status_all()
        self.assertTrue(online_on("failover1", "srv2", lab.names)(st), summary(st))
        self.assertEqual(len([m for m in lab.marks() if m[2] == "START"]), 2)

    @defer.inlineCallbacks
    def test_daemon_restarted_within_the_timeout(self):
        # The new incarnation is back before the old one could be declared down:
        # its groups must still be failed over, and only once.
        lab = yield self.make_cluster(groups=[one_group()], interval_ms=200, timeout_ms=4000)
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        yield lab.kill("srv1")
        lab.start("srv1")
        yield lab.wait_until(online_on("failover1", "srv2", lab.names), timeout=20, what="failover1 on srv2")
        starts = [(m[1], m[4]) for m in lab.marks() if m[2] == "START"]
        self.assertEqual(starts, [("srv1", "START"), ("srv2", "FAILOVER")])

    @defer.inlineCallbacks
    def test_activation_failure_escalates_to_next_server(self):
        fail_on_srv1 = ('#!/bin/sh\necho "$(date +%s.%N) $CPRO_SERVER_NAME START exec1 $CLP_EVENT" >> MARKS\n'
                        '[ "$CPRO_SERVER_NAME" = srv1 ] && exit 3\nexit 0\n')
        lab = yield self.make_cluster(groups=[one_group()])
        lab.groups[0]["resources"][0]["start"] = fail_on_srv1.replace("MARKS", lab.marks_path())
        lab.write_config()
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv2", lab.names), what="failover1 on srv2")
        starts = [(m[1], m[4]) for m in lab.marks() if m[2] == "START"]
        self.assertEqual(starts, [("srv1", "START"), ("srv2", "FAILOVER")])
        alerts = yield lab.admin("srv1", "alerts 100")
        self.assertTrue(any("exited with code 3" in a["message"] for a in alerts["alerts"]), alerts)

    @defer.inlineCallbacks
    def test_double_activation_after_heal_is_resolved(self):
        self.requires_root()
        lab = yield self.make_cluster(groups=[one_group()])
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        yield lab.isolate("srv2")  # every interconnect cut: srv2 believes srv1 is dead
        yield lab.wait_until(online_on("failover1", "srv2", ["srv2"]), names=["srv2"], what="srv2 takes over")
        st = yield lab.status_all()
        self.assertEqual(group_current(st, "failover1", "srv1"), "srv1")
        yield lab.heal()
        st = yield lab.wait_until(lambda st: online_on("failover1", "srv1", lab.names)(st)
                                  and [r["status"] for r in st["srv2"]["resources"]] == ["Online"]
                                  and any(m[2] == "STOP" for m in lab.marks()), what="resolved on srv1")
        self.assertEqual(summary(st)["srv2"]["groups"], {"failover1": "srv1/Online"})
        stops = [m[1] for m in lab.marks() if m[2] == "STOP"]
        self.assertEqual(stops, ["srv2"])
        alerts = yield lab.admin("srv2", "alerts 200")
        self.assertTrue(any("more than one server" in a["message"] for a in alerts["alerts"]))


class OperationTests(ClusterTestCase):
    @defer.inlineCallbacks
    def test_manual_move_and_cli(self):
        lab = yield self.make_cluster(groups=[one_group()])
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        code, out = yield run(reactor, [_bin("clpgrp"), "-m", "failover1", "-h", "srv2",
                                        "--admin", lab.admin_endpoint("srv1")], env=_env())
        self.assertEqual(code, 0, out)
        yield lab.wait_until(online_on("failover1", "srv2", lab.names))
        code, out = yield run(reactor, [_bin("clpstat"), "--admin", lab.admin_endpoint("srv1")], env=_env())
        self.assertEqual(code, 0, out)
        self.assertIn("failover1", out)
        self.assertIn("srv2", out)
        # Moved back, asked on the server that does not hold it: it stops the
        # group on srv2 and must see that at once to start it itself.
        code, out = yield run(reactor, [_bin("clpgrp"), "-m", "failover1", "-h", "srv1",
                                        "--admin", lab.admin_endpoint("srv1")], env=_env())
        self.assertEqual(code, 0, out)
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        code, out = yield run(reactor, [_bin("clpgrp"), "-m", "nosuchgroup",
                                        "--admin", lab.admin_endpoint("srv1")], env=_env())
        self.assertNotEqual(code, 0)
        self.assertIn("nosuchgroup", out)
        code, out = yield run(reactor, [_bin("clpgrp"), "-t", "failover1", "--admin", lab.admin_endpoint("srv1")],
                              env=_env())
        self.assertEqual(code, 0, out)
        yield lab.wait_until(lambda st: all(group_current(st, "failover1", n) is None for n in lab.names))

    @defer.inlineCallbacks
    def test_resource_stop_start_and_suspend_resume(self):
        lab = yield self.make_cluster(groups=[one_group()])
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        admin = ["--admin", lab.admin_endpoint("srv2")]
        code, out = yield run(reactor, [_bin("clprsc"), "-t", "exec1", *admin], env=_env())
        self.assertEqual(code, 0, out)
        st = yield lab.status_all()
        self.assertEqual([r["status"] for r in st["srv2"]["resources"]], ["Offline"])
        # Without -h, a resource of a stopped group starts on the server the command runs on.
        code, out = yield run(reactor, [_bin("clprsc"), "-s", "exec1", *admin], env=_env())
        self.assertEqual(code, 0, out)
        yield lab.wait_until(online_on("failover1", "srv2", lab.names))
        self.assertEqual([(m[1], m[2]) for m in lab.marks()], [("srv1", "START"), ("srv1", "STOP"), ("srv2", "START")])
        code, out = yield run(reactor, [_bin("clpcl"), "--suspend", "-a", *admin], env=_env())
        self.assertEqual(code, 0, out)
        yield lab.wait_until(lambda st: [s["status"] for s in st["srv2"]["servers"]] == ["Suspend", "Suspend"])
        code, out = yield run(reactor, [_bin("clpgrp"), "-m", "failover1", *admin], env=_env())
        self.assertEqual(code, 1, out)
        self.assertIn("suspended", out)
        yield lab.kill("srv2")  # no failover while suspended
        yield self.sleep(1.5)
        st = yield lab.status_all(["srv1"])
        self.assertEqual(summary(st)["srv1"]["groups"], {"failover1": "/Offline"})
        code, out = yield run(reactor, [_bin("clpcl"), "--resume", "--admin", lab.admin_endpoint("srv1")],
                              env=_env())
        self.assertEqual(code, 0, out)
        # What srv2 held while the cluster was suspended is failed over on resume.
        yield lab.wait_until(online_on("failover1", "srv1", ["srv1"]), names=["srv1"])

    @defer.inlineCallbacks
    def test_auto_failback(self):
        lab = yield self.make_cluster(groups=[one_group(failback_auto=True)])
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        yield lab.kill("srv1")
        yield lab.wait_until(online_on("failover1", "srv2", ["srv2"]), names=["srv2"])
        lab.start("srv1")
        yield lab.wait_until(online_on("failover1", "srv1", lab.names), what="failback to srv1")
        events = [(m[1], m[2]) for m in lab.marks()]
        self.assertEqual(events, [("srv1", "START"), ("srv2", "START"), ("srv2", "STOP"), ("srv1", "START")])

    @defer.inlineCallbacks
    def test_exclusion(self):
        groups = [
            {"name": "g1", "exclusive": 1, "policy": ["srv1", "srv2", "srv3"], "resources": [{"name": "r1"}]},
            {"name": "g2", "exclusive": 1, "policy": ["srv1", "srv3", "srv2"], "resources": [{"name": "r2"}]},
        ]
        lab = yield self.make_cluster(servers=3, groups=groups)
        yield lab.start_all()
        st = yield lab.wait_until(lambda st: online_on("g1", "srv1", lab.names)(st)
                                  and online_on("g2", "srv3", lab.names)(st), what="g1 on srv1, g2 on srv3")
        self.assertTrue(st)
        yield lab.kill("srv1")
        # g1 goes to srv2 (srv3 holds the other exclusive group).
        yield lab.wait_until(lambda st: online_on("g1", "srv2", ["srv2", "srv3"])(st)
                             and online_on("g2", "srv3", ["srv2", "srv3"])(st),
                             names=["srv2", "srv3"], what="g1 on srv2")

    @defer.inlineCallbacks
    def test_cluster_stop_and_start_on_one_server(self):
        lab = yield self.make_cluster(groups=[one_group()])
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        reply = yield lab.admin("srv1", "cluster stop")
        self.assertEqual(reply["result"]["code"], 0, reply)
        yield lab.wait_until(lambda st: online_on("failover1", "srv2", ["srv2"])(st)
                             and st["srv2"]["servers"][0]["status"] == "Offline", what="moved to srv2")
        reply = yield lab.admin("srv1", "cluster start")
        self.assertEqual(reply["result"]["code"], 0, reply)
        yield lab.wait_until(lambda st: st["srv1"]["cluster"]["status"] == "Online"
                             and online_on("failover1", "srv2", lab.names)(st))


class EscalationTests(ClusterTestCase):
    @defer.inlineCallbacks
    def test_failing_everywhere_ends_in_the_final_action(self):
        # act/fo 1 and act/action 5 (stop the cluster service and reboot): srv1 fails and
        # fails over to srv2, srv2 fails and fails over back to srv1, whose threshold is
        # used up: srv1 runs the final action (the lab's reboot command only writes a mark).
        always_fail = "#!/bin/sh\necho \"$(date +%s.%N) $CPRO_SERVER_NAME START exec1 $CLP_EVENT\" >> MARKS\nexit 1\n"
        lab = yield self.make_cluster(groups=[one_group(resource={"act_fo": 1, "act_action": 5})])
        lab.groups[0]["resources"][0]["start"] = always_fail.replace("MARKS", lab.marks_path())
        lab.write_config()
        yield lab.start_all(wait=False)
        yield lab.wait_until(lambda st: any(m[2:4] == ["OSACTION", "reboot"] for m in lab.marks()),
                             what="the final action")
        starts = [(m[1], m[4]) for m in lab.marks() if m[2] == "START"]
        self.assertEqual(starts, [("srv1", "START"), ("srv2", "FAILOVER"), ("srv1", "FAILOVER")])
        self.assertEqual([m[1] for m in lab.marks() if m[2] == "OSACTION"], ["srv1"])
        st = yield lab.wait_until(lambda st: st["srv1"]["cluster"]["status"] == "Offline", names=["srv1"])
        self.assertEqual(summary(st)["srv1"]["groups"], {"failover1": "/Offline"})


class RobustnessTests(ClusterTestCase):
    @defer.inlineCallbacks
    def test_malformed_and_unauthenticated_heartbeats_ignored(self):
        from cpro.protocols.heartbeat import HeartbeatPacket, StateDigest, encode, new_incarnation

        lab = yield self.make_cluster(groups=[one_group()])
        yield lab.start_all()
        yield lab.wait_until(online_on("failover1", "srv1", lab.names))
        forged = encode(HeartbeatPacket(cluster="lab", sender="srv2", incarnation=new_incarnation(0), seq=1,
                                        digest=StateDigest(config="x", placement=1, service="Running")),
                        b"wrong key")
        packets = [b"", b"\x00" * 3, b"CPHB\x01garbage", os.urandom(2000), forged]
        script = ("import socket,sys\n"
                  "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                  "s.bind(('127.0.0.2',0))\n"
                  f"for p in {packets!r}:\n"
                  f"    s.sendto(p,('127.0.0.1',{lab.port('lanhb')}))\n")
        code, out = yield run(reactor, lab.in_netns([_python(), "-c", script]))
        self.assertEqual(code, 0, out)
        yield self.sleep(1.0)
        st = yield lab.admin("srv1", "status")
        counters = st["counters"]["lanhb1"]
        self.assertGreaterEqual(counters["malformed"], 3)
        self.assertGreaterEqual(counters["unauthenticated"], 1)
        self.assertEqual(summary({"srv1": st})["srv1"]["groups"], {"failover1": "srv1/Online"})
        self.assertEqual(st["servers"][1]["status"], "Online")


class ExampleTests(ClusterTestCase):
    @defer.inlineCallbacks
    def test_two_server_example_runs_as_it_is(self):
        self.requires_root()  # the example uses the default ports: keep it in a private namespace

        example = os.path.join(REPO_ROOT, "examples", "two-server", "clp.conf")
        lab = yield self.make_cluster()
        for name in lab.names:
            lab.start(name, config=example)
        yield lab.wait_until(online_on("failover1", "srv1", lab.names), what="the example's group on srv1")
        # The service is started asynchronously: give it a moment to listen.
        ask = ("import socket,threading\nfor i in range(100):\n    try:\n"
               "        print(socket.create_connection(('127.0.0.1',18080),timeout=5).recv(200).decode()); break\n"
               "    except ConnectionRefusedError:\n        threading.Event().wait(0.05)\n")
        code, out = yield run(reactor, lab.in_netns([_python(), "-c", ask]))
        self.assertEqual(code, 0, out)
        self.assertIn("hello from srv1", out)
        yield lab.stop("srv1")  # SIGTERM: groups move to srv2 before the daemon exits
        yield lab.wait_until(online_on("failover1", "srv2", ["srv2"]), names=["srv2"])
        ask = ask.replace("127.0.0.1", "127.0.0.2")
        code, out = yield run(reactor, lab.in_netns([_python(), "-c", ask]))
        self.assertIn("hello from srv2", out)


class StartupFailureTests(ClusterTestCase):
    @defer.inlineCallbacks
    def _exit_code(self, lab, name, extra=(), config=None):
        proto = lab.start(name, extra_args=extra, config=config)
        code = yield proto.ended
        with open(os.path.join(lab.workdir, f"{name}.out")) as f:
            return code, f.read()

    @defer.inlineCallbacks
    def test_bad_config_unknown_server_and_port_in_use(self):
        lab = yield self.make_cluster(groups=[one_group()])
        bad = os.path.join(lab.workdir, "bad.conf")
        with open(bad, "w") as f:
            f.write("<root><cluster><name>x</name></cluster>")
        code, out = yield self._exit_code(lab, "srv1", config=bad)
        self.assertEqual(code, 3, out)
        self.assertIn("invalid configuration", out)
        code, out = yield self._exit_code(lab, "srv1", extra=["--server", "srv9"])
        self.assertEqual(code, 4, out)
        self.assertIn("srv9", out)
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(blocker.close)
        if lab.netns:
            code, out = yield self._exit_code_with_blocker(lab)
        else:
            blocker.bind(("127.0.0.1", lab.port("lanhb")))
            code, out = yield self._exit_code(lab, "srv1")
        self.assertEqual(code, 5, out)
        self.assertIn(str(lab.port("lanhb")), out)

    @defer.inlineCallbacks
    def _exit_code_with_blocker(self, lab):
        # Occupy srv1's heartbeat port inside the namespace with a sleeping python.
        script = ("import signal,socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                  f"s.bind(('127.0.0.1',{lab.port('lanhb')}))\nprint('bound',flush=True)\nsignal.pause()\n")
        from twisted.internet import protocol as tproto

        class Holder(tproto.ProcessProtocol):
            def __init__(self):
                self.ready = defer.Deferred()
                self.ended = defer.Deferred()

            def outReceived(self, data):
                if not self.ready.called:
                    self.ready.callback(None)

            def processEnded(self, reason):
                self.ended.callback(None)

        holder = Holder()
        argv = lab.in_netns([_python(), "-c", script])
        t = reactor.spawnProcess(holder, argv[0], argv, env=os.environ)
        yield holder.ready
        try:
            result = yield self._exit_code(lab, "srv1")
        finally:
            os.kill(t.pid, signal.SIGKILL)
            yield holder.ended
        return result

    @defer.inlineCallbacks
    def test_config_differs_from_master(self):
        lab = yield self.make_cluster(groups=[one_group()])
        lab.start("srv1")
        yield lab.wait_until(lambda st: st["srv1"]["cluster"]["status"] in ("Online", "Offline"),
                             names=["srv1"], what="srv1 up")
        other = os.path.join(lab.workdir, "other.conf")
        with open(lab.config_path) as f:
            text = f.read()
        with open(other, "w") as f:
            f.write(text.replace("<syncwait>", "<alertlog><backups>4</backups></alertlog><syncwait>"))
        code, out = yield self._exit_code(lab, "srv2", config=other)
        self.assertEqual(code, 7, out)
        self.assertIn("differs from that of the master srv1", out)
        with open(os.path.join(lab.state_dir("srv2"), "clp.conf.srv1")) as f:
            self.assertEqual(f.read(), text)

    @defer.inlineCallbacks
    def test_config_differs_from_a_running_peer_while_the_master_is_down(self):
        lab = yield self.make_cluster(servers=3, groups=[one_group()], sync_wait=2)
        lab.start("srv2")  # the master srv1 stays down
        yield lab.wait_until(lambda st: st["srv2"]["cluster"]["status"] == "Online", names=["srv2"],
                             what="srv2 running alone")
        other = os.path.join(lab.workdir, "other.conf")
        with open(lab.config_path) as f:
            text = f.read()
        with open(other, "w") as f:
            f.write(text.replace("<syncwait>", "<alertlog><backups>4</backups></alertlog><syncwait>"))
        code, out = yield self._exit_code(lab, "srv3", config=other)
        self.assertEqual(code, 7, out)
        self.assertIn("srv2 (the master srv1 is down)", out)
        st = yield lab.status_all(["srv2"])
        self.assertEqual(st["srv2"]["cluster"]["status"], "Online", st)

    @defer.inlineCallbacks
    def test_config_differs_between_two_starting_servers_while_the_master_is_down(self):
        # Started together, both still wait for the master (syncwait and cfwait
        # 10 s) when they meet, each end noticing the other: the daemon that
        # started first keeps running, the later one refuses.
        lab = yield self.make_cluster(servers=3, groups=[one_group()], sync_wait=10)
        other = os.path.join(lab.workdir, "other.conf")
        with open(lab.config_path) as f:
            text = f.read()
        with open(other, "w") as f:
            f.write(text.replace("<syncwait>", "<alertlog><backups>4</backups></alertlog><syncwait>"))
        first = lab.start("srv2")
        second = lab.start("srv3", config=other)
        ended = yield defer.DeferredList([first.ended, second.ended], fireOnOneCallback=True)
        yield task.deferLater(reactor, 3.0, lambda: None)  # would the other one refuse too?
        logs = {}
        for name in ("srv2", "srv3"):
            with open(os.path.join(lab.state_dir(name), "cpro.log")) as f:
                logs[name] = f.read()
        refused = [name for name in ("srv2", "srv3") if "refusing to run" in logs[name]]
        self.assertEqual(len(refused), 1, logs)
        survivor = "srv3" if refused == ["srv2"] else "srv2"
        self.assertEqual(ended[1], 0 if refused == ["srv2"] else 1)
        self.assertIn(f"{survivor} (the master srv1 is down)", logs[refused[0]])
        self.assertIsNotNone(lab.pid(survivor))
        yield lab.wait_until(lambda st: st[survivor]["service"] == "Running", names=[survivor],
                             timeout=30, what=f"{survivor} running once the waits are over")

def _bin(name):
    import sys

    return os.path.join(os.path.dirname(sys.executable), name)


def _python():
    import sys

    return sys.executable


def _env():
    from cpro.testing.lab.loopback import PACKAGE_ROOT

    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT
    return env
