"""psrw: resources of the processes with one name (CPU, memory, open files, threads).

Each check finds the processes that processname matches in psw's shared
process table (one /proc scan a second serves every psw and psrw of the
daemon), reads their measures in a thread, and holds each process's values
against the thresholds over time, as sraw does
(L{cpro.resources.monitors._thresholds}): over a threshold is a Warning,
over it continuously for the whole duration an Error. Processes are told apart by pid
and start time, so a reused pid starts afresh. No matching process is
Normal (psw watches presence).

Parameters (clp.conf psrw/parameters; 0 = not watched):
- processname: as psw's: the command line (arguments joined by spaces) or
  the process name, equal, or starting with it when it ends in '*';
- cpu: percent of one CPU (a busy multithreaded process may exceed 100);
- memory: resident memory, percent of RAM;
- openfiles: open file descriptors; threads: number of threads;
- duration: seconds over a threshold before it is an Error.
"""

import psutil
from twisted.internet import defer
from zope.interface import implementer

from cpro.config.schema import MonitorSchema, Param
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.resources.monitors._threads import SingleFlight
from cpro.system.runners import thread_runner
from cpro.resources.monitors._thresholds import Threshold, combine
from cpro.resources.monitors.psw import matches, shared_process_table

# measure -> (label, unit, psutil.Process method)
MEASURES = {
    "cpu": ("cpu", "%", "cpu_percent"),
    "memory": ("memory", "%", "memory_percent"),
    "openfiles": ("open files", "", "num_fds"),
    "threads": ("threads", "", "num_threads"),
}


class ProcessSampler:
    """Reads the measures of given processes. Blocking: call it in a thread.

    sample(pids) returns {(pid, start time): {measure: number or None}} for
    those still running; cpu is None the first time a process is seen (its
    use is measured between two samples).
    """

    def __init__(self, measures):
        self.measures = tuple(measures)
        self._known = {}  # pid -> our own psutil.Process (keeps cpu_percent's state)

    def sample(self, pids):
        found = {}
        known = {}
        for pid in pids:
            proc = self._known.get(pid)
            fresh = proc is None or not proc.is_running()  # is_running: same pid *and* start time
            try:
                if fresh:
                    proc = psutil.Process(pid)
                values = {}
                with proc.oneshot():
                    for measure in self.measures:
                        method = getattr(proc, MEASURES[measure][2])
                        values[measure] = method(None) if measure == "cpu" else method()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except psutil.AccessDenied:
                continue  # not ours to read (cpro runs as root; tests may not)
            if fresh and "cpu" in values:
                values["cpu"] = None  # psutil's first cpu_percent(None) is a meaningless 0.0
            known[pid] = proc
            found[(pid, proc.create_time())] = values
        self._known = known
        return found


_PERCENT = (0, 100)
_COUNT = (0, 2**31 - 1)

SCHEMA = MonitorSchema(params=(
    Param("processname", "text", required=True),
    Param("cpu", "int", _PERCENT), Param("memory", "int", _PERCENT),
    Param("openfiles", "int", _COUNT), Param("threads", "int", _COUNT),
    Param("duration", "seconds", (1, 604_800)),
))


@MONITOR_TYPES.register("psrw", schema=SCHEMA)
@implementer(IMonitor)
class ProcessResourceMonitor:
    type = "psrw"

    def __init__(self, reactor, config, params, env, sampler=None, run_in_thread=None,
                 process_table=None):
        self.name = config.name
        self._reactor = reactor
        self.processname = params.get("processname") or ""
        self._duration = float(params.get("duration") or 3600.0)
        self._limits = {m: params.get(m) or 0 for m in MEASURES if (params.get(m) or 0) > 0}
        self._sampler = sampler or ProcessSampler(self._limits)
        self._table = process_table if process_table is not None else shared_process_table(reactor)
        self._pids = ()
        self._flight = SingleFlight(reactor, run_in_thread or thread_runner(reactor),
                                    self._sample_matched)
        self._per_process = {}  # (pid, start time) -> {measure: Threshold}
        self._count = 0

    def start(self):
        return None

    @defer.inlineCallbacks
    def check(self):
        # inlineCallbacks: cancelling the check cancels whichever step it waits on.
        now = self._reactor.seconds()
        entries = yield self._table.snapshot()
        self._pids = tuple(e.pid for e in entries if matches(self.processname, e))
        found = yield self._flight.run()
        return self._evaluate(found, now)

    def _sample_matched(self):
        return self._sampler.sample(self._pids)

    def _thresholds_of(self, key):
        thresholds = self._per_process.get(key)
        if thresholds is None:
            pid = key[0]
            thresholds = {m: Threshold(f"{self.processname}[{pid}] {MEASURES[m][0]}", limit,
                                       self._duration, MEASURES[m][1])
                          for m, limit in self._limits.items()}
        return thresholds

    def _evaluate(self, found, now):
        per_process = {key: self._thresholds_of(key) for key in found}
        self._per_process = per_process  # processes gone are forgotten
        self._count = len(found)
        findings = []
        for key, values in found.items():
            for measure, threshold in per_process[key].items():
                findings.append(threshold.update(values.get(measure), now))
        if not found:
            return combine(findings, [f"no process named {self.processname}"])
        return combine(findings, [f"{len(found)} process(es) named {self.processname} "
                                  "within thresholds"])

    def stop(self):
        self._per_process = {}
        return None

    def describe(self):
        details = {"processname": self.processname, "processes": self._count}
        over = [t.label for thresholds in self._per_process.values() for t in thresholds.values()
                if t.over_since is not None]
        if over:
            details["over threshold"] = over
        return details
