"""Immutable configuration model: what the rest of cpro reads.

Built by L{cpro.config.load} from a clp.conf file merged over the defaults
table (L{cpro.config.defaults}). Times are in seconds (float) here even when
clp.conf writes milliseconds.
"""

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Device:
    """A <server><device id="N"> entry: an interconnect or other attachment."""

    id: int
    type: str  # 'lan', 'mdc', 'disk', 'bmc', 'witness', ...
    info: str  # for 'lan': the server's IP address on that interconnect (no prefix)
    extend: str = ""
    # For 'lan': the interconnect's prefix length when the info gave one
    # (cpro: <info>10.0.0.1/24</info>); 0 = not given (/24 or /64 assumed).
    prefix: int = 0


@dataclass(frozen=True)
class Ports:
    """Port numbers of one server (cluster defaults, overridable per server)."""

    internal: int = 29001  # TCP, internal communication (AMP over TLS)
    lanhb: int = 29002  # UDP, LAN heartbeat
    alert: int = 29003  # UDP, alert synchronisation
    lankhb: int = 29006  # UDP, second LAN heartbeat flavour


@dataclass(frozen=True)
class BmcConfig:
    """A server's BMC, reached by IPMI over LAN (IPv4): <device id="600"><type>bmc</type>.

    Used by the BMC heartbeat, forced stop and BMC NP actions. cpro keeps the
    credentials on the device: <user>, <password> (or <passwordfile>).
    """

    address: str  # device info: the BMC's IPv4 address
    port: int = 623  # device extend (cpro): UDP port of the BMC's RMCP+ service
    user: str = ""
    password: str = ""


@dataclass(frozen=True)
class ServerConfig:
    name: str
    priority: int  # 0 = master
    devices: tuple  # of Device, sorted by id
    ports: Ports
    # Address for internal communication and alert sync; defaults to the
    # IP of the lowest-numbered 'lan' device.
    address: str
    bmc: Optional[BmcConfig] = None  # from the server's bmc device (600+), if any

    def device(self, device_id):
        for d in self.devices:
            if d.id == device_id:
                return d
        return None


# The heartbeat kinds that run over UDP on lan devices (every server is on them).
LAN_HEARTBEAT_KINDS = ("lanhb", "lankhb")


@dataclass(frozen=True)
class HttpTarget:
    """An HTTP(S) endpoint: the witness server of a witnesshb, the target of an httpnp."""

    host: str  # host name or IP address
    port: int = 80  # 80 when not given, as in the original
    tls: bool = False  # ssl/use (cpro): HTTPS
    ca_file: Optional[str] = None  # ssl/cafile (cpro): CA bundle to verify the server; None = system CAs
    timeout: float = 3.0  # httptimeout, s (clp.conf in ms)
    path: str = "/"  # httpnp: the path asked for (cpro)


@dataclass(frozen=True)
class HeartbeatConfig:
    """A heartbeat resource: <heartbeat><lanhb name="lanhb1">.

    Each server's end of the path is its device@<device>: for lanhb/lankhb
    the IP address (info), for comhb the serial device path (info), for
    diskhb the block device (info), for bmchb the server's BMC, for
    witnesshb whether the server uses the witness (info 1).
    """

    name: str
    kind: str  # 'lanhb', 'lankhb', 'comhb', 'diskhb', 'bmchb', 'witnesshb'
    priority: int
    device: int  # device id
    baud_rate: int = 19200  # comhb: baudrate (cpro), both ends alike
    witness: Optional[HttpTarget] = None  # witnesshb: host, port (+ cpro ssl, httptimeout)


@dataclass(frozen=True)
class PingTarget:
    """One pingnp resource: <networkpartition><pingnp name="pingnp1">.

    Addresses are grouped as in clp.conf (grp@G/list@L/ip). A group answers
    when any of its addresses answers; the server is on the healthy side
    when every group answers.
    """

    name: str
    priority: int
    device: int  # 10200+; servers whose device@<device>/info is 1 use it
    groups: tuple  # of tuples of IP address strings
    interval: float = 0.2  # s between echo rounds while resolving (cpro, ms in clp.conf)
    timeout: float = 1.0  # s: no answer by then = the group does not answer (ms in clp.conf)
    servers: tuple = ()  # servers that use it (device info 1)


