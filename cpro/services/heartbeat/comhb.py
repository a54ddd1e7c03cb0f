"""The COM heartbeat path (comhb): heartbeats over an RS-232C serial line.

A serial line links exactly two servers. Each end is the local server's
device@<device> (a tty path such as /dev/ttyS0, type com); the peer is the
one other server that has this device id. The line runs raw 8N1 without
flow control at the path's baud rate, through Twisted's C{SerialPort}
(pyserial) on the injected reactor: no blocking reads or writes.

Beats are written as heartbeat packets (L{cpro.protocols.heartbeat}), one
after another; L{cpro.protocols.serialframe.StreamDeframer} finds them again
in what is read, across line noise, cut frames and restarts of the far end.
Every frame is treated as hostile until proven otherwise, like a LAN
datagram: bad ones are counted (L{COUNTERS}) and dropped with a rate-limited
log, and nothing raises into the reactor.

A serial line comes and goes (a USB adapter unplugged, a console server or,
in the lab, socat restarted): a device that is missing or cannot be opened
is logged once, counted, and tried again every few heartbeat intervals; a
line lost while open (end of file, read or write error) is reopened the same
way. None of it stops the daemon or the other paths.

While the line is congested (the far end does not read and no flow control
drains it), beats are skipped rather than queued: a queued beat would reach
the peer late and make it believe this server alive longer than it is.
"""

from serial import EIGHTBITS, PARITY_NONE, STOPBITS_ONE
from twisted.internet import defer, error
from twisted.internet.protocol import Protocol
from twisted.internet.serialport import SerialPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cpro.config.heartbeats import HeartbeatKindSchema
from cpro.interfaces import IHeartbeatPath
from cpro.plugins import HEARTBEAT_KINDS
from cpro.protocols import serialframe
from cpro.protocols.heartbeat import MAX_PACKET, HeartbeatPacket, ReplayGuard
from cpro.protocols.ratelog import worth_logging
from cpro.services.heartbeat.base import HeartbeatConfigError, deliver

log = Logger()

KIND = "comhb"
# The rates clp.conf may give as <baudrate>; both ends of a line use the same.
BAUD_RATES = frozenset({1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200})
DEFAULT_BAUD_RATE = 19200

COUNTERS = (
    "received",  # frames found in the stream (whole or not)
    "accepted",  # handed to on_beat
    "malformed",  # bad header, impossible length or bad body
    "unauthenticated",  # a whole frame whose HMAC does not match (wrong key or line noise)
    "foreign",  # another cluster's heartbeat
    "unknown_sender",  # authentic, but not from the peer of this line (or our own beat echoed)
    "replayed",
    "stale",  # from an older incarnation of the sender
    "truncated",  # a frame cut short (cable pulled mid-frame, far end restarted)
    "resync",  # times the reader had to hunt for the start of the next frame
    "garbage_bytes",  # bytes skipped that belonged to no frame (line noise)
    "bytes_received",
    "sent",  # beats written to the line
    "send_errors",  # beats the line refused (write error)
    "line_down",  # beats not sent because the line was not open
    "backlog",  # beats skipped because the line was still busy with earlier ones
    "open_errors",  # failed attempts to open the device
    "opened",  # successful opens (1 + reopens)
    "line_lost",  # times an open line was lost (end of file, I/O error)
)

# The line is tried again every REOPEN_INTERVALS heartbeat intervals
# (never more often than MIN_REOPEN seconds) while it cannot be opened.
REOPEN_INTERVALS = 3
MIN_REOPEN = 0.2

# Bytes the transport may hold unwritten before beats are skipped: a couple
# of packets, so that a beat is never more than about two beats late.
WRITE_BACKLOG = 2 * MAX_PACKET


def _describe(exc):
    return str(exc) or exc.__class__.__name__


def _describe_loss(reason):
    if reason is None or reason.check(error.ConnectionDone):
        # What a tty read returns when its device went away (a pty whose
        # master closed, an unplugged USB adapter).
        return "end of file: the device went away"
    return reason.getErrorMessage()


