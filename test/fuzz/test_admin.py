"""Fuzzing the admin line protocol: its codec (cpro.protocols.admin: the
request grammar, lines to words, replies) and its endpoint
(cpro.services.admin: one session fed arbitrary bytes, and the factory's
connection bounds driven by a random program of connects, requests, losses
and time)."""

import json
import random
import shlex

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from cpro.protocols import admin
from cpro.services import admin as endpoint
from cpro.testing.fakes import FakeAdminHandler
from test.fuzz.harness import STRINGS, Finding, FuzzTestMixin, Target, logged_failures

STATUS = {
    "cluster": {"name": "demo", "status": "Online"},
    "local": "srv1",
    "servers": [{"name": "srv1", "status": "Online", "priority": 0,
                 "heartbeats": [{"name": "lanhb1", "status": "Normal"}]}],
    "groups": [{"name": "failover1", "status": "Online", "current": "srv1", "resources": ["exec1"]}],
    "resources": [{"name": "exec1", "type": "exec", "status": "Online", "current": "srv1",
                   "group": "failover1"}],
    "monitors": [],
}
ALERTS = [{"time": 1700000000.5, "server": "srv1", "module": "nm", "id": 1, "level": "INFO",
           "message": "Server srv1 has started."}]

VALID_LINES = [
    "help", "status", "status detail", "status groupmap", "status heartbeats", "status monitors",
    "alerts", "alerts 5", "alerts 1000", "cluster start --all", "cluster suspend",
    "group start", "group move failover1 --server srv2", "group stop 'my group' --server=srv1",
    "resource stop exec1 --server srv2", "monitor suspend mon1", "monitor clear",
    "monitor dummy on mon1 --server srv1", "monitor dummy off", "monitor recovery on", "quit",
]
VOCABULARY = (sorted(admin.USAGE) + list(admin.CLUSTER_ACTIONS) + list(admin.GROUP_ACTIONS)
              + list(admin.MONITOR_ACTIONS) + list(admin.STATUS_VIEWS)
              + ["dummy", "recovery", "on", "off", "--server", "--server=", "--server=srv1", "--all",
                 "--all=1", "--", "-", "json", "0", "1", "1000", "1001", "-1", "²", "٣", "failover1",
                 "x" * 255, "x" * 256])
HANDLED_VERBS = {"status", "alerts", "cluster", "group", "resource", "monitor"}


def hostile_words(rng):
    """A random word list from the grammar's own words and hostile strings."""
    pool = VOCABULARY + [s[:300] for s in STRINGS]
    return [rng.choice(pool) for _ in range(rng.randrange(1, 7))]


def check_request(request):
    """What a parsed request promises the handler."""
    if not isinstance(request, admin.AdminRequest) or request.verb not in admin.USAGE:
        raise Finding(f"parse_request returned {request!r}")
    for name in (request.target, request.server):
        if name is not None and (not name or len(name) > admin.MAX_NAME or not name.isprintable()):
            raise Finding(f"invalid name let through: {name!r}")
    if request.verb == "alerts" and not 1 <= request.count <= admin.MAX_ALERT_COUNT:
        raise Finding(f"alert count out of range: {request.count!r}")
    if request.verb == "status" and request.action not in (None,) + admin.STATUS_VIEWS:
        raise Finding(f"unknown status view: {request.action!r}")


class AdminParseTarget(Target):
    """parse_request on the words of random lines (as the protocol splits them)."""

    name = "admin-parse"
    max_size = 1024

    def seeds(self, rng):
        return [line.encode() for line in VALID_LINES]

    def structured(self, rng):
        return " ".join(shlex.quote(w) for w in hostile_words(rng)).encode("utf-8", "surrogatepass")

    def check(self, data):
        text = data.decode("utf-8", "surrogateescape")
        try:
            words = shlex.split(text)
        except ValueError:
            return  # unbalanced quotes: the protocol answers a syntax error
        if not words:
            return
        try:
            request = admin.parse_request(words)
        except admin.UsageError as e:
            if not str(e):
                raise Finding("a usage error without a message") from None
            return
        check_request(request)


