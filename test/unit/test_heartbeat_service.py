"""Tests for cpro.services.heartbeat.service and .lanhb: LAN heartbeat paths and the beat loop.

Most tests run on an in-memory UDP reactor (a task.Clock with listenUDP);
L{RealUDPTests} exchanges real datagrams over 127.0.0.0/8 and ::1.
"""

import dataclasses
import errno
import socket

from twisted.internet import defer, error, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from cpro.cluster.membership import Membership
from cpro.cluster.states import PathState
from cpro.config.model import (
    ClusterConfig,
    Device,
    HeartbeatConfig,
    OSActionCommands,
    Ports,
    ServerConfig,
)
from cpro.interfaces import IHeartbeatPath
from cpro.protocols.heartbeat import (
    HeartbeatPacket,
    Incarnation,
    StateDigest,
    decode,
    encode,
)
from cpro.services.heartbeat import lanhb as lanhb_module, service as service_module
from cpro.services.heartbeat.lanhb import LanHeartbeatPath
from cpro.services.heartbeat.service import (
    HeartbeatBindError,
    HeartbeatConfigError,
    HeartbeatService,
)

KEY = b"cluster key for tests"
CLUSTER = "cluster1"
INC1 = Incarnation(1000, "01")
INC2 = Incarnation(2000, "02")
DIGEST = StateDigest("cafe", 3, "Running")

# Path name -> (kind, device id, address pattern of server k).
TWO_PATHS = {
    "lanhb1": ("lanhb", 0, "10.0.0.{}"),
    "lankhb1": ("lankhb", 1, "192.168.1.{}"),
}


def make_config(servers=3, paths=TWO_PATHS, interval=0.1, timeout=0.5, port_base=29000,
                key=KEY, port_step=100):
    """A ClusterConfig built straight from the model (no loader)."""
    server_configs = []
    for k in range(1, servers + 1):
        devices = tuple(
            Device(device, "lan", pattern.format(k))
            for (_, device, pattern) in sorted(paths.values(), key=lambda v: v[1])
        )
        # Each server its own ports, to show that peers' ports are used for sending.
        offset = port_base - 29000 + port_step * (k - 1)
        ports = Ports(internal=29001 + offset, lanhb=29002 + offset, alert=29003 + offset,
                      lankhb=29006 + offset)
        server_configs.append(
            ServerConfig(f"srv{k}", k - 1, devices, ports, address=devices[0].info)
        )
    heartbeats = tuple(
        HeartbeatConfig(name, kind, priority, device)
        for priority, (name, (kind, device, _)) in enumerate(paths.items())
    )
    return ClusterConfig(
        name=CLUSTER,
        key=key,
        hb_interval=interval,
        hb_timeout=timeout,
        startup_sync_wait=300.0,
        config_download_wait=120.0,
        ports=Ports(),
        servers=tuple(server_configs),
        heartbeats=heartbeats,
        groups=(),
        resources=(),
        os_actions=OSActionCommands(),
        digest="cafe",
    )


class FakeUDPPort:
    """What listenUDP returns, in memory: records or delivers what is written."""

    def __init__(self, reactor, port, protocol, interface, max_packet_size):
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.max_packet_size = max_packet_size
        self.written = []
        self.closed = False

    def write(self, data, addr):
        failure = self.reactor.send_failures.get(addr[0])
        if failure is not None:
            raise failure
        self.written.append((data, addr))
        self.reactor.deliver(self, data, addr)

    def getHost(self):
        kind = IPv6Address if ":" in self.interface else IPv4Address
        return kind("UDP", self.interface, self.port)

    def stopListening(self):
        self.closed = True
        self.reactor.ports.pop((self.interface, self.port), None)
        self.protocol.doStop()
        return defer.succeed(None)