class SerialLine(SerialPort):
    """A serial port transport that keeps at most L{WRITE_BACKLOG} bytes unwritten
    before pausing its producer, and that can be closed at once."""

    bufferSize = WRITE_BACKLOG

    def abortConnection(self):
        """Close now, dropping unwritten bytes (a stale beat is worth nothing)."""
        if self.disconnected:
            return
        self.stopReading()
        self.stopWriting()
        self.connectionLost(Failure(error.ConnectionDone("serial line closed")))


def open_serial_line(reactor, protocol, device, baud_rate):
    """Open C{device} raw 8N1 at C{baud_rate}, no flow control; the L{SerialLine}.

    @raise Exception: whatever pyserial raises for a device that is missing
        or cannot be opened (serial.SerialException, OSError).
    """
    return SerialLine(protocol, device, reactor, baudrate=baud_rate, bytesize=EIGHTBITS,
                      parity=PARITY_NONE, stopbits=STOPBITS_ONE, xonxoff=0, rtscts=0)


class _LineProtocol(Protocol):
    """What the serial transport talks to: hands everything to the path, which
    knows whether this line is still the current one. Also the transport's
    streaming producer, so that the path hears when writes back up."""

    def __init__(self, path):
        self.path = path
        self.paused = False

    def dataReceived(self, data):
        try:
            self.path._data_received(self, data)
        except Exception:
            log.failure("heartbeat path {path}: error handling serial data", path=self.path.name)

    def connectionLost(self, reason=None):
        try:
            self.path._line_lost(self, reason)
        except Exception:
            log.failure("heartbeat path {path}: error handling the loss of the line",
                        path=self.path.name)

    # IPushProducer
    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False

    def stopProducing(self):
        self.paused = False


