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
"""

import enum
from dataclasses import dataclass


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
