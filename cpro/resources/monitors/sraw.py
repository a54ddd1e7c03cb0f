"""sraw: system resources (CPU, memory, swap, open files, processes, threads, disks).

Each check samples the configured measures in a thread (a statvfs on a hung
network file system blocks; the rest are /proc reads) and holds every value
against its threshold over time (L{cpro.resources.monitors._thresholds}):
over it is a Warning, over it continuously for the whole duration an
Error. Time is the injected reactor's clock.

Parameters (clp.conf sraw/parameters; 0 = not watched):
- cpu, memory, swap: percent in use (CPU busy over the time since the
  previous check; memory not available; swap used);
- openfiles: file handles open in the whole system (/proc/sys/fs/file-nr);
- processes: number of processes; threads: number of threads (tasks);
- disks: ((path, percent), ...): file system usage of each path;
- duration: seconds over a threshold before it is an Error.
"""

import psutil
from twisted.logger import Logger
from zope.interface import implementer

from cpro.config.schema import MonitorSchema, Param
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.resources.monitors._threads import SingleFlight
from cpro.system.runners import thread_runner
from cpro.resources.monitors._thresholds import Threshold, Unreadable, combine

log = Logger()

# measure -> (label, unit); the order of the status message
MEASURES = {
    "cpu": ("cpu", "%"),
    "memory": ("memory", "%"),
    "swap": ("swap", "%"),
    "openfiles": ("open files", ""),
    "processes": ("processes", ""),
    "threads": ("threads", ""),
}


class SystemSampler:
    """Reads the system-wide measures asked for. Blocking: call it in a thread.

    sample() returns {measure: number or Unreadable}; disks are keyed
    ('disk', path).
    """

    def __init__(self, measures, disk_paths=(), proc="/proc"):
        self.measures = tuple(measures)
        self.disk_paths = tuple(disk_paths)
        self._proc = proc
        self._cpu_times = None

    def sample(self):
        values = {}
        for measure in self.measures:
            try:
                values[measure] = getattr(self, f"_{measure}")()
            except (OSError, ValueError, IndexError) as e:
                values[measure] = Unreadable(str(e))
        for path in self.disk_paths:
            try:
                values[("disk", path)] = psutil.disk_usage(path).percent
            except OSError as e:
                values[("disk", path)] = Unreadable(e.strerror or str(e))
        return values

    def _cpu(self):
        # Our own previous sample rather than psutil.cpu_percent(None), whose
        # single module-wide "previous" other monitors would move.
        now = psutil.cpu_times()
        before, self._cpu_times = self._cpu_times, now
        if before is None:
            return None  # no interval yet
        total = _total(now) - _total(before)
        idle = _idle(now) - _idle(before)
        if total <= 0:
            return 0.0
        return max(0.0, min(100.0, 100.0 * (total - idle) / total))

    def _memory(self):
        return psutil.virtual_memory().percent

    def _swap(self):
        return psutil.swap_memory().percent

    def _openfiles(self):
        with open(f"{self._proc}/sys/fs/file-nr") as f:
            allocated, free, _ = f.read().split()
        return int(allocated) - int(free)

    def _processes(self):
        return len(psutil.pids())

    def _threads(self):
        # The 4th field of loadavg is running/total scheduling entities:
        # every thread, without reading each process's status file.
        with open(f"{self._proc}/loadavg") as f:
            return int(f.read().split()[3].split("/")[1])


def _total(times):
    # Linux counts guest time inside user and nice as well.
    return sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _idle(times):
    return times.idle + getattr(times, "iowait", 0.0)


_PERCENT = (0, 100)
_COUNT = (0, 2**31 - 1)

SCHEMA = MonitorSchema(params=(
    Param("cpu", "int", _PERCENT), Param("memory", "int", _PERCENT),
    Param("swap", "int", _PERCENT), Param("openfiles", "int", _COUNT),
    Param("processes", "int", _COUNT), Param("threads", "int", _COUNT),
    Param("duration", "seconds", (1, 604_800)),
    Param("disks", "disk_list"),
))


@MONITOR_TYPES.register("sraw", schema=SCHEMA)
@implementer(IMonitor)
class SystemResourceMonitor:
    type = "sraw"

    def __init__(self, reactor, config, params, env, sampler=None, run_in_thread=None):
        self.name = config.name
        self._reactor = reactor
        duration = float(params.get("duration") or 3600.0)
        self._thresholds = {}
        for measure, (label, unit) in MEASURES.items():
            limit = params.get(measure) or 0
            if limit > 0:
                self._thresholds[measure] = Threshold(label, limit, duration, unit)
        for path, percent in params.get("disks") or ():
            if percent > 0:
                self._thresholds[("disk", path)] = Threshold(f"disk {path}", percent, duration, "%")
        disk_paths = [key[1] for key in self._thresholds if isinstance(key, tuple)]
        measures = [key for key in self._thresholds if not isinstance(key, tuple)]
        self._sampler = sampler or SystemSampler(measures, disk_paths)
        self._flight = SingleFlight(reactor, run_in_thread or thread_runner(reactor),
                                    self._sampler.sample)

    def start(self):
        return None

    def check(self):
        now = self._reactor.seconds()
        d = self._flight.run()
        d.addCallback(self._evaluate, now)
        return d

    def _evaluate(self, values, now):
        findings = [threshold.update(values.get(key), now)
                    for key, threshold in self._thresholds.items()]
        return combine(findings, [t.summary() for t in self._thresholds.values()])

    def stop(self):
        for threshold in self._thresholds.values():
            threshold.over_since = None
        return None

    def describe(self):
        details = {}
        for threshold in self._thresholds.values():
            if threshold.last is not None and not isinstance(threshold.last, Unreadable):
                details[threshold.label] = threshold.last
            if threshold.over_since is not None:
                details[f"{threshold.label} over since"] = threshold.over_since
        return details
