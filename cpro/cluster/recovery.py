"""Recovery escalation of one monitor on the local server: reactivate, fail over, final action.

Pure bookkeeping, one L{RecoveryEscalation} per monitor per server (as the
original keeps its counters): each confirmed error asks L{decide} for the
next step. The counters only go back to zero when the monitor returns to
normal (or an operator clears them), so a group that fails on every server
stops moving once each server has used up its failover threshold.

Recovery target 'cls' (LocalServer) has no reactivation or failover: its only
step is the final action, as in the original.
"""

import enum
from dataclasses import dataclass
from typing import Optional


class MonitorFinalAction(enum.IntEnum):
    """emergency/action codes of a monitor that cpro carries out."""

    NONE = 1
    STOP_GROUP = 2
    STOP_CLUSTER_SERVICE = 3
    STOP_SERVICE_AND_SHUTDOWN = 4
    STOP_SERVICE_AND_REBOOT = 5
    STOP_RESOURCE = 16

    @classmethod
    def from_code(cls, code):
        """The action for a clp.conf code; codes cpro does not carry out
        (sysrq, keepalive, BMC, I/O fencing) are refused by validation and
        taken as 'no operation' here."""
        try:
            return cls(int(code))
        except (TypeError, ValueError):
            return cls.NONE

    @property
    def words(self):
        return {
            1: "no operation",
            2: "stop group",
            3: "stop cluster service",
            4: "stop cluster service and shutdown OS",
            5: "stop cluster service and reboot OS",
            16: "stop resource",
        }[int(self)]

    @property
    def stops_service(self):
        return self in (MonitorFinalAction.STOP_CLUSTER_SERVICE,
                        MonitorFinalAction.STOP_SERVICE_AND_SHUTDOWN,
                        MonitorFinalAction.STOP_SERVICE_AND_REBOOT)


class RecoveryStep(enum.Enum):
    RESTART = "reactivation"
    FAILOVER = "failover"
    FINAL_ACTION = "final action"
    EXHAUSTED = "exhausted"  # the final action was already taken in this error episode


@dataclass(frozen=True)
class RecoveryDecision:
    step: RecoveryStep
    final_action: Optional[MonitorFinalAction] = None
    # The final action is not carried out: no other server runs normally, so
    # stopping or shutting down this one would leave the cluster with nothing.
    suppressed: bool = False


class RecoveryEscalation:
    """Counters and the decision restart -> failover -> final action of one monitor."""

    def __init__(self, recovery):
        """@param recovery: the monitor's L{cpro.config.model.MonitorRecovery}."""
        self.recovery = recovery
        self.restarts = 0
        self.failovers = 0
        self.final_done = False
        self.exhausted_alerted = False
        self.not_active_alerted = False

    @property
    def final_action(self):
        return MonitorFinalAction.from_code(self.recovery.final_action)

    @property
    def started(self):
        """True once a step has been taken in the current error episode."""
        return bool(self.restarts or self.failovers or self.final_done)

    def decide(self, failover_target_available, others_running):
        """The next step after a confirmed error; the counters advance.

        @param failover_target_available: another server could take the group now.
        @param others_running: another server runs the cluster service normally
            (otherwise a final action other than 'no operation' is suppressed).
        """
        local_server = self.recovery.kind == "cls"
        if not local_server and self.restarts < self.recovery.restart_threshold:
            self.restarts += 1
            return RecoveryDecision(RecoveryStep.RESTART)
        if not local_server and self.failovers < self.recovery.failover_threshold \
                and failover_target_available:
            self.failovers += 1
            return RecoveryDecision(RecoveryStep.FAILOVER)
        if self.final_done:
            return RecoveryDecision(RecoveryStep.EXHAUSTED, self.final_action)
        self.final_done = True
        action = self.final_action
        suppressed = action is not MonitorFinalAction.NONE and not others_running
        return RecoveryDecision(RecoveryStep.FINAL_ACTION, action, suppressed)

    def reset(self):
        """The monitor returned to normal (or an operator cleared the counters).
        Returns True when there was something to reset."""
        had = self.started or self.exhausted_alerted or self.not_active_alerted
        self.restarts = self.failovers = 0
        self.final_done = self.exhausted_alerted = self.not_active_alerted = False
        return had

    def counters(self):
        return {"restarts": self.restarts, "failovers": self.failovers, "final_action_done": self.final_done}
