"""The <heartbeat> section of clp.conf, read and checked through each kind's schema.

A heartbeat kind (lanhb, comhb, ...) lives in one module under
L{cpro.services.heartbeat} and registers with L{cpro.plugins.HEARTBEAT_KINDS}
together with a L{HeartbeatKindSchema}: what this package needs to know of
it. Nothing here names a concrete kind; a kind that is not registered is
not supported (and warned about by the loader).
"""

from dataclasses import dataclass
from typing import Callable, Optional

from cpro.plugins import HEARTBEAT_KINDS


@dataclass(frozen=True)
class HeartbeatKindSchema:
    """The clp.conf part of a heartbeat kind (C{<heartbeat><KIND name=...>}).

    - C{device_type}: the type of the server device (C{device@<device>}) each
      end of the path runs over: "lan", "com", "disk", "bmc", "witness".
    - C{every_server}: every server is on the path, so every server needs
      the device (the LAN kinds). At least one heartbeat of such a kind is
      required. The other kinds link the servers that have the device, and
      must link at least two.
    - C{udp_port}: the L{cpro.config.model.Ports} field of the UDP port the
      path listens on at its device's address (checked against the other
      listeners); None for a path without a socket of its own.
    - C{opt_in}: a server takes part only if its device says so (info 1:
      C{device.use}); otherwise having the device is enough.
    - C{read(report, node)}: read the kind's own elements of the
      C{<heartbeat><KIND>} node (recording problems with their element
      paths); returns the L{cpro.config.model.HeartbeatConfig} keywords.
      The loader reads name, priority and device, and finishes the node.
    - C{check_links(report, hb, servers)}: a further rule on the names of
      the servers the path links (hb: a namespace with name, kind, device,
      path).
    - C{check_cluster(report, hb, cluster)}: a cross-check against the
      C{<cluster>} settings (a namespace; hb_interval and hb_timeout in ms,
      None when invalid).
    """

    device_type: str
    every_server: bool = False
    udp_port: Optional[str] = None
    opt_in: bool = False
    read: Optional[Callable] = None
    check_links: Optional[Callable] = None
    check_cluster: Optional[Callable] = None


def is_supported(kind):
    """Whether a heartbeat kind is registered."""
    return kind in HEARTBEAT_KINDS


def schema(kind):
    """The L{HeartbeatKindSchema} of a registered kind."""
    return HEARTBEAT_KINDS.get(kind).schema


def every_server_kinds():
    """The names of the kinds every server is on (one of them is required), sorted."""
    return [p.name for p in HEARTBEAT_KINDS.plugins() if p.schema.every_server]


def required_message():
    """The error when no heartbeat of a kind every server is on is configured."""
    return f"at least one {' or '.join(every_server_kinds())} heartbeat is required"


def has_required(heartbeats):
    """Whether one of the heartbeats (namespaces with kind) is of a kind every server is on."""
    return any(schema(hb.kind).every_server for hb in heartbeats.values())


def read_heartbeat(report, child, kind):
    """Read the kind-specific children of a heartbeat element; return model keywords."""
    read = schema(kind).read
    return read(report, child) if read is not None else {}


def udp_port(kind):
    """The Ports field a heartbeat of this kind listens on, or None."""
    return schema(kind).udp_port


def check_heartbeat_devices(report, heartbeats, servers):
    """Each heartbeat has its device of the right type where it must, and links enough servers."""
    for hb in heartbeats.values():
        if hb.device is None:
            continue
        kind = schema(hb.kind)
        wanted = kind.device_type
        having = []
        for server in servers.values():
            device = server.devices.get(hb.device)
            if device is None:
                if kind.every_server:
                    report.error(f"{server.path}/device@{hb.device}",
                                 f"device {hb.device} is missing: heartbeat {hb.name} uses it on every server")
                continue
            if device.type != wanted:
                report.error(device.path, f"device {hb.device} is of type {device.type!r} but heartbeat "
                                          f"{hb.name} needs a {wanted} device")
                continue
            if kind.opt_in and not device.use:
                continue
            having.append(server.name)
        if kind.every_server:
            continue
        if len(having) < 2 and len(servers) >= 2:
            report.error(hb.path, f"heartbeat {hb.name} links fewer than two servers: give device {hb.device} "
                                  f"({wanted}) to at least two")
        elif kind.check_links is not None:
            kind.check_links(report, hb, having)


def check_with_cluster(report, heartbeats, cluster):
    """Each kind's cross-checks against the <cluster> settings."""
    for hb in heartbeats.values():
        check = schema(hb.kind).check_cluster
        if check is not None:
            check(report, hb, cluster)
