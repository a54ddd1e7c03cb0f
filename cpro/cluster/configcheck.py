"""Which of two servers that run different configurations refuses to run.

Two servers that disagree on the groups could run one twice, so a server
that meets a peer with another configuration while its own cluster service
is not yet running (starting, or stopped) may have to exit. Who decides:

1. The master's configuration, when the master is up: a server refuses to
   run against the master; a peer that differs from a non-master is that
   peer's problem (the master refuses it as a peer).
2. While the master is down, a server already running its service: a
   starting server refuses to run beside it.
3. When neither runs its service yet (both starting or stopped), the daemon
   that started first: the later one refuses. Both ends compare the same two
   incarnations, so exactly one of them refuses, whatever the order in
   which they noticed each other.

A peer whose state is unknown or unreadable counts as running: refusing is
the safe side.
"""

from dataclasses import dataclass
from typing import Optional

from cpro.cluster.states import ClusterServiceState
from cpro.protocols.heartbeat import parse_incarnation

NOT_YET_RUNNING = (ClusterServiceState.STARTING, ClusterServiceState.STOPPED)


@dataclass(frozen=True)
class PeerRun:
    """What a peer said of its daemon run when answering the handshake."""

    service: str  # its ClusterServiceState value
    incarnation: str  # its Incarnation, as text
    generation: Optional[int] = None  # its configuration generation (pushes applied), if it said


def newer_configuration(local_generation, peer_run):
    """True if the peer runs a configuration pushed after this server's (a
    server that was down during a push): this server adopts it instead of
    refusing to run."""
    return peer_run is not None and peer_run.generation is not None and peer_run.generation > local_generation


def refusal(local, service, incarnation, master, master_up, peer, peer_run: Optional[PeerRun]):
    """Why this server must refuse to run beside C{peer} that has another
    configuration (a phrase naming whose configuration wins), or None.

    @param service: this server's L{ClusterServiceState}.
    @param incarnation: this daemon's L{Incarnation}.
    @param master_up: whether the master is up as seen from here.
    """
    if local == master or service not in NOT_YET_RUNNING:
        return None
    if peer == master:
        return f"the master {peer}"
    if master_up:
        return None
    if _started_later(peer_run, incarnation):
        return None
    return f"{peer} (the master {master} is down)"


def _started_later(peer_run, incarnation):
    """True if the peer has not started its service yet and its daemon started after this one."""
    if peer_run is None:
        return False
    try:
        peer_service = ClusterServiceState(peer_run.service)
        peer_incarnation = parse_incarnation(peer_run.incarnation)
    except ValueError:
        return False
    return peer_service in NOT_YET_RUNNING and peer_incarnation > incarnation
