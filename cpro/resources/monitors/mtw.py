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
from cpro.config.schema import MonitorSchema, Param
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.resources.monitors.base import CheckResult


# -- configuration ---------------------------------------------------------------


def _check_monitors(loader, mine, monitors):
    """Members are other monitors, thresholds fit their count, no cycle; the
    members kept become params["members"]."""
    for m in mine:
        if not m.ignored:
            _check_members(loader, m, monitors)
    _check_member_cycles(loader, monitors)
    for m in mine:
        if not m.ignored and hasattr(m, "members"):
            m.params["members"] = m.members


def _check_members(loader, m, monitors):
    """mtw: members are other monitors; thresholds fit the member count."""
    kept = []
    for name, path in m.params.get("members", ()):
        if name == m.name:
            loader.error(path, f"mtw {m.name} cannot watch itself")
        elif name in loader.ignored_monitors or (name in monitors and monitors[name].ignored):
            loader.warning(path, f"member {name} is ignored and is left out")
        elif name not in monitors:
            loader.error(path, f"unknown monitor {name}")
        elif name in kept:
            loader.error(path, f"member {name} is listed twice")
        else:
            kept.append(name)
    m.members = tuple(kept)
    if not kept and not m.params.get("members"):
        return  # missing members: reported as required
    if not kept:
        loader.warning(m.path, f"mtw {m.name} has no member left: it is ignored")
        m.ignored = True
        return
    error_path = m.param_paths.get("errorthreshold")
    if error_path is None:
        m.params["errorthreshold"] = len(kept)
    elif m.params["errorthreshold"] > len(kept):
        loader.error(error_path, f"errorthreshold {m.params['errorthreshold']} is more than "
                                 f"the {len(kept)} members")
    warn_path = m.param_paths.get("warnthreshold")
    if warn_path is not None and m.params["warnthreshold"] > len(kept):
        loader.error(warn_path, f"warnthreshold {m.params['warnthreshold']} is more than "
                                f"the {len(kept)} members")


def _check_member_cycles(loader, monitors):
    """An mtw may watch another mtw, but never (through others) itself."""
    graph = {m.name: m.members for m in monitors.values()
             if m.type == "mtw" and not m.ignored and hasattr(m, "members")}
    reported = set()
    for start in graph:
        loop = _loop(graph, start)
        if loop and frozenset(loop) not in reported:
            reported.add(frozenset(loop))
            loader.error(monitors[start].path,
                         "mtw members form a cycle: " + " -> ".join(loop + [start]))


def _loop(graph, start):
    """The names on a shortest cycle from start back to it (start first), or None."""
    previous = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for member in graph.get(node, ()):
            if member == start:
                chain = [node]
                while previous[chain[-1]] is not None:
                    chain.append(previous[chain[-1]])
                return list(reversed(chain))
            if member not in previous:
                previous[member] = node
                queue.append(member)
    return None


# <parameters><list id="0"><name>MONITOR</name></list>...: the original's list@i form.
SCHEMA = MonitorSchema(params=(
    Param("members", "name_list", required=True, xml=("list", "name")),
    Param("errorthreshold", "int", (1, 999)),
    Param("warnthreshold", "int", (0, 999)),
), check_monitors=_check_monitors, per_server=False)


# -- the monitor ---------------------------------------------------------------------


@MONITOR_TYPES.register("mtw", schema=SCHEMA)
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
