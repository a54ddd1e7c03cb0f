"""Interface addresses through netlink (pyroute2), for floating IPs.

L{Netlink} reads a snapshot of the interfaces of the current network
namespace (L{Interface}: name, MAC, link state, addresses) and adds or
deletes one address. Its methods are plain blocking calls, each well under a
millisecond; callers run them through a I{runner}: L{cpro.system.runners.thread_runner} (the
reactor's thread pool, so the reactor never waits on a netlink socket) in the
daemon, L{cpro.system.runners.run_inline} in unit tests and in code that runs without a
reactor.

The choice of interface is pure (L{choose_interface}, L{holders}) so that it
is tested on plain data.
"""

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass

from cpro.system.runners import run_inline, thread_runner

ARPHRD_ETHER = 1
IFF_UP = 0x1
IFF_NOARP = 0x80
IFF_LOWER_UP = 0x10000
IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02


class NetlinkFailure(Exception):
    """A netlink request failed; str() names the operation and the kernel's reason."""


@dataclass(frozen=True)
class InterfaceAddress:
    address: object  # ipaddress.IPv4Address / IPv6Address
    prefixlen: int
    secondary: bool = False

    @property
    def network(self):
        return ipaddress.ip_interface(f"{self.address}/{self.prefixlen}").network

    def __str__(self):
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True)
class Interface:
    index: int
    name: str
    mac: str  # 'aa:bb:cc:dd:ee:ff'; '00:00:00:00:00:00' for loopback
    link_type: int  # ARPHRD_* (1 = Ethernet)
    flags: int  # IFF_*
    addresses: tuple = ()  # of InterfaceAddress

    @property
    def up(self):
        return bool(self.flags & IFF_UP)

    @property
    def carrier(self):
        """Administratively up with the lower layer up (cable in, peer present)."""
        return bool(self.flags & IFF_UP) and bool(self.flags & IFF_LOWER_UP)

    @property
    def uses_arp(self):
        """Ethernet with ARP/ND enabled: probes and announcements make sense here."""
        return self.link_type == ARPHRD_ETHER and not self.flags & IFF_NOARP

    def has(self, ip):
        ip = ipaddress.ip_address(ip)
        return any(a.address == ip for a in self.addresses)

    def summary(self):
        addresses = ", ".join(str(a) for a in self.addresses) or "no address"
        return f"{self.name} ({addresses})"


def holders(interfaces, ip):
    """(Interface, InterfaceAddress) for every interface that has ip itself."""
    ip = ipaddress.ip_address(ip)
    return [(i, a) for i in interfaces for a in i.addresses if a.address == ip]


def choose_interface(interfaces, ip):
    """(Interface, prefixlen) of the interface whose subnet contains ip, or None.

    The longest matching prefix wins (a /24 beats an overlapping /16), then
    a primary over a secondary address, then the lowest interface index.
    IPv6 link-local subnets never match: every interface has fe80::/64.
    Addresses equal to ip itself are skipped (see L{holders}).
    """
    ip = ipaddress.ip_address(ip)
    best = None
    for interface in interfaces:
        for a in interface.addresses:
            if a.address.version != ip.version or a.address == ip or a.address.is_link_local:
                continue
            if a.prefixlen >= a.address.max_prefixlen or ip not in a.network:
                continue
            key = (-a.prefixlen, a.secondary, interface.index)
            if best is None or key < best[0]:
                best = (key, interface, a.prefixlen)
    return None if best is None else (best[1], best[2])


def find_interface(interfaces, name):
    for interface in interfaces:
        if interface.name == name:
            return interface
    return None


class Netlink:
    """Blocking netlink calls on the current network namespace (one IPRoute socket per call)."""

    def __init__(self, iproute_factory=None):
        if iproute_factory is None:
            from pyroute2 import IPRoute

            iproute_factory = IPRoute
        self._iproute = iproute_factory

    def interfaces(self):
        """A tuple of L{Interface}, by index."""
        try:
            with self._iproute() as ipr:
                links = ipr.get_links()
                addrs = ipr.get_addr()
        except Exception as e:
            raise NetlinkFailure(f"cannot list interfaces: {_reason(e)}") from e
        by_index = {}
        for a in addrs:
            if a["family"] not in (socket.AF_INET, socket.AF_INET6):
                continue
            value = a.get_attr("IFA_ADDRESS")
            if a["family"] == socket.AF_INET:
                # On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
                value = a.get_attr("IFA_LOCAL") or value
            if value is None:
                continue
            flags = a.get_attr("IFA_FLAGS") or a["flags"]
            by_index.setdefault(a["index"], []).append(
                InterfaceAddress(ipaddress.ip_address(value), a["prefixlen"], bool(flags & IFA_F_SECONDARY))
            )
        result = []
        for link in links:
            result.append(
                Interface(
                    index=link["index"],
                    name=link.get_attr("IFLA_IFNAME"),
                    mac=link.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00",
                    link_type=link["ifi_type"],
                    flags=link["flags"],
                    addresses=tuple(by_index.get(link["index"], ())),
                )
            )
        return tuple(sorted(result, key=lambda i: i.index))

    def add_address(self, interface, ip, prefixlen):
        """Add ip/prefixlen to interface (an L{Interface}); already there is success.

        IPv6 is added without duplicate-address detection (IFA_F_NODAD): the
        fip resource has probed already, and a tentative address would not
        answer for a second.
        """
        ip = ipaddress.ip_address(ip)
        kwargs = {"index": interface.index, "address": str(ip), "prefixlen": prefixlen}
        if ip.version == 6:
            kwargs["flags"] = IFA_F_NODAD
        try:
            with self._iproute() as ipr:
                ipr.addr("add", **kwargs)
        except Exception as e:
            if _code(e) == errno.EEXIST:
                return
            raise NetlinkFailure(f"cannot add {ip}/{prefixlen} to {interface.name}: {_reason(e)}") from e

    def delete_address(self, interface, ip, prefixlen):
        """Delete ip/prefixlen from interface; already gone is success."""
        ip = ipaddress.ip_address(ip)
        try:
            with self._iproute() as ipr:
                ipr.addr("del", index=interface.index, address=str(ip), prefixlen=prefixlen)
        except Exception as e:
            if _code(e) in (errno.EADDRNOTAVAIL, errno.ENODEV):
                return
            raise NetlinkFailure(f"cannot delete {ip}/{prefixlen} from {interface.name}: {_reason(e)}") from e

    def remove_everywhere(self, ip):
        """Delete ip from every interface holding it; the names of those interfaces."""
        removed = []
        for interface, address in holders(self.interfaces(), ip):
            self.delete_address(interface, address.address, address.prefixlen)
            removed.append(interface.name)
        return removed


def _code(e):
    code = getattr(e, "code", None)
    if code is None:
        code = getattr(e, "errno", None)
    return code


def _reason(e):
    code = _code(e)
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return str(e) or type(e).__name__



def remove_address(ip, reactor=None, netlink=None):
    """Delete the address ip from every interface of the current namespace that has it.

    For clean-up after a crashed daemon. Returns a Deferred firing with the
    names of the interfaces it was removed from (empty if it was nowhere),
    or failing with NetlinkFailure. With a reactor the netlink calls run in
    its thread pool; without one they run at once in the calling thread
    (each is well under a millisecond), and the Deferred has fired on return.
    """
    ip = ipaddress.ip_address(ip)
    runner = thread_runner(reactor) if reactor is not None else run_inline
    return runner((netlink or Netlink()).remove_everywhere, ip)
