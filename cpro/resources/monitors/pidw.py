"""pidw: the resident process of an asynchronous exec resource is still alive.

The target (config.target) is an exec resource started asynchronously; its
resident() gives (pid, kernel start time) of the script it left running. A
check reads /proc/PID/stat: the process must exist, must not be a zombie, and
must have the same kernel start time, so that another process that happens to
reuse the pid is not taken for the script. When the resource cannot tell the
start time, the one seen at the first check of that pid is kept instead.

The look-up is one small procfs read (served from memory), done on the reactor
thread; the check's Deferred has already fired when returned, so there is
nothing for a cancel to abort.
"""

from twisted.internet import defer
from zope.interface import implementer

from cpro.config.schema import MonitorSchema
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.resources.monitors.base import CheckResult
from cpro.system.process import read_proc_stat

_EXITED_STATES = frozenset({"Z", "X", "x"})  # zombie, dead


def resident_identity(resource):
    """(pid, start time or None) of the resource's resident process, or None.

    Uses ExecResource.resident(); a resource offering only a `pid` attribute
    (an older or fake implementation) gives no start time.
    """
    resident = getattr(resource, "resident", None)
    if callable(resident):
        return resident()
    pid = getattr(resource, "pid", None)
    return (pid, None) if pid is not None else None


def _async_exec_only(loader, m, resource):
    """pidw watches the resident start script of an asynchronous exec."""
    if resource.start_sync != 0:
        loader.error(m.target_path, f"pidw needs an asynchronous exec (parameters/act/sync 0): "
                                    f"{m.target} is synchronous")


# No parameters; the target is an exec resource, watched while it is active.
SCHEMA = MonitorSchema(target_type="exec", check_target=_async_exec_only)


@MONITOR_TYPES.register("pidw", schema=SCHEMA)
@implementer(IMonitor)
class PidMonitor:
    type = "pidw"

    def __init__(self, reactor, config, params, env, read_stat=read_proc_stat):
        self.name = config.name
        self._target = config.target
        self._env = env
        self._read_stat = read_stat
        self._seen = None  # (pid, start time) first seen, when the resource gives no start time
        self._last_pid = None

    def start(self):
        return None

    def stop(self):
        self._seen = None
        return None

    def describe(self):
        return {"target": self._target, "pid": self._last_pid}

    def check(self):
        return defer.succeed(self._look())

    def _look(self):
        target = self._target
        if not target:
            return CheckResult.error("no target exec resource is configured")
        resource = self._env.resource(target)
        if resource is None:
            return CheckResult.error(f"target resource {target} does not exist on this server")
        identity = resident_identity(resource)
        if identity is None:
            self._last_pid = None
            return CheckResult.error(f"{target} has no running asynchronous start script")
        pid, expected_start = identity
        self._last_pid = pid
        stat = self._read_stat(pid)
        if stat is None:
            return CheckResult.error(f"process {pid} of {target} does not exist")
        state, start_time = stat
        if expected_start is None:
            if self._seen is None or self._seen[0] != pid:
                self._seen = (pid, start_time)
            expected_start = self._seen[1]
        if start_time != expected_start:
            return CheckResult.error(
                f"process {pid} of {target} has ended: pid {pid} now belongs to another process"
                f" (started at tick {start_time}, the script at tick {expected_start})"
            )
        if state in _EXITED_STATES:
            return CheckResult.error(f"process {pid} of {target} has exited (state {state})")
        return CheckResult.normal()
