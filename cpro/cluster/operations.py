"""Operator requests (clpcl, clpgrp, clprsc, clpmonctrl through the admin
port): which server must act, and asking it to. The decisions themselves stay
in the controller; this only routes requests and checks their preconditions.

While a monitor's recovery sequence runs for a group (on any server), the
requests that would race it are refused: cluster stop/restart/suspend, group
start/stop/move of that group.
"""

from twisted.internet import defer

from cpro import alertcatalog as catalog
from cpro.cluster import placement
from cpro.cluster.controller import OperationError


class OperatorRequests:
    def __init__(self, controller):
        self.controller = controller

    def _group_names(self, name):
        c = self.controller
        if name:
            c.group(name)
            return [name]
        return [g.name for g in sorted(c.config.groups, key=lambda g: g.gid)]

    def _recovering(self, name, what, messages):
        """Groups to act on: a named group under recovery is refused; when
        acting on every group, those under recovery are skipped (and said so)."""
        c = self.controller
        if name:
            names = self._group_names(name)
            c.refuse_during_recovery(name, f"{what} group {name}")
            return names
        out = []
        for g in self._group_names(None):
            found = c.recovery_in_progress(g)
            if found is None:
                out.append(g)
            else:
                messages.append(f"group {g} skipped: monitor {found[1]} is recovering it on {found[0]}")
        return out

    @defer.inlineCallbacks
    def group_start(self, name=None, server=None):
        c = self.controller
        c.require_running()
        c.check_server(server)
        messages = []
        for g in self._recovering(name, "start", messages):
            holders = c.holders_of(g)
            if holders:
                if name:
                    raise OperationError(f"group {g} is already active on {holders[0]}")
                continue
            target = server or placement.choose_server(c.groups_by_name[g], c.eligible(),
                                                       c.holders(), c.groups_by_name)
            if target is None:
                raise OperationError(f"no server can start group {g} now")
            result = yield c.call(target, "group_start_local", group=g, event="START")
            messages.append(result.get("message", ""))
        return {"message": "\n".join(m for m in messages if m) or "nothing to start"}

    @defer.inlineCallbacks
    def group_stop(self, name=None, server=None):
        c = self.controller
        c.check_server(server)
        messages = []
        for g in self._recovering(name, "stop", messages):
            holders = c.holders_of(g)
            if server:
                holders = [h for h in holders if h == server]
            if not holders:
                if name:
                    raise OperationError(f"group {g} is not active" + (f" on {server}" if server else ""))
                continue
            for h in holders:
                result = yield c.call(h, "group_stop_local", group=g)
                messages.append(result.get("message", ""))
        return {"message": "\n".join(m for m in messages if m) or "nothing to stop"}

    @defer.inlineCallbacks
    def group_move(self, name=None, server=None):
        c = self.controller
        c.require_running()
        c.check_server(server)
        if not name:
            raise OperationError("group move needs a group name")
        c.group(name)
        c.refuse_during_recovery(name, f"move group {name}")
        holders = c.holders_of(name)
        if not holders:
            raise OperationError(f"group {name} is not active")
        current = holders[0]
        cfg = c.groups_by_name[name]
        if server:
            if server == current:
                raise OperationError(f"group {name} is already active on {server}")
            if server not in c.eligible():
                raise OperationError(f"server {server} is not running")
            target = server
        else:
            target = placement.next_server(cfg, current, c.eligible(), c.holders(), c.groups_by_name)
            if target is None:
                raise OperationError(f"no other server can take group {name}")
        c.alert(catalog.GROUP_MOVING, group=name, source=current, target=target)
        yield c.call(current, "group_stop_local", group=name, factor="GROUPMOVE")
        yield c.start_there_or_back(name, target, current)
        c.alert(catalog.GROUP_MOVED, group=name, target=target)
        return {"message": f"group {name} moved from {current} to {target}"}

    def _resource_holder(self, resource, server):
        c = self.controller
        rcfg = c.config.resource(resource)
        if rcfg is None:
            raise OperationError(f"no such resource: {resource}")
        c.check_server(server)
        holders = c.holders_of(rcfg.group)
        return rcfg, holders

    def resource_start(self, resource, server=None):
        c = self.controller
        c.require_running()
        rcfg, holders = self._resource_holder(resource, server)
        target = server or (holders[0] if holders else c.local)
        if holders and target != holders[0]:
            raise OperationError(f"group {rcfg.group} of {resource} is active on {holders[0]}")
        return c.call(target, "resource_start_local", resource=resource)

    def resource_stop(self, resource, server=None):
        c = self.controller
        rcfg, holders = self._resource_holder(resource, server)
        target = server or (holders[0] if holders else None)
        if target is None:
            raise OperationError(f"resource {resource} is not active")
        return c.call(target, "resource_stop_local", resource=resource)

    @defer.inlineCallbacks
    def cluster(self, action, all_servers=False):
        """clpcl: start|stop|restart|suspend|resume, here or on every server."""
        c = self.controller
        if action not in ("start", "stop", "restart", "suspend", "resume"):
            raise OperationError(f"unknown cluster action: {action}")
        targets = [s.name for s in c.config.servers] if all_servers else [c.local]
        if action in ("stop", "restart", "suspend"):
            busy = [(server, group, monitor) for server in targets
                    for group, monitor in sorted(c.recoveries_on(server).items())]
            if busy:
                server, group, monitor = busy[0]
                raise OperationError(f"cannot {action} the cluster: monitor {monitor} is recovering group "
                                     f"{group} on {server}; try again after its final action")
        results = []
        for server in targets:
            if server != c.local and not c.peer_up(server):
                results.append({"name": server, "code": 1, "message": "server is not reachable"})
                continue
            try:
                yield c.call(server, "cluster_local", action=action, move=not all_servers)
                results.append({"name": server, "code": 0, "message": "Command succeeded."})
            except Exception as e:
                results.append({"name": server, "code": 1, "message": str(e)})
        failed = [r for r in results if r["code"]]
        if failed and len(failed) == len(results):
            raise OperationError("; ".join(f"{r['name']}: {r['message']}" for r in failed))
        return {"servers": results}

    MONITOR_ACTIONS = ("suspend", "resume", "dummy", "clear", "recovery")

    @defer.inlineCallbacks
    def monitor(self, action, name=None, server=None, on=None):
        """clpmonctrl: suspend|resume|clear [MONITOR] and dummy on|off [MONITOR] on
        one server (the local one by default); recovery on|off on every server."""
        c = self.controller
        if action not in self.MONITOR_ACTIONS:
            raise OperationError(f"unknown monitor action: {action}")
        if name is not None and c.config.monitor(name) is None:
            raise OperationError(f"no such monitor: {name}")
        c.check_server(server)
        if action == "recovery":
            targets = [server] if server else [s.name for s in c.config.servers]
            results = []
            for target in targets:
                if target != c.local and not c.peer_up(target):
                    results.append({"name": target, "code": 1, "message": "server is not reachable"})
                    continue
                try:
                    yield c.call(target, "monitor_local", action=action, on=bool(on))
                    results.append({"name": target, "code": 0, "message": "Command succeeded."})
                except Exception as e:
                    results.append({"name": target, "code": 1, "message": str(e)})
            if all(r["code"] for r in results):
                raise OperationError("; ".join(f"{r['name']}: {r['message']}" for r in results))
            return {"servers": results}
        target = server or c.local
        result = yield c.call(target, "monitor_local", action=action, monitor=name,
                              on=None if on is None else bool(on))
        return result
