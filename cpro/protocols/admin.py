"""The admin line protocol: the telnet-like shell the clp* commands talk to.

It listens on a root-only UNIX socket (or loopback TCP). One request per
line, ``[json] VERB [ARGS...]`` (shell-like quoting)::

    help
    status [detail|groupmap|heartbeats|monitors]
    alerts [N]
    cluster start|stop|restart|suspend|resume [--all]
    group start|stop|move [GROUP] [--server SERVER]
    resource start|stop RESOURCE [--server SERVER]
    monitor suspend|resume|clear [MONITOR] [--server SERVER]
    monitor dummy on|off [MONITOR] [--server SERVER]
    monitor recovery on|off
    quit

This module only parses and validates syntax; the decision is the handler's
(an L{IAdminHandler} given to the factory). Replies:

  - text mode: the rendered payload (status/alerts views, result lines) and
    always a last line ``OK`` or ``ERR <message>``;
  - json mode (line starts with ``json``): exactly one line
    ``{"result": {"code": 0, "message": ""}, ...payload}``, the original
    product's REST shape; code is non-zero and message set on error.

Result codes: 0 success, 1 operation refused or failed (L{AdminError}),
2 usage error, 3 internal error.

Requests on one connection are answered in order; a connection may queue at
most L{AdminProtocol.MAX_PENDING} lines while one is being executed.

Connections are bounded so that idle clients can never lock the clp*
commands out (see L{AdminFactory}):

  - idle timeout (L{DEFAULT_IDLE_TIMEOUT}, 30 s): a connection with no request
    in progress that sends no complete line for that long gets
    ``ERR closed: no request for 30 s (idle timeout)`` and is closed; if its
    client does not read, it is aborted one timeout later. A request in
    progress (a group move waiting for its scripts) is never idle. A partial
    line is not activity, so a client dripping bytes is closed too;
  - connection limit (L{DEFAULT_MAX_CONNECTIONS}, 32): a new client over the
    limit takes the place of the connection idle for the longest time, which
    is aborted; only when every connection has a request in progress is the
    new one refused with one line ``ERR too many admin connections: ...``.
"""

import collections
import errno
import ipaddress
import json
import os
import re
import shlex
import socket
import stat
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import Interface

from cpro import statusview
from cpro.protocols.ratelog import worth_logging

CODE_OK = 0
CODE_FAILED = 1
CODE_USAGE = 2
CODE_INTERNAL = 3

DEFAULT_ALERT_COUNT = 100
MAX_ALERT_COUNT = 1000
MAX_NAME = 255

DEFAULT_IDLE_TIMEOUT = 30.0  # seconds without a request before an admin connection is closed
DEFAULT_MAX_CONNECTIONS = 32  # concurrent admin connections (the longest-idle one makes room)

CLUSTER_ACTIONS = ("start", "stop", "restart", "suspend", "resume")
GROUP_ACTIONS = ("start", "stop", "move")
RESOURCE_ACTIONS = ("start", "stop")
MONITOR_ACTIONS = ("suspend", "resume", "clear")  # plus 'dummy on|off' and 'recovery on|off'
SWITCHES = {"on": True, "off": False}
STATUS_VIEWS = ("detail", "groupmap", "heartbeats", "monitors")
_ALERT_COUNT = re.compile(r"[0-9]{1,10}")

USAGE = {
    "help": "help",
    "status": "status [detail|groupmap|heartbeats|monitors]",
    "alerts": f"alerts [N]  (N = 1..{MAX_ALERT_COUNT}, default {DEFAULT_ALERT_COUNT})",
    "cluster": "cluster start|stop|restart|suspend|resume [--all]",
    "group": "group start|stop|move [GROUP] [--server SERVER]",
    "resource": "resource start|stop RESOURCE [--server SERVER]",
    "monitor": "monitor suspend|resume|clear [MONITOR] [--server SERVER] | "
               "monitor dummy on|off [MONITOR] [--server SERVER] | monitor recovery on|off",
    "quit": "quit",
}
HELP_LINES = [
    "commands (prefix a line with 'json' for a one-line JSON reply):",
    *(f"  {USAGE[verb]}" for verb in USAGE),
]


