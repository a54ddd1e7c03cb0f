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
"""

import functools
import ipaddress

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from cpro.interfaces import IGroupResource
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
from cpro.system.runners import run_inline, thread_runner

log = Logger()


@implementer(IGroupResource)
class FipResource:
    """One <resource><fip>: params is a L{cpro.config.model.FipParams}.

    Attributes for monitors (fipw, arpw): C{address} (an ipaddress object),
    C{interface} (the NIC's name while active here, else None), C{prefixlen},
    C{mac}; methods L{interface_state} and L{announce}.
    """

    type = "fip"
    # The node sets its leftovers ledger here: the address is recorded from
    # just before it is added until it is removed, so that the next daemon
    # removes it if this one crashes (L{remove_address}).
    ledger = NULL_LEDGER

    def __init__(self, reactor, config, log_dir, netlink=None, runner=None, open_link=None, pinger=None):
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
    """Delete the address ip from every interface of the current namespace that has it.

    For clean-up after a crashed daemon. Returns a Deferred firing with the
    names of the interfaces it was removed from (empty if it was nowhere),
    or failing with ResourceError. With a reactor the netlink calls run in
    its thread pool; without one they run at once in the calling thread
    (each is well under a millisecond), and the Deferred has fired on return.
    """
    ip = ipaddress.ip_address(ip)
    runner = thread_runner(reactor) if reactor is not None else run_inline
    return runner((netlink or Netlink()).remove_everywhere, ip).addErrback(_netlink_error)
