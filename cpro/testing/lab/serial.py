"""Serial lines for tests and demos: pty pairs made by socat, and a cable between them.

- L{SocatPair}: C{socat pty,raw,echo=0,link=A pty,raw,echo=0,link=B}, started
  and stopped by PID. Bytes written to A come out of B and back. Killing it
  ends both ends at once (readers see end of file), like a console server
  or USB adapter going away; starting it again with the same link names
  makes the line reappear under the same paths.
- L{SerialRelay}: a cable between two pty ends, run in this process on the
  reactor: what one end reads is written to the other. It can be pulled
  (bytes are dropped: silence at both ends, nothing closes, as with a real
  RS-232C cable) and plugged again, and it can inject bytes (line noise).
- L{SerialCable}: two socat pairs joined by a relay, so that the two ends a
  test opens are ordinary ptys and the cable in the middle can be pulled.

Everything is asynchronous; nothing here blocks the reactor (opening a pty
is immediate). Each helper cleans up only what it started.
"""

import os

from twisted.internet import defer, error, task
from twisted.internet.protocol import Protocol
from twisted.internet.serialport import SerialPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from cpro.testing.lab.common import LabError, LabProcess, tool

log = Logger()

# Characters that socat's address syntax gives a meaning to.
_SOCAT_SPECIAL = set(",:!;{}[]'\"\\ ")


def socat_path():
    """Absolute path of socat; raises LabError if it is not installed."""
    return tool("socat")


def socat_available():
    try:
        socat_path()
    except LabError:
        return False
    return True


class SocatPair:
    """A pty pair made by socat, reachable as the symlinks C{link_a} and C{link_b}.

    @param reactor: IReactorProcess + IReactorTime.
    @param link_a, link_b: paths of the symlinks socat creates to the ptys.
    @param log_path: file socat's messages are appended to (default: kept in memory).
    """

    def __init__(self, reactor, link_a, link_b, log_path=None):
        for link in (link_a, link_b):
            bad = _SOCAT_SPECIAL.intersection(link)
            if bad:
                raise LabError(f"pty link {link!r} contains {''.join(sorted(bad))!r}, "
                               f"which socat's address syntax does not allow")
        self.reactor = reactor
        self.link_a = link_a
        self.link_b = link_b
        self.log_path = log_path
        self.process = None

    @property
    def pid(self):
        """PID of the running socat, None when not running."""
        p = self.process
        return p.pid if p is not None and not p.ended.called else None

    def running(self):
        return self.pid is not None

    @defer.inlineCallbacks
    def start(self, timeout=5.0):
        """Start socat; fires when both links point at their ptys.

        Stale links (left by a killed socat) are removed first.
        @raise LabError: socat missing, already running, exited, or too slow.
        """
        if self.running():
            raise LabError(f"socat for {self.link_a} is already running (pid {self.pid})")
        socat = socat_path()
        for link in (self.link_a, self.link_b):
            if os.path.islink(link):
                os.unlink(link)
        proto = LabProcess(self.log_path)
        argv = [socat, "-d", "-d", f"pty,raw,echo=0,link={self.link_a}",
                f"pty,raw,echo=0,link={self.link_b}"]
        self.reactor.spawnProcess(proto, argv[0], argv, env=os.environ)
        self.process = proto
        waited = 0.0
        step = 0.02
        while not (os.path.exists(self.link_a) and os.path.exists(self.link_b)):
            if proto.ended.called:
                raise LabError(f"socat exited with {proto.exit_code}: "
                               f"{proto.output.decode(errors='replace').strip()}")
            if waited >= timeout:
                yield self.kill()
                raise LabError(f"socat did not create {self.link_a} and {self.link_b} "
                               f"within {timeout} s")
            yield task.deferLater(self.reactor, step, lambda: None)
            waited += step
        log.debug("socat pty pair {a} <-> {b} running as pid {pid}", a=self.link_a,
                  b=self.link_b, pid=proto.pid)

    def stop(self, timeout=5.0):
        """SIGTERM (socat removes its links), SIGKILL after timeout; fires when it has ended."""
        if self.process is None:
            return defer.succeed(None)
        return self.process.stop(self.reactor, timeout)

    def kill(self):
        """SIGKILL: both ends end at once and the links are left dangling, as after a crash."""
        if self.process is None:
            return defer.succeed(None)
        return self.process.kill()


