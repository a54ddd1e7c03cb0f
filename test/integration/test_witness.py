"""The witness server as a real process (C{python -m cpro.witness.main}) on
127.0.0.1 with ephemeral ports, and real witnesshb paths and httpnp
resolvers talking to it over HTTP and HTTPS.

Covers: two servers of one cluster learn each other's incarnation through
the witness (on_alive); a second cluster with the same server names is kept
apart; GET / answers 200 and the httpnp resolver says healthy, and not
healthy once the witness is killed; with keys, a report signed with the
wrong key and one for an unknown cluster are refused and counted in GET
/status; HTTPS with a self-signed certificate made here works with ca_file
and fails against another CA; the witness resolver's verdicts; a second
witness on a port in use exits with code 5.
"""

import dataclasses
import datetime
import ipaddress
import json
import os
import signal
import sys
import tempfile

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import TestCase

from cpro import exitcodes
from cpro.plugins import HEARTBEAT_KINDS
from cpro.protocols.heartbeat import Incarnation, StateDigest
from cpro.services.heartbeat import base as hbpath
from cpro.system.httpclient import HttpClient
from cpro.services.partition.httpnp import HttpResolver
from cpro.services.heartbeat.witnesshb import WitnessHeartbeatPath, WitnessResolver
from cpro.config.model import Device, HeartbeatConfig, HttpNPConfig, HttpTarget
from cpro.testing.fakes import make_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGEST = StateDigest("0" * 64, 0, "running")