class FakeUDPReactor(task.Clock):
    """task.Clock plus listenUDP; datagrams between bound fake ports arrive one turn later."""

    def __init__(self):
        super().__init__()
        self.ports = {}  # (interface, port) -> FakeUDPPort
        self.bind_errors = {}  # (interface, port) -> OSError
        self.send_failures = {}  # destination address -> exception raised by write
        self.cut = set()  # (source address, destination address) pairs dropped
        self.listen_calls = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.listen_calls.append((port, interface, maxPacketSize))
        if (interface, port) in self.bind_errors:
            raise error.CannotListenError(interface, port, self.bind_errors[(interface, port)])
        udp = FakeUDPPort(self, port, protocol, interface, maxPacketSize)
        self.ports[(interface, port)] = udp
        protocol.makeConnection(udp)
        return udp

    def deliver(self, source, data, addr):
        if (source.interface, addr[0]) in self.cut:
            return
        target = self.ports.get(tuple(addr))
        if target is not None:
            self.callLater(0, self._arrive, target, data, (source.interface, source.port))

    def _arrive(self, target, data, addr):
        if not target.closed:
            target.protocol.datagramReceived(data, addr)


class RecordingLogger:
    """Stands in for the module's twisted.logger.Logger."""

    def __init__(self):
        self.events = []

    def _record(level):
        def emit(self, format, *args, **kwargs):
            self.events.append((level, format, kwargs))

        return emit

    debug = _record("debug")
    info = _record("info")
    warn = _record("warn")
    error = _record("error")
    failure = _record("failure")

    def formats(self, level=None):
        return [f for (lv, f, _) in self.events if level in (None, lv)]


class ServiceTestMixin:
    def make_service(self, config=None, local="srv1", digest=DIGEST, incarnation=INC1):
        self.config = config or make_config()
        self.beats = []
        self.digest = digest
        return HeartbeatService(
            self.reactor,
            self.config,
            local,
            incarnation,
            self.provide_digest,
            lambda path, packet: self.beats.append((path, packet)),
        )

    def provide_digest(self):
        if isinstance(self.digest, Exception):
            raise self.digest
        return self.digest

    def packet(self, sender="srv2", seq=1, incarnation=INC2, cluster=CLUSTER):
        return HeartbeatPacket(cluster, sender, incarnation, seq, DIGEST)

    def datagram(self, sender="srv2", seq=1, incarnation=INC2, key=KEY, cluster=CLUSTER):
        return encode(self.packet(sender, seq, incarnation, cluster), key)