class _RelayEnd(Protocol):
    def __init__(self, relay, side):
        self.relay = relay
        self.side = side

    def dataReceived(self, data):
        self.relay._received(self.side, data)

    def connectionLost(self, reason=None):
        self.relay._end_lost(self.side, reason)


class SerialRelay:
    """Copies bytes between the pty ends C{left} and C{right}, in this process.

    @ivar plugged: False while the cable is pulled (bytes read are dropped).
    @ivar forwarded: {"left": bytes read on left and written to right, "right": ...}.
    @ivar dropped: bytes read while pulled, per side.
    """

    def __init__(self, reactor, left, right, baud_rate=19200):
        self.reactor = reactor
        self.paths = {"left": left, "right": right}
        self.baud_rate = baud_rate
        self.plugged = True
        self.forwarded = {"left": 0, "right": 0}
        self.dropped = {"left": 0, "right": 0}
        self._ports = {}
        self._closed = {}

    def start(self):
        """Open both ends. @raise LabError: an end cannot be opened (the others are closed)."""
        for side, path in self.paths.items():
            try:
                self._ports[side] = SerialPort(_RelayEnd(self, side), path, self.reactor,
                                               baudrate=self.baud_rate)
            except Exception as e:
                self.stop()
                raise LabError(f"relay cannot open {path}: {e}") from e

    def pull(self):
        """Pull the cable: from now on nothing gets through, in either direction."""
        self.plugged = False

    def plug(self):
        """Plug the cable back in."""
        self.plugged = True

    def inject(self, toward, data):
        """Write C{data} (line noise) to the C{toward} end ("left" or "right"), pulled or not."""
        self._ports[toward].write(data)

    def stop(self):
        """Close both ends; a Deferred firing when they are closed (never failing)."""
        waits = []
        for side, port in list(self._ports.items()):
            if port.disconnected:
                continue
            d = self._closed[side] = defer.Deferred()
            waits.append(d)
            port.stopReading()
            port.stopWriting()
            port.connectionLost(Failure(error.ConnectionDone("relay stopped")))
        self._ports.clear()
        return defer.gatherResults(waits, consumeErrors=True).addBoth(lambda _: None)

    def _received(self, side, data):
        if not self.plugged:
            self.dropped[side] += len(data)
            return
        other = self._ports.get("right" if side == "left" else "left")
        if other is not None and not other.disconnected:
            other.write(data)
            self.forwarded[side] += len(data)

    def _end_lost(self, side, reason):
        d = self._closed.pop(side, None)
        if d is not None:
            d.callback(None)
        else:
            log.info("serial relay: {path} ended ({reason})", path=self.paths[side],
                     reason=reason.getErrorMessage() if reason is not None else "closed")


class SerialCable:
    """Two socat pty pairs joined by a L{SerialRelay}::

        end_a <-socat-> relay_a <-relay-> relay_b <-socat-> end_b

    Processes that talk over the line open C{end_a} and C{end_b}.

    @param directory: where the links are made (keep it short; no commas or colons).
    @param name: prefix of the link names.
    """

    def __init__(self, reactor, directory, name="cable", baud_rate=19200):
        self.reactor = reactor
        join = os.path.join
        self.end_a = join(directory, f"{name}-a")
        self.end_b = join(directory, f"{name}-b")
        self.pair_a = SocatPair(reactor, self.end_a, join(directory, f"{name}-relay-a"))
        self.pair_b = SocatPair(reactor, join(directory, f"{name}-relay-b"), self.end_b)
        self.relay = SerialRelay(reactor, self.pair_a.link_b, self.pair_b.link_a, baud_rate)

    @property
    def pids(self):
        return [p for p in (self.pair_a.pid, self.pair_b.pid) if p is not None]

    @defer.inlineCallbacks
    def start(self):
        try:
            yield self.pair_a.start()
            yield self.pair_b.start()
            self.relay.start()
        except Exception:
            yield self.stop()
            raise

    def pull(self):
        self.relay.pull()

    def plug(self):
        self.relay.plug()

    def inject(self, toward, data):
        """Line noise arriving at C{end_a} (toward="a") or C{end_b} (toward="b")."""
        self.relay.inject("left" if toward == "a" else "right", data)

    @defer.inlineCallbacks
    def stop(self):
        """Stop the relay and both socat processes; never fails."""
        yield self.relay.stop()
        results = yield defer.DeferredList([self.pair_a.stop(), self.pair_b.stop()],
                                           consumeErrors=True)
        for ok, value in results:
            if not ok:
                log.failure("serial cable: stopping socat failed", value)
