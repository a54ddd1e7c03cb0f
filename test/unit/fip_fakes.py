"""Fakes for the fip resource's tests: a LAN of packet links, a netlink, a pinger (all on a task.Clock)."""

import ipaddress

from twisted.internet import defer

from cpro.config.model import FipParams, ResourceConfig
from cpro.protocols import arp
from cpro.resources.fip import FipResource
from cpro.system.netlink import IFF_LOWER_UP, IFF_UP, Interface, InterfaceAddress, Netlink, NetlinkFailure

OUR_MAC = "02:00:00:00:00:01"
OTHER_MAC = "02:00:00:00:00:99"


class FakeLink:
    def __init__(self, lan, name, ethertype, on_frame):
        self.lan = lan
        self.name = name
        self.ethertype = ethertype
        self.on_frame = on_frame
        self.closed = False

    def send(self, frame):
        if self.closed:
            raise AssertionError("send on a closed link")
        if self.lan.send_error is not None:
            raise OSError(self.lan.send_error, "Network is down")
        self.lan.sent.append((self.lan.clock.seconds(), self.name, frame))
        for reaction in list(self.lan.reactions):
            reaction(self, frame)

    def close(self):
        self.closed = True


class FakeLAN:
    """What the resource's packet links see: frames sent (with clock times), frames delivered."""

    def __init__(self, clock):
        self.clock = clock
        self.sent = []
        self.links = []
        self.reactions = []  # callables(link, frame) run after each send: other hosts answering
        self.send_error = None
        self.open_error = None

    def open_link(self, name, ethertype, on_frame=None):
        if self.open_error is not None:
            raise OSError(self.open_error, "Operation not permitted")
        link = FakeLink(self, name, ethertype, on_frame)
        self.links.append(link)
        return link

    def deliver(self, frame):
        """A frame arrives at every open receiving link."""
        for link in self.links:
            if link.on_frame is not None and not link.closed:
                link.on_frame(frame)

    def open_links(self):
        return [link for link in self.links if not link.closed]

    def times(self, kind):
        """Clock times of the sent frames of one kind: 'probe' or 'announce'."""
        return [t for t, _, frame in self.sent if frame_kind(frame) == kind]

    def holder(self, ip, mac=OTHER_MAC, delay=0.005):
        """Another host holding ip: answers our probes (as Linux does) after delay."""
        ip = ipaddress.ip_address(ip)

        def react(link, frame):
            if frame_kind(frame) != "probe":
                return
            if ip.version == 4:
                reply = arp.build_arp(arp.ARP_REPLY, arp.mac_bytes(mac), ip, "0.0.0.0", target_mac=frame[6:12])
            else:
                reply = arp.ndp_announcement(arp.mac_bytes(mac), ip)
            self.clock.callLater(delay, self.deliver, reply)

        self.reactions.append(react)


def frame_kind(frame):
    if frame[12:14] == b"\x08\x06":
        packet = arp.parse_arp(frame)
        return "probe" if packet.is_probe else "announce"
    packet = arp.parse_ndp(frame)
    return "probe" if packet.is_dad else "announce"