@dataclass(frozen=True)
class AdminRequest:
    """One parsed request, as the handler sees it."""

    verb: str  # 'status', 'alerts', 'cluster', 'group', 'resource', 'monitor'
    action: Optional[str] = None  # 'start', 'stop', ...; the view for 'status'
    target: Optional[str] = None  # group, resource or monitor name (None = all groups / monitors)
    server: Optional[str] = None  # --server: where to act / move destination
    all: bool = False  # --all: every server (cluster verb)
    count: Optional[int] = None  # alerts N
    switch: Optional[bool] = None  # monitor dummy|recovery on (True) / off (False)


class AdminError(Exception):
    """The handler refused or failed the operation; message is shown to the operator."""

    def __init__(self, message, code=CODE_FAILED):
        super().__init__(message)
        self.message = str(message)
        self.code = code if code else CODE_FAILED


class UsageError(Exception):
    """The line does not follow the grammar."""


class IAdminHandler(Interface):
    """What executes admin requests (the daemon's controller side)."""

    def execute(request):
        """Execute an L{AdminRequest}.

        @return: a dict payload (or a Deferred firing one):
            - status: the status payload (see L{cpro.statusview});
            - alerts: {"alerts": [{"time", "server", "module", "id", "level", "message"}]};
            - cluster/group/resource: {} or optional per-server results
              {"servers": [{"name", "code", "message"}]} (code 0 = done on
              that server) and/or {"message": "text" or [lines]}.
        @raise AdminError: (or fail with it) when the operation is refused or
            fails; its message and code go to the client.
        """


def _name(value, what):
    if not value or len(value) > MAX_NAME or not value.isprintable():
        raise UsageError(f"invalid {what} name {value!r}")
    return value


def _take_options(args, allowed):
    """Split '--server S' / '--server=S' / '--all' out of args. Returns (positional, options)."""
    positional, options = [], {}
    i = 0
    while i < len(args):
        arg = args[i]
        key, _, inline = arg.partition("=")
        if key.startswith("--"):
            name = key[2:]
            if name not in allowed:
                raise UsageError(f"unknown option {key}")
            if allowed[name]:  # takes a value
                if inline:
                    value = inline
                elif "=" in arg:
                    raise UsageError(f"option {key} needs a value")
                else:
                    i += 1
                    if i >= len(args):
                        raise UsageError(f"option {key} needs a value")
                    value = args[i]
                options[name] = value
            else:
                if "=" in arg:
                    raise UsageError(f"option {key} takes no value")
                options[name] = True
        else:
            positional.append(arg)
        i += 1
    return positional, options


