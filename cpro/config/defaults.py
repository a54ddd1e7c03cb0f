"""The built-in defaults table that a sparse clp.conf is merged over.

CLUSTERPRO writes only the parameters an operator changed, so every value the
loader reads has its default here, keyed by the element path without the
instance names: C{cluster/heartbeat/interval} stands for
C{/root/cluster/heartbeat/interval}, C{exec/act/retry} for
C{/root/resource/exec@NAME/act/retry}, C{group/failover} for
C{/root/group@NAME/failover}. Units are those of clp.conf (milliseconds for
the heartbeat, seconds elsewhere). docs/configuration.md prints this table;
keep the two in step.
"""

DEFAULTS = {
    # Cluster-wide.
    "cluster/heartbeat/interval": 3000,  # ms
    "cluster/heartbeat/timeout": 90000,  # ms
    "cluster/syncwait": 300,  # s, cpro extension
    "cluster/cfwait": 120,  # s, cpro extension
    "cluster/ports/internal": 29001,  # cpro extension
    "cluster/ports/lanhb": 29002,
    "cluster/ports/alert": 29003,
    "cluster/ports/lankhb": 29006,
    "cluster/osaction/shutdown": "systemctl poweroff",  # cpro extension
    "cluster/osaction/reboot": "systemctl reboot",
    "cluster/alertlog/maxsize": 1_000_000,  # bytes, cpro extension
    "cluster/alertlog/backups": 5,
    # Failover groups.
    "group/start": 1,  # 1 auto, 0 manual
    "group/failover": 1,  # 1 auto, 0 manual
    "group/failback": 0,  # 0 manual, 1 auto
    "group/exclusive": 0,  # 0 none, 1 normal, 2 complete
    # exec resources.
    "exec/parameters/act/path": "start.sh",
    "exec/parameters/deact/path": "stop.sh",  # optional: used only if present
    "exec/parameters/act/sync": 1,  # 1 synchronous, 0 asynchronous
    "exec/parameters/deact/sync": 1,
    "exec/parameters/timeout/start": 1800,  # s
    "exec/parameters/timeout/stop": 1800,  # s
    "exec/act/retry": 0,
    "exec/act/fo": 1,
    "exec/act/action": 1,  # none, do not continue with the next resource
    "exec/deact/retry": 0,
    "exec/deact/action": 4,  # stop the cluster service and shut down the OS
}


# Value ranges: inclusive (low, high) or a frozenset of allowed values.
RANGES = {
    "cluster/heartbeat/interval": (10, 3_600_000),
    "cluster/heartbeat/timeout": (20, 36_000_000),
    "cluster/syncwait": (0, 86400),
    "cluster/cfwait": (0, 86400),
    "ports": (1, 65535),
    "cluster/alertlog/maxsize": (4096, 2**40),
    "cluster/alertlog/backups": (0, 99),
    "server/priority": (0, 31),
    "heartbeat/priority": (0, 999),
    "device/id": (0, 99999),
    "group/gid": (0, 9999),
    "group/policy/order": (0, 31),
    "group/start": frozenset({0, 1}),
    "group/failover": frozenset({0, 1}),
    "group/failback": frozenset({0, 1}),
    "group/exclusive": frozenset({0, 1, 2}),
    "exec/parameters/act/sync": frozenset({0, 1}),
    "exec/parameters/deact/sync": frozenset({0, 1}),
    "exec/parameters/timeout/start": (1, 9999),
    "exec/parameters/timeout/stop": (1, 9999),
    "exec/act/retry": (0, 99),
    "exec/act/fo": (0, 99),
    "exec/act/action": frozenset({0, 1, 2, 3, 4, 5}),
    "exec/deact/retry": (0, 99),
    "exec/deact/action": frozenset({0, 1, 3, 4, 5}),
}

MAX_SERVERS = 32

# Default activation order of group resources without an explicit depend:
# addresses first, then storage, then everything else (exec, ...).
IP_RESOURCE_TYPES = frozenset(
    {"fip", "vip", "ddns", "awsvip", "awseip", "awsdns", "azurepp", "azurelb",
     "azuredns", "gcvip", "gclb", "gcdns", "oclb", "ocvip"}
)
DISK_RESOURCE_TYPES = frozenset({"disk", "md", "hd", "volmgr", "nas"})

SUPPORTED_HEARTBEAT_KINDS = ("lanhb", "lankhb")
SUPPORTED_RESOURCE_TYPES = ("exec",)
