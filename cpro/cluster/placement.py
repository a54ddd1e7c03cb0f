"""Where a failover group may run: pure decisions over a snapshot of the cluster.

Every server computes the same answer from the same view (ordered policy,
live servers, which server holds which group), which is how a group is
started by exactly one server without a central coordinator.
"""

import dataclasses

from cpro.cluster.states import GroupState

EXCLUSION_NONE = 0
EXCLUSION_NORMAL = 1
EXCLUSION_COMPLETE = 2


def policy_rank(group, server):
    """Index of server in the group's failover policy (0 = home); servers
    outside the policy rank after every policy server."""
    try:
        return group.policy.index(server)
    except ValueError:
        return len(group.policy)


def is_home(group, server):
    return bool(group.policy) and group.policy[0] == server


def _excluded_by(group, server, holders, groups_by_name):
    """True when another group of the same exclusion kind is held on server."""
    if group.exclusive == EXCLUSION_NONE:
        return False
    for other_name, other_server in holders.items():
        if other_name == group.name or other_server != server:
            continue
        other = groups_by_name.get(other_name)
        if other is not None and other.exclusive == group.exclusive:
            return True
    return False


def choose_server(group, eligible, holders, groups_by_name, skip=()):
    """The server on which group should start, or None.

    @param eligible: servers allowed to take groups now (live, service running).
    @param holders: group name -> server currently holding it.
    @param skip: servers not to consider (the one it is leaving, ...).

    Normal exclusion prefers a server without another normal-exclusive group
    but falls back to one with such a group; complete exclusion never shares.
    """
    candidates = [s for s in group.policy if s in eligible and s not in skip]
    free = [s for s in candidates if not _excluded_by(group, s, holders, groups_by_name)]
    if free:
        return free[0]
    if group.exclusive == EXCLUSION_NORMAL and candidates:
        return candidates[0]
    return None


def next_server(group, after, eligible, holders, groups_by_name):
    """The failover target when activation failed on server 'after': the next
    eligible server in policy order after it, wrapping around (so every
    server of the policy gets its turn)."""
    policy = list(group.policy)
    if after in policy:
        i = policy.index(after)
        order = policy[i + 1:] + policy[:i]
    else:
        order = policy
    reordered = dataclasses.replace(group, policy=tuple(order))
    return choose_server(reordered, eligible, holders, groups_by_name, skip=(after,))


def plan_failover(down_server, held_groups, eligible, holders, groups_by_name):
    """Targets for the groups a dead server held, decided in gid order so that
    exclusion sees the earlier decisions. Returns [(group_name, target or None)].

    @param held_groups: names of groups the dead server held (or every group
        waiting for a server, with down_server None).
    """
    holders = {g: s for g, s in holders.items() if s != down_server}
    plan = []
    for name in sorted(held_groups, key=lambda n: (groups_by_name[n].gid, n)):
        group = groups_by_name[name]
        target = choose_server(group, eligible - {down_server}, holders, groups_by_name)
        if target is not None:
            holders[name] = target
        plan.append((name, target))
    return plan


def failback_target(group, current, eligible, holders, groups_by_name):
    """Where an auto-failback group should move, or None to stay on current."""
    best = choose_server(group, eligible, {g: s for g, s in holders.items() if g != group.name},
                         groups_by_name)
    if best is None or best == current:
        return None
    if policy_rank(group, best) < policy_rank(group, current):
        return best
    return None


def holders_from_view(view):
    """group -> server from {server: {group: GroupState}} (first holder wins;
    duplicates are the double-activation rule's business)."""
    holders = {}
    for server in sorted(view):
        for group, state in view[server].items():
            if GroupState(state).holds_resources and group not in holders:
                holders[group] = server
    return holders
