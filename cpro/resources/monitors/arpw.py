"""arpw: periodic gratuitous ARP for a fip resource's address (IPv6: unsolicited neighbour advertisements).

Each check sends params['count'] announcements through the fip resource
(env.resource(config.target)), keeping neighbours' and switches' tables
pointed at this server. A frame the kernel refuses is an error naming the
address and the interface.
"""

from twisted.internet import defer
from zope.interface import implementer

from cpro.config.schema import MonitorSchema, Param
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.resources.base import ResourceError
from cpro.resources.monitors.base import CheckResult
from cpro.resources.monitors.fipw import active_fip


# The target is a fip resource, watched while it is active.
SCHEMA = MonitorSchema(params=(Param("count", "int", (1, 99)),), target_type="fip")


@MONITOR_TYPES.register("arpw", schema=SCHEMA)
@implementer(IMonitor)
class ArpMonitor:
    type = "arpw"

    def __init__(self, reactor, config, params, env):
        self.name = config.name
        self._target = config.target
        self._env = env
        self._count = int(params.get("count", 1))
        self.sent = 0  # announcements sent by the last check

    def start(self):
        return None

    def stop(self):
        return None

    def describe(self):
        return {"target": self._target, "count": self._count, "sent": self.sent}

    def check(self):
        resource, problem = active_fip(self._env, self._target)
        if problem is not None:
            return defer.succeed(problem)
        name, address = resource.interface, resource.address
        what = "gratuitous ARP" if address.version == 4 else "neighbour advertisement"

        def sent(count):
            self.sent = count
            return CheckResult.normal(f"sent {count} {what} for {address} on {name}")

        def failed(f):
            f.trap(OSError, ResourceError)
            self.sent = 0
            reason = f.value.strerror if isinstance(f.value, OSError) and f.value.strerror else str(f.value)
            return CheckResult.error(f"cannot send {what} for {address} on {name}: {reason}")

        return resource.announce(self._count).addCallbacks(sent, failed)
