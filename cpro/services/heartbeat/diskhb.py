"""The disk heartbeat path (diskhb): beats written to and read from a shared partition.

Each server owns one slot of the partition (its position in
C{ClusterConfig.servers}) and writes a record there at every beat; every
interval it reads the other servers' slots. A record whose sequence number
advanced since the previous read, and whose embedded heartbeat packet is
authentic and fresh, is a beat. The layout lives in
L{cpro.protocols.diskslot}; this module does the I/O and the judging.

All disk I/O runs through the context's runner (a thread), with O_DIRECT so
that reads see the shared disk, not this host's page cache. At most one
write and one read are in flight: a stuck disk makes beats be skipped and
counted, never queued or blocking the reactor. A missing device, EIO or a
read-only disk is logged (on change) and counted, and the path keeps
retrying at every interval: the membership timeout decides what silence means.
"""

import errno
import mmap
import os
import time

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from cpro.config.heartbeats import HeartbeatKindSchema
from cpro.interfaces import IHeartbeatPath
from cpro.plugins import HEARTBEAT_KINDS
from cpro.protocols import diskslot
from cpro.protocols.heartbeat import (
    ForeignCluster,
    HeartbeatPacket,
    MalformedPacket,
    ReplayGuard,
    Unauthenticated,
    decode,
    encode,
)
from cpro.protocols.ratelog import worth_logging
from cpro.services.heartbeat.base import HeartbeatConfigError, deliver

log = Logger()

COUNTERS = (
    "written",  # records written to our slot
    "write_skipped",  # beats skipped: the previous write was still running (stuck disk)
    "write_errors",  # writes that failed (missing device, EIO, read-only, ...)
    "write_refused",  # writes not done: the partition belongs to another cluster or program
    "reads",  # reads of the slot area completed
    "read_skipped",  # read rounds skipped: the previous read was still running
    "read_errors",
    "accepted",  # beats handed to on_beat
    "stale_reads",  # a peer's record unchanged since the previous read
    "empty",  # a peer's slot never written
    "torn",  # checksum mismatch: a torn or corrupted record
    "malformed",  # not a record, or an inconsistent one
    "wrong_slot",  # a record naming another slot or server than its place
    "foreign",  # another cluster's partition header or packet
    "bad_header",  # the partition header is corrupted or something else is there
    "unauthenticated",  # packet HMAC mismatch (another key)
    "replayed",  # sequence number went back within an incarnation
    "stale",  # an older incarnation of the peer
    "clock_skew",  # a beat whose write time is far from our clock (warned once per peer)
)

# A beat timestamp further than this from our wall clock is worth a warning
# (at least this many seconds, or the heartbeat timeout if longer).
CLOCK_SKEW_WARNING = 30.0
# stop_listening waits at most this long for a disk I/O in flight (seconds).
STOP_TIMEOUT = 10.0


class DeviceTooSmall(OSError):
    """The partition is smaller than the header and every server's slot."""


class SlotDisk:
    """Blocking I/O on the heartbeat partition; every method runs in a thread.

    The device is opened for each operation: a device that disappears and
    comes back (a path failover, a re-attached LUN) is simply found again,
    and no descriptor outlives a stop.

    @param path: the block device (or, in tests, a plain file).
    @param direct: open with O_DIRECT (production: True; reads must bypass
        the page cache to see the other servers' writes).
    @param opener: C{opener(path, flags)} -> fd, os.open by default (tests
        inject failures).
    """

    def __init__(self, path, direct=True, opener=os.open):
        self.path = path
        self._flags = os.O_DIRECT if direct else 0
        self._opener = opener

    def _open(self, mode):
        return self._opener(self.path, mode | self._flags | os.O_CLOEXEC)

    @staticmethod
    def _pread(fd, offset, size):
        # An anonymous mmap is page aligned, as O_DIRECT requires; os.pread
        # would read into an unaligned bytes object.
        with mmap.mmap(-1, size) as buf:
            got = os.preadv(fd, [buf], offset)
            return bytes(buf[:got])

    @staticmethod
    def _pwrite(fd, offset, data):
        with mmap.mmap(-1, len(data)) as buf:
            buf[:] = data
            done = os.pwrite(fd, buf, offset)
        if done != len(data):
            raise OSError(errno.EIO, f"short write: {done} of {len(data)} bytes at offset {offset}")

    def read_area(self, size):
        """The first C{size} bytes of the partition.

        @raise DeviceTooSmall: fewer bytes were there.
        """
        fd = self._open(os.O_RDONLY)
        try:
            data = self._pread(fd, 0, size)
        finally:
            os.close(fd)
        if len(data) < size:
            raise DeviceTooSmall(
                errno.ENOSPC, f"device holds {len(data)} bytes, the slots need {size}")
        return data

    def write_slot(self, offset, data, claim_for=None):
        """Write C{data} at C{offset}.

        @param claim_for: a cluster name when the partition header is still to
            be checked: the header is read first; a blank one is claimed for
            that cluster, one naming another cluster or anything else there
            stops the write.
        @return: ("written", None), ("foreign", cluster name) or
            ("bad_header", reason).
        """
        fd = self._open(os.O_RDWR)
        try:
            if claim_for is not None:
                header = self._pread(fd, 0, diskslot.HEADER_SIZE)
                verdict = judge_header(header, claim_for)
                if verdict[0] == "blank":
                    self._pwrite(fd, 0, diskslot.encode_header(claim_for))
                elif verdict[0] != "ours":
                    return verdict
            self._pwrite(fd, offset, data)
            return ("written", None)
        finally:
            os.close(fd)