def parse_request(words):
    """Turn the words of one line (without the 'json' prefix) into an AdminRequest.

    @raise UsageError: with the text to show ('usage: ...' or 'unknown command ...').
    """
    verb, args = words[0], words[1:]
    if verb not in USAGE:
        raise UsageError(f"unknown command {verb!r} (try 'help')")
    usage = UsageError(f"usage: {USAGE[verb]}")
    try:
        if verb in ("help", "quit"):
            if args:
                raise usage
            return AdminRequest(verb)
        if verb == "status":
            if len(args) > 1 or (args and args[0] not in STATUS_VIEWS):
                raise usage
            return AdminRequest(verb, action=args[0] if args else None)
        if verb == "alerts":
            if len(args) > 1:
                raise usage
            count = DEFAULT_ALERT_COUNT
            if args:
                # ASCII digits only, bounded: str.isdigit() accepts '²', which
                # int() refuses, and int() refuses over 4300 digits.
                if not _ALERT_COUNT.fullmatch(args[0]) or not 1 <= int(args[0]) <= MAX_ALERT_COUNT:
                    raise usage
                count = int(args[0])
            return AdminRequest(verb, count=count)
        if verb == "cluster":
            positional, options = _take_options(args, {"all": False})
            if len(positional) != 1 or positional[0] not in CLUSTER_ACTIONS:
                raise usage
            return AdminRequest(verb, action=positional[0], all=bool(options.get("all")))
        if verb == "group":
            positional, options = _take_options(args, {"server": True})
            if not 1 <= len(positional) <= 2 or positional[0] not in GROUP_ACTIONS:
                raise usage
            target = _name(positional[1], "group") if len(positional) == 2 else None
            server = _name(options["server"], "server") if "server" in options else None
            return AdminRequest(verb, action=positional[0], target=target, server=server)
        if verb == "resource":
            positional, options = _take_options(args, {"server": True})
            if len(positional) != 2 or positional[0] not in RESOURCE_ACTIONS:
                raise usage
            server = _name(options["server"], "server") if "server" in options else None
            return AdminRequest(
                verb, action=positional[0], target=_name(positional[1], "resource"), server=server
            )
        if verb == "monitor":
            return _parse_monitor(args, usage)
    except UsageError as e:
        if str(e).startswith("usage:"):
            raise
        raise UsageError(f"{e}; usage: {USAGE[verb]}") from None
    raise AssertionError(verb)  # pragma: no cover - every verb returns above


def _parse_monitor(args, usage):
    positional, options = _take_options(args, {"server": True})
    if not positional:
        raise usage
    action, rest = positional[0], positional[1:]
    server = _name(options["server"], "server") if "server" in options else None
    if action in MONITOR_ACTIONS:
        if len(rest) > 1:
            raise usage
        target = _name(rest[0], "monitor") if rest else None
        return AdminRequest("monitor", action=action, target=target, server=server)
    if action == "dummy":
        if not 1 <= len(rest) <= 2 or rest[0] not in SWITCHES:
            raise usage
        target = _name(rest[1], "monitor") if len(rest) == 2 else None
        return AdminRequest("monitor", action=action, target=target, server=server, switch=SWITCHES[rest[0]])
    if action == "recovery":
        if len(rest) != 1 or rest[0] not in SWITCHES or server is not None:
            raise usage
        return AdminRequest("monitor", action=action, switch=SWITCHES[rest[0]])
    raise usage


def _json_default(value):
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _one_line(text):
    return " ".join(str(text).splitlines()) or "error"


