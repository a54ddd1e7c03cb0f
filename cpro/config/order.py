"""Activation order of the resources of one failover group.

A resource with explicit C{depend@} entries depends on exactly those; one
without depends on every member of a lower type class (addresses, then
storage, then the rest: fip before disk before exec). The order is a
topological sort with ties broken by the order of the group's
C{<resource>} elements; deactivation runs the reverse.
"""

import heapq

from cpro.config.defaults import DISK_RESOURCE_TYPES, IP_RESOURCE_TYPES


def type_class(resource_type):
    """0 for address resources, 1 for storage, 2 for everything else."""
    if resource_type in IP_RESOURCE_TYPES:
        return 0
    if resource_type in DISK_RESOURCE_TYPES:
        return 1
    return 2


def prerequisites(members):
    """name -> list of names it must follow, for (name, type, depends) members.

    Explicit depends naming non-members are dropped: the caller reports
    those.
    """
    names = {name for name, _, _ in members}
    result = {}
    for name, rtype, depends in members:
        if depends is None:
            own = type_class(rtype)
            result[name] = [n for n, t, _ in members if type_class(t) < own]
        else:
            result[name] = [d for d in dict.fromkeys(depends) if d in names]
    return result


def activation_order(members):
    """Order members; return (names in activation order, cycles).

    members: sequence of (name, type, depends) in group element order,
    depends a tuple of names or None. cycles is a list of name lists, each
    a closed loop such as ['exec1', 'exec2', 'exec1'] (exec1 depends on
    exec2, which depends on exec1); when it is not empty the order leaves
    out the resources caught in or behind a cycle.
    """
    index = {name: i for i, (name, _, _) in enumerate(members)}
    needs = prerequisites(members)
    waiting = {name: len(deps) for name, deps in needs.items()}
    followers = {name: [] for name in needs}
    for name, deps in needs.items():
        for dep in deps:
            followers[dep].append(name)
    ready = [index[n] for n, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        name = members[heapq.heappop(ready)][0]
        order.append(name)
        for follower in followers[name]:
            waiting[follower] -= 1
            if waiting[follower] == 0:
                heapq.heappush(ready, index[follower])
    left = {n for n in needs if n not in set(order)}
    return tuple(order), _cycles(left, needs, index)


def _cycles(left, needs, index):
    """One loop per strongly connected tangle among the unordered names."""
    cycles = []
    seen = set()
    for start in sorted(left, key=index.get):
        if start in seen:
            continue
        path, position = [], {}
        node = start
        # Every unordered name waits on another unordered one, so the walk
        # must come back to a name it already visited.
        while node not in position and node not in seen:
            position[node] = len(path)
            path.append(node)
            node = min((d for d in needs[node] if d in left), key=index.get)
        seen.update(path)
        if node in position:
            loop = path[position[node]:]
            cycles.append(loop + [loop[0]])
    return cycles