class LanHeartbeatPathTests(ServiceTestMixin, SynchronousTestCase):
    def setUp(self):
        self.reactor = FakeUDPReactor()
        self.log = RecordingLogger()
        self.patch(service_module, "log", self.log)
        self.patch(lanhb_module, "log", self.log)
        self.service = self.make_service()
        self.service.start_listening()
        self.lanhb, self.lankhb = self.service.paths

    def receive(self, data, source=("10.0.0.2", 29102), path=None):
        (path or self.lanhb).datagramReceived(data, source)

    def test_provides_interface(self):
        for path in self.service.paths:
            self.assertTrue(verifyObject(IHeartbeatPath, path))
        self.assertEqual((self.lanhb.name, self.lanhb.kind), ("lanhb1", "lanhb"))
        self.assertEqual((self.lankhb.name, self.lankhb.kind), ("lankhb1", "lankhb"))

    def test_binds_local_address_and_port_by_kind(self):
        self.assertEqual(
            self.reactor.listen_calls,
            [(29002, "10.0.0.1", 1025), (29006, "192.168.1.1", 1025)],
        )
        self.assertEqual(self.lanhb.bound_port(), 29002)
        self.assertEqual(
            self.lanhb.peers(), {"srv2": ("10.0.0.2", 29102), "srv3": ("10.0.0.3", 29202)}
        )
        self.assertEqual(
            self.lankhb.peers(),
            {"srv2": ("192.168.1.2", 29106), "srv3": ("192.168.1.3", 29206)},
        )

    def test_start_listening_is_idempotent(self):
        self.service.start_listening()
        self.assertEqual(len(self.reactor.listen_calls), 2)

    def test_send_beat_reaches_every_peer_with_increasing_seq(self):
        self.lanhb.send_beat(DIGEST)
        self.lanhb.send_beat(StateDigest("cafe", 4, "Running"))
        written = self.reactor.ports[("10.0.0.1", 29002)].written
        self.assertEqual(
            [addr for _, addr in written],
            [("10.0.0.2", 29102), ("10.0.0.3", 29202)] * 2,
        )
        packets = [decode(data, KEY, CLUSTER) for data, _ in written]
        self.assertEqual([p.seq for p in packets], [1, 1, 2, 2])
        self.assertEqual({p.sender for p in packets}, {"srv1"})
        self.assertEqual({p.incarnation for p in packets}, {INC1})
        self.assertEqual(packets[-1].digest, StateDigest("cafe", 4, "Running"))
        # Encoded once per beat: both peers get the very same bytes.
        self.assertEqual(written[0][0], written[1][0])
        self.assertEqual(self.lanhb.counters()["sent"], 4)

    def test_good_packet_reaches_on_beat(self):
        self.receive(self.datagram(seq=1))
        self.receive(self.datagram(seq=2))
        self.assertEqual([(p, pk.seq) for p, pk in self.beats], [("lanhb1", 1), ("lanhb1", 2)])
        self.assertEqual(self.beats[0][1], self.packet(seq=1))
        c = self.lanhb.counters()
        self.assertEqual((c["received"], c["accepted"]), (2, 2))

    def test_bad_packets_are_counted_and_dropped(self):
        self.receive(b"garbage")
        self.receive(b"")
        self.receive(b"\0" * 1025)
        self.receive(self.datagram(key=b"wrong key"))
        self.receive(self.datagram(cluster="other", key=b"other key"))
        self.receive(self.datagram(sender="srv9"))
        self.receive(self.datagram(sender="srv1"))
        self.assertEqual(self.beats, [])
        c = self.lanhb.counters()
        self.assertEqual(c["received"], 7)
        self.assertEqual(c["malformed"], 3)
        self.assertEqual(c["unauthenticated"], 1)
        self.assertEqual(c["foreign"], 1)
        self.assertEqual(c["unknown_sender"], 2)
        self.assertEqual(c["accepted"], 0)
        # Counters are per path.
        self.assertEqual(self.lankhb.counters()["received"], 0)
        self.assertEqual(self.service.counters()["lanhb1"], c)

    def test_spoofed_source_is_counted(self):
        # srv3's address claiming to be srv2, and srv2's address on the other path.
        self.receive(self.datagram(sender="srv2"), source=("10.0.0.3", 29202))
        self.receive(self.datagram(sender="srv2"), source=("192.168.1.2", 29106))
        self.assertEqual(self.lanhb.counters()["spoofed"], 2)
        self.assertEqual(self.beats, [])
        # A spoofed packet does not poison the replay guard for the real sender.
        self.receive(self.datagram(sender="srv2", seq=1))
        self.assertEqual(len(self.beats), 1)

    def test_replay_and_stale(self):
        self.receive(self.datagram(seq=5, incarnation=INC1))
        self.receive(self.datagram(seq=5, incarnation=INC1))
        self.receive(self.datagram(seq=4, incarnation=INC1))
        self.receive(self.datagram(seq=1, incarnation=INC2))  # restarted: accepted
        self.receive(self.datagram(seq=6, incarnation=INC1))  # the old run: stale
        c = self.lanhb.counters()
        self.assertEqual((c["replayed"], c["stale"], c["accepted"]), (2, 1, 2))
        self.assertEqual([pk.incarnation for _, pk in self.beats], [INC1, INC2])

    def test_forget_accepts_an_older_incarnation(self):
        self.receive(self.datagram(seq=5, incarnation=INC2))
        self.receive(self.datagram(seq=1, incarnation=INC1))
        self.assertEqual(self.lanhb.counters()["stale"], 1)
        self.service.forget("srv2")
        self.receive(self.datagram(seq=1, incarnation=INC1))
        self.assertEqual([pk.incarnation for _, pk in self.beats], [INC2, INC1])

    def test_replay_guard_is_per_path(self):
        self.receive(self.datagram(seq=5))
        self.receive(self.datagram(seq=5), source=("192.168.1.2", 29106), path=self.lankhb)
        self.assertEqual([p for p, _ in self.beats], ["lanhb1", "lankhb1"])

    def test_drops_are_logged_rate_limited(self):
        for _ in range(150):
            self.receive(b"junk")
        drops = [
            kw["count"]
            for (_, f, kw) in self.log.events
            if f.startswith("heartbeat path {path}: dropped")
        ]
        self.assertEqual(drops, [1, 10, 100])

    def test_failing_on_beat_never_raises(self):
        def broken(path, packet):
            raise RuntimeError("boom")

        path = LanHeartbeatPath(FakeUDPReactor(), self.config, "srv1", self.config.heartbeats[0],
                                INC1, broken)
        path.datagramReceived(self.datagram(seq=1), ("10.0.0.2", 29102))
        self.assertEqual(path.counters()["accepted"], 1)
        self.assertIn("heartbeat path {path}: on_beat failed", self.log.formats("failure"))

    def test_unexpected_input_never_raises(self):
        self.lanhb.datagramReceived(None, ("10.0.0.2", 1))
        self.lanhb.datagramReceived(self.datagram(), ("not an address", 1))
        self.assertEqual(self.lanhb.counters()["malformed"], 1)
        self.assertEqual(self.lanhb.counters()["spoofed"], 1)

    def test_send_errors_are_logged_once_per_change_and_never_raise(self):
        unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
        self.reactor.send_failures["10.0.0.2"] = unreachable
        for _ in range(5):
            self.lanhb.send_beat(DIGEST)
        written = self.reactor.ports[("10.0.0.1", 29002)].written
        self.assertEqual([addr for _, addr in written], [("10.0.0.3", 29202)] * 5)
        self.assertEqual(self.lanhb.counters()["send_errors"], 5)
        warnings = [kw for (_, f, kw) in self.log.events if "cannot send" in f]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["server"], "srv2")
        self.assertIn("Network is unreachable", warnings[0]["problem"])

        self.reactor.send_failures["10.0.0.2"] = OSError(errno.EPERM, "Operation not permitted")
        self.lanhb.send_beat(DIGEST)
        del self.reactor.send_failures["10.0.0.2"]
        self.lanhb.send_beat(DIGEST)
        self.lanhb.send_beat(DIGEST)
        self.assertEqual(len([f for f in self.log.formats() if "cannot send" in f]), 2)
        self.assertEqual(len([f for f in self.log.formats() if "works again" in f]), 1)

    def test_not_listening_sends_nothing(self):
        self.lanhb.stop_listening()
        self.lanhb.send_beat(DIGEST)
        self.assertEqual(self.lanhb.counters()["sent"], 0)
        self.assertIsNone(self.lanhb.bound_port())

    def test_ipv6_addresses_are_compared_canonically(self):
        paths = {"lanhb1": ("lanhb", 0, "fd00:0000::{}")}
        reactor = FakeUDPReactor()
        beats = []
        service = HeartbeatService(reactor, make_config(paths=paths), "srv1", INC1,
                                   lambda: DIGEST, lambda p, pk: beats.append(pk))
        service.start_listening()
        [path] = service.paths
        self.assertEqual(reactor.listen_calls[0][1], "fd00::1")
        path.datagramReceived(self.datagram(), ("fd00::2", 29102))
        self.assertEqual(len(beats), 1)


