"""miiw: the link of NIC params['object'] is up.

The link is read over rtnetlink (pyroute2: IFLA_OPERSTATE, IFLA_CARRIER and the
interface flags). Normal when the NIC is administratively up and its operstate
is UP, or UNKNOWN with the carrier present (loopback and some drivers never
report UP). Missing, administratively down, no carrier or any other operstate
(DOWN, LOWERLAYERDOWN, DORMANT, ...) is an error.

pyroute2 is a blocking library: the query runs in a thread (about 2 ms, a fresh
netlink socket each time, so nothing is shared between threads).
"""

import collections
import errno

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from zope.interface import implementer

from cpro.config.schema import MonitorSchema, Param
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.resources.monitors._threads import SingleFlight
from cpro.system.runners import thread_runner
from cpro.resources.monitors.base import CheckResult

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000

LinkState = collections.namedtuple("LinkState", "operstate carrier flags")


def read_link(ifname, netns=None):
    """The L{LinkState} of ifname, or None if there is no such NIC. Blocking: call it in a thread."""
    ipr = IPRoute(netns=netns) if netns else IPRoute()
    with ipr:
        try:
            links = ipr.get_links(ifname=ifname)
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return None
            raise
        if not links:
            return None
        link = links[0]
        return LinkState(link.get_attr("IFLA_OPERSTATE"), link.get_attr("IFLA_CARRIER"), link["flags"])


def judge_link(ifname, state):
    """The CheckResult for one NIC's L{LinkState} (None: missing)."""
    if state is None:
        return CheckResult.error(f"NIC {ifname} does not exist")
    if not state.flags & IFF_UP:
        return CheckResult.error(f"NIC {ifname} is administratively down")
    carrier = state.carrier if state.carrier is not None else int(bool(state.flags & IFF_LOWER_UP))
    if state.operstate == "UP" or (state.operstate == "UNKNOWN" and carrier):
        return CheckResult.normal()
    return CheckResult.error(f"link of NIC {ifname} is down (operstate {state.operstate}, carrier {carrier})")


SCHEMA = MonitorSchema(params=(Param("object", "nic", required=True),))


@MONITOR_TYPES.register("miiw", schema=SCHEMA)
@implementer(IMonitor)
class LinkMonitor:
    type = "miiw"

    def __init__(self, reactor, config, params, env, run_in_thread=None, read_link=read_link):
        self.name = config.name
        self._ifname = params["object"]
        runner = run_in_thread if run_in_thread is not None else thread_runner(reactor)
        self._query = SingleFlight(reactor, runner, read_link, self._ifname)
        self._last = None

    def start(self):
        return None

    def stop(self):
        return None

    def describe(self):
        last = self._last
        return {
            "object": self._ifname,
            "operstate": last.operstate if last is not None else None,
            "carrier": last.carrier if last is not None else None,
        }

    def check(self):
        return self._query.run().addCallback(self._judge)

    def _judge(self, state):
        self._last = state
        return judge_link(self._ifname, state)
