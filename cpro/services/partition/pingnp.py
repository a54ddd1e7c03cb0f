"""The ping network-partition resolver (pingnp): can this server still reach
its ping targets?

Targets are grouped as in clp.conf (C{pingnp/grp/list/ip}): a group answers
when any of its addresses answers, and the server is on the healthy side
when every group answers. Each address is echoed every C{interval} until
C{timeout}; the first reply settles its group. ICMP goes through the shared
L{cpro.resources.monitors.ipw.IcmpPinger} (one raw socket per family for
the whole daemon).
"""

import ipaddress

from twisted.internet import defer
from zope.interface import implementer

from cpro.cluster.partition import Verdict
from cpro.interfaces import INPResolver
from cpro.plugins import NP_RESOLVERS
from cpro.resources.monitors.ipw import shared_pinger
from cpro.services.partition.base import ResolverSchema


@implementer(INPResolver)
class PingResolver:
    kind = "pingnp"

    def __init__(self, reactor, target, pinger=None):
        """
        @param target: a L{cpro.config.model.PingTarget}.
        @param pinger: an IcmpPinger (default: the reactor's shared one).
        """
        self._target = target
        self._pinger = pinger if pinger is not None else shared_pinger(reactor)
        self.name = target.name
        # The engine's own deadline: a little over the echo window, so the
        # last echo's "no reply" arrives as a verdict and not as a cancel.
        self.timeout = target.timeout + max(0.05, target.interval)
        self._groups = tuple(tuple(ipaddress.ip_address(a) for a in group) for group in target.groups)

    def check(self, lost):
        attempts = max(1, int(round(self._target.timeout / self._target.interval)))
        self._pinger.acquire()
        pings = []
        groups = []
        for group in self._groups:
            mine = [self._ping(address, attempts) for address in group]
            pings.extend(mine)
            groups.append(_first_success(mine))
        d = defer.gatherResults(groups, consumeErrors=True)
        # A cancelled check fails with CancelledError itself (not wrapped in
        # a FirstError), so the engine reports it as its own timeout.
        d.addCallbacks(self._verdict, _unwrap_first_error)

        def release(result):
            for p in pings:
                if not p.called:
                    p.cancel()
            self._pinger.release()
            return result

        d.addBoth(release)
        return d

    def _ping(self, address, attempts):
        d = self._pinger.ping(address, self._target.timeout, attempts)
        d.addCallbacks(lambda rtt: (True, f"{address} answered in {rtt * 1000:.1f} ms"),
                       lambda f: (False, f"{address}: {f.getErrorMessage()}"))
        return d

    def _verdict(self, results):
        silent = [why for ok, why in results if not ok]
        if silent:
            return Verdict(False, "; ".join(silent))
        return Verdict(True, "; ".join(why for _, why in results))


@NP_RESOLVERS.register(PingResolver.kind, schema=ResolverSchema(order=10))
def ping_resolvers(context):
    """A resolver for each pingnp resource this server uses."""
    return [PingResolver(context.reactor, target) for target in context.config.network_partition.ping
            if context.local in target.servers]


def _unwrap_first_error(failure):
    failure.trap(defer.FirstError)
    return failure.value.subFailure


def _first_success(pings):
    """A Deferred firing (True, why) at the first successful ping, or
    (False, all reasons) when every one failed."""
    result = defer.Deferred()
    failures = []

    def one(outcome):
        ok, why = outcome
        if result.called:
            return
        if ok:
            result.callback((True, why))
            return
        failures.append(why)
        if len(failures) == len(pings):
            result.callback((False, "; ".join(failures)))

    for p in pings:
        p.addCallback(one)
    return result
