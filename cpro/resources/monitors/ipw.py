"""ipw: at least one of the addresses in params['addresses'] answers ICMP echo.

Every address is pinged at once; the check is Normal on the first reply and an
error only when all of them fail (no reply within the reply wait, destination
unreachable, or the echo cannot be sent). Echoes go to the configured
addresses and nowhere else.

One L{IcmpPinger} per reactor serves every ipw monitor: one ICMP socket per
address family, read in the reactor with addReader, opened when the first
monitor pings and closed when the last one stops. As root the socket is raw
(SOCK_RAW: it sees every ICMP packet, so replies are matched on our identifier,
the sequence number, a random token in the payload and the source address);
otherwise it is the kernel's unprivileged ping socket (SOCK_DGRAM, allowed by
net.ipv4.ping_group_range), where the kernel owns the identifier. Sequence
numbers are unique among the echoes in flight, so 500 monitors can share the
socket. IPv6 addresses use an ICMPv6 socket the same way.

Within the reply wait (half the monitor timeout, at most 5 s) an unanswered
address gets three echoes, evenly spaced, so one lost packet is not an error.
"""

import errno
import ipaddress
import os
import socket
import struct
import weakref

from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from cpro.config.schema import MonitorSchema, Param
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.protocols import icmp
from cpro.resources.monitors.base import CheckResult

log = Logger()

ATTEMPTS = 3
MAX_REPLY_WAIT = 5.0  # s
_TOKEN_SIZE = 8
_READS_PER_EVENT = 64  # datagrams read per readiness event: bounds the time spent in one callback

class PingError(Exception):
    """One address did not answer; the message says why."""




