"""The fip group resource: a floating IP address on the active server's NIC.

Activation:

1. read the interfaces of this namespace (netlink); if the address is
   already here (this daemon restarted, or a retried activation), keep it
   and go to step 4;
2. choose the interface with an address whose subnet contains the floating
   IP and check that nobody on the LAN holds it (ARP probes / IPv6 DAD, and
   optionally an ICMP echo; L{cpro.resources.fiplan.DuplicateAddressProbe});
   an answer fails the activation and the address is not added;
3. add the address with that subnet's prefix length (IPv4: the kernel makes
   it a secondary address, so the interface's primary address stays the
   source of the server's own traffic);
4. announce it: a burst of gratuitous ARP / unsolicited neighbour
   advertisements, and a repeat burst a few seconds later (keepalived's
   garp_master_delay / garp_master_repeat) for switches and hosts that missed
   the first. Activation completes once the first announcement is out.

Deactivation cancels pending announcements and deletes the address from
whatever interface holds it, looked up by value: it works after a daemon
restart, when this process never added the address. Both are idempotent.

While the address is (about to be) on the NIC it is recorded in the
leftovers ledger (L{cpro.resources.ledger}); L{remove_address} is the same
removal for the clean-up code, which has no resource object (what a crashed
daemon left).

Netlink calls go through a runner (the reactor's thread pool by default);
link-layer sockets and the echo are injected too, so the unit tests drive
the whole sequence on a task.Clock.

The module also declares the type's clp.conf schema (L{FIP_SCHEMA}): the
floating address and the cpro extensions (probe, ping, garp) under
<parameters>, and the subnet rule. The original requires a floating
address to lie in the subnet of an interconnect. cpro checks it on every
server that may run the fip's group (its policy), against the subnets of
that server's C{lan} devices: the prefix given in the device info (cpro:
C{<info>10.0.0.1/24</info>}) or, when none is given, /24 for IPv4 and /64
for IPv6.
"""

import functools
import ipaddress

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from cpro.config.defaults import DEFAULT_PREFIX, DEFAULTS, RANGES
from cpro.config.model import FipParams
from cpro.config.schema import ResourceSchema
from cpro.config.xmltree import Subtree, unsupported_parameter
from cpro.interfaces import IGroupResource
from cpro.plugins import RESOURCE_TYPES
from cpro.resources.base import ResourceError
from cpro.resources.fiplan import Announcement, DuplicateAddressProbe
from cpro.resources.ledger import ADDRESS, NULL_LEDGER
from cpro.system.linklayer import open_packet_link, ping
from cpro.system.netlink import (
    Netlink,
    NetlinkFailure,
    choose_interface,
    find_interface,
    holders,
)
from cpro.system.netlink import remove_address as netlink_remove_address
from cpro.system.runners import thread_runner

log = Logger()


# -- configuration ---------------------------------------------------------------

# (path under <parameters>, FipParams field, conversion from the clp.conf value).
_EXTENSIONS = (
    ("probe/count", "probe_count", int),
    ("probe/interval", "probe_interval", lambda ms: ms / 1000.0),
    ("probe/wait", "probe_wait", lambda ms: ms / 1000.0),
    ("ping/use", "ping_check", bool),
    ("ping/timeout", "ping_timeout", lambda ms: ms / 1000.0),
    ("garp/count", "garp_count", int),
    ("garp/interval", "garp_interval", lambda ms: ms / 1000.0),
    ("garp/repeat/delay", "garp_repeat_delay", lambda ms: ms / 1000.0),
    ("garp/repeat/count", "garp_repeat_count", int),
)


def floating_address(report, text, path):
    """The address of a floating IP in normal form, or None after an error naming path."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        hint = " (give the address without a prefix length)" if "/" in text else ""
        report.error(path, f"floating address {text!r} is not an IPv4 or IPv6 address{hint}")
        return None
    if ip.is_link_local:
        report.error(path, f"floating address {ip} is link-local (169.254.0.0/16, fe80::/10)")
    elif ip.is_multicast:
        report.error(path, f"floating address {ip} is a multicast address")
    elif ip.is_loopback:
        report.error(path, f"floating address {ip} is a loopback address")
    elif ip.is_unspecified:
        report.error(path, f"floating address {ip} is the unspecified address")
    else:
        return str(ip)
    return None


def _read(loader, node, resource):
    """Read <fip><parameters> into resource.ip, .ip_path and .fip_values (FipParams keywords)."""
    report = loader.report
    resource.ip = None
    resource.ip_path = f"{node.path}/parameters/ip"
    resource.fip_values = {}
    params = node.child("parameters")
    tree = Subtree(params) if params is not None else None
    text = tree.string("ip") if tree is not None else None
    if not text:
        report.error(resource.ip_path, "<ip> is required: the floating address")
    else:
        resource.ip = floating_address(report, text, resource.ip_path)
    for relative, field, convert in _EXTENSIONS:
        key = f"fip/parameters/{relative}"
        value = DEFAULTS[key]
        if tree is not None:
            value = tree.integer(relative, value, RANGES[key])
        if value is not None:
            resource.fip_values[field] = convert(value)
    if tree is not None:
        tree.finish(unsupported_parameter)


def _build(resource):
    return FipParams(ip=resource.ip, **resource.fip_values)


def lan_networks(server):
    """[(network, device id)] of a server's valid lan devices (see the module doc)."""
    found = []
    for dev_id, device in sorted(server.devices.items()):
        if device.type != "lan" or not device.valid_info:
            continue
        address = ipaddress.ip_address(device.valid_info)
        prefix = device.prefix or DEFAULT_PREFIX[address.version]
        found.append((ipaddress.ip_network((address, prefix), strict=False), dev_id))
    return found