@implementer(IHeartbeatPath)
class ComHeartbeatPath:
    """One COM heartbeat resource: this server's end of a serial line to its peer.

    @param reactor: IReactorTime (+ IReactorFDSet for the default opener).
    @param config: the L{cpro.config.model.ClusterConfig}.
    @param local: name of the local server.
    @param heartbeat: the L{cpro.config.model.HeartbeatConfig} of this path.
    @param incarnation: the local daemon's L{Incarnation}.
    @param on_beat: C{on_beat(path_name, packet)} for each authentic, fresh
        packet from the peer.
    @param opener: C{opener(protocol, device, baud_rate)} -> transport
        (which calls C{protocol.makeConnection}, offers C{write},
        C{registerProducer} and C{abortConnection}); default: the real serial
        line (L{open_serial_line}).
    @param reopen_delay: seconds between attempts to open the line; default
        L{REOPEN_INTERVALS} heartbeat intervals.
    @raise HeartbeatConfigError: the local server has no such device, or not
        exactly one other server has it.
    """

    kind = KIND

    def __init__(self, reactor, config, local, heartbeat, incarnation, on_beat,
                 opener=None, reopen_delay=None, key=None):
        if heartbeat.kind != KIND:
            raise HeartbeatConfigError(f"{heartbeat.name}: not a COM heartbeat ({heartbeat.kind})")
        self.name = heartbeat.name
        self._reactor = reactor
        self._cluster = config.name
        self._key = key if key is not None else config.key  # bytes or a Keyring
        self._local = local
        self._incarnation = incarnation
        self._on_beat = on_beat
        self.baud_rate = heartbeat.baud_rate
        if not isinstance(self.baud_rate, int) or self.baud_rate <= 0:
            raise HeartbeatConfigError(f"{self.name}: bad baud rate {self.baud_rate!r}")
        self.device, self.peer = self._line_ends(config, local, heartbeat)
        self._opener = opener or (lambda proto, device, baud: open_serial_line(reactor, proto, device, baud))
        self._reopen_delay = (reopen_delay if reopen_delay is not None
                              else max(REOPEN_INTERVALS * config.hb_interval, MIN_REOPEN))

        self._guard = ReplayGuard()
        self._deframer = serialframe.StreamDeframer(self._key, self._cluster)
        self._seq = 0
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._listening = False
        self._protocol = None  # the current line's protocol, None when closed
        self._transport = None
        self._reopen_call = None
        self._open_problem = None  # last open error logged in the current streak
        self._failed_opens = 0  # attempts failed since the line was last open
        self._send_problem = None
        self._close_waiters = []

    def _line_ends(self, config, local, heartbeat):
        me = config.server(local)
        if me is None:
            raise HeartbeatConfigError(f"{self.name}: server {local} is not in the configuration")
        device = me.device(heartbeat.device)
        if device is None or not device.info:
            raise HeartbeatConfigError(
                f"{self.name}: server {local} has no serial device (device {heartbeat.device}, "
                f"info = tty path)")
        others = [s.name for s in config.servers
                  if s.name != local and s.device(heartbeat.device) is not None]
        if not others:
            raise HeartbeatConfigError(
                f"{self.name}: no other server has device {heartbeat.device}: "
                f"a serial line needs a server at its other end")
        if len(others) > 1:
            raise HeartbeatConfigError(
                f"{self.name}: a serial line links two servers, but device {heartbeat.device} "
                f"is on {local} and on {', '.join(others)}")
        return device.info, others[0]

    # -- IHeartbeatPath -----------------------------------------------------------

    def start_listening(self):
        """Open the line. Idempotent; never raises for a missing device (retried)."""
        if self._listening:
            return
        self._listening = True
        self._try_open()

    def stop_listening(self):
        """Close the line and stop reopening. A Deferred firing when closed (never failing)."""
        self._listening = False
        self._cancel_reopen()
        if self._transport is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._close_waiters.append(d)
        try:
            self._transport.abortConnection()
        except Exception:
            log.failure("heartbeat path {path}: error closing {device}", path=self.name,
                        device=self.device)
            self._protocol = None
            self._transport = None
            self._closed()
        return d

    def send_beat(self, digest):
        """Write one heartbeat carrying C{digest} to the line. Never raises."""
        if self._transport is None:
            self._counters["line_down"] += 1
            return
        if self._protocol.paused:
            self._counters["backlog"] += 1
            if worth_logging(self._counters["backlog"]):
                log.warn("heartbeat path {path}: {device} is not draining; beat skipped "
                         "({count} so far)", path=self.name, device=self.device,
                         count=self._counters["backlog"])
            return
        self._seq += 1
        packet = HeartbeatPacket(self._cluster, self._local, self._incarnation, self._seq, digest)
        try:
            data = serialframe.frame(packet, self._key)
        except Exception:
            log.failure("heartbeat path {path}: cannot encode a heartbeat", path=self.name)
            return
        try:
            self._transport.write(data)
        except Exception as e:
            self._counters["send_errors"] += 1
            self._send_state(_describe(e))
        else:
            self._counters["sent"] += 1
            self._send_state(None)

    def counters(self):
        """A copy of this path's counters (see L{COUNTERS})."""
        return dict(self._counters)

    def forget(self, server):
        """Accept the next authentic packet of C{server}, whatever its incarnation."""
        self._guard.forget(server)

    # -- status --------------------------------------------------------------------

    def is_open(self):
        return self._transport is not None

    # -- the line ---------------------------------------------------------------------

    def _try_open(self):
        self._reopen_call = None
        if not self._listening or self._transport is not None:
            return
        protocol = _LineProtocol(self)
        self._protocol = protocol
        try:
            transport = self._opener(protocol, self.device, self.baud_rate)
        except Exception as e:
            self._protocol = None
            self._open_failed(_describe(e))
            return
        if self._protocol is not protocol:
            return  # lost again during the open itself (already handled)
        self._transport = transport
        try:
            transport.registerProducer(protocol, True)
        except Exception:
            log.failure("heartbeat path {path}: cannot watch the write backlog of {device}",
                        path=self.name, device=self.device)
        self._counters["opened"] += 1
        if self._failed_opens:
            log.info("heartbeat path {path}: serial line {device} to {peer} open again after "
                     "{failed} failed attempt(s)", path=self.name, device=self.device,
                     peer=self.peer, failed=self._failed_opens)
        else:
            log.info("heartbeat path {path} ({kind}): serial line {device} to {peer} open at "
                     "{baud} baud", path=self.name, kind=KIND, device=self.device,
                     peer=self.peer, baud=self.baud_rate)
        self._failed_opens = 0
        self._open_problem = None

    def _open_failed(self, problem):
        self._counters["open_errors"] += 1
        self._failed_opens += 1
        if problem != self._open_problem:
            self._open_problem = problem
            log.error("heartbeat path {path}: cannot open serial device {device}: {problem}; "
                      "retrying every {delay:.1f} s", path=self.name, device=self.device,
                      problem=problem, delay=self._reopen_delay)
        elif worth_logging(self._failed_opens):
            log.warn("heartbeat path {path}: serial device {device} still cannot be opened "
                     "({count} attempts): {problem}", path=self.name, device=self.device,
                     count=self._failed_opens, problem=problem)
        self._schedule_reopen()

    def _schedule_reopen(self):
        if self._listening and self._reopen_call is None:
            self._reopen_call = self._reactor.callLater(self._reopen_delay, self._try_open)

    def _cancel_reopen(self):
        call, self._reopen_call = self._reopen_call, None
        if call is not None and call.active():
            call.cancel()

    def _line_lost(self, protocol, reason):
        if protocol is not self._protocol:
            return  # a line closed earlier
        was_open = self._transport is not None
        self._protocol = None
        self._transport = None
        for kind, detail in self._deframer.reset():
            self._event(kind, detail)
        if self._listening:
            self._counters["line_lost"] += 1
            log.warn("heartbeat path {path}: serial line {device} lost ({reason}); "
                     "reopening in {delay:.1f} s", path=self.name, device=self.device,
                     reason=_describe_loss(reason),
                     delay=self._reopen_delay)
            self._schedule_reopen()
        elif was_open:
            log.info("heartbeat path {path}: serial line {device} closed", path=self.name,
                     device=self.device)
        self._closed()

    def _closed(self):
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)

    def _send_state(self, problem):
        if problem == self._send_problem:
            return
        self._send_problem = problem
        if problem is None:
            log.info("heartbeat path {path}: writing to {device} works again", path=self.name,
                     device=self.device)
        else:
            log.warn("heartbeat path {path}: cannot write to {device}: {problem}",
                     path=self.name, device=self.device, problem=problem)

    # -- what is read ---------------------------------------------------------------

    def _data_received(self, protocol, data):
        if protocol is not self._protocol:
            return
        self._counters["bytes_received"] += len(data)
        for kind, detail in self._deframer.feed(data):
            self._event(kind, detail)

    def _event(self, kind, detail):
        if kind == serialframe.PACKET:
            self._counters["received"] += 1
            self._packet(detail)
        elif kind == serialframe.GARBAGE:
            self._counters["garbage_bytes"] += detail
        elif kind == serialframe.RESYNC:
            self._counters["resync"] += 1
            if worth_logging(self._counters["resync"]):
                log.warn("heartbeat path {path}: bytes on {device} that are not a heartbeat "
                         "frame; skipping to the next frame (line noise or a baud rate "
                         "mismatch?) ({count} so far)", path=self.name, device=self.device,
                         count=self._counters["resync"])
        else:
            self._counters["received"] += 1
            self._drop(kind, detail)

    def _packet(self, packet):
        if packet.sender != self.peer:
            why = ("is this server's own beat: is the line looped back or echoing?"
                   if packet.sender == self._local
                   else f"from {packet.sender!r}, not {self.peer}, the peer on this line")
            return self._drop("unknown_sender", why)
        deliver(self.name, self._guard, packet, self._counters, self._drop, self._on_beat, log)

    def _drop(self, kind, reason):
        self._counters[kind] += 1
        count = self._counters[kind]
        if worth_logging(count):
            log.warn("heartbeat path {path}: dropped {kind} frame on {device}: {reason} "
                     "({count} so far)", path=self.name, kind=kind, device=self.device,
                     reason=reason, count=count)


def _read_config(report, node):
    baud = node.integer("baudrate", DEFAULT_BAUD_RATE, BAUD_RATES)
    return {"baud_rate": baud or DEFAULT_BAUD_RATE}


def _check_links(report, hb, servers):
    if len(servers) > 2:
        report.error(hb.path, f"heartbeat {hb.name} is a serial line between two servers, but "
                              f"{', '.join(servers)} have device {hb.device}")


SCHEMA = HeartbeatKindSchema(device_type="com", read=_read_config, check_links=_check_links)


@HEARTBEAT_KINDS.register(KIND, schema=SCHEMA)
def com_path(context, heartbeat):
    return ComHeartbeatPath(context.reactor, context.config, context.local, heartbeat,
                            context.incarnation, context.on_beat, key=context.key)