class AdminLineTarget(Target):
    """decode_line on arbitrary bytes, then the grammar and the replies a
    session would send: only BadLine or UsageError, and always one answer."""

    name = "admin-line"
    max_size = 1024

    def seeds(self, rng):
        return [line.encode() for line in VALID_LINES] + [b"json status\r", b"json", b"'", b"\xff"]

    def structured(self, rng):
        line = " ".join(shlex.quote(w) for w in hostile_words(rng))
        return (("json " if rng.random() < 0.5 else "") + line).encode("utf-8", "surrogatepass")

    def check(self, data):
        try:
            line = admin.decode_line(data)
        except admin.BadLine as e:
            self._check_reply(admin.error_reply(e.json_mode, admin.CODE_USAGE, str(e)), e.json_mode)
            return
        if not line.words:
            return
        try:
            request = admin.parse_request(line.words)
        except admin.UsageError as e:
            self._check_reply(admin.error_reply(line.json_mode, admin.CODE_USAGE, str(e)), line.json_mode)
            return
        check_request(request)
        if request.verb == "help":
            self._check_reply(admin.help_reply(line.json_mode), line.json_mode)
        elif request.verb in ("quit", "cluster", "group", "resource", "monitor"):
            self._check_reply(admin.ok_reply(line.json_mode, request, {}), line.json_mode)

    @staticmethod
    def _check_reply(reply, json_mode):
        text = reply.decode("utf-8")
        lines = text.split("\n")
        if lines[-1] != "" or (json_mode and len(lines) != 2):
            raise Finding(f"reply is not complete lines (one in json mode): {text[:120]!r}")
        last = lines[-2]
        if json_mode:
            if not isinstance(json.loads(last).get("result"), dict):
                raise Finding(f"JSON reply without a result: {last[:120]!r}")
        elif last != "OK" and not last.startswith("ERR "):
            raise Finding(f"text reply does not end with OK or ERR: {last[:120]!r}")


class AdminProtocolTarget(Target):
    """One admin session fed random bytes in random pieces; then left idle."""

    name = "admin-protocol"
    max_size = 6000  # past MAX_LENGTH
    IDLE = 30.0

    def seeds(self, rng):
        lines = VALID_LINES[:-1]  # quit last, so a seed exercises every verb
        return [("\n".join(lines) + "\nquit\n").encode(), b"json status\r\njson alerts 3\n",
                b"status\n" * (endpoint.AdminProtocol.MAX_PENDING + 2), b"sta"]

    def structured(self, rng):
        lines = []
        for _ in range(rng.randrange(1, 5)):
            words = hostile_words(rng)
            line = " ".join(shlex.quote(w) for w in words)
            lines.append(("json " if rng.random() < 0.5 else "") + line)
        return ("\n".join(lines) + rng.choice(("\n", "\r\n", ""))).encode("utf-8", "surrogatepass")

    def check(self, data):
        clock = task.Clock()
        handler = FakeAdminHandler(STATUS, ALERTS)
        proto = endpoint.AdminProtocol(handler, clock=clock, idle_timeout=self.IDLE)
        transport = StringTransport()
        rng = random.Random(data)  # the pieces depend on the input only: reproducible
        with logged_failures() as failures:
            proto.makeConnection(transport)
            i = 0
            while i < len(data):
                n = rng.choice((1, 2, 7, 64, len(data)))
                proto.dataReceived(data[i:i + n])
                i += n
            self._check_replies(transport, data)
            if len(handler.requests) > data.count(b"\n"):
                raise Finding("more requests executed than lines received")
            for request in handler.requests:
                check_request(request)
                if request.verb not in HANDLED_VERBS:
                    raise Finding(f"{request.verb} reached the handler")
            # Left idle: closed after the timeout, aborted one timeout later.
            clock.advance(self.IDLE)
            if not transport.disconnecting:
                raise Finding("an idle session was not closed after the idle timeout")
            clock.advance(self.IDLE)
            if not transport.disconnected:
                raise Finding("a closing session that did not flush was not aborted")
            proto.connectionLost(None)
            if clock.getDelayedCalls():
                raise Finding(f"delayed calls left after the connection was lost: {clock.getDelayedCalls()}")
        if failures:
            raise Finding(f"errors logged to Twisted: {failures[0].get('log_format')!r}")

    @staticmethod
    def _check_replies(transport, data):
        out = transport.value()
        if not out:
            return
        if not out.endswith(b"\n"):
            raise Finding(f"reply without a final newline: {out[-80:]!r}")
        try:
            last = out.decode("utf-8").rstrip("\n").rsplit("\n", 1)[-1]
        except UnicodeDecodeError:
            raise Finding("reply is not UTF-8") from None
        if last == "OK" or last.startswith("ERR "):
            return
        try:
            reply = json.loads(last)
        except ValueError:
            raise Finding(f"reply does not end with OK, ERR or a JSON line: {last[:120]!r}") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("result"), dict):
            raise Finding(f"JSON reply without a result: {last[:120]!r}")