def _check(loader, fips):
    """Cross-checks of the fips in a group: duplicates, server addresses, subnets.

    fips: the fip resources read (namespaces with name, ip, ip_path, group).
    """
    report, groups, servers = loader.report, loader.groups, loader.servers
    owners = {}
    for r in fips:
        if r.ip is None or r.group is None:
            continue
        if r.ip in owners:
            report.error(r.ip_path, f"floating address {r.ip} is also used by fip {owners[r.ip]}")
            continue
        owners[r.ip] = r.name
        ip = ipaddress.ip_address(r.ip)
        for server in servers.values():
            addresses = {d.valid_info: f"device@{i}" for i, d in server.devices.items()
                         if d.type == "lan" and d.valid_info}
            if server.address and server.address not in addresses:
                addresses[server.address] = "address"
            if r.ip in addresses:
                report.error(r.ip_path, f"floating address {r.ip} is server {server.name}'s own "
                                        f"address ({addresses[r.ip]})")
        group = groups.get(r.group)
        if group is None:
            continue
        if group.policy is None:
            candidates = list(servers)
        else:
            candidates = [name for _, name, _ in group.policy if name in servers]
        for name in candidates:
            networks = [n for n, _ in lan_networks(servers[name]) if n.version == ip.version]
            if any(ip in n for n in networks):
                continue
            where = ", ".join(str(n) for n in networks) or f"no IPv{ip.version} lan device"
            report.error(r.ip_path, f"floating address {r.ip} is outside every lan subnet of "
                                    f"server {name} ({where}), which may run group {r.group}")


FIP_SCHEMA = ResourceSchema(read=_read, build=_build, check=_check)


# -- the resource ------------------------------------------------------------------


