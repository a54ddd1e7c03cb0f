"""The leftovers ledger: what this server's resources hold while they are active.

A daemon that crashes leaves its resources behind: the floating IP addresses
stay on the interfaces and the processes its exec resources started keep
running. The other server's duplicate check then rightly refuses to take the
groups over. So every resource records here what it holds while it is
active (L{Ledger.record}) and forgets it when it lets go (L{Ledger.forget}):

  - exec: the process group of a resident (asynchronous) start script, or of
    a synchronous start script that left processes behind, as
    C{{"pgid": PGID, "start": START}} (L{process_group_value}; START is the
    group leader's kernel start time, which guards against pid reuse);
  - fip: the address, as its text (C{ledger.record(name, ADDRESS, "10.0.0.5")}).

The next incarnation of the daemon (or the supervisor, before it runs the
server-down action) reads what the dead one left (L{Ledger.leftovers}) and
removes it with L{cleanup_leftovers} before the cluster service starts.

The ledger is one small JSON file in the state directory (L{LEDGER_NAME}),
rewritten whole on every change: a temporary file, then rename(2), so a
reader sees the old or the new content, never a mix. It is not fsync'ed, on
purpose: what it records (processes, addresses) does not survive a reboot,
and a crashed process does not lose what it wrote to the page cache. After a
power loss the file may be old (ext4 orders the data of a rename-over before
the rename) or unreadable, and its entries are from another boot anyway
(the file carries the kernel's boot id): they are dropped. Writes happen only
on activation and deactivation, and writing a few hundred bytes to the page
cache costs microseconds, so they are done on the reactor thread.
"""

import json
import os
import signal
from dataclasses import dataclass, field

from twisted.internet import defer, task
from twisted.logger import Logger

from cpro.system.netlink import remove_address
from cpro.system.process import kill_process_group, read_proc_stat

log = Logger()

LEDGER_NAME = "active.json"
FORMAT = 1

PROCESS_GROUP = "process_group"
ADDRESS = "address"

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def boot_id(path=BOOT_ID_PATH):
    """The kernel's id of the current boot, or None where there is none."""
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def process_group_value(pgid, start=None):
    """The ledger value of a process group led by pgid.

    @param start: the leader's kernel start time (L{read_proc_stat}); read
        now if not given. None if the leader is already gone: the cleanup
        then trusts the group only while no process leads it.
    """
    if start is None:
        stat = read_proc_stat(pgid)
        start = stat[1] if stat is not None else None
    return {"pgid": int(pgid), "start": start}


@dataclass(frozen=True, eq=False)
class Entry:
    """One thing a resource holds."""

    resource: str
    kind: str  # PROCESS_GROUP, ADDRESS, ...
    value: object  # JSON: a dict for a process group, the text of an address

    def key(self):
        return (self.resource, self.kind, json.dumps(self.value, sort_keys=True))

    # By content: the value may be a dict, which has no hash of its own.
    def __eq__(self, other):
        return isinstance(other, Entry) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def describe(self):
        if self.kind == PROCESS_GROUP and isinstance(self.value, dict):
            return f"process group {self.value.get('pgid')} of {self.resource}"
        return f"{self.kind.replace('_', ' ')} {self.value} of {self.resource}"

    def as_json(self):
        return {"resource": self.resource, "kind": self.kind, "value": self.value}


def _entry_from_json(item):
    """An Entry from one parsed JSON item, or None if it is malformed."""
    if not isinstance(item, dict):
        return None
    resource, kind, value = item.get("resource"), item.get("kind"), item.get("value")
    if not isinstance(resource, str) or not isinstance(kind, str) or value is None:
        return None
    if kind == PROCESS_GROUP:
        if not isinstance(value, dict) or not isinstance(value.get("pgid"), int) or value["pgid"] <= 1:
            return None
        if value.get("start") is not None and not isinstance(value["start"], int):
            return None
    return Entry(resource, kind, value)