class AdminFactoryTarget(Target):
    """The factory's bounds under a random program of events, one per byte:
    connect, a line on a session, a request left in progress, its completion,
    a lost connection, time passing. The limit is small so it is hit often."""

    name = "admin-factory"
    max_size = 512
    LIMIT = 3
    IDLE = 30.0

    def seeds(self, rng):
        return [bytes([0, 0, 0, 0, 0x21, 0, 0x15, 0, 0x40, 0x55]), bytes(range(0, 256, 3)),
                bytes([0x20, 0x20, 0x20, 0x21, 0x22, 0, 0x15, 0x16, 0x17, 0]) * 3]

    def check(self, data):
        clock = task.Clock()
        handler = FakeAdminHandler(STATUS, ALERTS)
        factory = endpoint.AdminFactory(handler, clock, idle_timeout=self.IDLE, max_connections=self.LIMIT)
        open_ = []  # (protocol, transport) not yet reported lost
        pending = []  # Deferreds of requests in progress
        with logged_failures() as failures:
            for byte in data:
                op, arg = byte & 0x0F, byte >> 4
                if op in (0, 8):
                    self._connect(factory, open_)
                elif op in (1, 2, 9) and open_:
                    proto, _ = open_[arg % len(open_)]
                    if op == 2:  # a request that stays in progress
                        d = defer.Deferred()
                        pending.append(d)
                        handler.responses.append(d)
                        proto.dataReceived(b"group move failover1\n")
                    else:
                        proto.dataReceived(b"json status\n" if op == 1 else b"sta")
                elif op == 3 and pending:
                    d = pending.pop(arg % len(pending))
                    if d in handler.responses:
                        handler.responses.remove(d)  # never reached a handler (a closed session)
                    else:
                        d.callback({})
                elif op in (4, 5) and open_:
                    proto, _ = open_.pop(arg % len(open_))
                    proto.connectionLost(None)
                elif op == 6:
                    clock.advance(arg * 4.0)
                elif op == 7:
                    # The reactor reports aborted and closed connections as lost.
                    for item in [x for x in open_ if x[1].disconnected or x[1].disconnecting]:
                        open_.remove(item)
                        item[0].connectionLost(None)
                self._check_bounds(factory, open_)
            for d in pending:
                if d not in handler.responses:
                    d.callback({})
            for proto, _ in open_:
                proto.connectionLost(None)
            if factory.sessions:
                raise Finding(f"sessions left after every connection was lost: {len(factory.sessions)}")
            if clock.getDelayedCalls():
                raise Finding("delayed calls left after every connection was lost")
        if failures:
            raise Finding(f"errors logged to Twisted: {failures[0].get('log_format')!r}")

    def _connect(self, factory, open_):
        full = len(factory.sessions) >= self.LIMIT
        any_idle = any(p.idle_since is not None for p in factory.sessions)
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        if isinstance(proto, endpoint.AdminProtocol):
            if full and not any_idle:
                raise Finding("a connection over the limit was accepted while every session was busy")
            open_.append((proto, transport))
        else:
            if not (full and not any_idle):
                raise Finding("a new client was refused although a session was idle or a slot free")
            if not transport.value().startswith(b"ERR too many admin connections") or not transport.disconnecting:
                raise Finding(f"refusal is not one ERR line and a close: {transport.value()!r}")
            proto.connectionLost(None)

    def _check_bounds(self, factory, open_):
        if len(factory.sessions) > self.LIMIT:
            raise Finding(f"{len(factory.sessions)} sessions over the limit {self.LIMIT}")
        for proto in factory.sessions:
            if proto._gone:
                raise Finding("a lost session still holds a slot")
            if not proto._busy and not proto._queue:
                # Nothing in progress: evictable, and its idle timer runs
                # (unless it was aborted already and only waits to be reported lost).
                if proto.idle_since is None:
                    raise Finding("a session with nothing in progress is not idle (never evictable)")
                timer = proto._idle_call
                if not proto.transport.disconnected and (timer is None or not timer.active()):
                    raise Finding("an idle session has no idle timer")


class AdminParseFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = AdminParseTarget()


class AdminLineFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = AdminLineTarget()


class AdminProtocolFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = AdminProtocolTarget()
    inputs = 1000


class AdminFactoryFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = AdminFactoryTarget()
    inputs = 1000
