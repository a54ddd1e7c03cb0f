"""What every group resource shares: the action context and the error type."""

from dataclasses import dataclass, field


class ResourceError(Exception):
    """Activation or deactivation failed; str() says why, for alerts and status."""


@dataclass(frozen=True)
class ActionContext:
    """Why and where a resource is being activated or deactivated.

    Maps onto the script environment of the original product.
    """

    event: str  # CLP_EVENT: 'START', 'FAILOVER' or 'RECOVER'
    group: str  # CLP_GROUPNAME
    server: str  # name of the local server
    home: bool  # CLP_SERVER: True -> 'HOME' (highest-priority server of the policy), else 'OTHER'
    factor: str = ""  # CLP_FACTOR: 'CLUSTERSHUTDOWN', 'GROUPSTOP', 'GROUPMOVE', 'GROUPFAILOVER', 'RESOURCERESTART', ...
    disk: str = "SUCCESS"  # CLP_DISK
    extra_env: dict = field(default_factory=dict)
