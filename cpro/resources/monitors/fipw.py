"""fipw: the floating IP of a fip resource is still on its NIC (and, with monmii, the NIC has link).

The check asks the fip resource (env.resource(config.target)) for a fresh
netlink view of the interface it put the address on; the resource runs the
query off the reactor thread. Someone deleting the address by hand, the
interface disappearing, or (params['monmii'] = 1) the link going down are
errors that name the address and the interface.
"""

from twisted.internet import defer
from zope.interface import implementer

from cpro.config.schema import MonitorSchema, Param
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.resources.monitors.base import CheckResult


def active_fip(env, target):
    """(resource, None) for the fip resource named target if active here, else (None, CheckResult error)."""
    resource = env.resource(target) if target else None
    if resource is None or not hasattr(resource, "interface_state"):
        return None, CheckResult.error(f"no fip resource {target!r} on this server")
    if resource.interface is None:
        return None, CheckResult.error(f"floating IP {resource.address} ({resource.name}) is not active on this server")
    return resource, None


# The target is a fip resource, watched while it is active.
SCHEMA = MonitorSchema(params=(Param("monmii", "flag"),), target_type="fip")


@MONITOR_TYPES.register("fipw", schema=SCHEMA)
@implementer(IMonitor)
class FipMonitor:
    type = "fipw"

    def __init__(self, reactor, config, params, env):
        self.name = config.name
        self._target = config.target
        self._env = env
        self._monmii = bool(int(params.get("monmii", 0)))

    def start(self):
        return None

    def stop(self):
        return None

    def describe(self):
        return {"target": self._target, "monmii": self._monmii}

    def check(self):
        resource, problem = active_fip(self._env, self._target)
        if problem is not None:
            return defer.succeed(problem)
        name, address = resource.interface, resource.address
        return resource.interface_state().addCallback(self._judge, name, address)

    def _judge(self, interface, name, address):
        if interface is None:
            return CheckResult.error(f"interface {name} that held floating IP {address} no longer exists")
        if not interface.has(address):
            return CheckResult.error(f"floating IP {address} is missing from interface {name}")
        if self._monmii and not interface.carrier:
            return CheckResult.error(f"link of interface {name} (floating IP {address}) is down")
        return CheckResult.normal(f"{address} on {name}")