class ConfigurationTests(ServiceTestMixin, SynchronousTestCase):
    def setUp(self):
        self.reactor = FakeUDPReactor()

    def test_local_server_must_exist(self):
        self.assertRaises(HeartbeatConfigError, self.make_service, local="srv9")

    def test_local_server_needs_the_device(self):
        config = make_config()
        srv1 = config.servers[0]
        without = ServerConfig(srv1.name, srv1.priority, srv1.devices[1:], srv1.ports, srv1.address)
        config = dataclasses.replace(config, servers=(without,) + config.servers[1:])
        e = self.assertRaises(HeartbeatConfigError, self.make_service, config=config)
        self.assertIn("lanhb1", str(e))

    def test_peer_without_the_device_is_skipped(self):
        config = make_config()
        srv3 = config.servers[2]
        without = ServerConfig(srv3.name, srv3.priority, srv3.devices[:1], srv3.ports, srv3.address)
        config = dataclasses.replace(config, servers=config.servers[:2] + (without,))
        service = self.make_service(config=config)
        self.assertEqual(set(service.path("lankhb1").peers()), {"srv2"})
        self.assertEqual(set(service.path("lanhb1").peers()), {"srv2", "srv3"})

    def test_unknown_heartbeat_kind_is_refused_by_name(self):
        paths = dict(TWO_PATHS, pigeonhb1=("pigeonhb", 900, "coop{}"))
        e = self.assertRaises(HeartbeatConfigError, self.make_service, config=make_config(paths=paths))
        self.assertIn("pigeonhb", str(e))

    def test_bad_interval_or_key(self):
        self.assertRaises(HeartbeatConfigError, self.make_service, config=make_config(interval=0))
        self.assertRaises(HeartbeatConfigError, self.make_service, config=make_config(key=b""))


