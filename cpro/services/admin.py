"""The admin endpoint: where the clp* commands' requests arrive, and what carries them out.

The daemon listens on a root-only UNIX socket (or a loopback TCP port) for
sessions of the admin line protocol, whose grammar and replies are the codec
L{cpro.protocols.admin}. This module holds the I/O around it:

  - L{AdminHandler}: the operator request dispatch, admin verbs -> controller
    operations (an L{IAdminHandler});
  - L{AdminProtocol}: one session; reads lines, runs their requests in order
    through the handler, writes the replies;
  - L{AdminFactory}: the sessions' bounds;
  - L{listen_admin}: the endpoint (UNIX socket file and directory, loopback-only
    TCP);
  - L{AdminService}: all of it as a service of the node.

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
import os
import socket
import stat

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from cpro.cluster.controller import OperationError
from cpro.cluster.operations import OperatorRequests
from cpro.cluster.status import cluster_status
from cpro.interfaces import IAdminHandler
from cpro.protocols import admin as codec
from cpro.protocols.admin import CODE_INTERNAL, CODE_USAGE, AdminError, UsageError
from cpro.protocols.ratelog import worth_logging

DEFAULT_IDLE_TIMEOUT = 30.0  # seconds without a request before an admin connection is closed
DEFAULT_MAX_CONNECTIONS = 32  # concurrent admin connections (the longest-idle one makes room)


# -- the operator request dispatch ------------------------------------------------


@implementer(IAdminHandler)
class AdminHandler:
    """Admin verbs -> controller operations.

    node: the L{cpro.services.node.ClusterNode} whose controller, heartbeat
    counters and alert log the requests reach.
    """

    def __init__(self, node):
        self.node = node
        self.requests = OperatorRequests(node.controller)

    def execute(self, request):
        r = self.requests
        verb, action = request.verb, request.action
        try:
            if verb == "status":
                status = cluster_status(self.node.controller)
                status["counters"] = self.node.heartbeat.counters()
                if self.node.controller.monitors is not None:
                    status["reactor_lag"] = self.node.controller.monitors.lag_report()
                return status
            if verb == "alerts":
                alerts = self.node.alerts.recent(request.count or 100)
                return {"alerts": [{"time": a.time, "server": a.server, "module": a.module, "id": a.event_id,
                                    "level": a.level.value, "message": a.message} for a in alerts]}
            if verb == "cluster":
                return r.cluster(action, bool(request.all)).addErrback(self._refused)
            if verb == "group":
                op = {"start": r.group_start, "stop": r.group_stop, "move": r.group_move}[action]
                return op(request.target, request.server).addErrback(self._refused)
            if verb == "monitor":
                return r.monitor(action, request.target, request.server, request.switch).addErrback(self._refused)
            if verb == "config":
                reconfig = self.node.reconfig
                op = {"check": reconfig.check, "push": reconfig.push, "pull": reconfig.pull}[action]
                return defer.maybeDeferred(op, request.target).addErrback(self._refused)
            if verb == "resource":
                op = {"start": r.resource_start, "stop": r.resource_stop}[action]
                return defer.maybeDeferred(op, request.target, request.server).addErrback(self._refused)
        except OperationError as e:
            raise AdminError(str(e))
        raise AdminError(f"unsupported request: {verb} {action or ''}".strip())

    @staticmethod
    def _refused(failure):
        failure.trap(OperationError)
        raise AdminError(str(failure.value))


# -- sessions ---------------------------------------------------------------------


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
        self._write(codec.notice(f"line too long (max {self.MAX_LENGTH} bytes)"))
        self._queue.clear()
        self.transport.loseConnection()

    def lineReceived(self, line):
        if self._gone or self.transport.disconnecting:
            return
        if len(self._queue) >= self.MAX_PENDING:
            self._write(codec.notice(f"too many pending requests (max {self.MAX_PENDING})"))
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
        self._write(codec.notice(f"closed: no request for {self.idle_timeout:g} s (idle timeout)"))
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
        try:
            line = codec.decode_line(raw)
        except codec.BadLine as e:
            self._write(codec.error_reply(e.json_mode, CODE_USAGE, str(e)))
            return
        json_mode = line.json_mode
        if not line.words:
            return  # an empty line in the shell: nothing to answer
        try:
            request = codec.parse_request(line.words)
        except UsageError as e:
            self._write(codec.error_reply(json_mode, CODE_USAGE, str(e)))
            return
        except Exception:  # a parser bug: logged, answered, never raised into the reactor
            self.log.failure("admin request {line!r} could not be parsed", line=line.text[:200])
            self._write(codec.error_reply(json_mode, CODE_INTERNAL, "internal error: the request could not be parsed"))
            return

        if request.verb == "help":
            self._write(codec.help_reply(json_mode))
            return
        if request.verb == "quit":
            self._write(codec.ok_reply(json_mode, request, {}))
            self.transport.loseConnection()
            return

        self._busy = True
        self.log.info("admin request: {line}", line=line.text)
        d = defer.maybeDeferred(self.handler.execute, request)
        d.addCallback(self._executed, json_mode, request)
        d.addErrback(self._failed, json_mode, request)
        d.addErrback(lambda f: self.log.failure("admin reply failed", f))  # never unhandled
        d.addBoth(self._finished)

    def _executed(self, payload, json_mode, request):
        # Rendered whole before anything is written: a bad payload becomes an error reply.
        self._write(codec.ok_reply(json_mode, request, payload))

    def _failed(self, failure, json_mode, request):
        if failure.check(AdminError):
            e = failure.value
            self._write(codec.error_reply(json_mode, e.code, e.message))
        else:
            self.log.failure("admin request {request} failed", failure, request=request)
            text = str(failure.value) or type(failure.value).__name__
            self._write(codec.error_reply(json_mode, CODE_INTERNAL, f"internal error: {text}"))

    def _finished(self, _):
        self._busy = False
        self._drain()
        self._update_idle()

    def _write(self, reply):
        """Send reply bytes from the codec, unless the client has gone."""
        if not self._gone:
            self.transport.write(reply)


class _Refusal(Protocol):
    """Answers a connection over the limit with one line and closes it."""

    def __init__(self, message):
        self.message = message

    def connectionMade(self):
        self.transport.write(codec.notice(self.message))
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


# -- the service ------------------------------------------------------------------


class AdminService(service.Service):
    """The admin endpoint as a service of the node.

    It does not listen by itself when started: the node calls L{listen} once
    the cluster services run, so that a refused or busy endpoint ends the
    daemon with its documented exit code and no request arrives before there
    is something to answer it. Stopping closes the listening port (sessions
    in progress finish on their own).
    """

    name = "admin"

    def __init__(self, reactor, endpoint, handler, idle_timeout=DEFAULT_IDLE_TIMEOUT,
                 max_connections=DEFAULT_MAX_CONNECTIONS):
        self.reactor = reactor
        self.endpoint = endpoint
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.port = None

    def listen(self):
        """Listen for admin sessions. A Deferred firing the listening port;
        fails with L{AdminAddressInUse} or L{AdminEndpointError} (see L{listen_admin})."""
        d = listen_admin(self.reactor, self.endpoint, self.handler, idle_timeout=self.idle_timeout,
                         max_connections=self.max_connections)
        d.addCallback(self._listening)
        return d

    def _listening(self, port):
        self.port = port
        return port

    def stopService(self):
        """Stop listening; a Deferred firing once the port is closed. Idempotent."""
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)