@dataclass(frozen=True)
class HttpNPConfig:
    """One httpnp resource: <networkpartition><httpnp name="httpnp1">."""

    name: str
    priority: int
    device: int  # 10700+; servers whose device@<device>/info is 1 use it
    target: HttpTarget
    servers: tuple = ()  # servers that use it (device info 1)


@dataclass(frozen=True)
class NetworkPartitionConfig:
    """What a server does when every heartbeat to a peer is lost (SPEC section 5)."""

    ping: tuple = ()  # of PingTarget
    http: tuple = ()  # of HttpNPConfig
    # The witness heartbeats (if any) also resolve: the witness must be
    # reachable and must not hear the lost peer either.
    use_witness: bool = True  # cluster/networkpartition/witness/use (cpro)
    # cluster/networkpartition/npaction: 0 none, 1 stop cluster service,
    # 2 stop service + shut down OS (default), 3 stop service + reboot,
    # 7 BMC reset, 8 BMC power off, 9 BMC power cycle, 10 BMC NMI (own BMC).
    action: int = 2
    # cluster/networkpartition/releasegrace (cpro, ms): after resolving, the
    # healthy side waits this long on top of the isolated side's worst-case
    # resolution time before taking its groups, so that the isolated side has
    # released them. A successful forced stop ends the wait early.
    release_grace: float = 0.5
    # cluster/networkpartition/checkinterval (cpro, ms): the resolvers also run
    # this often while all is well, so that an unreachable ping target or
    # witness is reported (alert nm 33) before a partition needs it. 0 = off.
    check_interval: float = 10.0

    @property
    def configured(self):
        return bool(self.ping or self.http)


@dataclass(frozen=True)
class ForcedStopConfig:
    """Fencing a server declared down before its groups fail over (cpro: cluster/forcestop)."""

    enabled: bool = False  # use
    method: str = "bmc"  # method: 'bmc' (IPMI through the server's BMC) or 'script'
    bmc_action: str = "off"  # action: 'off' (power off), 'reset', 'cycle', 'nmi'
    script: Optional[str] = None  # script path (method script): CLP_SERVER_DOWN, CLP_SERVER_LOCAL, CLP_FORCESTOP_MODE
    timeout: float = 10.0  # timeout, s (ms in clp.conf)
    suppress_failover_on_failure: bool = True  # suppress: a failed forced stop keeps the groups where they are
    identify_on_failure: bool = False  # identify: light the server's chassis ID lamp when it fails
    identify_seconds: int = 250  # identify/duration (IPMI allows up to 255 s)


@dataclass(frozen=True)
class OSActionCommands:
    """Commands run for OS-level final actions (argv lists, no shell).

    cpro extension: <cluster><osaction><shutdown>..</shutdown><reboot>..</reboot></osaction>.
    Tests set them to harmless commands.
    """

    shutdown: tuple = ("systemctl", "poweroff")
    reboot: tuple = ("systemctl", "reboot")


@dataclass(frozen=True)
class ExecParams:
    start_path: str  # absolute path of the start script
    stop_path: Optional[str]  # absolute path of the stop script, or None
    start_sync: bool  # parameters/act/sync (True = synchronous)
    stop_sync: bool  # parameters/deact/sync
    start_timeout: float  # parameters/timeout/start, seconds
    stop_timeout: float  # parameters/timeout/stop, seconds
    userlog: Optional[str]  # parameters/userlog: per-resource log file (None = default under state dir)