class HeartbeatServiceTests(ServiceTestMixin, SynchronousTestCase):
    def setUp(self):
        self.reactor = FakeUDPReactor()
        self.log = RecordingLogger()
        self.patch(service_module, "log", self.log)
        self.patch(lanhb_module, "log", self.log)
        self.service = self.make_service()

    def sent(self, path="lanhb1"):
        interface = {"lanhb1": ("10.0.0.1", 29002), "lankhb1": ("192.168.1.1", 29006)}[path]
        return [decode(d, KEY, CLUSTER) for d, _ in self.reactor.ports[interface].written]

    def test_beats_at_the_interval_on_every_path(self):
        self.service.startService()
        self.assertTrue(self.service.running)
        self.assertEqual(len(self.sent("lanhb1")), 2)  # one round at once, to two peers
        self.reactor.pump([0.1] * 10)
        for path in ("lanhb1", "lankhb1"):
            packets = self.sent(path)
            self.assertEqual(len(packets), 22)
            self.assertEqual([p.seq for p in packets[::2]], list(range(1, 12)))
        self.successResultOf(self.service.stopService())

    def test_digest_comes_from_the_provider(self):
        self.service.startService()
        self.digest = StateDigest("beef", 9, "Suspended")
        self.reactor.advance(0.1)
        self.assertEqual(self.sent()[-1].digest, StateDigest("beef", 9, "Suspended"))
        self.successResultOf(self.service.stopService())

    def test_failing_digest_provider_does_not_stop_beats(self):
        self.service.startService()
        self.digest = ZeroDivisionError("no digest")
        self.reactor.pump([0.1] * 3)
        self.assertEqual(len(self.sent()), 8)
        self.assertEqual(self.sent()[-1].digest, DIGEST)
        self.assertEqual(len(self.log.formats("failure")), 1)
        self.successResultOf(self.service.stopService())

    def test_send_now(self):
        self.service.send_now()  # not started: nothing
        self.service.startService()
        self.service.send_now()
        self.assertEqual([p.seq for p in self.sent()], [1, 1, 2, 2])
        self.successResultOf(self.service.stopService())

    def test_stop_closes_ports_and_leaves_no_calls(self):
        self.service.startService()
        self.reactor.advance(0.05)
        ports = list(self.reactor.ports.values())
        d = self.service.stopService()
        self.successResultOf(d)
        self.assertFalse(self.service.running)
        self.assertTrue(all(p.closed for p in ports))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.service.send_now()
        self.assertEqual(len(ports[0].written), 2)

    def test_bind_failure_names_path_and_address(self):
        self.reactor.bind_errors[("192.168.1.1", 29006)] = OSError(
            errno.EADDRINUSE, "Address already in use"
        )
        e = self.assertRaises(HeartbeatBindError, self.service.startService)
        self.assertIn("lankhb1", str(e))
        self.assertIn("192.168.1.1:29006", str(e))
        self.assertIn("Address already in use", str(e))
        self.assertEqual((e.path, e.address, e.port, e.errno),
                         ("lankhb1", "192.168.1.1", 29006, errno.EADDRINUSE))
        self.assertFalse(self.service.running)
        # All or none: the path bound before the failure is closed again.
        self.assertEqual(self.reactor.ports, {})
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_two_services_in_memory_drive_membership(self):
        """srv1 and srv2 beat each other over a fake network into Membership."""

        class Listener:
            def __init__(self):
                self.events = []

            def path_state_changed(self, server, path, old, new):
                self.events.append(("path", server, path, new))

            def server_up(self, server, incarnation):
                self.events.append(("up", server))

            def server_down(self, server):
                self.events.append(("down", server))

            def server_restarted(self, server, old, new):
                self.events.append(("restarted", server))

        config = make_config(servers=2)
        nodes = {}
        for name, inc in (("srv1", INC1), ("srv2", INC2)):
            listener = Listener()
            m = Membership(self.reactor, name, ["srv1", "srv2"], ["lanhb1", "lankhb1"],
                           config.hb_timeout, listener)
            s = HeartbeatService(self.reactor, config, name, inc, lambda: DIGEST,
                                 lambda path, pk, m=m: m.beat(pk.sender, path, pk.incarnation))
            s.startService()
            nodes[name] = (s, m, listener)
        m1, l1 = nodes["srv1"][1], nodes["srv1"][2]
        m2 = nodes["srv2"][1]

        self.reactor.pump([0.05] * 40)
        self.assertTrue(m1.is_up("srv2"))
        self.assertTrue(m2.is_up("srv1"))
        self.assertEqual(set(m1.path_states("srv2").values()), {PathState.NORMAL})

        # Cut the interconnect (lanhb1) both ways: a warning, no failover.
        self.reactor.cut |= {("10.0.0.1", "10.0.0.2"), ("10.0.0.2", "10.0.0.1")}
        self.reactor.pump([0.05] * 20)
        self.assertEqual(m1.path_states("srv2"),
                         {"lanhb1": PathState.ERROR, "lankhb1": PathState.NORMAL})
        self.assertTrue(m1.is_up("srv2"))
        self.assertNotIn(("down", "srv2"), l1.events)

        # Cut the second path too: down, once.
        self.reactor.cut |= {("192.168.1.1", "192.168.1.2"), ("192.168.1.2", "192.168.1.1")}
        self.reactor.pump([0.05] * 20)
        self.assertFalse(m1.is_up("srv2"))
        self.assertFalse(m2.is_up("srv1"))
        self.assertEqual(l1.events.count(("down", "srv2")), 1)

        # Heal everything: up again.
        self.reactor.cut.clear()
        self.reactor.pump([0.05] * 4)
        self.assertTrue(m1.is_up("srv2"))
        self.assertEqual(set(m1.path_states("srv2").values()), {PathState.NORMAL})
        self.assertEqual([e for e in l1.events if e[0] in ("up", "down")],
                         [("up", "srv2"), ("down", "srv2"), ("up", "srv2")])

        for s, m, _ in nodes.values():
            self.successResultOf(s.stopService())
            m.stop()
        self.reactor.pump([0])
        self.assertEqual(self.reactor.getDelayedCalls(), [])


