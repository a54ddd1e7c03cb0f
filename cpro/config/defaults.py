"""The built-in defaults table that a sparse clp.conf is merged over.

CLUSTERPRO writes only the parameters an operator changed, so every value the
loader reads has its default here, keyed by the element path without the
instance names: C{cluster/heartbeat/interval} stands for
C{/root/cluster/heartbeat/interval}, C{exec/act/retry} for
C{/root/resource/exec@NAME/act/retry}, C{group/failover} for
C{/root/group@NAME/failover}. Units are those of clp.conf (milliseconds for
the heartbeat and the cpro fip extensions, seconds elsewhere). Monitor keys
are C{monitor/KEY} for every monitor type and C{TYPE/KEY} where a type has
its own default (C{genw/polling/interval} for
C{/root/monitor/genw@NAME/polling/interval}); L{monitor_default} looks them
up in that order. docs/configuration.md prints this table; keep the two in
step.
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
    "cluster/monitor/delaywarning": 80,  # percent of a monitor's timeout, cpro path
    "pm/exec0/recover": 2,  # daemon failure: 2 shut down the OS
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
    # fip resources (floating IPs). The probe/ping/garp keys are cpro extensions.
    "fip/act/retry": 5,  # the original retries a floating IP 5 times
    "fip/act/fo": 1,
    "fip/act/action": 1,
    "fip/deact/retry": 0,
    "fip/deact/action": 4,
    "fip/parameters/probe/count": 3,
    "fip/parameters/probe/interval": 5,  # ms
    "fip/parameters/probe/wait": 20,  # ms
    "fip/parameters/ping/use": 0,
    "fip/parameters/ping/timeout": 200,  # ms
    "fip/parameters/garp/count": 3,
    "fip/parameters/garp/interval": 10,  # ms
    "fip/parameters/garp/repeat/delay": 5000,  # ms, 0 = no repeat burst
    "fip/parameters/garp/repeat/count": 5,
    # Monitor resources: every type.
    "monitor/firstmonwait": 0,  # s
    "monitor/polling/timing": 0,  # 0 always, 1 while the target is active
    "monitor/emergency/threshold/restart": 3,
    "monitor/emergency/threshold/fo": 1,
    "monitor/emergency/action": 1,  # none
    "monitor/emergency/preaction/userestart": 0,
    "monitor/emergency/preaction/usefailover": 0,
    "monitor/emergency/preaction/use": 0,
    "monitor/emergency/preaction/path": "preaction.sh",
    "monitor/emergency/preaction/timeout": 5,  # s
    # Per type: polling interval (s), timeout (s), reconfirmation (retries),
    # and whether a timeout skips the retries (notreconfirmation) and the
    # recovery (notrecovery). Filled in below from MONITOR_TIMINGS.
    # Type-specific parameters.
    "psw/parameters/processnum": 1,
    "genw/parameters/sync": 1,
    "genw/parameters/normalval": 0,
    "genw/parameters/waitmonstart": 0,  # s
    "diskw/parameters/size": 512,  # bytes
    "diskw/parameters/method": "read",  # cpro: read | odirect
    "userw/parameters/usehb": 1,
    "userw/parameters/method": "keepalive",
    "userw/parameters/action": "RESET",
    "sraw/parameters/cpu": 90,  # percent, 0 = not checked
    "sraw/parameters/memory": 90,  # percent
    "sraw/parameters/swap": 0,  # percent
    "sraw/parameters/openfiles": 0,  # open files in the system, 0 = not checked
    "sraw/parameters/processes": 0,  # processes in the system
    "sraw/parameters/threads": 0,  # threads in the system
    "sraw/parameters/duration": 3600,  # s over a threshold before it is an error
    "psrw/parameters/cpu": 90,  # percent of one CPU
    "psrw/parameters/memory": 0,  # percent of RAM (resident)
    "psrw/parameters/openfiles": 0,  # per process
    "psrw/parameters/threads": 0,  # per process
    "psrw/parameters/duration": 3600,  # s
    "mtw/parameters/warnthreshold": 1,  # errorthreshold defaults to the member count
    "fipw/parameters/monmii": 0,
    "arpw/parameters/count": 1,
}

# Timing defaults of the monitor types cpro runs (each type registers itself
# with cpro.plugins.MONITOR_TYPES; a test checks the two lists agree):
# (interval s, timeout s, reconfirmation, notreconfirmation/use, notrecovery/use, timing).
# pidw, psw and fipw neither retry nor recover after a timeout (a stalled
# check says nothing about the process or address); the others do.
MONITOR_TIMINGS = {
    "pidw": (5, 60, 0, 1, 1, 1),
    "psw": (5, 60, 0, 1, 1, 0),
    "genw": (60, 120, 1, 0, 0, 0),
    "ipw": (30, 30, 0, 0, 0, 0),
    "miiw": (10, 60, 3, 0, 0, 0),
    "diskw": (30, 300, 0, 0, 0, 0),
    "userw": (3, 90, 0, 0, 0, 0),  # used only with usehb 0
    "sraw": (60, 120, 0, 0, 0, 0),
    "psrw": (60, 120, 0, 0, 0, 0),
    "mtw": (30, 30, 0, 0, 0, 0),
    "fipw": (60, 180, 0, 1, 1, 1),
    "arpw": (30, 180, 0, 0, 0, 1),
}
for _type, _values in MONITOR_TIMINGS.items():
    for _key, _value in zip(("polling/interval", "polling/timeout", "polling/reconfirmation",
                             "emergency/timeout/notreconfirmation/use",
                             "emergency/timeout/notrecovery/use", "polling/timing"), _values):
        if _key != "polling/timing" or _value != DEFAULTS["monitor/polling/timing"]:
            DEFAULTS[f"{_type}/{_key}"] = _value
del _type, _values, _key, _value

def monitor_default(monitor_type, key):
    """The default of monitor key (e.g. 'polling/interval') for one monitor type."""
    return DEFAULTS.get(f"{monitor_type}/{key}", DEFAULTS.get(f"monitor/{key}"))


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
    "cluster/monitor/delaywarning": (0, 100),
    "fip/act/retry": (0, 99),
    "fip/act/fo": (0, 99),
    "fip/act/action": frozenset({0, 1, 2, 3, 4, 5}),
    "fip/deact/retry": (0, 99),
    "fip/deact/action": frozenset({0, 1, 3, 4, 5}),
    "fip/parameters/probe/count": (0, 99),
    "fip/parameters/probe/interval": (1, 10000),
    "fip/parameters/probe/wait": (0, 10000),
    "fip/parameters/ping/use": frozenset({0, 1}),
    "fip/parameters/ping/timeout": (1, 60000),
    "fip/parameters/garp/count": (0, 99),
    "fip/parameters/garp/interval": (0, 10000),
    "fip/parameters/garp/repeat/delay": (0, 3_600_000),
    "fip/parameters/garp/repeat/count": (0, 99),
    "monitor/polling/interval": (1, 9999),
    "monitor/polling/timeout": (1, 9999),
    "monitor/polling/reconfirmation": (0, 999),
    "monitor/polling/timing": frozenset({0, 1}),
    "monitor/polling/delaywarning": (0, 100),
    "monitor/firstmonwait": (0, 9999),
    "monitor/emergency/timeout/notreconfirmation/use": frozenset({0, 1}),
    "monitor/emergency/timeout/notrecovery/use": frozenset({0, 1}),
    "monitor/emergency/threshold/restart": (0, 99),
    "monitor/emergency/threshold/fo": (0, 99),
    "monitor/emergency/preaction/userestart": frozenset({0, 1}),
    "monitor/emergency/preaction/usefailover": frozenset({0, 1}),
    "monitor/emergency/preaction/use": frozenset({0, 1}),
    "monitor/emergency/preaction/timeout": (1, 9999),
}

MAX_SERVERS = 32

# Default activation order of group resources without an explicit depend:
# addresses first, then storage, then everything else (exec, ...).
IP_RESOURCE_TYPES = frozenset(
    {"fip", "vip", "ddns", "awsvip", "awseip", "awsdns", "azurepp", "azurelb",
     "azuredns", "gcvip", "gclb", "gcdns", "oclb", "ocvip"}
)
DISK_RESOURCE_TYPES = frozenset({"disk", "md", "hd", "volmgr", "nas"})

# Monitor final actions (emergency/action) cpro carries out; the original's
# 8-15 (sysrq panic, keepalive and BMC actions, I/O fencing) need hardware
# or kernel drivers that cpro does not drive.
MONITOR_FINAL_ACTIONS = frozenset({1, 2, 3, 4, 5, 16})
UNSUPPORTED_FINAL_ACTIONS = frozenset(range(8, 16))

# pm/exec0/recover: what to do when the cluster daemon fails.
DAEMON_FAILURE_ACTIONS = {1: "restart", 2: "shutdown", 3: "reboot"}

# Prefix length assumed for a lan device address given without one.
DEFAULT_PREFIX = {4: 24, 6: 64}
