"""The alert log: where every state change and error of the cluster is recorded.

An alert (time, server, module, event id, level, message) raised on this
server is
  - appended as one JSON line to <log_dir>/alert.log (size rotation:
    alert.log.1, .2, ...),
  - logged through twisted.logger,
  - sent to syslog (ident 'cpro', facility daemon, in the original's
    '<type: MODULE><event: ID> message' form),
  - sent to every peer over UDP (authenticated, see
    L{cpro.protocols.alertsync}).
Alerts received from peers are deduplicated and stored in the same file and
in-memory ring, so `clpstat --alerts` on any server shows the whole cluster.
They are not sent to the local syslog again: each server's syslog carries its
own alerts once.
"""

import collections
import ipaddress
import json
import os
import syslog as _stdlib_syslog

from twisted.application import service
from twisted.internet import defer, error
from twisted.logger import Logger, LogLevel
from twisted.python.logfile import LogFile
from zope.interface import implementer

from cpro.cluster.states import Level
from cpro.interfaces import IAlertSink
from cpro.protocols.alertsync import (
    MAX_MESSAGE,
    MAX_MODULE,
    Alert,
    AlertSyncProtocol,
    MalformedAlert,
    alert_from_fields,
    alert_to_fields,
    encode_alert,
    load_fields,
)

__all__ = ["Alert", "AlertLog", "AlertBindError", "StdlibSyslog", "SYSLOG_PRIORITY"]

LOG_NAME = "alert.log"
RING_SIZE = 1000
# At start the ring is refilled from the end of the log files; reading at most
# this much keeps the start bounded whatever the rotation size.
TAIL_BYTES = 512 * 1024
# Dedup memory: per (server, incarnation) the seqs seen in a sliding window,
# for at most this many incarnations (old ones are forgotten first).
SEQ_WINDOW = 4096
MAX_INCARNATIONS = 256

SYSLOG_PRIORITY = {
    Level.INFO: _stdlib_syslog.LOG_INFO,
    Level.WARNING: _stdlib_syslog.LOG_WARNING,
    Level.ERROR: _stdlib_syslog.LOG_ERR,
}

_LOG_LEVEL = {Level.INFO: LogLevel.info, Level.WARNING: LogLevel.warn, Level.ERROR: LogLevel.error}


class AlertBindError(Exception):
    """The alert synchronisation port could not be bound."""


class StdlibSyslog:
    """Sends lines to the local syslog through the stdlib module (ident 'cpro', daemon)."""

    def __init__(self, ident="cpro", facility=_stdlib_syslog.LOG_DAEMON):
        self._ident = ident
        self._facility = facility
        self._opened = False

    def __call__(self, priority, line):
        if not self._opened:
            _stdlib_syslog.openlog(self._ident, _stdlib_syslog.LOG_PID, self._facility)
            self._opened = True
        _stdlib_syslog.syslog(priority, line)


def syslog_line(alert):
    """The original product's syslog text: '<type: nm><event: 1> Server srv1 has started.'"""
    return f"<type: {alert.module}><event: {alert.event_id}> {alert.message}"


def _coerce_level(level):
    if isinstance(level, Level):
        return level
    try:
        return Level(str(level).upper())
    except ValueError:
        raise ValueError(f"unknown alert level {level!r}") from None


def _bounded(message):
    # The same bound the log reader and the peers apply: what is written can be read back.
    if len(message) > MAX_MESSAGE:
        return message[: MAX_MESSAGE - 3] + "..."
    return message


class _SeenSeqs:
    """The origin seqs seen from one incarnation of one server (sliding window)."""

    def __init__(self):
        self.highest = -1
        self.seen = set()

    def contains(self, seq):
        """True when seq was seen, or is too old to tell (treated as seen)."""
        return seq in self.seen or seq <= self.highest - SEQ_WINDOW

    def add(self, seq):
        """Record seq; False when it was seen before or is too old to tell."""
        if self.contains(seq):
            return False
        self.seen.add(seq)
        if seq > self.highest:
            self.highest = seq
            if len(self.seen) > SEQ_WINDOW:
                floor = self.highest - SEQ_WINDOW
                self.seen = {s for s in self.seen if s > floor}
        return True