class FakeNetlink(Netlink):
    """Interfaces in memory; add/delete change them. remove_everywhere is the real one."""

    def __init__(self, clock, interfaces):
        self.clock = clock
        self._interfaces = list(interfaces)
        self.calls = []
        self.fail = None  # operation name -> NetlinkFailure message

    def now(self):
        return round(self.clock.seconds(), 6)  # times as written in the tests, without float noise

    def interfaces(self):
        self.calls.append(("interfaces", self.now()))
        if self.fail and "interfaces" in self.fail:
            raise NetlinkFailure(self.fail["interfaces"])
        return tuple(self._interfaces)

    def _replace(self, index, addresses):
        for i, old in enumerate(self._interfaces):
            if old.index == index:
                self._interfaces[i] = Interface(old.index, old.name, old.mac, old.link_type, old.flags, addresses)

    def get(self, name):
        return next(i for i in self._interfaces if i.name == name)

    def add_address(self, interface, ip, prefixlen):
        self.calls.append(("add", self.now(), interface.name, str(ip), prefixlen))
        if self.fail and "add" in self.fail:
            raise NetlinkFailure(self.fail["add"])
        current = next(i for i in self._interfaces if i.index == interface.index)
        self._replace(
            interface.index,
            current.addresses + (InterfaceAddress(ipaddress.ip_address(ip), prefixlen, secondary=True),),
        )

    def delete_address(self, interface, ip, prefixlen):
        self.calls.append(("delete", self.now(), interface.name, str(ip), prefixlen))
        if self.fail and "delete" in self.fail:
            raise NetlinkFailure(self.fail["delete"])
        current = next(i for i in self._interfaces if i.index == interface.index)
        ip = ipaddress.ip_address(ip)
        self._replace(interface.index, tuple(a for a in current.addresses if a.address != ip))

    def set_flags(self, name, flags):
        old = self.get(name)
        self._interfaces[self._interfaces.index(old)] = Interface(
            old.index, old.name, old.mac, old.link_type, flags, old.addresses
        )

    def remove_interface(self, name):
        self._interfaces.remove(self.get(name))

    def operations(self):
        return [c for c in self.calls if c[0] != "interfaces"]


class FakePinger:
    """pinger(ip, timeout): answered by `responder` after `delay`, else None at the timeout."""

    def __init__(self, clock, responder=None, delay=0.001, error=None):
        self.clock = clock
        self.responder = responder
        self.delay = delay
        self.error = error
        self.pings = []
        self.cancelled = 0

    def __call__(self, ip, timeout):
        if self.error is not None:
            raise OSError(self.error, "Operation not permitted")
        self.pings.append((self.clock.seconds(), str(ip), timeout))

        def cancel(d):
            self.cancelled += 1
            if call.active():
                call.cancel()

        d = defer.Deferred(cancel)
        if self.responder is not None:
            call = self.clock.callLater(self.delay, d.callback, self.responder)
        else:
            call = self.clock.callLater(timeout, d.callback, None)
        return d


def eth(index=2, name="eth0", addresses=("192.168.1.10/24", "fd00::10/64"), mac=OUR_MAC, link_type=1,
        flags=IFF_UP | IFF_LOWER_UP):
    parsed = []
    for text in addresses:
        i = ipaddress.ip_interface(text)
        parsed.append(InterfaceAddress(i.ip, i.network.prefixlen))
    return Interface(index, name, mac, link_type, flags, tuple(parsed))


def loopback():
    return eth(1, "lo", ("127.0.0.1/8",), mac="00:00:00:00:00:00", link_type=772)


# The probe timing the tests were written with (the defaults may change).
TEST_PROBE_TIMING = {"probe_interval": 0.02, "probe_wait": 0.05}


def fip_config(ip="192.168.1.100", name="fip1", **params):
    params = {**TEST_PROBE_TIMING, **params}
    return ResourceConfig(
        name=name,
        type="fip",
        group="failover1",
        depends=None,
        act_retry=0,
        act_fo=1,
        act_action=1,
        deact_retry=0,
        deact_action=4,
        params=FipParams(ip=ip, **params),
    )


def make_fip(clock, ip="192.168.1.100", interfaces=None, pinger=None, ledger=None, **params):
    """(resource, lan, netlink) wired to fakes, with inline netlink calls."""
    from cpro.resources.ledger import NULL_LEDGER
    from cpro.system.runners import run_inline

    lan = FakeLAN(clock)
    netlink = FakeNetlink(clock, interfaces if interfaces is not None else (loopback(), eth()))
    resource = FipResource(
        clock,
        fip_config(ip, **params),
        "/nonexistent",
        ledger=ledger if ledger is not None else NULL_LEDGER,
        netlink=netlink,
        runner=run_inline,
        open_link=lan.open_link,
        pinger=pinger if pinger is not None else FakePinger(clock),
    )
    return resource, lan, netlink