class AdminProtocol(LineOnlyReceiver):
    """One admin session. The handler comes from the factory.

    With a clock (anything with callLater and seconds) the session closes
    itself after idle_timeout seconds without a request in progress and
    without a complete line received; without one it never times out.
    L{idle_since} is when it became idle (None while a request is in
    progress or once the connection is lost): the factory evicts by it.
    """

    MAX_LENGTH = 4096
    MAX_PENDING = 32
    delimiter = b"\n"
    log = Logger()
    factory = None

    def __init__(self, handler=None, clock=None, idle_timeout=DEFAULT_IDLE_TIMEOUT):
        self.handler = handler
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.idle_since = None
        self._idle_call = None
        self._queue = collections.deque()
        self._busy = False
        self._draining = False
        self._gone = False

    def connectionMade(self):
        self._update_idle()

    def connectionLost(self, reason):
        # A request in progress still completes (an operator's group move
        # must not be cancelled by a closed terminal); its reply is dropped.
        self._gone = True
        self._queue.clear()
        self._update_idle()
        if self.factory is not None:
            self.factory.session_ended(self)

    def lineLengthExceeded(self, line):
        self._write_lines([f"ERR line too long (max {self.MAX_LENGTH} bytes)"])
        self._queue.clear()
        self.transport.loseConnection()

    def lineReceived(self, line):
        if self._gone or self.transport.disconnecting:
            return
        if len(self._queue) >= self.MAX_PENDING:
            self._write_lines([f"ERR too many pending requests (max {self.MAX_PENDING})"])
            self._queue.clear()
            self.transport.loseConnection()
            return
        self._queue.append(line)
        self._drain()
        self._update_idle()

    # -- idleness ---------------------------------------------------------------

    def _update_idle(self):
        """Re-arm the idle timer if nothing is in progress, else cancel it.

        Called on connection, after every complete line and after every
        finished request, so each of them restarts the idle period.
        """
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        if self._gone or self._busy or self._queue:
            self.idle_since = None
            return
        if self.clock is None:
            self.idle_since = 0.0  # no clock: idle, but never timed out
            return
        self.idle_since = self.clock.seconds()
        self._idle_call = self.clock.callLater(self.idle_timeout, self._idle_expired)

    def _idle_expired(self):
        self._idle_call = None
        if self.transport.disconnecting:
            # Closing already (timed out, quit, refused line) and still not
            # flushed a timeout later: the client does not read. Free the slot.
            self.transport.abortConnection()
            return
        self.log.info("admin connection idle for {timeout:g} s: closing", timeout=self.idle_timeout)
        self._write_lines([f"ERR closed: no request for {self.idle_timeout:g} s (idle timeout)"])
        self.transport.loseConnection()
        self._idle_call = self.clock.callLater(self.idle_timeout, self._idle_expired)

    def evict(self):
        """Abort this idle session at once: a new client needs its slot.

        Aborted, not closed, so a client that does not read cannot keep the
        file descriptor (the slot is already given away)."""
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        self.idle_since = None
        self.transport.abortConnection()

    # -- request handling -----------------------------------------------------

    def _drain(self):
        if self._draining:
            return  # the outer loop picks up the next line
        self._draining = True
        try:
            while self._queue and not self._busy and not self._gone:
                self._handle(self._queue.popleft())
        finally:
            self._draining = False

    def _handle(self, raw):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._reply_error(False, CODE_USAGE, "line is not valid UTF-8")
            return
        try:
            words = shlex.split(text)
        except ValueError as e:  # unbalanced quotes
            json_mode = text.split(None, 1)[:1] == ["json"]
            self._reply_error(json_mode, CODE_USAGE, f"syntax error: {e}")
            return
        json_mode = bool(words) and words[0] == "json"
        if json_mode:
            words = words[1:]
        try:
            if json_mode and not words:
                raise UsageError("usage: json VERB [ARGS...]")
            if not words:
                return  # an empty line in the shell: nothing to answer
            request = parse_request(words)
        except UsageError as e:
            self._reply_error(json_mode, CODE_USAGE, str(e))
            return
        except Exception:  # a parser bug: logged, answered, never raised into the reactor
            self.log.failure("admin request {line!r} could not be parsed", line=text[:200])
            self._reply_error(json_mode, CODE_INTERNAL, "internal error: the request could not be parsed")
            return

        if request.verb == "help":
            if json_mode:
                self._reply_ok(True, request, {"help": HELP_LINES})
            else:
                self._write_lines(HELP_LINES + ["OK"])
            return
        if request.verb == "quit":
            self._reply_ok(json_mode, request, {})
            self.transport.loseConnection()
            return

        self._busy = True
        self.log.info("admin request: {line}", line=text)
        d = defer.maybeDeferred(self.handler.execute, request)
        d.addCallback(self._executed, json_mode, request)
        d.addErrback(self._failed, json_mode, request)
        d.addErrback(lambda f: self.log.failure("admin reply failed", f))  # never unhandled
        d.addBoth(self._finished)

    def _executed(self, payload, json_mode, request):
        if not isinstance(payload, dict):
            raise TypeError(f"handler returned {type(payload).__name__}, expected dict")
        self._reply_ok(json_mode, request, payload)

    def _failed(self, failure, json_mode, request):
        if failure.check(AdminError):
            e = failure.value
            self._reply_error(json_mode, e.code, e.message)
        else:
            self.log.failure("admin request {request} failed", failure, request=request)
            text = str(failure.value) or type(failure.value).__name__
            self._reply_error(json_mode, CODE_INTERNAL, f"internal error: {text}")

    def _finished(self, _):
        self._busy = False
        self._drain()
        self._update_idle()

    # -- replies --------------------------------------------------------------

    def _write_lines(self, lines):
        if self._gone:
            return
        self.transport.write(("\n".join(lines) + "\n").encode("utf-8"))

    def _reply_ok(self, json_mode, request, payload):
        if json_mode:
            reply = {"result": {"code": CODE_OK, "message": ""}}
            reply.update((k, v) for k, v in payload.items() if k != "result")
            # Encode before writing so a bad payload becomes an error reply.
            line = json.dumps(reply, default=_json_default, ensure_ascii=False)
            self._write_lines([line])
        else:
            self._write_lines(self._render(request, payload) + ["OK"])

    def _reply_error(self, json_mode, code, message):
        message = _one_line(message)
        if json_mode:
            self._write_lines([json.dumps({"result": {"code": code, "message": message}})])
        else:
            self._write_lines([f"ERR {message}"])

    def _render(self, request, payload):
        if request.verb == "status":
            return statusview.render_view(request.action, payload).rstrip("\n").split("\n")
        if request.verb == "alerts":
            return statusview.render_alerts(payload).rstrip("\n").split("\n")
        lines = []
        message = payload.get("message")
        if isinstance(message, str) and message:
            lines += message.splitlines()
        elif isinstance(message, list):
            lines += [str(m) for m in message]
        if isinstance(payload.get("servers"), list) and payload["servers"]:
            label = (request.action or "").capitalize()
            lines += statusview.render_operation(payload, label).rstrip("\n").split("\n")
        return lines


