"""Explicit state enums shared by the state machines, status views and alerts.

The values are the original product's status words (clpstat / REST API), so that
status output needs no translation table.
"""

import enum


class ServerState(enum.Enum):
    ONLINE = "Online"
    OFFLINE = "Offline"
    CAUTION = "Caution"  # up, but some heartbeat paths are silent
    SUSPEND = "Suspend"
    UNKNOWN = "Unknown"


class PathState(enum.Enum):
    NORMAL = "Normal"
    ERROR = "Error"  # silent for longer than the heartbeat timeout
    UNKNOWN = "Unknown"  # nothing heard yet
    UNUSED = "Unused"


class GroupState(enum.Enum):
    ONLINE = "Online"
    OFFLINE = "Offline"
    ONLINE_PENDING = "Online Pending"
    OFFLINE_PENDING = "Offline Pending"
    ONLINE_FAILURE = "Online Failure"
    OFFLINE_FAILURE = "Offline Failure"
    UNKNOWN = "Unknown"

    @property
    def holds_resources(self):
        """True when some resource of the group may be active on its server.

        A group in any of these states must be failed over (or stopped) and
        must never be started a second time elsewhere.
        """
        return self in (
            GroupState.ONLINE,
            GroupState.ONLINE_PENDING,
            GroupState.ONLINE_FAILURE,
            GroupState.OFFLINE_PENDING,
            GroupState.OFFLINE_FAILURE,
        )


class ResourceState(enum.Enum):
    ONLINE = "Online"
    OFFLINE = "Offline"
    ONLINE_PENDING = "Online Pending"
    OFFLINE_PENDING = "Offline Pending"
    ONLINE_FAILURE = "Online Failure"
    OFFLINE_FAILURE = "Offline Failure"
    UNKNOWN = "Unknown"


class MonitorState(enum.Enum):
    """State of one monitor resource on one server (clpstat -m words)."""

    NORMAL = "Normal"
    WARNING = "Warning"
    ERROR = "Error"
    SUSPENDED = "Suspend"  # suspended by an operator (clpmonctrl -s) or waiting for its target
    STOPPED = "Offline"  # not running on this server (not started, target inactive, cluster stopped)
    UNKNOWN = "Unknown"  # started, first check not done yet (firstmonwait)


class ClusterServiceState(enum.Enum):
    """The local cluster service (what clpcl starts and stops)."""

    STARTING = "Starting"  # waiting for the other servers (startup synchronisation)
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    STOPPING = "Stopping"
    STOPPED = "Stopped"


class Level(enum.Enum):
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