def open_icmp_socket(family):
    """(non-blocking socket, raw?) for ICMP echo: raw when permitted, else the ping socket."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    try:
        sock = socket.socket(family, socket.SOCK_RAW, proto)
        raw = True
    except PermissionError:
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        raw = False
    sock.setblocking(False)
    return sock, raw


def _destination(address):
    """The sendto address tuple of an ipaddress object (IPv6 scope by interface name)."""
    if address.version == 4:
        return (str(address), 0)
    scope = getattr(address, "scope_id", None)
    index = socket.if_nametoindex(scope) if scope and not scope.isdigit() else int(scope or 0)
    return (str(address).split("%")[0], 0, 0, index)


def _packed(host):
    return ipaddress.ip_address(host.split("%")[0]).packed


@implementer(IReadDescriptor)
class _IcmpReader:
    """Reads one ICMP socket in the reactor and hands packets to the pinger."""

    def __init__(self, pinger, family, sock, raw):
        self._pinger = pinger
        self.family = family
        self.sock = sock
        self.raw = raw

    def fileno(self):
        try:
            return self.sock.fileno()
        except OSError:
            return -1

    def logPrefix(self):
        return "IcmpPinger"

    def doRead(self):
        for _ in range(_READS_PER_EVENT):
            try:
                data, source = self.sock.recvfrom(65535)
            except BlockingIOError:
                return None
            except OSError as e:
                # A pending socket error (e.g. EHOSTUNREACH after a failed ARP)
                # is consumed by this call; the echo it concerns still times out.
                log.debug("ICMP socket: {err}", err=e)
                continue
            try:
                self._pinger._received(self, data, source[0])
            except Exception:
                log.failure("ICMP packet from {source} not handled", source=source)
        return None

    def connectionLost(self, reason):
        self._pinger._lost(self)


class _Ping:
    """One address being pinged: the echoes sent, the timers, the outcome."""

    def __init__(self, pinger, address, wait, attempts):
        self.pinger = pinger
        self.address = address
        self.family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        self.wait = wait
        self.attempts = attempts
        self.seqs = []
        self.sent_at = {}
        self.calls = []
        self.d = defer.Deferred(lambda _: self.finish())

    def finish(self):
        """Forget the echoes in flight and stop the timers (done, failed or cancelled)."""
        self.pinger._forget(self)


class IcmpPinger:
    """ICMP echo for every ipw monitor of one reactor.

    acquire()/release() count the monitors using it; the sockets are opened
    on the first ping and closed when the last user releases it. ping()
    returns a cancellable Deferred firing the round-trip time in seconds or
    failing with L{PingError}.
    """

    def __init__(self, reactor, open_socket=open_icmp_socket, ident=None):
        self._reactor = reactor
        self._open_socket = open_socket
        self._ident = ident if ident is not None else (os.getpid() ^ int.from_bytes(os.urandom(2), "big")) & 0xFFFF
        self._token = os.urandom(_TOKEN_SIZE)
        self._readers = {}  # family -> _IcmpReader
        self._pending = {}  # (family, seq) -> _Ping
        self._next_seq = int.from_bytes(os.urandom(2), "big")
        self._users = 0

    @property
    def pending(self):
        """Number of echoes awaiting a reply (for tests and status)."""
        return len(self._pending)

    @property
    def open_families(self):
        return sorted(self._readers)

    def acquire(self):
        self._users += 1

    def release(self):
        self._users = max(0, self._users - 1)
        if self._users == 0:
            for ping in set(self._pending.values()):
                ping.d.cancel()
            self.close()

    def close(self):
        for reader in list(self._readers.values()):
            self._reactor.removeReader(reader)
            reader.sock.close()
        self._readers.clear()

    def ping(self, address, wait, attempts=ATTEMPTS):
        """Echo address (an ipaddress object) up to attempts times within wait seconds."""
        ping = _Ping(self, address, wait, attempts)
        try:
            self._reader(ping.family)
        except OSError as e:
            return defer.fail(PingError(f"cannot open an ICMP socket: {e.strerror or e}"))
        ping.calls.append(self._reactor.callLater(wait, self._expire, ping))
        spacing = wait / attempts
        for i in range(1, attempts):
            ping.calls.append(self._reactor.callLater(spacing * i, self._send, ping))
        self._send(ping)
        return ping.d

    # internals

    def _reader(self, family):
        reader = self._readers.get(family)
        if reader is None:
            sock, raw = self._open_socket(family)
            reader = self._readers[family] = _IcmpReader(self, family, sock, raw)
            self._reactor.addReader(reader)
        return reader

    def _allocate_seq(self, family):
        for _ in range(0x10000):
            seq = self._next_seq
            self._next_seq = (seq + 1) & 0xFFFF
            if (family, seq) not in self._pending:
                return seq
        raise PingError("too many echoes in flight")

    def _send(self, ping):
        if ping.d.called:
            return
        try:
            reader = self._reader(ping.family)
            seq = self._allocate_seq(ping.family)
            packet = icmp.echo_request(self._ident, seq, self._token + struct.pack("!d", self._reactor.seconds()),
                                       v6=ping.family == socket.AF_INET6)
            reader.sock.sendto(packet, _destination(ping.address))
        except PingError as e:
            self._fail(ping, str(e))
            return
        except OSError as e:
            name = errno.errorcode.get(e.errno, "") if e.errno else ""
            self._fail(ping, f"cannot send: {e.strerror or e}" + (f" ({name})" if name else ""))
            return
        self._pending[(ping.family, seq)] = ping
        ping.seqs.append(seq)
        ping.sent_at[seq] = self._reactor.seconds()

    def _received(self, reader, data, source):
        parsed = icmp.parse_icmp(reader.family, data, with_ip_header=reader.raw and reader.family == socket.AF_INET)
        if parsed is None:
            return
        what, ident, seq, rest = parsed
        ping = self._pending.get((reader.family, seq))
        if ping is None:
            return
        # The kernel owns the identifier of a ping socket and filters for us.
        if reader.raw and ident != self._ident:
            return
        if what == "reply":
            if not rest.startswith(self._token) or _packed(source) != ping.address.packed:
                return
            self._succeed(ping, self._reactor.seconds() - ping.sent_at[seq])
        else:
            self._fail(ping, f"{rest} (reported by {source})")

    def _expire(self, ping):
        self._fail(ping, f"no reply within {ping.wait:g} s")

    def _succeed(self, ping, rtt):
        ping.finish()
        ping.d.callback(rtt)

    def _fail(self, ping, reason):
        if ping.d.called:
            return
        ping.finish()
        ping.d.errback(PingError(reason))

    def _forget(self, ping):
        for seq in ping.seqs:
            if self._pending.get((ping.family, seq)) is ping:
                del self._pending[(ping.family, seq)]
        for call in ping.calls:
            if call.active():
                call.cancel()
        ping.calls = []

    def _lost(self, reader):
        # The reactor dropped the reader (at shutdown): the next ping opens a new socket.
        if self._readers.get(reader.family) is reader:
            del self._readers[reader.family]
        reader.sock.close()

_shared_pingers = weakref.WeakKeyDictionary()


def shared_pinger(reactor):
    """The one L{IcmpPinger} of reactor."""
    pinger = _shared_pingers.get(reactor)
    if pinger is None:
        pinger = _shared_pingers[reactor] = IcmpPinger(reactor)
    return pinger


def parse_addresses(entries):
    """params['addresses'] entries (strings, or dicts with 'ip') -> (addresses, problems)."""
    addresses, problems = [], []
    for entry in entries or ():
        text = entry.get("ip") if isinstance(entry, dict) else entry
        try:
            addresses.append(ipaddress.ip_address(str(text).strip()))
        except ValueError:
            problems.append(f"{text}: not an IP address")
    return tuple(addresses), problems


# <parameters><list id="0"><ip>ADDRESS</ip></list>...: the original's list@i form.
SCHEMA = MonitorSchema(params=(Param("addresses", "ip_list", required=True, xml=("list", "ip")),))


@MONITOR_TYPES.register("ipw", schema=SCHEMA)
@implementer(IMonitor)
class IcmpMonitor:
    type = "ipw"

    def __init__(self, reactor, config, params, env, pinger=None):
        self.name = config.name
        self._addresses, self._problems = parse_addresses(params.get("addresses"))
        self._wait = max(0.1, min(config.timeout / 2.0, MAX_REPLY_WAIT))
        self._pinger = pinger if pinger is not None else shared_pinger(reactor)
        self._using = False
        self._checks = set()
        self._last_replied = None

    def start(self):
        if not self._using:
            self._using = True
            self._pinger.acquire()
        return None

    def stop(self):
        for d in list(self._checks):
            d.cancel()
        if self._using:
            self._using = False
            self._pinger.release()
        return None

    def describe(self):
        return {"addresses": [str(a) for a in self._addresses], "last_replied": self._last_replied}

    def check(self):
        if not self._addresses:
            return defer.succeed(CheckResult.error("; ".join(self._problems) or "no address to ping (parameters list)"))
        self.start()  # a check before start() still pings (and stop() releases the socket)
        pings = [(address, self._pinger.ping(address, self._wait)) for address in self._addresses]
        failures = list(self._problems)
        result = defer.Deferred(lambda _: [d.cancel() for _, d in pings])
        self._checks.add(result)
        result.addBoth(self._check_ended, result)

        def replied(rtt, address):
            if not result.called:
                self._last_replied = str(address)
                result.callback(CheckResult.normal(f"{address} replied in {rtt * 1000:.1f} ms"))
                for _, other in pings:
                    other.cancel()

        def failed(f, address):
            if f.check(defer.CancelledError):
                return
            f.trap(PingError)
            failures.append(f"{address}: {f.value}")
            if len(failures) == len(self._problems) + len(pings) and not result.called:
                self._last_replied = None
                result.callback(CheckResult.error("no reply from any address: " + "; ".join(failures)))

        for address, d in pings:
            d.addCallback(replied, address).addErrback(failed, address).addErrback(
                lambda f: log.failure("ipw {name}: ping", f, name=self.name)
            )
        return result

    def _check_ended(self, outcome, d):
        self._checks.discard(d)
        return outcome
