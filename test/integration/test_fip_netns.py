"""Integration: the fip resource on a real LAN of network namespaces (root).

Topology (built here with `ip`; cpro.testing.lab.netns was not committed yet when
this was written): a switch namespace holding a bridge, and three hosts --
srv1, srv2 and a client -- each with eth0 on the bridge (10.77.0.0/24 and
fd77::/64). srv1 also has eth1 on 10.78.0.0/24 (a veth whose peer stays in
srv1: a second subnet to choose from).

The resource always runs *inside* a host namespace, as the daemon does: each
step is one short process, `ip netns exec HOST python -m
test.integration.test_fip_netns agent ACTION IP [field=value...]`, which
builds a FipResource on the real reactor, runs the action and prints one
JSON line. A process per step also means every deactivation is done by a
process that did not add the address (the "daemon restarted" case).

Every test removes its namespaces in cleanup, also when it fails; namespaces
of an earlier run that died are removed at the next start.
"""

import dataclasses
import ipaddress
import itertools
import json
import os
import sys

from twisted.internet import defer, reactor, task, utils
from twisted.trial import unittest

from test.integration import REPO_ROOT
PREFIX = "cfip-"
HOSTS = ("srv1", "srv2", "client")
ADDRESSES = {"srv1": 1, "srv2": 2, "client": 10}
FIP = "10.77.0.100"
FIP6 = "fd77::100"
_counter = itertools.count()


class CommandFailed(Exception):
    pass


def command_env():
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": REPO_ROOT, "LANG": "C.UTF-8"}


@defer.inlineCallbacks
def run(*argv, check=True):
    """Run argv (no shell); Deferred (stdout text, exit code)."""
    out, err, code = yield utils.getProcessOutputAndValue(argv[0], argv[1:], env=command_env(), reactor=reactor)
    if check and code != 0:
        raise CommandFailed(f"{' '.join(argv)} exited with {code}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace"), code


def pid_alive(pid):
    return os.path.exists(f"/proc/{pid}")


