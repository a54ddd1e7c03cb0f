"""What every monitor type shares: check results and the run-time environment.

A monitor type module defines a class implementing L{cpro.interfaces.IMonitor}
whose constructor is ``Cls(reactor, config, params, env)``:

- reactor: the injected reactor (IReactorTime, IReactorProcess, ...);
- config: its L{cpro.config.model.MonitorConfig};
- params: ``config.params_on(env.local)`` (type-specific, typed, defaults applied);
- env: a L{MonitorEnvironment}.

and registers it, with its configuration schema (a
L{cpro.config.schema.MonitorSchema}), with
``@cpro.plugins.MONITOR_TYPES.register("pidw", schema=SCHEMA)``.

An event-fed type (schema C{event_fed=True}, an
L{cpro.interfaces.IEventMonitor}) is not polled: its constructor takes one
more keyword argument, ``report``, the callable it hands a L{CheckResult}
when an event arrives. L{EventFedMonitor} is a base for such types.
"""

import enum
from dataclasses import dataclass

from zope.interface import implementer

from cpro.interfaces import IEventMonitor


class CheckStatus(enum.Enum):
    NORMAL = "Normal"
    WARNING = "Warning"  # degraded but no recovery (e.g. sraw over a warning threshold)
    ERROR = "Error"


@dataclass(frozen=True)
class CheckResult:
    status: CheckStatus
    message: str = ""  # why: shown by clpstat -m and written to the alert log

    @classmethod
    def normal(cls, message=""):
        return cls(CheckStatus.NORMAL, message)

    @classmethod
    def warning(cls, message):
        return cls(CheckStatus.WARNING, message)

    @classmethod
    def error(cls, message):
        return cls(CheckStatus.ERROR, message)


class MonitorEnvironment:
    """What a monitor may look at besides its own target; given by the daemon.

    local: name of the local server. state_dir / log_dir: the daemon's
    directories. resource(name): the local IGroupResource object (for pidw's
    async exec, fipw's floating IP) or None. monitor_state(name): the
    MonitorState of another local monitor (for mtw) or None. hb_interval /
    hb_timeout: the cluster heartbeat settings (userw's usehb). reactor_lag:
    a callable returning the last measured reactor lag in seconds (userw).
    os_actions: IOSActions for monitors that act themselves (userw).
    os_action_commands: the cluster's L{cpro.config.model.OSActionCommands}
    (userw hands its reboot command to a watchdog process that must act
    while the daemon is stalled); None = no watchdog action configured.
    """

    def __init__(self, local, state_dir, log_dir, resource=lambda name: None,
                 monitor_state=lambda name: None, hb_interval=3.0, hb_timeout=90.0,
                 reactor_lag=lambda: 0.0, os_actions=None, os_action_commands=None):
        self.local = local
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.resource = resource
        self.monitor_state = monitor_state
        self.hb_interval = hb_interval
        self.hb_timeout = hb_timeout
        self.reactor_lag = reactor_lag
        self.os_actions = os_actions
        self.os_action_commands = os_action_commands


@implementer(IEventMonitor)
class EventFedMonitor:
    """A base for event-fed monitor types (mrw, bmcw, ...).

    It keeps the engine's C{report} callback; L{receive} hands it a result
    (a subclass calls it from its own event source, or the daemon's
    receivers go through L{cpro.services.monitors.MonitorService.deliver},
    which reaches the same engine). A subclass sets C{type}, C{clearable},
    and extends start/stop (calling these) when it has a source to open and
    close; between stop and start, L{receive} hands nothing on.
    """

    type = None
    clearable = True  # a Normal report may end an Error (clprexec --clear)

    def __init__(self, reactor, config, params, env, report):
        self.reactor = reactor
        self.config = config
        self.name = config.name
        self.params = params
        self.env = env
        self._report = report
        self.received = 0  # results handed to the engine
        self.taken = 0  # of which the engine took
        self.last_status = None  # CheckStatus of the last result handed on
        self.started = False

    def start(self):
        self.started = True
        return None

    def stop(self):
        self.started = False
        return None

    def describe(self):
        return {"received": self.received, "taken": self.taken,
                "last": self.last_status.value if self.last_status is not None else None}

    def receive(self, result):
        """An event arrived: hand its result to the engine. Returns whether it was taken."""
        if not self.started:
            return False
        self.received += 1
        self.last_status = result.status
        taken = bool(self._report(result))
        if taken:
            self.taken += 1
        return taken
