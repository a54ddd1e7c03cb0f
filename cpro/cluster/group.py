"""A failover group on the local server: activates and deactivates its
resources in dependency order, with retries and the final-action codes.

It does not decide where groups run (that is the controller's job); when a
resource fails after its retries it asks the injected `escalate` callable
whether to fail over or which final action applies.
"""

from dataclasses import dataclass
from typing import Optional

from twisted.internet import defer
from twisted.logger import Logger

from cpro import alertcatalog as catalog
from cpro.cluster.escalation import FinalAction
from cpro.cluster.placement import is_home
from cpro.cluster.states import GroupState, ResourceState
from cpro.resources.base import ActionContext

log = Logger()


@dataclass(frozen=True)
class Outcome:
    """How an activation or deactivation ended."""

    ok: bool
    failover: bool = False  # activation failed; the group was stopped here and must move
    final_action: Optional[FinalAction] = None  # a final action the controller must carry out
    resource: str = ""  # the resource that failed
    error: str = ""


class LocalGroup:
    def __init__(self, group_config, resource_configs, resources, local, alerts, on_change):
        """
        @param resource_configs: name -> ResourceConfig of this group's resources.
        @param resources: name -> IGroupResource.
        @param on_change: called with no arguments after every state change.
        """
        self.config = group_config
        self.name = group_config.name
        self._rcfg = resource_configs
        self._resources = resources
        self._local = local
        self._alerts = alerts
        self._on_change = on_change
        self.state = GroupState.OFFLINE
        self.resource_states = {n: ResourceState.OFFLINE for n in group_config.resources}
        self.lock = defer.DeferredLock()
        self.last_error = ""

    def reconfigure(self, group_config, resource_configs):
        """Take a new configuration of this group whose resources are the same
        (live reconfiguration: policies, recovery settings, timeouts)."""
        if tuple(group_config.resources) != tuple(self.config.resources):
            raise ValueError(f"group {self.name}: its resources changed; build the group anew")
        self.config = group_config
        self._rcfg = dict(resource_configs)
        for name, rcfg in resource_configs.items():
            reconfigure = getattr(self._resources[name], "reconfigure", None)
            if reconfigure is not None:  # types with settings that apply while active (exec timeouts)
                reconfigure(rcfg)

    # -- state -------------------------------------------------------------

    def _set_state(self, new):
        old = self.state
        if old is new:
            return
        self.state = new
        log.info("group {g}: {old} -> {new}", g=self.name, old=old.value, new=new.value)
        self._on_change()

    def _set_resource(self, name, new):
        old = self.resource_states[name]
        if old is new:
            return
        self.resource_states[name] = new
        log.info("resource {r}: {old} -> {new}", r=name, old=old.value, new=new.value)
        self._on_change()

    def _settle(self):
        """Group state after a single-resource operation."""
        states = set(self.resource_states.values())
        if states == {ResourceState.ONLINE}:
            self._set_state(GroupState.ONLINE)
        elif states == {ResourceState.OFFLINE}:
            self._set_state(GroupState.OFFLINE)
        elif ResourceState.OFFLINE_FAILURE in states:
            self._set_state(GroupState.OFFLINE_FAILURE)
        else:
            self._set_state(GroupState.ONLINE_FAILURE)

    def _context(self, event, factor):
        return ActionContext(event=event, group=self.name, server=self._local,
                             home=is_home(self.config, self._local), factor=factor)

    # -- resources ---------------------------------------------------------

    def resource(self, name):
        """The IGroupResource object of this group named name, or None
        (monitors look at it: pidw's async exec, fipw's floating IP)."""
        return self._resources.get(name)

    @defer.inlineCallbacks
    def _try(self, name, activate, context):
        """Run one activation/deactivation with the resource's retry count.
        Returns the error text of the last attempt, or '' on success."""
        rcfg = self._rcfg[name]
        resource = self._resources[name]
        attempts = 1 + (rcfg.act_retry if activate else rcfg.deact_retry)
        verb = "Activating" if activate else "Stopping"
        if activate:
            started, completed, failed = (catalog.RESOURCE_ACTIVATING, catalog.RESOURCE_ACTIVATED,
                                          catalog.RESOURCE_ACTIVATION_FAILED)
        else:
            started, completed, failed = (catalog.RESOURCE_STOPPING, catalog.RESOURCE_STOPPED,
                                          catalog.RESOURCE_STOP_FAILED)
        self._alerts.emit(*started.format(resource=name))
        error = ""
        for attempt in range(attempts):
            try:
                if activate:
                    yield resource.activate(context)
                else:
                    yield resource.deactivate(context)
            except Exception as e:  # a resource failure of any kind is reported, not raised
                error = str(e) or e.__class__.__name__
                log.warn("{verb} {r} failed (attempt {n}/{m}): {e}", verb=verb, r=name,
                         n=attempt + 1, m=attempts, e=error)
                continue
            self._alerts.emit(*completed.format(resource=name))
            return ""
        self._alerts.emit(*failed.format(resource=name, error=error))
        return error

    @defer.inlineCallbacks
    def activate(self, event, factor, escalate):
        """Activate every resource in order.

        @param escalate: callable(ResourceConfig) -> escalation.Decision.
        """
        self.last_error = ""
        self._set_state(GroupState.ONLINE_PENDING)
        context = self._context(event, factor)
        failed = False
        for name in self.config.resources:
            if self.resource_states[name] is ResourceState.ONLINE:
                continue
            self._set_resource(name, ResourceState.ONLINE_PENDING)
            error = yield self._try(name, True, context)
            if not error:
                self._set_resource(name, ResourceState.ONLINE)
                continue
            self._set_resource(name, ResourceState.ONLINE_FAILURE)
            self.last_error = f"{name}: {error}"
            decision = escalate(self._rcfg[name])
            if decision.failover:
                yield self.deactivate("GROUPFAILOVER", event=event)
                return Outcome(ok=False, failover=True, resource=name, error=error)
            action = decision.final_action
            if action is FinalAction.NONE_CONTINUE:
                failed = True
                continue
            if action is FinalAction.STOP_GROUP:
                yield self.deactivate("GROUPSTOP", event=event)
            else:
                self._set_state(GroupState.ONLINE_FAILURE)
            return Outcome(ok=False, final_action=action, resource=name, error=error)
        self._set_state(GroupState.ONLINE_FAILURE if failed else GroupState.ONLINE)
        return Outcome(ok=not failed)

    @defer.inlineCallbacks
    def deactivate(self, factor, event="START", everything=False):
        """Deactivate resources in reverse order.

        @param everything: also deactivate resources this daemon believes are
            offline (used to clean up after a restart).
        """
        self._set_state(GroupState.OFFLINE_PENDING)
        context = self._context(event, factor)
        for name in reversed(self.config.resources):
            if self.resource_states[name] is ResourceState.OFFLINE and not everything:
                continue
            self._set_resource(name, ResourceState.OFFLINE_PENDING)
            error = yield self._try(name, False, context)
            if not error:
                self._set_resource(name, ResourceState.OFFLINE)
                continue
            self._set_resource(name, ResourceState.OFFLINE_FAILURE)
            self.last_error = f"{name}: {error}"
            action = FinalAction(self._rcfg[name].deact_action)
            if action is FinalAction.NONE_CONTINUE:
                continue
            self._set_state(GroupState.OFFLINE_FAILURE)
            return Outcome(ok=False, resource=name, error=error,
                           final_action=None if action is FinalAction.NONE else action)
        failed = any(s is ResourceState.OFFLINE_FAILURE for s in self.resource_states.values())
        self._set_state(GroupState.OFFLINE_FAILURE if failed else GroupState.OFFLINE)
        return Outcome(ok=not failed)

    @defer.inlineCallbacks
    def activate_resource(self, name, event="START"):
        self._set_resource(name, ResourceState.ONLINE_PENDING)
        error = yield self._try(name, True, self._context(event, ""))
        self._set_resource(name, ResourceState.ONLINE_FAILURE if error else ResourceState.ONLINE)
        self._settle()
        return Outcome(ok=not error, resource=name, error=error)

    @defer.inlineCallbacks
    def deactivate_resource(self, name, factor="RESOURCESTOP"):
        self._set_resource(name, ResourceState.OFFLINE_PENDING)
        error = yield self._try(name, False, self._context("START", factor))
        self._set_resource(name, ResourceState.OFFLINE_FAILURE if error else ResourceState.OFFLINE)
        self._settle()
        return Outcome(ok=not error, resource=name, error=error)
