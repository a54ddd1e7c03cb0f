"""Fuzzing the internal channel's AMP protocol (cpro.services.internal.InternalProtocol).

Each input is fed to a fresh connection, both as the first bytes an
unauthenticated client sends and, in an authenticated session (a real
Challenge/Authenticate exchange with the cluster key first), as what a peer
sends afterwards. The contract: nothing is raised into the reactor, nothing
is logged as a failure, nothing reaches the controller before the key was
proved, and a report that does not parse changes no state.
"""

import struct

from twisted.internet import error
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols import amp
from twisted.python import failure
from twisted.trial.unittest import SynchronousTestCase

from cpro.cluster.controller import OperationError, PeerReport
from cpro.cluster.states import ClusterServiceState
from cpro.protocols import internal as wire
from cpro.services.internal import InternalProtocol, InternalService
from cpro.testing.fakes import FakeAlerts, make_config
from test.fuzz.harness import Finding, Target, FuzzTestMixin, dumps, logged_failures, mutate_json

KEY = b"fuzz-internal-key"
CLOSED = failure.Failure(error.ConnectionDone())


class RecordingController:
    service = ClusterServiceState.RUNNING
    config_generation = 0

    def __init__(self):
        self.calls = []
        self.reports = {}

    def local_report(self):
        return {"incarnation": "inc-srv1", "version": 1, "service": "Running", "groups": {"g": "Online"}}

    def peer_report(self, server, data):
        self.reports[server] = PeerReport.from_dict(data)

    def handle_call(self, op, args):
        self.calls.append(op)
        if op != "get_state":
            raise OperationError(f"unknown operation {op}")
        return self.local_report()


def encode_box(pairs):
    out = b""
    for k, v in pairs:
        out += struct.pack("!H", len(k)) + k + struct.pack("!H", len(v)) + v
    return out + b"\x00\x00"


def decode_box_leniently(data):
    """(key, value) pairs read from possibly damaged AMP bytes, for re-framing."""
    pairs, i = [], 0
    while i + 2 <= len(data):
        n = struct.unpack_from("!H", data, i)[0]
        if n == 0:
            break
        key = data[i + 2:i + 2 + n][:255]
        i += 2 + n
        if i + 2 > len(data):
            pairs.append((key, b""))
            break
        m = struct.unpack_from("!H", data, i)[0]
        pairs.append((key, data[i + 2:i + 2 + m]))
        i += 2 + m
    if not pairs:
        raise ValueError("nothing to re-frame")
    return pairs


class InternalTarget(Target):
    name = "internal"
    max_size = 8192
    time_bound = 0.5

    def __init__(self):
        self.config = make_config(key=KEY)
        self.controller = RecordingController()
        self.hub = InternalService(MemoryReactorClock(), self.config, "srv1", "inc-srv1", self.controller,
                                   FakeAlerts())
        self.round = 0

    def seeds(self, rng):
        report = dumps(self.controller.local_report())
        return [
            encode_box([(b"_command", b"Challenge"), (b"_ask", b"1")]),
            encode_box([(b"_command", b"Authenticate"), (b"_ask", b"2"), (b"cluster", b"testcluster"),
                        (b"server", b"srv2"), (b"incarnation", b"inc"), (b"config", b"0" * 64),
                        (b"nonce", b"n" * 16), (b"proof", b"p" * 32)]),
            encode_box([(b"_command", b"PushState"), (b"_ask", b"3"), (b"report", report)]),
            encode_box([(b"_command", b"Call"), (b"_ask", b"4"), (b"op", b"get_state"), (b"args", b"{}")]),
            encode_box([(b"_command", b"GetConfig"), (b"_ask", b"5"), (b"offset", b"0")]),
            encode_box([(b"_answer", b"1"), (b"nonce", b"x")]),
            encode_box([(b"_error", b"1"), (b"_error_code", b"X"), (b"_error_description", b"d")]),
        ]

    def fixups(self):
        return [lambda data: encode_box(decode_box_leniently(data))]

    def structured(self, rng):
        report = mutate_json(self.controller.local_report(), rng)
        args = mutate_json({"group": "g", "server": "srv2"}, rng)
        choice = rng.randrange(3)
        if choice == 0:
            return encode_box([(b"_command", b"PushState"), (b"_ask", b"9"), (b"report", dumps(report)[:65000])])
        if choice == 1:
            return encode_box([(b"_command", b"Call"), (b"_ask", b"9"), (b"op", b"get_state"),
                               (b"args", dumps(args)[:65000])])
        return encode_box([(b"_command", b"GetConfig"), (b"_ask", b"9"),
                           (b"offset", str(rng.choice((-1, 2**70, 10**100, 0))).encode())])

    def _connect(self):
        p = InternalProtocol(self.hub)
        transport = StringTransport()
        p.makeConnection(transport)
        return p, transport

    def _authenticated(self):
        """A connection on which srv2 proved the key."""
        p, transport = self._connect()
        p.dataReceived(encode_box([(b"_command", b"Challenge"), (b"_ask", b"a1")]))
        server_nonce = amp.parseString(transport.value())[0][b"nonce"]
        nonce = wire.new_nonce()
        proof = wire.proof(KEY, "client", self.config.name, "srv2", server_nonce, nonce, self.hub.fingerprint,
                           self.config.digest)
        p.dataReceived(encode_box([
            (b"_command", b"Authenticate"), (b"_ask", b"a2"), (b"cluster", self.config.name.encode()),
            (b"server", b"srv2"), (b"incarnation", b"inc-srv2"), (b"config", self.config.digest.encode()),
            (b"nonce", nonce), (b"proof", proof)]))
        if p.peer != "srv2":
            raise Finding("the valid authentication was refused")
        transport.clear()
        return p, transport

    def check(self, data):
        self.round += 1
        with logged_failures() as failures:
            calls_before = len(self.controller.calls)
            reports_before = dict(self.controller.reports)
            p, _ = self._connect()
            p.dataReceived(data)
            if p.peer is not None:
                raise Finding("a connection authenticated without the key")
            if len(self.controller.calls) != calls_before or self.controller.reports != reports_before:
                raise Finding("an unauthenticated connection reached the controller")
            p.connectionLost(CLOSED)
            p, _ = self._authenticated()
            p.dataReceived(data)
            p.connectionLost(CLOSED)
        if failures:
            event = failures[0]
            raise Finding(f"logged as a failure: {event.get('log_format') or event}: "
                          f"{event.get('log_failure')}")
        self.controller.reports.clear()


class InternalFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = InternalTarget()
    inputs = 1500