class WitnessProcess(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()
        self.output = []
        self.exit_code = None

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        self.exit_code = reason.value.exitCode
        self.ended.callback(self.exit_code)

    def text(self):
        return b"".join(self.output).decode("utf-8", "replace")


def make_certificate(directory, name):
    """A self-signed certificate for 127.0.0.1 and localhost: (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"cpro test {name}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, f"{name}.crt")
    key_path = os.path.join(directory, f"{name}.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class WitnessTestCase(TestCase):
    timeout = 60

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cpro-witness-test-")
        self.processes = []
        self.paths = []

    @defer.inlineCallbacks
    def tearDown(self):
        for path in self.paths:
            yield path.stop_listening()
        for proc in self.processes:
            yield self.kill(proc)
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)
        yield task.deferLater(reactor, 0, lambda: None)

    def kill(self, proc):
        if proc.exit_code is None and proc.transport.pid is not None:
            os.kill(proc.transport.pid, signal.SIGTERM)
        return proc.ended

    @defer.inlineCallbacks
    def start_witness(self, *args, wait=True):
        """Start a witness; (process, {"http": [port], "https": [port]})."""
        ready = os.path.join(self.dir, f"ready{len(self.processes)}.json")
        proc = WitnessProcess()
        argv = [sys.executable, "-m", "cpro.witness.main", "--ready-file", ready] + list(args)
        env = dict(os.environ, PYTHONPATH=REPO)
        reactor.spawnProcess(proc, sys.executable, argv, env=env, path=REPO)
        self.processes.append(proc)
        if not wait:
            yield proc.ended
            return proc, None
        for _ in range(200):
            if os.path.exists(ready) or proc.exit_code is not None:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        if not os.path.exists(ready):
            self.fail(f"the witness did not start: {proc.text()}")
        with open(ready) as f:
            return proc, json.load(f)

    def witness_path(self, local, port, cluster="c1", key=b"test-key", incarnation=None,
                     tls=False, ca_file=None, on_alive=None):
        config = make_config(servers=("srv1", "srv2"), name=cluster, key=key,
                             hb_timeout=10.0, hb_interval=1.0)
        servers = tuple(dataclasses.replace(s, devices=s.devices + (Device(700, "witness", "1"),))
                        for s in config.servers)
        heartbeat = HeartbeatConfig("witnesshb1", "witnesshb", 5, 700, witness=HttpTarget(
            "127.0.0.1", port, tls=tls, ca_file=ca_file, timeout=3.0))
        config = dataclasses.replace(config, servers=servers,
                                     heartbeats=config.heartbeats + (heartbeat,))
        context = hbpath.HeartbeatContext(
            reactor=reactor, config=config, local=local,
            incarnation=incarnation or Incarnation(1000 + len(self.paths), local),
            on_beat=lambda *a: None, on_alive=on_alive or (lambda *a: None), runner=None)
        path = HEARTBEAT_KINDS.get("witnesshb").factory(context, heartbeat)
        self.assertIsInstance(path, WitnessHeartbeatPath)
        path.start_listening()
        self.paths.append(path)
        return path

    @defer.inlineCallbacks
    def status(self, port):
        client = HttpClient(reactor, HttpTarget("127.0.0.1", port, timeout=3.0))
        answer = yield client.request(b"GET", "/status")
        self.assertEqual(answer.code, 200)
        return json.loads(answer.body)


class PlainWitnessTests(WitnessTestCase):
    @defer.inlineCallbacks
    def test_two_servers_see_each_other_clusters_apart(self):
        proc, ports = yield self.start_witness("--listen", "127.0.0.1:0")
        port = ports["http"][0]
        alive1, alive2, alive_other = [], [], []
        srv1 = self.witness_path("srv1", port, on_alive=lambda *a: alive1.append(a),
                                 incarnation=Incarnation(111, "one"))
        srv2 = self.witness_path("srv2", port, on_alive=lambda *a: alive2.append(a),
                                 incarnation=Incarnation(222, "two"))
        other = self.witness_path("srv2", port, cluster="c2", on_alive=lambda *a: alive_other.append(a),
                                  incarnation=Incarnation(999, "other"))
        # srv1 reports first (nobody else known yet), then srv2 hears srv1.
        yield srv1.fresh_view()
        view = yield srv2.fresh_view()
        self.assertEqual(set(view.servers), {"srv1", "srv2"})
        self.assertEqual([a[:3] for a in alive2], [("witnesshb1", "srv1", Incarnation(111, "one"))])
        self.assertLess(alive2[0][3], 3.0)
        view = yield srv1.fresh_view()
        self.assertEqual([a[1:3] for a in alive1], [("srv2", Incarnation(222, "two"))])
        # The other cluster has its own srv2 and does not hear c1's srv1.
        view = yield other.fresh_view()
        self.assertEqual(set(view.servers), {"srv2"})
        self.assertEqual(view.servers["srv2"].incarnation, Incarnation(999, "other"))
        self.assertEqual(alive_other, [])
        # Beats through send_beat go the same way.
        srv1.send_beat(DIGEST)
        for _ in range(100):
            if srv1.counters()["answered"] == 3:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(srv1.counters()["answered"], 3)
        status = yield self.status(port)
        self.assertEqual((status["clusters"], status["servers"]), (2, 3))
        self.assertEqual(status["counters"]["reports"], 5)
        self.assertFalse(status["authenticated"])

    @defer.inlineCallbacks
    def test_httpnp_and_witness_resolver_then_killed(self):
        proc, ports = yield self.start_witness("--listen", "127.0.0.1:0",
                                               "--log", os.path.join(self.dir, "witness.log"))
        port = ports["http"][0]
        target = HttpTarget("127.0.0.1", port, timeout=2.0)
        resolver = HttpResolver(reactor, HttpNPConfig("httpnp1", 1, 10700, target))
        verdict = yield resolver.check(frozenset({"srv2"}))
        self.assertTrue(verdict.healthy, verdict.reason)
        self.assertEqual(verdict.reason, f"reached http://127.0.0.1:{port}/ (200)")

        client = HttpClient(reactor, target)
        answer = yield client.request(b"GET", "/")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header(b"Content-Type"), b"text/html; charset=utf-8")

        srv1 = self.witness_path("srv1", port)
        srv2 = self.witness_path("srv2", port)
        witness = WitnessResolver(srv1, hb_timeout=10.0)
        yield srv2.fresh_view()
        verdict = yield witness.check(frozenset({"srv2"}))
        self.assertFalse(verdict.healthy)
        self.assertIn("still hears srv2", verdict.reason)

        yield self.kill(proc)
        verdict = yield resolver.check(frozenset({"srv2"}))
        self.assertFalse(verdict.healthy)
        self.assertIn("connection refused", verdict.reason)
        verdict = yield witness.check(frozenset({"srv2"}))
        self.assertFalse(verdict.healthy)
        self.assertIn("gave no view", verdict.reason)
        with open(os.path.join(self.dir, "witness.log")) as f:
            self.assertIn(f"serving http on 127.0.0.1:{port}", f.read())

    @defer.inlineCallbacks
    def test_port_in_use(self):
        proc, ports = yield self.start_witness("--listen", "127.0.0.1:0")
        second, _ = yield self.start_witness("--listen", f"127.0.0.1:{ports['http'][0]}", wait=False)
        self.assertEqual(second.exit_code, exitcodes.ADDRESS_IN_USE, second.text())
        self.assertIn("cannot listen", second.text())


class KeyedWitnessTests(WitnessTestCase):
    @defer.inlineCallbacks
    def test_wrong_key_and_unknown_cluster_refused(self):
        keys = os.path.join(self.dir, "keys")
        with open(os.path.join(self.dir, "c2.key"), "wb") as f:
            f.write(b"key-of-c2\n")
        with open(keys, "w") as f:
            f.write("# cluster keys\nc1 test-key\nc2 @c2.key\n")
        proc, ports = yield self.start_witness("--listen", "127.0.0.1:0", "--keys", keys)
        port = ports["http"][0]
        good = self.witness_path("srv1", port)
        view = yield good.fresh_view()
        self.assertEqual(set(view.servers), {"srv1"})
        good_c2 = self.witness_path("srv1", port, cluster="c2", key=b"key-of-c2")
        yield good_c2.fresh_view()

        forged = self.witness_path("srv2", port, key=b"not-the-key")
        yield self.assertFailure(forged.fresh_view(), Exception)
        self.assertEqual(forged.counters()["refused"], 1)
        self.assertIn("403", forged.problem)
        unknown = self.witness_path("srv2", port, cluster="c3")
        yield self.assertFailure(unknown.fresh_view(), Exception)
        self.assertIn("404", unknown.problem)

        status = yield self.status(port)
        self.assertTrue(status["authenticated"])
        self.assertEqual(status["counters"]["unauthenticated"], 1)
        self.assertEqual(status["counters"]["unknown_cluster"], 1)
        self.assertEqual(status["servers"], 2)  # the forged srv2 was not recorded


class TlsWitnessTests(WitnessTestCase):
    @defer.inlineCallbacks
    def test_https_with_ca_file(self):
        cert, key = make_certificate(self.dir, "witness")
        other_ca, _ = make_certificate(self.dir, "other")
        proc, ports = yield self.start_witness("--tls-listen", "127.0.0.1:0",
                                               "--tls-cert", cert, "--tls-key", key)
        self.assertEqual(ports["http"], [])
        port = ports["https"][0]

        resolver = HttpResolver(reactor, HttpNPConfig("httpnp1", 1, 10700, HttpTarget(
            "127.0.0.1", port, tls=True, ca_file=cert, timeout=3.0)))
        verdict = yield resolver.check(frozenset())
        self.assertTrue(verdict.healthy, verdict.reason)
        self.assertEqual(verdict.reason, f"reached https://127.0.0.1:{port}/ (200)")

        alive = []
        srv1 = self.witness_path("srv1", port, tls=True, ca_file=cert)
        srv2 = self.witness_path("srv2", port, tls=True, ca_file=cert,
                                 on_alive=lambda *a: alive.append(a))
        yield srv1.fresh_view()
        yield srv2.fresh_view()
        self.assertEqual([a[1] for a in alive], ["srv1"])

        wrong = HttpResolver(reactor, HttpNPConfig("httpnp2", 1, 10701, HttpTarget(
            "127.0.0.1", port, tls=True, ca_file=other_ca, timeout=3.0)))
        verdict = yield wrong.check(frozenset())
        self.assertFalse(verdict.healthy)
        self.assertIn("TLS", verdict.reason)
        plain = HttpResolver(reactor, HttpNPConfig("httpnp3", 1, 10702, HttpTarget(
            "127.0.0.1", port, timeout=3.0)))
        verdict = yield plain.check(frozenset())
        self.assertFalse(verdict.healthy, verdict.reason)
