"""psw: at least params['processnum'] processes named params['processname'] are running.

A process matches when its command line (the arguments joined by spaces, as
`ps -eo args` shows them; `[name]` for kernel threads) or its name equals
processname. A trailing '*' makes it a prefix match ("/usr/sbin/nginx*" matches
"/usr/sbin/nginx -g daemon off;"). Zombies do not count. Fewer matches than
processnum is an error.

Listing processes costs about 50 us per process, so it runs in a thread, and
every psw on one reactor shares one L{ProcessTable}: a scan at most every
`max_age` seconds serves all of them (500 monitors at 5 s intervals cause one
scan a second, not a hundred).
"""

import collections
import weakref

import psutil
from twisted.internet import defer
from zope.interface import implementer

from cpro.config.schema import MonitorSchema, Param
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.resources.monitors._threads import SingleFlight
from cpro.system.runners import thread_runner
from cpro.resources.monitors.base import CheckResult

ProcessEntry = collections.namedtuple("ProcessEntry", "pid name cmdline")


def scan_processes():
    """Every live (non-zombie) process as a L{ProcessEntry}. Blocking: call it in a thread."""
    entries = []
    for pid in psutil.pids():
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
                name = process.name()
                args = process.cmdline()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue  # ended while we looked (or hidden from us): not running for our purpose
        cmdline = " ".join(args) if args else f"[{name}]"
        entries.append(ProcessEntry(pid, name, cmdline))
    return tuple(entries)


class ProcessTable:
    """A recent list of processes, shared by the psw monitors of one reactor.

    snapshot() answers from the last scan if it started at most max_age
    seconds ago, else joins the scan in flight or starts one (in a thread).
    """

    def __init__(self, clock, run_in_thread, scan=scan_processes, max_age=1.0):
        self._clock = clock
        self._max_age = max_age
        self._flight = SingleFlight(clock, run_in_thread, scan)
        self._entries = None
        self._taken_at = None

    def snapshot(self):
        """Deferred firing a tuple of L{ProcessEntry}; cancelling it abandons only this caller."""
        if self._entries is not None and self._clock.seconds() - self._taken_at <= self._max_age:
            return defer.succeed(self._entries)
        d = self._flight.run()
        started = self._flight.busy_since if self._flight.busy else self._clock.seconds()

        def keep(entries):
            if self._taken_at is None or started >= self._taken_at:
                self._entries, self._taken_at = entries, started
            return entries

        return d.addCallback(keep)


_shared_tables = weakref.WeakKeyDictionary()


def shared_process_table(reactor):
    """The one L{ProcessTable} of reactor (scans in the reactor's thread pool)."""
    table = _shared_tables.get(reactor)
    if table is None:
        table = _shared_tables[reactor] = ProcessTable(reactor, thread_runner(reactor))
    return table


def matches(pattern, entry):
    if pattern.endswith("*"):
        prefix = pattern[:-1]
        return entry.cmdline.startswith(prefix) or entry.name.startswith(prefix)
    return entry.cmdline == pattern or entry.name == pattern


SCHEMA = MonitorSchema(params=(
    Param("processname", "text", required=True),
    Param("processnum", "int", (1, 999)),
))


@MONITOR_TYPES.register("psw", schema=SCHEMA)
@implementer(IMonitor)
class ProcessNameMonitor:
    type = "psw"

    def __init__(self, reactor, config, params, env, process_table=None):
        self.name = config.name
        self._pattern = params["processname"]
        self._minimum = int(params.get("processnum", 1))
        self._table = process_table if process_table is not None else shared_process_table(reactor)
        self._last_count = None

    def start(self):
        return None

    def stop(self):
        return None

    def describe(self):
        return {"processname": self._pattern, "processnum": self._minimum, "count": self._last_count}

    def check(self):
        return self._table.snapshot().addCallback(self._judge)

    def _judge(self, entries):
        count = sum(1 for entry in entries if matches(self._pattern, entry))
        self._last_count = count
        if count < self._minimum:
            return CheckResult.error(
                f"{count} process(es) named '{self._pattern}' running, fewer than {self._minimum}"
            )
        return CheckResult.normal(f"{count} process(es) named '{self._pattern}' running")