@RESOURCE_TYPES.register("fip", schema=FIP_SCHEMA)
@implementer(IGroupResource)
class FipResource:
    """One <resource><fip>: params is a L{cpro.config.model.FipParams}.

    Built as every group resource (L{cpro.interfaces.IGroupResource});
    netlink, runner, open_link and pinger replace the real adapters in tests.
    Attributes for monitors (fipw, arpw): C{address} (an ipaddress object),
    C{interface} (the NIC's name while active here, else None), C{prefixlen},
    C{mac}; methods L{interface_state} and L{announce}.
    """

    type = "fip"
    # The address is recorded in the leftovers ledger from just before it is
    # added until it is removed, so that the next daemon removes it if this
    # one crashes (L{remove_address}). The class default records nothing.
    ledger = NULL_LEDGER

    def __init__(self, reactor, config, log_dir, *, ledger=NULL_LEDGER, netlink=None, runner=None,
                 open_link=None, pinger=None):
        self.ledger = ledger
        self._clock = reactor
        self._params = config.params
        self.name = config.name
        self.address = ipaddress.ip_address(self._params.ip)
        self._netlink = netlink if netlink is not None else Netlink()
        self._run = runner if runner is not None else thread_runner(reactor)
        self._open_link = open_link if open_link is not None else functools.partial(open_packet_link, reactor)
        self._pinger = pinger if pinger is not None else functools.partial(ping, reactor)
        self._held = None  # the Interface (snapshot) the address is on, while active here
        self.prefixlen = None
        self._announcements = set()
        self._repeat_call = None
        self.last_probe = None  # ProbeStats of the last duplicate check
        self.last_announce_error = None
        # activate/deactivate run one at a time, in call order.
        self._lock = defer.DeferredLock()

    @property
    def interface(self):
        return self._held.name if self._held is not None else None

    @property
    def mac(self):
        return self._held.mac if self._held is not None else None

    def describe(self):
        return {
            "interface": self.interface,
            "address": str(self.address),
            "prefix": self.prefixlen,
            "mac": self.mac,
        }

    def activate(self, context):
        return self._lock.run(self._activate)

    def deactivate(self, context):
        return self._lock.run(self._deactivate)

    # for monitors

    def interface_state(self):
        """Deferred firing with a fresh L{Interface} snapshot of the NIC holding the address.

        None when the resource is not active here or the interface is gone.
        """
        name = self.interface
        if name is None:
            return defer.succeed(None)
        return self._netlink_call(self._netlink.interfaces).addCallback(find_interface, name)

    def announce(self, count=None, interval=None):
        """Send a burst of announcements now: Deferred firing with the number sent.

        Fails with ResourceError if the address is not active here and with
        OSError if a frame cannot be sent. 0 on interfaces without ARP.
        """
        if self._held is None:
            return defer.fail(ResourceError(f"floating IP {self.address} ({self.name}) is not active on this server"))
        if count is None:
            count = self._params.garp_count
        if interval is None:
            interval = self._params.garp_interval
        return self._start_announcement(count, interval)

    # activation

    @defer.inlineCallbacks
    def _activate(self):
        self._stop_announcing()
        interfaces = yield self._netlink_call(self._netlink.interfaces)
        held = holders(interfaces, self.address)
        if held:
            interface, address = held[0]
            prefixlen = address.prefixlen
            self.ledger.record(self.name, ADDRESS, str(self.address))
            log.info(
                "fip {name}: {ip} is already on {interface}: keeping it",
                name=self.name,
                ip=self.address,
                interface=interface.name,
            )
        else:
            self._held = None
            self.prefixlen = None
            chosen = choose_interface(interfaces, self.address)
            if chosen is None:
                listing = "; ".join(i.summary() for i in interfaces) or "none"
                raise ResourceError(f"no interface has a subnet containing {self.address} (interfaces: {listing})")
            interface, prefixlen = chosen
            conflict = yield self._check_free(interface)
            if conflict is not None:
                raise ResourceError(
                    f"{self.address} is already in use on the LAN ({conflict}, seen on {interface.name}); not added"
                )
            self.ledger.record(self.name, ADDRESS, str(self.address))
            try:
                yield self._netlink_call(self._netlink.add_address, interface, self.address, prefixlen)
            except ResourceError:
                self.ledger.forget(self.name, ADDRESS, str(self.address))
                raise
            log.info(
                "fip {name}: added {ip}/{prefixlen} to {interface}",
                name=self.name,
                ip=self.address,
                prefixlen=prefixlen,
                interface=interface.name,
            )
        self._held = interface
        self.prefixlen = prefixlen
        added_at = self._clock.seconds()
        self._announce_in_background(self._params.garp_count)
        if self._params.garp_repeat_delay > 0 and self._params.garp_repeat_count > 0:
            delay = max(0.0, added_at + self._params.garp_repeat_delay - self._clock.seconds())
            self._repeat_call = self._clock.callLater(delay, self._repeat)

    def _check_free(self, interface):
        p = self._params
        count = p.probe_count if interface.uses_arp else 0
        pinger = self._pinger if p.ping_check else None
        if count <= 0 and pinger is None:
            return defer.succeed(None)
        probe = DuplicateAddressProbe(
            self._clock,
            self._open_link,
            interface,
            self.address,
            count,
            p.probe_interval,
            p.probe_wait,
            pinger=pinger,
            ping_timeout=p.ping_timeout,
        )
        self.last_probe = probe.stats
        return probe.run()

    def _repeat(self):
        self._repeat_call = None
        self._announce_in_background(self._params.garp_repeat_count)

    def _announce_in_background(self, count):
        """Start a burst; errors are logged (the address is held all the same; arpw/fipw report)."""
        if self._held is None or not self._held.uses_arp or count <= 0:
            return

        def failed(f):
            if f.check(defer.CancelledError):
                return None
            self.last_announce_error = f.getErrorMessage()
            log.warn(
                "fip {name}: cannot announce {ip} on {interface}: {error}",
                name=self.name,
                ip=self.address,
                interface=self.interface,
                error=self.last_announce_error,
            )

        self._start_announcement(count, self._params.garp_interval).addErrback(failed)

    def _start_announcement(self, count, interval):
        if not self._held.uses_arp:
            return defer.succeed(0)
        burst = Announcement(self._clock, self._open_link, self._held, self.address, count, interval)
        self._announcements.add(burst)

        def over(result):
            self._announcements.discard(burst)
            return result

        return burst.start().addBoth(over)

    def _stop_announcing(self):
        if self._repeat_call is not None and self._repeat_call.active():
            self._repeat_call.cancel()
        self._repeat_call = None
        for burst in list(self._announcements):
            burst.cancel()

    # deactivation

    @defer.inlineCallbacks
    def _deactivate(self):
        self._stop_announcing()
        removed = yield self._netlink_call(self._netlink.remove_everywhere, self.address)
        if removed:
            log.info("fip {name}: removed {ip} from {where}", name=self.name, ip=self.address, where=", ".join(removed))
        self._held = None
        self.prefixlen = None
        self.ledger.forget(self.name, ADDRESS, str(self.address))

    def _netlink_call(self, f, *args):
        return self._run(f, *args).addErrback(_netlink_error)


def _netlink_error(failure):
    failure.trap(NetlinkFailure)
    raise ResourceError(f"netlink: {failure.value}")


def remove_address(ip, reactor=None, netlink=None):
    """L{cpro.system.netlink.remove_address}, failing with ResourceError."""
    return netlink_remove_address(ip, reactor, netlink).addErrback(_netlink_error)