class _Refusal(Protocol):
    """Answers a connection over the limit with one line and closes it."""

    def __init__(self, message):
        self.message = message

    def connectionMade(self):
        self.transport.write(f"ERR {self.message}\n".encode("utf-8"))
        self.transport.loseConnection()

    def dataReceived(self, data):
        pass  # the client's request, sent before it read the refusal


class AdminFactory(Factory):
    """Builds admin sessions sharing one handler; bounds them.

    At most max_connections sessions (default 32) are open. A new client
    over the limit takes the slot of the session idle for the longest time
    (which is aborted), so that clpstat always gets an answer however many
    clients sit idle; only when every session has a request in progress is
    the new one refused with a one-line ERR. Sessions idle for idle_timeout
    seconds (default 30) close themselves. clock (callLater, seconds) is the
    reactor in the daemon and a task.Clock in tests.
    """

    log = Logger()

    def __init__(self, handler, clock, idle_timeout=DEFAULT_IDLE_TIMEOUT,
                 max_connections=DEFAULT_MAX_CONNECTIONS):
        if not max_connections >= 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections!r}")
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive, not {idle_timeout!r}")
        self.handler = handler
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.sessions = {}  # AdminProtocol -> None, oldest connection first
        self.counters = collections.Counter()  # 'evicted', 'refused'

    def buildProtocol(self, addr):
        if len(self.sessions) >= self.max_connections and not self._make_room():
            self.counters["refused"] += 1
            if worth_logging(self.counters["refused"]):
                self.log.warn("admin connection refused: all {n} connections have a request in progress"
                              " ({count} refused so far)", n=self.max_connections,
                              count=self.counters["refused"])
            return _Refusal(f"too many admin connections: all {self.max_connections} have a request"
                            " in progress; try again later")
        proto = AdminProtocol(self.handler, self.clock, self.idle_timeout)
        proto.factory = self
        self.sessions[proto] = None
        return proto

    def _make_room(self):
        """Evict the session idle for the longest time; False if none is idle."""
        idle = [p for p in self.sessions if p.idle_since is not None]
        if not idle:
            return False
        victim = min(idle, key=lambda p: p.idle_since)  # ties: the oldest connection
        del self.sessions[victim]
        self.counters["evicted"] += 1
        if worth_logging(self.counters["evicted"]):
            self.log.info("admin connection limit ({n}) reached: closed the longest-idle connection"
                          " ({count} so far)", n=self.max_connections, count=self.counters["evicted"])
        victim.evict()
        return True

    def session_ended(self, proto):
        """A session's connection is lost: its slot is free (if not given away already)."""
        self.sessions.pop(proto, None)