@dataclass(frozen=True)
class FipParams:
    """A floating IP (<fip name="fip1"><parameters>...).

    The interface is the one whose subnet contains the address on the server
    that activates it (found at activation, checked at validation).
    """

    ip: str  # parameters/ip: the address, without a prefix length (IPv4 or IPv6, not link-local)
    # Duplicate-address check before adding (RFC 5227-style ARP probes with
    # sender 0.0.0.0; IPv6: neighbour solicitations). count 0 disables it.
    probe_count: int = 3  # parameters/probe/count (cpro)
    probe_interval: float = 0.005  # parameters/probe/interval, s (cpro, clp.conf in ms)
    probe_wait: float = 0.02  # parameters/probe/wait, s after the last probe (cpro, ms)
    ping_check: bool = False  # parameters/ping/use (cpro): also send ICMP echo to the address
    ping_timeout: float = 0.2  # parameters/ping/timeout, s (cpro, ms)
    # Gratuitous ARP / unsolicited neighbour advertisements after adding:
    # a burst at activation and a repeat burst later (keepalived's
    # garp_master_delay / garp_master_repeat).
    garp_count: int = 3  # parameters/garp/count
    garp_interval: float = 0.01  # parameters/garp/interval, s (ms in clp.conf)
    garp_repeat_delay: float = 5.0  # parameters/garp/repeat/delay, s; 0 = no repeat burst
    garp_repeat_count: int = 5  # parameters/garp/repeat/count


@dataclass(frozen=True)
class ResourceConfig:
    """A group resource: <resource><exec name="exec1">."""

    name: str
    type: str  # 'exec', ...
    group: str  # owning group (from <group><resource name="type@name"/>)
    depends: Optional[tuple]  # explicit depend@ names; None = default order by type
    act_retry: int  # act/retry
    act_fo: int  # act/fo: failover threshold
    act_action: int  # act/action: final action code
    deact_retry: int
    deact_action: int
    params: object  # ExecParams for 'exec', FipParams for 'fip'


@dataclass(frozen=True)
class MonitorRecovery:
    """What a monitor does on error: <relation> and <emergency> of a <monitor>."""

    kind: str  # relation/type: 'rsc' (group resource), 'grp' (group), 'cls' (local server)
    target: str  # relation/name: resource or group name, 'LocalServer' for 'cls'
    restart_threshold: int  # emergency/threshold/restart: reactivations before failing over
    failover_threshold: int  # emergency/threshold/fo: failovers before the final action
    final_action: int  # emergency/action: 1 none, 2 stop group, 3 stop cluster service,
    #                    4 stop service + shut down OS, 5 stop service + reboot, 16 stop resource
    script: Optional[str] = None  # emergency/preaction/path (absolute), None = no script
    script_before_restart: bool = False  # emergency/preaction/userestart
    script_before_failover: bool = False  # emergency/preaction/usefailover
    script_before_final: bool = False  # emergency/preaction/use
    script_timeout: float = 5.0  # emergency/preaction/timeout, s


@dataclass(frozen=True)
class MonitorConfig:
    """A monitor resource: <monitor><genw name="genw1">."""

    name: str
    type: str  # 'pidw', 'genw', 'fipw', ...
    interval: float  # polling/interval, s
    timeout: float  # polling/timeout, s
    retry: int  # polling/reconfirmation: consecutive errors tolerated before recovery
    first_wait: float  # firstmonwait, s
    timing: int  # polling/timing: 0 always, 1 only while `target` is active
    target: Optional[str]  # target resource (gates timing 1; the exec of pidw, the fip of fipw/arpw)
    servers: Optional[tuple]  # polling/servers@i/name; None = every server
    delay_warning: int  # percent of timeout above which a check raises a delay warning (0 always, 100 never)
    timeout_retry: bool  # not emergency/timeout/notreconfirmation/use: retry on timeout
    timeout_recover: bool  # not emergency/timeout/notrecovery/use: recover on timeout
    recovery: MonitorRecovery
    params: dict = field(default_factory=dict)  # type-specific parameters, typed, defaults applied
    server_params: dict = field(default_factory=dict)  # server -> overrides (server@S/parameters)

    def params_on(self, server):
        """The parameters that apply on server (per-server overrides merged)."""
        merged = dict(self.params)
        merged.update(self.server_params.get(server, {}))
        return merged

    def runs_on(self, server):
        return self.servers is None or server in self.servers