def judge_header(data, cluster):
    """("ours"|"blank", None), ("foreign", name) or ("bad_header", reason) for a header block."""
    try:
        name = diskslot.decode_header(data)
    except diskslot.EmptySlot:
        return ("blank", None)
    except diskslot.RecordError as e:
        return ("bad_header", str(e))
    return ("ours", None) if name == cluster else ("foreign", name)


@implementer(IHeartbeatPath)
class DiskHeartbeatPath:
    """One disk heartbeat resource: this server's slot on a shared partition.

    @param reactor: IReactorTime (the read loop).
    @param config: the L{cpro.config.model.ClusterConfig}.
    @param local: name of the local server.
    @param heartbeat: the L{cpro.config.model.HeartbeatConfig} of this path.
    @param incarnation: the local daemon's incarnation.
    @param on_beat: C{on_beat(path_name, packet)} for each beat.
    @param runner: C{runner(fn, *args)} -> Deferred, running the disk I/O
        off the reactor thread.
    @param direct: use O_DIRECT (see L{SlotDisk}).
    @param opener: C{opener(path, flags)} -> fd (see L{SlotDisk}).
    @param wall_clock_ns: the wall clock for record timestamps, ns.
    @param stop_timeout: seconds L{stop_listening} waits for disk I/O in flight.
    @raise HeartbeatConfigError: the local server has no device for this path.
    """

    def __init__(self, reactor, config, local, heartbeat, incarnation, on_beat, runner,
                 direct=True, opener=os.open, wall_clock_ns=time.time_ns,
                 stop_timeout=STOP_TIMEOUT, key=None):
        if heartbeat.kind != "diskhb":
            raise HeartbeatConfigError(f"{heartbeat.name}: not a disk heartbeat ({heartbeat.kind})")
        self.name = heartbeat.name
        self.kind = heartbeat.kind
        self._reactor = reactor
        self._cluster = config.name
        self._key = key if key is not None else config.key  # bytes or a Keyring
        self._interval = config.hb_interval
        self._skew_warning = max(CLOCK_SKEW_WARNING, config.hb_timeout)
        self._local = local
        self._incarnation = incarnation
        self._on_beat = on_beat
        self._runner = runner
        self._wall_clock_ns = wall_clock_ns
        self._stop_timeout = stop_timeout

        names = [s.name for s in config.servers]
        if local not in names:
            raise HeartbeatConfigError(f"{self.name}: server {local} is not in the configuration")
        device = config.server(local).device(heartbeat.device)
        if device is None or not device.info:
            raise HeartbeatConfigError(
                f"{self.name}: server {local} has no disk device {heartbeat.device}")
        self.device = device.info
        self.slot = names.index(local)
        self._slots = tuple(enumerate(names))  # (index, server name), servers by priority
        self._area = diskslot.area_size(len(names))
        self._disk = SlotDisk(self.device, direct=direct, opener=opener)

        self._guard = ReplayGuard()
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._seq = 0
        self._listening = False
        self._loop = None
        self._writing = None  # Deferred of the write in flight
        self._reading = None  # Deferred of the read in flight
        self._idle_waiters = []
        self._header_checked = False  # our writes may go to this partition
        self._primed = False  # a first read has set the baseline of every slot
        self._last = {}  # server -> (seq, packet) of its last valid record
        self._problems = {"read": None, "write": None, "header": None}
        self._skew_warned = set()

    # -- IHeartbeatPath ----------------------------------------------------------

    def start_listening(self):
        """Start reading the peers' slots every interval. Idempotent; never raises."""
        if self._listening:
            return
        self._listening = True
        # Records already on the disk may be long dead: the first read is a
        # baseline, only a change seen after it is a beat.
        self._primed = False
        self._last.clear()
        self._header_checked = False
        self._loop = task.LoopingCall(self._read_round)
        self._loop.clock = self._reactor
        self._loop.start(self._interval, now=True).addErrback(
            lambda f: log.failure("heartbeat path {path}: read loop stopped", f, path=self.name))
        log.info("heartbeat path {path} (diskhb) on {device}, slot {slot}",
                 path=self.name, device=self.device, slot=self.slot)

    def stop_listening(self):
        """Stop the read loop; a Deferred firing once no disk I/O is in flight
        (or after C{stop_timeout} seconds of a stuck disk). Never fails."""
        self._listening = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return self._when_idle()

    def send_beat(self, digest):
        """Write one record carrying C{digest} to our slot, in the runner. Never raises."""
        if not self._listening:
            return
        if self._writing is not None:
            self._count_and_log(
                "write_skipped", "previous write to {device} still running (stuck disk?)")
            return
        try:
            self._seq += 1
            packet = encode(
                HeartbeatPacket(self._cluster, self._local, self._incarnation, self._seq, digest),
                self._key)
            data = diskslot.encode_record(diskslot.SlotRecord(
                slot=self.slot, server=self._local, seq=self._seq,
                written_ns=self._wall_clock_ns(), packet=packet))
        except Exception:
            log.failure("heartbeat path {path}: cannot encode a record", path=self.name)
            return
        claim_for = None if self._header_checked else self._cluster
        d = defer.maybeDeferred(self._runner, self._disk.write_slot,
                                diskslot.slot_offset(self.slot), data, claim_for)
        self._writing = d
        d.addCallbacks(self._write_done, self._io_failed, errbackArgs=("write",))
        d.addErrback(lambda f: log.failure("heartbeat path {path}: write handling failed", f,
                                           path=self.name))
        d.addBoth(self._io_finished, "write")

    def counters(self):
        """A copy of this path's counters (see L{COUNTERS})."""
        return dict(self._counters)

    def forget(self, server):
        """Accept the next authentic beat of C{server}, whatever its incarnation."""
        self._guard.forget(server)

    # -- writing -------------------------------------------------------------------

    def _write_done(self, result):
        verdict, detail = result
        if verdict == "written":
            self._counters["written"] += 1
            self._header_checked = True
            self._set_problem("write", None)
            self._set_problem("header", None)
            return
        self._counters["write_refused"] += 1
        self._set_problem("write", None)
        self._set_problem("header", self._header_problem(verdict, detail))

    # -- reading -------------------------------------------------------------------

    def _read_round(self):
        if self._reading is not None:
            self._count_and_log(
                "read_skipped", "previous read of {device} still running (stuck disk?)")
            return
        d = defer.maybeDeferred(self._runner, self._disk.read_area, self._area)
        self._reading = d
        d.addCallbacks(self._read_done, self._io_failed, errbackArgs=("read",))
        d.addErrback(lambda f: log.failure("heartbeat path {path}: read handling failed", f,
                                           path=self.name))
        d.addBoth(self._io_finished, "read")

    def _read_done(self, area):
        self._counters["reads"] += 1
        self._set_problem("read", None)
        if not self._listening:
            return
        verdict, detail = judge_header(area[:diskslot.HEADER_SIZE], self._cluster)
        if verdict in ("foreign", "bad_header"):
            # Another cluster's or program's partition: its slots mean
            # nothing to us, and our writes stop until it is fixed.
            self._counters[verdict] += 1
            self._header_checked = False
            self._set_problem("header", self._header_problem(verdict, detail))
            return
        if verdict == "ours":
            self._set_problem("header", None)
        else:
            # Blank (wiped, or never claimed): the next write claims it again.
            self._header_checked = False
        for index, server in self._slots:
            if server == self._local:
                continue
            offset = diskslot.slot_offset(index)
            try:
                self._judge_slot(index, server, area[offset:offset + diskslot.SLOT_SIZE])
            except Exception:
                log.failure("heartbeat path {path}: error judging the slot of {server}",
                            path=self.name, server=server)
        self._primed = True

    def _judge_slot(self, index, server, data):
        try:
            record = diskslot.decode_record(data)
        except diskslot.EmptySlot:
            self._counters["empty"] += 1
            return
        except diskslot.TornRecord as e:
            return self._drop("torn", server, e)
        except diskslot.MalformedRecord as e:
            return self._drop("malformed", server, e)
        if record.slot != index or record.server != server:
            return self._drop(
                "wrong_slot", server,
                f"slot {index} holds a record of {record.server!r} for slot {record.slot}")
        key = (record.seq, record.packet)
        previous = self._last.get(server)
        self._last[server] = key
        if not self._primed:
            return
        if key == previous:
            self._counters["stale_reads"] += 1
            return
        try:
            packet = decode(record.packet, self._key, self._cluster)
        except MalformedPacket as e:
            return self._drop("malformed", server, e)
        except Unauthenticated as e:
            return self._drop("unauthenticated", server, e)
        except ForeignCluster as e:
            return self._drop("foreign", server, e)
        if packet.sender != server or packet.seq != record.seq:
            return self._drop("malformed", server,
                              f"packet of {packet.sender!r} seq {packet.seq} in a record of "
                              f"{record.server!r} seq {record.seq}")
        self._check_skew(server, record.written_ns)
        deliver(self.name, self._guard, packet, self._counters,
                lambda kind, reason: self._drop(kind, server, reason), self._on_beat, log)

    def _check_skew(self, server, written_ns):
        # Beats are judged by their sequence number alone (clocks of servers
        # differ); a far-off write time only says that clocks disagree.
        skew = written_ns / 1e9 - self._wall_clock_ns() / 1e9
        if abs(skew) <= self._skew_warning:
            return
        self._counters["clock_skew"] += 1
        if server not in self._skew_warned:
            self._skew_warned.add(server)
            log.warn("heartbeat path {path}: {server} wrote its record {skew:+.1f} s from this "
                     "server's clock; check time synchronisation (beats are still judged by "
                     "sequence number)", path=self.name, server=server, skew=skew)

    # -- common ----------------------------------------------------------------------

    def _io_failed(self, failure, operation):
        failure.trap(OSError)
        self._counters[f"{operation}_errors"] += 1
        self._set_problem(operation, _describe(failure.value))

    def _io_finished(self, _, operation):
        if operation == "write":
            self._writing = None
        else:
            self._reading = None
        if self._writing is None and self._reading is None:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def _when_idle(self):
        if self._writing is None and self._reading is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._idle_waiters.append(d)

        def give_up():
            # A disk stuck for good (I/O in D state) must not hold up the
            # daemon's stop: the thread is left behind, and said so.
            if d in self._idle_waiters:
                self._idle_waiters.remove(d)
                log.warn("heartbeat path {path}: disk I/O on {device} still running after "
                         "{timeout} s; stopping without waiting for it",
                         path=self.name, device=self.device, timeout=self._stop_timeout)
                d.callback(None)

        call = self._reactor.callLater(self._stop_timeout, give_up)

        def cancel_timer(result):
            if call.active():
                call.cancel()
            return result

        return d.addBoth(cancel_timer)

    def _header_problem(self, verdict, detail):
        if verdict == "foreign":
            return (f"the partition belongs to cluster {detail!r}; not writing to it "
                    "(wrong device configured?)")
        return (f"the partition is not a cpro heartbeat partition ({detail}); not writing to it. "
                "If it is the right device, zero its first 4 KiB so that cpro may claim it")

    def _set_problem(self, what, problem):
        """Log a change of the read/write/header condition: errors once, not every interval."""
        if self._problems[what] == problem:
            return
        self._problems[what] = problem
        if problem is None:
            log.info("heartbeat path {path}: {what} of {device} works again",
                     path=self.name, what=what, device=self.device)
        else:
            log.error("heartbeat path {path}: {what} of disk heartbeat device {device} failed: "
                      "{problem}; retrying every {interval} s",
                      path=self.name, what=what, device=self.device, problem=problem,
                      interval=self._interval)

    def _drop(self, kind, server, reason):
        self._counters[kind] += 1
        count = self._counters[kind]
        if worth_logging(count):
            log.warn("heartbeat path {path}: dropped {kind} record in the slot of {server} "
                     "on {device}: {reason} ({count} so far)", path=self.name, kind=kind,
                     server=server, device=self.device, reason=reason, count=count)

    def _count_and_log(self, kind, message):
        self._counters[kind] += 1
        count = self._counters[kind]
        if worth_logging(count):
            log.warn("heartbeat path {path}: " + message + " ({count} so far)",
                     path=self.name, device=self.device, count=count)

    def status(self):
        """{'device', 'slot', 'problems'}: for status views."""
        return {"device": self.device, "slot": self.slot,
                "problems": {k: v for k, v in self._problems.items() if v}}


@HEARTBEAT_KINDS.register("diskhb", schema=HeartbeatKindSchema(device_type="disk"))
def disk_path(context, heartbeat):
    return DiskHeartbeatPath(context.reactor, context.config, context.local, heartbeat,
                             context.incarnation, context.on_beat, context.runner, key=context.key)


def _describe(exc):
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (errno {exc.errno})"
    return str(exc) or exc.__class__.__name__
