"""The recovery steps of monitors, carried out by the cluster controller.

The monitor service (cpro.services.monitors) decides the step with
cpro.cluster.recovery; these methods of L{cpro.cluster.controller.ClusterController}
carry it out on the local groups, and mark the groups whose recovery
sequence is in progress so that racing operator requests are refused on
every server (the mark travels in the state reports).
"""

from twisted.internet import defer

from cpro import alertcatalog as catalog
from cpro.cluster import placement
from cpro.cluster.errors import OperationError
from cpro.cluster.recovery import MonitorFinalAction
from cpro.cluster.states import GroupState, ResourceState


class MonitorRecoveryActions:
    """Mixin of ClusterController: uses its groups, reports, alerts and group operations."""


    def begin_recovery(self, group, monitor):
        """Mark group: monitor's recovery sequence runs; racing operator requests are refused."""
        if self._recovering.get(group) != monitor:
            self._recovering[group] = monitor
            self.notify_changed()

    def end_recovery(self, group, monitor):
        if group in self._recovering and self._recovering[group] == monitor:
            del self._recovering[group]
            self.notify_changed()

    def recovery_in_progress(self, group):
        """(server, monitor) of a recovery sequence for group, here or on a live peer, else None."""
        if group in self._recovering:
            return self.local, self._recovering[group]
        for server, report in sorted(self.reports.items()):
            if self.peer_up(server) and group in report.recovering:
                return server, report.recovering[group]
        return None

    def refuse_during_recovery(self, group, what):
        found = self.recovery_in_progress(group)
        if found is not None:
            server, monitor = found
            raise OperationError(f"cannot {what}: monitor {monitor} is recovering group {group} on {server}; "
                                 f"try again after its final action or when it returns to normal")

    def recoveries_on(self, server):
        """group -> monitor of the recovery sequences running on server."""
        if server == self.local:
            return dict(self._recovering)
        report = self.reports.get(server)
        return dict(report.recovering) if report is not None and self.peer_up(server) else {}

    def resource_active(self, resource):
        """True when the resource is up (or failed while up) on this server."""
        rcfg = self.config.resource(resource)
        group = self.groups.get(rcfg.group) if rcfg is not None else None
        if group is None:
            return False
        return group.resource_states.get(resource) in (ResourceState.ONLINE, ResourceState.ONLINE_FAILURE)

    def resource_online(self, resource):
        rcfg = self.config.resource(resource)
        group = self.groups.get(rcfg.group) if rcfg is not None else None
        return group is not None and group.resource_states.get(resource) is ResourceState.ONLINE

    def group_active(self, name):
        group = self.groups.get(name)
        return group is not None and group.state in (GroupState.ONLINE, GroupState.ONLINE_FAILURE)

    def failover_target(self, name):
        """The server a monitor would fail group name over to now, or None."""
        return placement.next_server(self.groups_by_name[name], self.local, self.eligible(starting=False),
                                     self.holders(), self.groups_by_name)

    def others_running(self):
        """Another server runs the cluster service normally (final actions are not suppressed)."""
        return bool(self.eligible(starting=False) - {self.local})

    @defer.inlineCallbacks
    def restart_resource_for_monitor(self, resource, monitor):
        """Reactivation of a resource: deactivate and activate it within its group."""
        group = self._resource_group(resource)
        self.alert(catalog.RESOURCE_RESTARTING, resource=resource, monitor=monitor)
        outcome = yield self._locked(group.name, group.deactivate_resource, resource, factor="RESOURCERESTART")
        if outcome.ok:
            outcome = yield self._locked(group.name, group.activate_resource, resource, "START")
        if not outcome.ok:
            self.alert(catalog.RESOURCE_RESTART_FAILED, resource=resource, error=outcome.error)
            raise OperationError(f"resource {resource} failed to restart: {outcome.error}")
        self.alert(catalog.RESOURCE_RESTARTED, resource=resource)
        return {"message": f"resource {resource} restarted on {self.local}"}

    @defer.inlineCallbacks
    def restart_group_for_monitor(self, name, monitor):
        """Reactivation of a group: stop it here and start it here again."""
        self.group(name)
        self.alert(catalog.GROUP_RESTARTING, group=name, monitor=monitor)
        try:
            yield self.stop_group_local(name, factor="GROUPRESTART")
            result = yield self.start_group_local(name, event="START")
        except Exception as e:
            self.alert(catalog.GROUP_RESTART_FAILED, group=name, error=e)
            raise
        if not self.group_active(name):
            self.alert(catalog.GROUP_RESTART_FAILED, group=name, error=result.get("message", ""))
            raise OperationError(result.get("message") or f"group {name} did not start again")
        self.alert(catalog.GROUP_RESTARTED, group=name)
        return result

    @defer.inlineCallbacks
    def failover_group_for_monitor(self, name, monitor):
        """Stop group name here and start it on the next server of its policy. Returns that server."""
        target = self.failover_target(name)
        if target is None:
            self.alert(catalog.NO_DESTINATION, group=name)
            raise OperationError(f"no other server can take group {name}")
        self.alert(catalog.FAILOVER_DESTINATION, target=target, group=name,
                   reason=f"error detected by monitor {monitor}")
        yield self.stop_group_local(name, factor="GROUPFAILOVER")
        yield self.call(target, "group_start_local", group=name, event="FAILOVER")
        return target

    @defer.inlineCallbacks
    def final_action_for_monitor(self, action, monitor, group=None, resource=None):
        """Carry out a monitor's final action (a L{MonitorFinalAction}).

        @param group: the group of the recovery target (None for LocalServer).
        @param resource: the resource of a 'rsc' recovery target.
        """
        action = MonitorFinalAction.from_code(action)
        reason = f"final action of monitor {monitor}"
        if action is MonitorFinalAction.STOP_GROUP:
            names = [group] if group else [n for n in self.groups if self.group_active(n)]
            for name in names:
                yield self.stop_group_local(name, factor="GROUPSTOP")
        elif action is MonitorFinalAction.STOP_RESOURCE:
            if resource is None:
                raise OperationError(f"{reason}: 'stop resource' needs a resource as the recovery target")
            yield self.stop_resource_local(resource)
        elif action.stops_service:
            yield self.stop_service(move_groups=True, keep_failed=group)
            if action is MonitorFinalAction.STOP_SERVICE_AND_SHUTDOWN:
                yield self.os_actions.run("shutdown", reason)
            elif action is MonitorFinalAction.STOP_SERVICE_AND_REBOOT:
                yield self.os_actions.run("reboot", reason)