class FipLan:
    """The namespaces of one test; names carry the test process's pid so that leftovers can be recognised."""

    def __init__(self):
        self.tag = f"{PREFIX}{os.getpid()}-{next(_counter)}"
        self.switch = f"{self.tag}-sw"
        self.ns = {host: f"{self.tag}-{host}" for host in HOSTS}
        self.created = []

    @defer.inlineCallbacks
    def create(self):
        for name in (self.switch, *self.ns.values()):
            yield run("ip", "netns", "add", name)
            self.created.append(name)
        sw = ("ip", "-n", self.switch)
        yield run(*sw, "link", "add", "br0", "type", "bridge")
        yield run(*sw, "link", "set", "br0", "up")
        for i, host in enumerate(HOSTS):
            ns = self.ns[host]
            yield run(*sw, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            yield run(*sw, "link", "set", f"p{i}", "master", "br0", "up")
            yield run("ip", "-n", ns, "link", "set", "lo", "up")
            yield run("ip", "-n", ns, "link", "set", "eth0", "up")
            n = ADDRESSES[host]
            yield run("ip", "-n", ns, "addr", "add", f"10.77.0.{n}/24", "dev", "eth0")
            yield run("ip", "-n", ns, "addr", "add", f"fd77::{n}/64", "dev", "eth0", "nodad")
        srv1 = ("ip", "-n", self.ns["srv1"])
        yield run(*srv1, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p")
        yield run(*srv1, "link", "set", "eth1p", "up")
        yield run(*srv1, "link", "set", "eth1", "up")
        yield run(*srv1, "addr", "add", "10.78.0.1/24", "dev", "eth1")

    @defer.inlineCallbacks
    def destroy(self):
        for name in reversed(self.created):
            yield run("ip", "netns", "del", name, check=False)
        self.created = []

    @defer.inlineCallbacks
    def agent(self, host, action, ip, **fields):
        """Run one resource action inside host; the agent's JSON report."""
        args = [f"{k}={v}" for k, v in fields.items()]
        out, _ = yield run(
            "ip", "netns", "exec", self.ns[host], sys.executable, "-m", "test.integration.test_fip_netns",
            "agent", action, ip, *args,
        )
        return json.loads(out.strip().splitlines()[-1])

    @defer.inlineCallbacks
    def addresses(self, host, dev="eth0"):
        """{address: secondary?} on dev."""
        out, _ = yield run("ip", "-n", self.ns[host], "-j", "addr", "show", "dev", dev)
        info = json.loads(out)[0]["addr_info"]
        return {a["local"]: bool(a.get("secondary")) for a in info}

    @defer.inlineCallbacks
    def prefix_of(self, host, ip, dev="eth0"):
        out, _ = yield run("ip", "-n", self.ns[host], "-j", "addr", "show", "dev", dev)
        for a in json.loads(out)[0]["addr_info"]:
            if a["local"] == ip:
                return a["prefixlen"]
        return None

    @defer.inlineCallbacks
    def mac(self, host, dev="eth0"):
        out, _ = yield run("ip", "-n", self.ns[host], "-j", "link", "show", "dev", dev)
        return json.loads(out)[0]["address"]

    @defer.inlineCallbacks
    def neighbour(self, host, ip):
        """The MAC host's neighbour table has for ip, or None."""
        out, _ = yield run("ip", "-n", self.ns[host], "-j", "neigh", "show", ip)
        entries = [e for e in json.loads(out or "[]") if e.get("lladdr")]
        return entries[0]["lladdr"] if entries else None

    @defer.inlineCallbacks
    def ping(self, host, ip):
        family = "-6" if ":" in ip else "-4"
        _, code = yield run("ip", "netns", "exec", self.ns[host], "ping", family, "-c", "1", "-W", "1", ip, check=False)
        return code == 0


@defer.inlineCallbacks
def remove_stale_namespaces():
    """Namespaces of an earlier run of these tests whose process is gone."""
    out, _ = yield run("ip", "-j", "netns", "list", check=False)
    for entry in json.loads(out or "[]"):
        name = entry.get("name", "")
        if name.startswith(PREFIX):
            pid = name[len(PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                yield run("ip", "netns", "del", name, check=False)


class FipNamespaceTestCase(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root: builds network namespaces, veths and a bridge")
        for tool in ("/usr/sbin/ip", "/usr/bin/ping"):
            if not os.path.exists(tool) and not os.path.exists(tool.replace("/usr", "")):
                raise unittest.SkipTest(f"needs {os.path.basename(tool)} (Debian: iproute2, iputils-ping)")
        yield remove_stale_namespaces()
        self.lan = FipLan()
        self.addCleanup(self.lan.destroy)
        yield self.lan.create()

    def tearDown(self):
        # One reactor turn after each test (trial SIGCHLD quirk with process-spawning tests).
        return task.deferLater(reactor, 0, lambda: None)


class AddressTests(FipNamespaceTestCase):
    @defer.inlineCallbacks
    def test_added_on_the_nic_of_its_subnet_then_removed(self):
        lan = self.lan
        report = yield lan.agent("srv1", "activate", FIP)
        self.assertTrue(report["ok"], report)
        self.assertEqual(report["describe"]["interface"], "eth0")
        self.assertEqual(report["describe"]["prefix"], 24)
        self.assertEqual(report["describe"]["mac"], (yield lan.mac("srv1")))
        addresses = yield lan.addresses("srv1")
        # Secondary: the primary address stays the source of the server's own traffic.
        self.assertEqual(addresses, {"10.77.0.1": False, FIP: True, "fd77::1": False, **_link_local(addresses)})
        self.assertEqual((yield lan.prefix_of("srv1", FIP)), 24)

        report = yield lan.agent("srv1", "activate", "10.78.0.50")
        self.assertEqual(report["describe"]["interface"], "eth1")
        self.assertIn("10.78.0.50", (yield lan.addresses("srv1", "eth1")))

        # Another process (a restarted daemon) deactivates: found by value and removed.
        report = yield lan.agent("srv1", "deactivate", FIP)
        self.assertTrue(report["ok"], report)
        self.assertNotIn(FIP, (yield lan.addresses("srv1")))
        report = yield lan.agent("srv1", "deactivate", FIP)  # idempotent
        self.assertTrue(report["ok"], report)
        yield lan.agent("srv1", "deactivate", "10.78.0.50")
        self.assertNotIn("10.78.0.50", (yield lan.addresses("srv1", "eth1")))

    @defer.inlineCallbacks
    def test_activate_twice_keeps_one_address(self):
        yield self.lan.agent("srv1", "activate", FIP)
        report = yield self.lan.agent("srv1", "activate", FIP)
        self.assertTrue(report["ok"], report)
        self.assertIsNone(report["probe"])  # found on the NIC: no probe against ourselves
        self.assertIn(FIP, (yield self.lan.addresses("srv1")))

    @defer.inlineCallbacks
    def test_no_subnet(self):
        report = yield self.lan.agent("srv1", "activate", "172.31.0.1")
        self.assertFalse(report["ok"])
        self.assertIn("no interface has a subnet containing 172.31.0.1", report["error"])
        self.assertIn("eth0 (10.77.0.1/24", report["error"])

    @defer.inlineCallbacks
    def test_remove_address_for_leftovers(self):
        yield run("ip", "-n", self.lan.ns["srv2"], "addr", "add", f"{FIP}/24", "dev", "eth0")
        report = yield self.lan.agent("srv2", "remove", FIP)
        self.assertEqual(report["removed"], ["eth0"])
        self.assertNotIn(FIP, (yield self.lan.addresses("srv2")))
        report = yield self.lan.agent("srv2", "remove", FIP)
        self.assertEqual(report["removed"], [])


class MoveTests(FipNamespaceTestCase):
    @defer.inlineCallbacks
    def check_move(self, ip):
        lan = self.lan
        report = yield lan.agent("srv1", "activate", ip, garp_repeat_delay=0)
        self.assertTrue(report["ok"], report)
        # A GARP updates an existing neighbour entry only: the client talks to the address first.
        self.assertTrue((yield lan.ping("client", ip)))
        self.assertEqual((yield lan.neighbour("client", ip)), (yield lan.mac("srv1")))

        report = yield lan.agent("srv1", "deactivate", ip)
        self.assertTrue(report["ok"], report)
        report = yield lan.agent("srv2", "activate", ip, garp_repeat_delay=0)
        self.assertTrue(report["ok"], report)
        self.assertEqual(report["describe"]["interface"], "eth0")
        # No traffic from the client since: only the announcements can have moved its entry.
        self.assertEqual((yield lan.neighbour("client", ip)), (yield lan.mac("srv2")))
        self.assertTrue((yield lan.ping("client", ip)))

    def test_ipv4_client_follows_the_move(self):
        return self.check_move(FIP)

    def test_ipv6_client_follows_the_move(self):
        return self.check_move(FIP6)


class DuplicateTests(FipNamespaceTestCase):
    @defer.inlineCallbacks
    def check_duplicate(self, ip, what, **fields):
        lan = self.lan
        report = yield lan.agent("srv1", "activate", ip, garp_repeat_delay=0)
        self.assertTrue(report["ok"], report)
        report = yield lan.agent("srv2", "activate", ip, **fields)
        self.assertFalse(report["ok"], report)
        self.assertIn(f"{ip} is already in use on the LAN", report["error"])
        self.assertIn(what, report["error"])
        self.assertNotIn(ip, (yield lan.addresses("srv2")))
        return report

    @defer.inlineCallbacks
    def test_arp_probe_answered(self):
        report = yield self.check_duplicate(FIP, f"ARP reply from MAC {(yield self.lan.mac('srv1'))}")
        self.assertEqual(report["probe"]["malformed"], 0)

    def test_ping_answered(self):
        return self.check_duplicate(FIP, f"ICMP echo reply from host {FIP}", probe_count=0, ping_check=True)

    @defer.inlineCallbacks
    def test_ipv6_dad_answered(self):
        yield self.check_duplicate(FIP6, f"neighbour advertisement from MAC {(yield self.lan.mac('srv1'))}")

    def test_ipv6_ping_answered(self):
        return self.check_duplicate(FIP6, f"ICMP echo reply from host {FIP6}", probe_count=0, ping_check=True)

    @defer.inlineCallbacks
    def test_free_after_the_holder_let_go(self):
        yield self.lan.agent("srv1", "activate", FIP, garp_repeat_delay=0)
        yield self.lan.agent("srv1", "deactivate", FIP)
        report = yield self.lan.agent("srv2", "activate", FIP, ping_check=True)
        self.assertTrue(report["ok"], report)


class MonitorTests(FipNamespaceTestCase):
    @defer.inlineCallbacks
    def test_fipw_and_arpw(self):
        report = yield self.lan.agent("srv1", "monitor", FIP)
        self.assertEqual(report["fipw"], ["Normal", f"{FIP} on eth0"])
        self.assertEqual(report["arpw"], ["Normal", f"sent 2 gratuitous ARP for {FIP} on eth0"])
        self.assertEqual(report["fipw_after_removal"], ["Error", f"floating IP {FIP} is missing from interface eth0"])


def _link_local(addresses):
    return {a: s for a, s in addresses.items() if a.startswith("fe80:")}


# The agent: runs inside a host namespace.


def _params(ip, args):
    from cpro.config.model import FipParams

    types = {f.name: f.type for f in dataclasses.fields(FipParams)}
    values = {}
    for arg in args:
        key, _, text = arg.partition("=")
        kind = types[key]
        if kind in (bool, "bool"):
            values[key] = text.lower() in ("1", "true", "yes")
        elif kind in (int, "int"):
            values[key] = int(text)
        elif kind in (float, "float"):
            values[key] = float(text)
        else:
            values[key] = text
    return FipParams(ip=ip, **values)


@defer.inlineCallbacks
def _agent(action, ip, args):
    from cpro.config.model import ResourceConfig
    from cpro.resources.base import ActionContext
    from cpro.resources.fip import FipResource, remove_address
    from cpro.resources.monitors.arpw import ArpMonitor
    from cpro.resources.monitors.base import MonitorEnvironment
    from cpro.resources.monitors.fipw import FipMonitor
    from cpro.system.netlink import Netlink
    from test.unit.monitor_contract import make_monitor_config

    if action == "remove":
        removed = yield remove_address(ip, reactor)
        return {"ok": True, "removed": removed}
    config = ResourceConfig(
        name="fip1", type="fip", group="failover1", depends=None, act_retry=0, act_fo=0, act_action=1,
        deact_retry=0, deact_action=1, params=_params(ip, args),
    )
    resource = FipResource(reactor, config, "/nonexistent")
    context = ActionContext(event="START", group="failover1", server="agent", home=True)
    start = reactor.seconds()
    report = {}
    try:
        if action == "monitor":
            yield resource.activate(context)
            env = MonitorEnvironment("agent", "/nonexistent", "/nonexistent", resource=lambda name: resource)
            fipw = make_monitor_config("fipw", {"monmii": 1}, target="fip1")
            arpw = make_monitor_config("arpw", {"count": 2}, target="fip1")
            result = yield FipMonitor(reactor, fipw, fipw.params, env).check()
            report["fipw"] = [result.status.value, result.message]
            result = yield ArpMonitor(reactor, arpw, arpw.params, env).check()
            report["arpw"] = [result.status.value, result.message]
            yield defer.maybeDeferred(Netlink().remove_everywhere, ipaddress.ip_address(ip))
            result = yield FipMonitor(reactor, fipw, fipw.params, env).check()
            report["fipw_after_removal"] = [result.status.value, result.message]
            yield resource.deactivate(context)
        else:
            yield getattr(resource, action)(context)
        report["ok"] = True
    except Exception as e:
        report.update(ok=False, error=str(e))
    report["elapsed"] = reactor.seconds() - start
    report["describe"] = resource.describe()
    report["probe"] = dataclasses.asdict(resource.last_probe) if resource.last_probe else None
    # Let the activation burst finish before the process (and its sockets) goes.
    yield task.deferLater(reactor, 0.1, lambda: None)
    return report


def main(argv):
    if len(argv) < 3 or argv[0] != "agent":
        sys.exit("usage: python -m test.integration.test_fip_netns agent ACTION IP [field=value ...]")
    outcome = {}

    def done(report):
        outcome["report"] = report

    def failed(f):
        outcome["report"] = {"ok": False, "error": f"{f.type.__name__}: {f.getErrorMessage()}"}

    def go():
        _agent(argv[1], argv[2], argv[3:]).addCallbacks(done, failed).addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    print(json.dumps(outcome.get("report")), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