def read_ledger_file(path):
    """The parsed ledger file (a dict), or None if it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(1 << 20).decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warn("ledger {path} is unreadable ({err}); ignoring it", path=path, err=e)
        return None
    return data if isinstance(data, dict) else None


class Ledger:
    """The ledger file of one daemon (see the module docstring).

    Entries found in the file when it is opened belong to the previous
    incarnation: L{leftovers} (same boot) and L{stale} (an earlier boot).
    They stay in the file until L{clear_leftovers}, so a daemon that dies
    during the cleanup leaves them to the next one.
    """

    def __init__(self, path, current_boot=None):
        self.path = path
        self.boot = current_boot if current_boot is not None else boot_id()
        self._entries = []
        self._leftovers = []
        self._stale = []
        self.previous_pid = None  # the process that wrote the file last
        self._load()

    def _load(self):
        data = read_ledger_file(self.path)
        if data is None:
            return
        entries = [e for e in map(_entry_from_json, data.get("entries") or []) if e is not None]
        written_boot = data.get("boot_id")
        pid = data.get("pid")
        self.previous_pid = pid if isinstance(pid, int) else None
        if written_boot and self.boot and written_boot != self.boot:
            self._stale = entries
        else:
            self._leftovers = entries

    # -- what the previous incarnation left -------------------------------------

    def leftovers(self):
        """Entries the previous incarnation left in this boot: still on the host, perhaps."""
        return list(self._leftovers)

    def stale(self):
        """Entries written in an earlier boot: gone with that boot."""
        return list(self._stale)

    def clear_leftovers(self):
        """Forget what the previous incarnation left (after L{cleanup_leftovers})."""
        if self._leftovers or self._stale:
            self._leftovers, self._stale = [], []
        self._write()

    def claim(self):
        """Write the file now, as this process's: the supervisor reads the pid
        in it to know that the daemon got as far as starting its services."""
        self._write()

    # -- what this incarnation holds ------------------------------------------

    def entries(self):
        return list(self._entries)

    def record(self, resource, kind, value):
        """Resource now holds value (JSON-serialisable); returns the L{Entry}."""
        entry = Entry(resource, kind, value)
        key = entry.key()
        if all(e.key() != key for e in self._entries):
            self._entries.append(entry)
            self._write()
        return entry

    def forget(self, resource, kind, value):
        """Resource no longer holds value. Forgetting what is not recorded is fine."""
        key = Entry(resource, kind, value).key()
        kept = [e for e in self._entries if e.key() != key]
        if len(kept) != len(self._entries):
            self._entries = kept
            self._write()

    # -- the file ----------------------------------------------------------------

    def _write(self):
        if self.path is None:
            return
        data = {
            "format": FORMAT,
            "boot_id": self.boot,
            "pid": os.getpid(),
            "entries": [e.as_json() for e in self._leftovers + self._stale + self._entries],
        }
        tmp = f"{self.path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, json.dumps(data, sort_keys=True).encode("utf-8") + b"\n")
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as e:
            # Never fail an activation for this: the cleanup after a crash
            # would miss the entry, which is what the error says.
            log.error("cannot write the ledger {path}: {err}; a crash now would leave this unrecorded",
                      path=self.path, err=e)


class NullLedger:
    """A ledger that records nothing: the default of resources not wired to one."""

    path = None
    previous_pid = None

    def record(self, resource, kind, value):
        return Entry(resource, kind, value)

    def forget(self, resource, kind, value):
        pass

    def entries(self):
        return []

    def leftovers(self):
        return []

    def stale(self):
        return []

    def clear_leftovers(self):
        pass

    def claim(self):
        pass


NULL_LEDGER = NullLedger()


# -- processes -------------------------------------------------------------------


class ProcTable:
    """The live processes, from /proc (a seam for tests)."""

    def __init__(self, root="/proc"):
        self.root = root

    def group_members(self, pgid):
        """[(pid, start)] of the live (not zombie) processes of process group pgid."""
        members = []
        try:
            names = os.listdir(self.root)
        except OSError:
            return members
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(os.path.join(self.root, name, "stat"), "rb") as f:
                    data = f.read()
                fields = data[data.rindex(b")") + 2 :].split()
                state, pgrp, start = fields[0], int(fields[2]), int(fields[19])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not a process entry
            if pgrp == pgid and state not in (b"Z", b"X"):
                members.append((int(name), start))
        return members

    def killpg(self, pgid, sig):
        try:
            return kill_process_group(pgid, sig)
        except OSError as e:
            log.error("cannot signal process group {pgid}: {err}", pgid=pgid, err=e)
            return False


def group_is_ours(pgid, start, members):
    """Whether the live process group pgid is the one recorded with start.

    The leader (pid == pgid), if alive, must have the recorded start time.
    Without a leader every member must have started at or after it: a pid is
    not reused while it names a live process group, so a group whose leader
    is gone keeps its members, and members of a later group of the same id
    would all be younger than its own leader. (The one case this cannot tell
    apart -- our group ended, its pgid was reused, and that new leader died
    too -- needs a pid wrap-around between two daemon incarnations.)
    """
    leader = [s for p, s in members if p == pgid]
    if leader:
        return start is not None and leader[0] == start
    return start is None or all(s >= start for _, s in members)


# -- cleanup -------------------------------------------------------------------------


@dataclass
class CleanupReport:
    """What L{cleanup_leftovers} did, as phrases for alerts and logs."""

    removed: list = field(default_factory=list)  # "process group 123 of exec1 (2 processes killed)"
    skipped: list = field(default_factory=list)  # not ours, not there
    failed: list = field(default_factory=list)
    stale: int = 0  # entries of an earlier boot, dropped

    @property
    def found(self):
        """Whether the previous incarnation had left anything in this boot."""
        return bool(self.removed or self.skipped or self.failed)

    def summary(self):
        parts = []
        if self.removed:
            parts.append("removed " + "; ".join(self.removed))
        if self.failed:
            parts.append("could not remove " + "; ".join(self.failed))
        if self.skipped:
            parts.append("left alone " + "; ".join(self.skipped))
        if self.stale:
            parts.append(f"dropped {self.stale} entries of an earlier boot")
        return ", ".join(parts) or "nothing left"


@defer.inlineCallbacks
def cleanup_leftovers(reactor, ledger, removers=None, grace=2.0, poll=0.05, remove_timeout=10.0, proc=None):
    """Remove what the previous incarnation left, then clear the ledger.

    Process groups (kind L{PROCESS_GROUP}) get SIGTERM, then SIGKILL after
    grace seconds, only while L{group_is_ours}. Every other kind goes to
    removers[kind](value), which returns a Deferred firing True or a
    non-empty list (removed: e.g. the interfaces it was on) or False or an
    empty list (was not there), within remove_timeout seconds.

    @return: Deferred firing a L{CleanupReport}; it never fails.
    """
    report = CleanupReport(stale=len(ledger.stale()))
    yield release(reactor, ledger.leftovers(), removers, grace, poll, remove_timeout, proc, report)
    ledger.clear_leftovers()
    if report.found or report.stale:
        log.info("leftovers of the previous daemon: {summary}", summary=report.summary())
    return report


@defer.inlineCallbacks
def release(reactor, entries, removers=None, grace=2.0, poll=0.05, remove_timeout=10.0, proc=None,
            report=None, addresses_first=False):
    """Kill the process groups and remove the other holdings of C{entries}.

    The crash clean-up (L{cleanup_leftovers}) and the emergency release of a
    server that finds itself cut off by a network partition (addresses first,
    no grace: the healthy side is about to take them) share it.

    @return: Deferred firing a L{CleanupReport}; it never fails.
    """
    removers = removers or {}
    proc = proc or ProcTable()
    report = report if report is not None else CleanupReport()
    groups = [e for e in entries if e.kind == PROCESS_GROUP]
    others = [e for e in entries if e.kind != PROCESS_GROUP]
    try:
        if not addresses_first:
            yield _kill_groups(reactor, groups, grace, poll, proc, report)
        for entry in others:
            yield _remove(reactor, entry, removers.get(entry.kind), remove_timeout, report)
        if addresses_first:
            yield _kill_groups(reactor, groups, grace, poll, proc, report)
    except Exception as e:  # a bug here must not keep the daemon from going on
        log.failure("releasing {count} ledger entries", count=len(entries))
        report.failed.append(f"the release itself ({e})")
    return report


def _ours(proc, entry):
    pgid, start = entry.value["pgid"], entry.value.get("start")
    members = proc.group_members(pgid)
    return members, bool(members) and group_is_ours(pgid, start, members)


@defer.inlineCallbacks
def _kill_groups(reactor, entries, grace, poll, proc, report):
    targets = {}  # entry -> processes signalled
    for entry in entries:
        members, ours = _ours(proc, entry)
        if not members:
            continue  # ended by itself: nothing left
        if not ours:
            report.skipped.append(f"{entry.describe()} (its id now belongs to other processes)")
            continue
        proc.killpg(entry.value["pgid"], signal.SIGTERM)
        targets[entry] = len(members)
    yield _wait_gone(reactor, proc, list(targets), grace, poll)
    killed = []
    for entry in targets:
        if _ours(proc, entry)[1]:
            proc.killpg(entry.value["pgid"], signal.SIGKILL)
            killed.append(entry)
    yield _wait_gone(reactor, proc, killed, 1.0, poll)
    for entry, count in targets.items():
        how = "SIGKILL" if entry in killed else "SIGTERM"
        if _ours(proc, entry)[1]:
            report.failed.append(f"{entry.describe()} (still running after SIGKILL)")
        else:
            report.removed.append(f"{entry.describe()} ({count} process{'es' if count != 1 else ''}, {how})")


@defer.inlineCallbacks
def _wait_gone(reactor, proc, entries, limit, poll):
    deadline = reactor.seconds() + limit
    pending = list(entries)
    while pending:
        pending = [e for e in pending if _ours(proc, e)[1]]
        if not pending or reactor.seconds() >= deadline:
            return
        yield task.deferLater(reactor, poll, lambda: None)


@defer.inlineCallbacks
def _remove(reactor, entry, remover, timeout, report):
    if remover is None:
        report.failed.append(f"{entry.describe()} (no way to remove a {entry.kind} here)")
        return
    try:
        d = defer.maybeDeferred(remover, entry.value)
        d.addTimeout(timeout, reactor)
        removed = yield d
    except Exception as e:
        report.failed.append(f"{entry.describe()} ({e or type(e).__name__})")
        return
    if removed is False or (isinstance(removed, (list, tuple)) and not removed):
        report.skipped.append(f"{entry.describe()} (was not there)")
    else:
        report.removed.append(entry.describe())


def default_removers(reactor):
    """kind -> remover for L{cleanup_leftovers}: addresses through netlink, in
    the reactor's thread pool."""
    return {ADDRESS: lambda ip: remove_address(ip, reactor)}
