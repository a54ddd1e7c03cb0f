"""mtw: multi-target monitor, an Error or Warning when enough member monitors are in Error.

Members are other monitors on this server, read through
env.monitor_state(name). Only members in Error count, toward both
thresholds (as the original: the warning threshold is a lower count of
members in error). Suspended, stopped, not yet checked and unknown members
are not counted, so suspending a member can keep the Error threshold out of
reach; members in Warning are named in the message but not counted.

Parameters (clp.conf mtw/parameters):
- members: names of the member monitors (<list><name>);
- errorthreshold: members in Error for an Error (default: all members);
- warnthreshold: members in Error for a Warning (0 = never a Warning).
"""

from twisted.internet import defer
from zope.interface import implementer

from cpro.cluster.states import MonitorState
from cpro.interfaces import IMonitor
from cpro.resources.monitors.base import CheckResult, monitor_type


@monitor_type("mtw")
@implementer(IMonitor)
class MultiTargetMonitor:
    type = "mtw"

    def __init__(self, reactor, config, params, env):
        self.name = config.name
        self._env = env
        self.members = tuple(params.get("members") or ())
        self.error_threshold = params.get("errorthreshold") or len(self.members)
        warn = params.get("warnthreshold")
        self.warn_threshold = 1 if warn is None else warn
        self._last = {}

    def start(self):
        return None

    def check(self):
        states = {name: self._env.monitor_state(name) for name in self.members}
        self._last = {name: (s.value if s is not None else None) for name, s in states.items()}
        in_error = [n for n, s in states.items() if s is MonitorState.ERROR]
        in_warning = [n for n, s in states.items() if s is MonitorState.WARNING]
        counted = [n for n, s in states.items()
                   if s in (MonitorState.NORMAL, MonitorState.WARNING, MonitorState.ERROR)]
        text = f"{len(in_error)} of {len(counted)} counted members in error"
        if in_error:
            text += f" ({', '.join(in_error)})"
        if in_warning:
            text += f"; in warning: {', '.join(in_warning)}"
        if self.error_threshold and len(in_error) >= self.error_threshold:
            return defer.succeed(CheckResult.error(
                f"{text}: error threshold {self.error_threshold} reached"))
        if self.warn_threshold and len(in_error) >= self.warn_threshold:
            return defer.succeed(CheckResult.warning(
                f"{text}: warning threshold {self.warn_threshold} reached"))
        return defer.succeed(CheckResult.normal(text))

    def stop(self):
        return None

    def describe(self):
        return {"members": {name: self._last.get(name) for name in self.members},
                "errorthreshold": self.error_threshold, "warnthreshold": self.warn_threshold}