def _read_tail(path, budget):
    """The complete lines in the last `budget` bytes of path (oldest first)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = max(0, size - budget)
            f.seek(start)
            data = f.read(size - start)
    except FileNotFoundError:
        return [], 0
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # started inside a line
    return [line for line in lines if line.strip()], len(data)


@implementer(IAlertSink)
class AlertLog(service.MultiService):
    """The cluster-wide alert log of one server (implements IAlertSink).

    @param syslog: True for the local syslog, False/None to disable, or a
        callable(priority, line) (tests).
    @param incarnation_token: unique per daemon start (e.g. uuid4().hex); it
        scopes the alert sequence numbers so peers never mistake a restarted
        daemon's alerts for duplicates.
    """

    log = Logger()

    def __init__(self, reactor, config, local, log_dir, incarnation_token, syslog=True, keyring=None):
        super().__init__()
        if config.server(local) is None:
            raise ValueError(f"local server {local!r} is not in the configuration")
        self._reactor = reactor
        # The cluster keys (a Keyring during a key rotation) or None: the configuration's key.
        self._keyring = keyring
        self._config = config
        self._local = local
        self._log_dir = log_dir
        self._token = incarnation_token
        if syslog is True:
            self._syslog = StdlibSyslog()
        else:
            self._syslog = syslog or None
        self._seq = 0
        self._ring = collections.deque(maxlen=RING_SIZE)
        self._seen = collections.OrderedDict()  # (server, token) -> _SeenSeqs
        self._file = None
        self._port = None
        self._protocol = None
        self._counters = collections.Counter()
        self._observers = []

    # -- IAlertSink ---------------------------------------------------------

    def emit(self, module, event_id, level, message, **details):
        """Record one alert raised on this server. Never raises for I/O trouble."""
        self._seq += 1
        alert = Alert(
            time=self._reactor.seconds(),
            server=self._local,
            module=str(module)[:MAX_MODULE],
            event_id=int(event_id),
            level=_coerce_level(level),
            message=_bounded(str(message)),
            origin_seq=self._seq,
            details=dict(details),
        )
        self._store(alert, self._token)
        self._send_syslog(alert)
        self._send_to_peers(alert)
        return alert

    # -- queries ------------------------------------------------------------

    def recent(self, limit=100):
        """The last `limit` alerts (at most 1000), oldest first, newest last."""
        if limit <= 0:
            return []
        items = list(self._ring)
        return items[-limit:]

    def counters(self):
        """Dropped/received packet counts and I/O error counts, for status and tests."""
        result = {
            "received": 0,
            "malformed": 0,
            "unauthenticated": 0,
            "foreign": 0,
            "handler_errors": 0,
            "unknown_server": 0,
            "duplicate": 0,
            "sent": 0,
            "send_errors": 0,
            "write_errors": 0,
            "syslog_errors": 0,
            "bad_log_lines": 0,
        }
        if self._protocol is not None:
            result.update(self._protocol.counters)
        result.update(self._counters)
        return result

    def add_observer(self, observer):
        """Call observer(alert) for every alert stored from now on (local and peers').

        For notifiers (mail, SNMP trap, status push). An observer that raises
        is logged and kept.
        """
        self._observers.append(observer)

    def remove_observer(self, observer):
        self._observers.remove(observer)

    @property
    def path(self):
        return os.path.join(self._log_dir, LOG_NAME)

    # -- service ------------------------------------------------------------

    def startService(self):
        os.makedirs(self._log_dir, mode=0o750, exist_ok=True)
        self._load_tail()
        local = self._config.server(self._local)
        self._protocol = AlertSyncProtocol(self._config.name, self._key(), self._received)
        try:
            self._port = self._reactor.listenUDP(
                local.ports.alert, self._protocol, interface=local.address
            )
        except error.CannotListenError as e:
            self._protocol = None
            raise AlertBindError(
                f"cannot bind the alert synchronisation port {local.address}:{local.ports.alert}"
                f" (udp): {e.socketError or e}"
            ) from e
        super().startService()

    def _key(self):
        return self._keyring if self._keyring is not None else self._config.key

    def reconfigure(self, config):
        """A new configuration of the same cluster (live reconfiguration): the
        log rotation settings and the peers' addresses apply from the next
        write and send on."""
        self._config = config
        if self._file is not None:
            self._file.rotateLength = config.alert_log_max_bytes
            self._file.maxRotatedFiles = config.alert_log_backups

    def stopService(self):
        d = defer.maybeDeferred(super().stopService)
        d.addCallback(lambda _: self._close_port())
        d.addBoth(self._close_file)
        return d

    def _close_port(self):
        port, self._port = self._port, None
        if port is not None:
            return port.stopListening()

    def _close_file(self, result):
        # Also on failure: the file must not stay open after stop.
        if self._file is not None:
            self._file.close()
            self._file = None
        return result

    # -- internals ----------------------------------------------------------

    def _open_file(self):
        if self._file is None:
            os.makedirs(self._log_dir, mode=0o750, exist_ok=True)
            self._file = LogFile(
                LOG_NAME,
                self._log_dir,
                rotateLength=self._config.alert_log_max_bytes,
                defaultMode=0o640,
                maxRotatedFiles=self._config.alert_log_backups,
            )
        return self._file

    def _write(self, data):
        if self._file is not None or self.running:
            self._open_file().write(data)
            return
        # Before start or after stop (alerts raised while other services stop):
        # still recorded, without keeping the file open.
        transient = self._open_file()
        try:
            transient.write(data)
        finally:
            transient.close()
            self._file = None

    def _load_tail(self):
        """Refill the ring and the dedup table from the end of the log files."""
        lines, used = _read_tail(self.path, TAIL_BYTES)
        if len(lines) < RING_SIZE and used < TAIL_BYTES:
            older, _ = _read_tail(self.path + ".1", TAIL_BYTES - used)
            lines = older + lines
        self._ring.clear()
        for line in lines[-RING_SIZE:]:
            try:
                alert, token = alert_from_fields(load_fields(line))
            except MalformedAlert:
                self._counters["bad_log_lines"] += 1
                continue
            self._ring.append(alert)
            self._mark_seen(alert, token)

    def _mark_seen(self, alert, token):
        key = (alert.server, token)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _SeenSeqs()
            while len(self._seen) > MAX_INCARNATIONS:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(key)
        return seen.add(alert.origin_seq)

    def _store(self, alert, token):
        """File, ring and twisted.logger: common to local and peer alerts."""
        self._ring.append(alert)
        self._mark_seen(alert, token)
        fields = alert_to_fields(alert, token)
        if alert.details:
            fields["details"] = alert.details
        line = json.dumps(fields, ensure_ascii=False, default=str) + "\n"
        try:
            self._write(line.encode("utf-8"))
        except OSError as e:
            self._counters["write_errors"] += 1
            self.log.error("cannot write {path}: {error}", path=self.path, error=e)
        self.log.emit(
            _LOG_LEVEL[alert.level],
            "alert [{module}:{event_id}] {server}: {message}",
            module=alert.module,
            event_id=alert.event_id,
            server=alert.server,
            message=alert.message,
            alert_level=alert.level.value,
        )
        for observer in list(self._observers):
            try:
                observer(alert)
            except Exception:
                self.log.failure("alert observer {observer!r} failed", observer=observer)

    def _send_syslog(self, alert):
        if self._syslog is None:
            return
        try:
            self._syslog(SYSLOG_PRIORITY[alert.level], syslog_line(alert))
        except Exception:
            self._counters["syslog_errors"] += 1
            self.log.failure("syslog failed")

    def _peers(self):
        for server in self._config.servers:
            if server.name == self._local or not server.address:
                continue
            try:
                ipaddress.ip_address(server.address)
            except ValueError:
                continue  # UDP writes need an IP literal; validation reports it
            yield server

    def _send_to_peers(self, alert):
        if self._port is None:
            return  # not started (or stopped): stored locally only
        try:
            packet = encode_alert(alert, self._token, self._config.name, self._key())
        except ValueError:
            self._counters["send_errors"] += 1
            self.log.failure("cannot encode alert")
            return
        for server in self._peers():
            try:
                self._port.write(packet, (server.address, server.ports.alert))
                self._counters["sent"] += 1
            except (OSError, error.MessageLengthError, error.InvalidAddressError) as e:
                self._counters["send_errors"] += 1
                self.log.warn(
                    "cannot send alert to {server} ({address}:{port}): {error}",
                    server=server.name,
                    address=server.address,
                    port=server.ports.alert,
                    error=e,
                )

    def _received(self, alert, token, address):
        if alert.server == self._local:
            # Our own alerts are never sent to ourselves: a replay.
            self._counters["duplicate"] += 1
            return
        if self._config.server(alert.server) is None:
            self._counters["unknown_server"] += 1
            return
        key = (alert.server, token)
        seen = self._seen.get(key)
        if seen is not None and seen.contains(alert.origin_seq):
            self._counters["duplicate"] += 1
            return
        self._store(alert, token)