# -- listening ------------------------------------------------------------------


class AdminEndpointError(Exception):
    """The admin endpoint description is refused or cannot be used."""


class AdminAddressInUse(AdminEndpointError):
    """Another process answers on the admin UNIX socket."""


def _split_description(description):
    """Split an endpoint description on unescaped ':' (backslash escapes)."""
    parts, current, escaped = [], [], False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _escape(value):
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _socket_answers(path):
    """True when a process accepts connections on the UNIX socket at path.

    Non-blocking, so a hung owner with a full backlog (EAGAIN) also counts as
    alive and the reactor is never blocked.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
        return True
    except BlockingIOError:
        return True
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        if e.errno == errno.EAGAIN:
            return True
        raise
    finally:
        probe.close()


def _prepare_unix(path):
    """Create the parent directory (0700) and remove a stale socket file."""
    if not os.path.isabs(path):
        raise AdminEndpointError(f"admin socket path must be absolute: {path!r}")
    if len(os.fsencode(path)) > 107:
        raise AdminEndpointError(f"admin socket path {path} is too long (max 107 bytes)")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
        os.chmod(parent, 0o700)  # makedirs' mode is filtered by the umask
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise AdminEndpointError(f"admin socket path {path} exists and is not a socket")
    if _socket_answers(path):
        raise AdminAddressInUse(
            f"admin socket {path} is in use by another process (is cpro already running?)"
        )
    os.unlink(path)


def _unix_description(parts):
    path = parts[1] if len(parts) > 1 else ""
    for part in parts[1:]:
        if part.startswith("path="):
            path = part[5:]
    if not path:
        raise AdminEndpointError("unix admin endpoint needs a path (unix:/run/cpro/cpro.sock)")
    _prepare_unix(path)
    # Socket 0600: root-only. lockfile=0: stale sockets are handled above.
    return f"unix:{_escape(path)}:mode=600:lockfile=0"


def _tcp_description(parts, description):
    interface = None
    for part in parts[2:]:
        if part.startswith("interface="):
            interface = part[len("interface=") :]
    try:
        loopback = interface is not None and ipaddress.ip_address(interface).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise AdminEndpointError(
            f"admin endpoint {description!r} refused: a TCP admin port must listen on a loopback"
            " interface only (e.g. tcp:29099:interface=127.0.0.1 or tcp6:29099:interface=\\:\\:1)"
        )
    return description


def listen_admin(reactor, endpoint_description, handler, idle_timeout=DEFAULT_IDLE_TIMEOUT,
                 max_connections=DEFAULT_MAX_CONNECTIONS):
    """Listen for admin sessions. Returns a Deferred firing the listening port.

    endpoint_description: 'unix:PATH' (or a bare absolute path), or
    'tcp:PORT:interface=127.0.0.1' / 'tcp6:PORT:interface=\\:\\:1' (loopback only).
    idle_timeout and max_connections bound the sessions (see L{AdminFactory});
    the reactor is their clock.
    Fails with AdminAddressInUse or AdminEndpointError.
    """
    try:
        description = endpoint_description
        if description.startswith("/"):
            description = "unix:" + _escape(description)
        parts = _split_description(description)
        scheme = parts[0]
        if scheme == "unix":
            final = _unix_description(parts)
        elif scheme in ("tcp", "tcp6"):
            final = _tcp_description(parts, description)
        else:
            raise AdminEndpointError(
                f"admin endpoint {endpoint_description!r} refused: use unix:PATH or a loopback tcp: port"
            )
        endpoint = serverFromString(reactor, final)
        factory = AdminFactory(handler, reactor, idle_timeout=idle_timeout, max_connections=max_connections)
        return endpoint.listen(factory)
    except Exception:
        return defer.fail()