def _free_udp_port(address):
    """A UDP port free on address now (the kernel may reuse it later; good enough here)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class RealUDPTests(TestCase):
    """Real datagrams on loopback with the real reactor."""

    timeout = 10

    def setUp(self):
        from twisted.internet import reactor

        self.reactor = reactor

    def start(self, config, local, incarnation, on_beat):
        service = HeartbeatService(self.reactor, config, local, incarnation,
                                   lambda: DIGEST, on_beat)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def wait_until(self, condition, step=0.01):
        """A Deferred firing once condition() is true (trial's timeout bounds the wait)."""

        def check():
            if condition():
                loop.stop()

        loop = task.LoopingCall(check)
        loop.clock = self.reactor
        self.addCleanup(lambda: loop.running and loop.stop())
        return loop.start(step)

    def config(self, address_1, address_2, paths_kind="lanhb"):
        ports = [_free_udp_port(address_1), _free_udp_port(address_2)]
        base = make_config(servers=2, paths={"lanhb1": (paths_kind, 0, "x")}, interval=0.02)
        servers = []
        for server, address, port in zip(base.servers, (address_1, address_2), ports):
            servers.append(ServerConfig(
                server.name, server.priority, (Device(0, "lan", address),),
                Ports(lanhb=port, lankhb=port), address))
        return dataclasses.replace(base, servers=tuple(servers))

    @defer.inlineCallbacks
    def exchange(self, address_1, address_2):
        config = self.config(address_1, address_2)
        beats = {"srv1": [], "srv2": []}
        s1 = self.start(config, "srv1", INC1, lambda p, pk: beats["srv1"].append(pk))
        s2 = self.start(config, "srv2", INC2, lambda p, pk: beats["srv2"].append(pk))
        yield self.wait_until(lambda: len(beats["srv1"]) >= 3 and len(beats["srv2"]) >= 3)
        self.assertEqual({pk.sender for pk in beats["srv1"]}, {"srv2"})
        self.assertEqual({pk.incarnation for pk in beats["srv1"]}, {INC2})
        self.assertEqual({pk.sender for pk in beats["srv2"]}, {"srv1"})

        # Junk from a stranger's socket is counted, not delivered.
        stranger = self.reactor.listenUDP(0, DatagramProtocol(), interface=address_1)
        self.addCleanup(stranger.stopListening)
        target = (address_2, config.server("srv2").ports.lanhb)
        stranger.write(b"junk", target)
        forged = HeartbeatPacket(CLUSTER, "srv1", INC1, 10**9, DIGEST)
        stranger.write(encode(forged, b"not the key"), target)
        counters = s2.path("lanhb1").counters
        yield self.wait_until(lambda: counters()["malformed"] and counters()["unauthenticated"])
        self.assertEqual(counters()["malformed"], 1)
        self.assertEqual(counters()["unauthenticated"], 1)
        self.assertEqual(s1.path("lanhb1").counters()["send_errors"], 0)

    def test_exchange_ipv4(self):
        return self.exchange("127.0.0.1", "127.0.0.2")

    def test_exchange_ipv6(self):
        return self.exchange("::1", "::1")

    def test_address_in_use(self):
        config = self.config("127.0.0.1", "127.0.0.2")
        port = config.server("srv1").ports.lanhb
        holder = self.reactor.listenUDP(port, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(holder.stopListening)
        service = HeartbeatService(self.reactor, config, "srv1", INC1, lambda: DIGEST,
                                   lambda p, pk: None)
        e = self.assertRaises(HeartbeatBindError, service.start_listening)
        self.assertEqual(e.errno, errno.EADDRINUSE)
        self.assertIn(f"127.0.0.1:{port}", str(e))
        self.assertIn("lanhb1", str(e))

    def test_address_not_local(self):
        config = self.config("127.0.0.1", "127.0.0.2")
        srv1 = config.server("srv1")
        # 192.0.2.0/24 (TEST-NET-1) is never assigned to this host.
        away = ServerConfig(srv1.name, srv1.priority, (Device(0, "lan", "192.0.2.1"),),
                            srv1.ports, "192.0.2.1")
        config = dataclasses.replace(config, servers=(away,) + config.servers[1:])
        service = HeartbeatService(self.reactor, config, "srv1", INC1, lambda: DIGEST,
                                   lambda p, pk: None)
        e = self.assertRaises(HeartbeatBindError, service.start_listening)
        self.assertEqual(e.errno, errno.EADDRNOTAVAIL)
        self.assertIn("192.0.2.1", str(e))