@dataclass(frozen=True)
class GroupConfig:
    name: str
    gid: int
    policy: tuple  # server names, highest priority first
    start_auto: bool  # start: 1 auto, 0 manual
    failover_auto: bool  # failover: 1 auto, 0 manual
    failback_auto: bool  # failback: 1 auto, 0 manual
    exclusive: int  # 0 none, 1 normal, 2 complete (absolute)
    resources: tuple  # resource names in activation order (dependencies resolved)


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    key: bytes  # cluster key: authenticates heartbeats, alerts, internal communication
    hb_interval: float  # seconds (clp.conf cluster/heartbeat/interval, ms)
    hb_timeout: float  # seconds (clp.conf cluster/heartbeat/timeout, ms)
    startup_sync_wait: float  # seconds to wait for the other servers at cluster start
    config_download_wait: float  # seconds to wait for the master's configuration
    ports: Ports  # cluster-wide defaults
    servers: tuple  # of ServerConfig, by priority (master first)
    heartbeats: tuple  # of HeartbeatConfig, by priority
    groups: tuple  # of GroupConfig, by gid
    resources: tuple  # of ResourceConfig
    os_actions: OSActionCommands
    monitors: tuple = ()  # of MonitorConfig
    network_partition: NetworkPartitionConfig = NetworkPartitionConfig()
    forced_stop: ForcedStopConfig = ForcedStopConfig()
    # What the supervisor does when the daemon ends abnormally (pm/exec0/recover):
    # 'shutdown' (2, the default: runs os_actions.shutdown), 'reboot' (3), or the
    # cpro extension 'restart' (1: restart the daemon, which cleans up what the old one left).
    daemon_failure_action: str = "shutdown"
    alert_log_max_bytes: int = 1_000_000
    alert_log_backups: int = 5
    digest: str = ""  # sha256 of the canonical configuration: the configuration generation
    source: str = field(default="", repr=False, compare=False)  # the XML text as loaded

    @property
    def master(self):
        return self.servers[0]

    def server(self, name):
        for s in self.servers:
            if s.name == name:
                return s
        return None

    def group(self, name):
        for g in self.groups:
            if g.name == name:
                return g
        return None

    def resource(self, name):
        for r in self.resources:
            if r.name == name:
                return r
        return None

    def monitor(self, name):
        for m in self.monitors:
            if m.name == name:
                return m
        return None

    def takes_part(self, heartbeat, server_name):
        """Whether server C{server_name} is on heartbeat path C{heartbeat}: every
        server for LAN paths; for the others, the servers having its device (a
        serial line's two ends, the servers sharing the disk, those with a BMC,
        those whose witness device says 1)."""
        if heartbeat.kind in LAN_HEARTBEAT_KINDS:
            return True
        server = self.server(server_name)
        device = server.device(heartbeat.device) if server is not None else None
        if device is None:
            return False
        if heartbeat.kind == "witnesshb":
            return device.info == "1"
        if heartbeat.kind == "bmchb":
            return server.bmc is not None
        return True

    def shared_paths(self, a, b):
        """Names of the heartbeat paths both servers C{a} and C{b} are on."""
        return [hb.name for hb in self.heartbeats if self.takes_part(hb, a) and self.takes_part(hb, b)]

    def group_resources(self, group_name):
        group = self.group(group_name)
        return tuple(self.resource(n) for n in group.resources) if group else ()


@dataclass(frozen=True)
class Problem:
    """One validation finding, naming the element path at fault."""

    path: str  # e.g. '/root/group@failover1/policy@srv9'
    message: str

    def __str__(self):
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used. .errors holds every Problem found."""

    def __init__(self, errors, warnings=()):
        self.errors = tuple(errors)
        self.warnings = tuple(warnings)
        super().__init__("; ".join(str(e) for e in self.errors))
