"""Activation-failure escalation of group resources: retry, fail over, final action.

Pure bookkeeping: the failover counter is kept per (group, resource) on this
server, as the original does, so a group that fails everywhere stops moving
once every server has used up its threshold.
"""

import enum
from dataclasses import dataclass


class FinalAction(enum.IntEnum):
    """act/action and deact/action codes of clp.conf."""

    NONE_CONTINUE = 0  # no operation; go on with the next resource
    NONE = 1  # no operation; stop here
    STOP_GROUP = 2
    STOP_CLUSTER_SERVICE = 3
    STOP_SERVICE_AND_SHUTDOWN = 4
    STOP_SERVICE_AND_REBOOT = 5

    @property
    def words(self):
        return {
            0: "no operation (activate next resource)",
            1: "no operation (not activate next resource)",
            2: "stop group",
            3: "stop cluster service",
            4: "stop cluster service and shutdown OS",
            5: "stop cluster service and reboot OS",
        }[int(self)]


@dataclass(frozen=True)
class Decision:
    failover: bool
    final_action: FinalAction = FinalAction.NONE


class ActivationEscalation:
    def __init__(self):
        self._failovers = {}

    def decide(self, resource, target_available):
        """After resource failed activation (retries already used): fail over
        while under act/fo and a target exists, else the final action."""
        key = (resource.group, resource.name)
        used = self._failovers.get(key, 0)
        if used < resource.act_fo and target_available:
            self._failovers[key] = used + 1
            return Decision(failover=True)
        return Decision(failover=False, final_action=FinalAction(resource.act_action))

    def failovers_used(self, group, resource):
        return self._failovers.get((group, resource), 0)

    def reset_group(self, group):
        """The group came up cleanly here (or an operator acted on it)."""
        for key in [k for k in self._failovers if k[0] == group]:
            del self._failovers[key]
