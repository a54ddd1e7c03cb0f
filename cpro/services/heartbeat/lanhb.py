"""The LAN heartbeat paths (kinds "lanhb" and "lankhb"): UDP datagrams between
the servers' interconnect addresses.

One L{LanHeartbeatPath} per LAN heartbeat resource (lanhb on Ports.lanhb,
lankhb on Ports.lankhb: same code, own socket), bound to the local server's
address on that path's interconnect (its lan device@<device>). Every server
is on a LAN path, so every server needs the device.

Every datagram is treated as hostile until proven otherwise: bad packets are
counted per path and dropped, the log is rate-limited, and nothing raises
into the reactor. A failing send (no route, firewall) is logged once per
change and never stops the beats to the other peers.
"""

import ipaddress

from twisted.internet import defer, error
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from cpro.config.heartbeats import HeartbeatKindSchema
from cpro.interfaces import IHeartbeatPath
from cpro.plugins import HEARTBEAT_KINDS
from cpro.protocols.heartbeat import (
    MAX_PACKET,
    ForeignCluster,
    HeartbeatPacket,
    MalformedPacket,
    ReplayGuard,
    Unauthenticated,
    decode,
    encode,
)
from cpro.protocols.ratelog import worth_logging
from cpro.services.heartbeat.base import HeartbeatBindError, HeartbeatConfigError, deliver, format_endpoint

log = Logger()

# Heartbeat kinds served here, and the Ports field each one uses.
LAN_KINDS = {"lanhb": "lanhb", "lankhb": "lankhb"}

COUNTERS = (
    "received",  # datagrams read from the socket
    "accepted",  # handed to on_beat
    "malformed",
    "unauthenticated",
    "foreign",  # another cluster's heartbeat
    "unknown_sender",  # authentic, but not from a peer (or claiming to be us)
    "spoofed",  # authentic, but not from the sender's address on this path
    "replayed",
    "stale",  # from an older incarnation of the sender
    "sent",  # datagrams handed to the kernel
    "send_errors",
)


class _Peer:
    __slots__ = ("name", "address", "port", "send_error")

    def __init__(self, name, address, port):
        self.name = name
        self.address = address  # canonical text form
        self.port = port
        self.send_error = None  # description of the last failed send, None if fine


@implementer(IHeartbeatPath)
class LanHeartbeatPath(DatagramProtocol):
    """One LAN heartbeat resource: a UDP socket on the local interconnect address.

    @param reactor: provides IReactorUDP.
    @param config: the L{cpro.config.model.ClusterConfig}.
    @param local: name of the local server.
    @param heartbeat: the L{cpro.config.model.HeartbeatConfig} of this path.
    @param incarnation: the local daemon's L{Incarnation}.
    @param on_beat: called as C{on_beat(path_name, packet)} for each
        authentic, fresh packet from a peer's address on this path.
    @raise HeartbeatConfigError: the local server has no usable address on this path.
    """

    def __init__(self, reactor, config, local, heartbeat, incarnation, on_beat, key=None):
        if heartbeat.kind not in LAN_KINDS:
            raise HeartbeatConfigError(f"{heartbeat.name}: not a LAN heartbeat ({heartbeat.kind})")
        self.name = heartbeat.name
        self.kind = heartbeat.kind
        self._reactor = reactor
        self._cluster = config.name
        self._key = key if key is not None else config.key  # bytes or a Keyring
        self._local = local
        self._incarnation = incarnation
        self._on_beat = on_beat
        self._guard = ReplayGuard()
        self._seq = 0
        self._port = None
        self._counters = dict.fromkeys(COUNTERS, 0)

        me = config.server(local)
        if me is None:
            raise HeartbeatConfigError(f"{self.name}: server {local} is not in the configuration")
        self.address = self._path_address(me, heartbeat)
        if self.address is None:
            raise HeartbeatConfigError(
                f"{self.name}: server {local} has no IP address on device {heartbeat.device}"
            )
        self.port = getattr(me.ports, LAN_KINDS[self.kind])

        self._peers = {}
        for server in config.servers:
            if server.name == local:
                continue
            address = self._path_address(server, heartbeat)
            if address is None:
                # Validation should have caught this; the other paths still work.
                log.warn(
                    "heartbeat path {path}: server {server} has no IP address on device "
                    "{device}; it is not reachable on this path",
                    path=self.name,
                    server=server.name,
                    device=heartbeat.device,
                )
                continue
            port = getattr(server.ports, LAN_KINDS[self.kind])
            self._peers[server.name] = _Peer(server.name, address, port)

    @staticmethod
    def _path_address(server, heartbeat):
        device = server.device(heartbeat.device)
        return _canonical_address(device.info) if device is not None else None

    # -- IHeartbeatPath ----------------------------------------------------------

    def send_beat(self, digest):
        """Send one heartbeat carrying C{digest} to every peer on this path. Never raises."""
        if self.transport is None:
            return
        self._seq += 1
        packet = HeartbeatPacket(self._cluster, self._local, self._incarnation, self._seq, digest)
        try:
            data = encode(packet, self._key)
        except Exception:
            log.failure("heartbeat path {path}: cannot encode a heartbeat", path=self.name)
            return
        for peer in self._peers.values():
            try:
                self.transport.write(data, (peer.address, peer.port))
            except Exception as e:
                self._counters["send_errors"] += 1
                self._send_state(peer, _describe(e))
            else:
                self._counters["sent"] += 1
                self._send_state(peer, None)

    # -- status --------------------------------------------------------------------

    def counters(self):
        """A copy of this path's packet counters (see L{COUNTERS})."""
        return dict(self._counters)

    def peers(self):
        """{server name: (address, port)} of the peers reached on this path."""
        return {p.name: (p.address, p.port) for p in self._peers.values()}

    def bound_port(self):
        """The UDP port actually bound, or None when not listening."""
        return self._port.getHost().port if self._port is not None else None

    def forget(self, sender):
        """Accept the next authentic packet of C{sender}, whatever its incarnation."""
        self._guard.forget(sender)

    # -- socket ----------------------------------------------------------------------

    def start_listening(self):
        """Bind the socket. Idempotent.

        @raise HeartbeatBindError: naming this path and address:port.
        """
        if self._port is not None:
            return
        try:
            # One byte more than the largest packet, so that an oversize
            # datagram arrives truncated but still recognisably too big.
            self._port = self._reactor.listenUDP(
                self.port, self, interface=self.address, maxPacketSize=MAX_PACKET + 1
            )
        except error.CannotListenError as e:
            socket_error = e.socketError
            raise HeartbeatBindError(
                self.name,
                self.address,
                self.port,
                _describe(socket_error),
                getattr(socket_error, "errno", None),
            ) from e
        except OSError as e:
            raise HeartbeatBindError(
                self.name, self.address, self.port, _describe(e), e.errno
            ) from e
        log.info(
            "heartbeat path {path} ({kind}) listening on UDP {endpoint}",
            path=self.name,
            kind=self.kind,
            endpoint=format_endpoint(self.address, self.port),
        )

    def stop_listening(self):
        """Close the socket. A Deferred firing when it is closed (never failing)."""
        port, self._port = self._port, None
        if port is None:
            return defer.succeed(None)
        d = defer.maybeDeferred(port.stopListening)
        d.addErrback(
            lambda f: log.failure(
                "heartbeat path {path}: error closing the socket", f, path=self.name
            )
        )
        return d

    def datagramReceived(self, data, addr):
        try:
            self._datagram(data, addr)
        except Exception:
            log.failure("heartbeat path {path}: error handling a datagram", path=self.name)

    def _datagram(self, data, addr):
        self._counters["received"] += 1
        try:
            packet = decode(data, self._key, self._cluster)
        except MalformedPacket as e:
            return self._drop("malformed", addr, e)
        except Unauthenticated as e:
            return self._drop("unauthenticated", addr, e)
        except ForeignCluster as e:
            return self._drop("foreign", addr, e)

        peer = self._peers.get(packet.sender)
        if peer is None:
            why = (
                "claims to be this server: duplicate server name or address?"
                if packet.sender == self._local
                else f"from {packet.sender!r}, not a peer on this path"
            )
            return self._drop("unknown_sender", addr, why)
        if _canonical_address(addr[0]) != peer.address:
            return self._drop(
                "spoofed", addr, f"claims to be {peer.name}, whose address is {peer.address}"
            )

        deliver(self.name, self._guard, packet, self._counters,
                lambda kind, reason: self._drop(kind, addr, reason), self._on_beat, log)

    def _drop(self, kind, addr, reason):
        self._counters[kind] += 1
        count = self._counters[kind]
        if worth_logging(count):
            log.warn(
                "heartbeat path {path}: dropped {kind} packet from {source}: {reason} "
                "({count} so far)",
                path=self.name,
                kind=kind,
                source=format_endpoint(*addr[:2]),
                reason=reason,
                count=count,
            )

    def _send_state(self, peer, problem):
        if problem == peer.send_error:
            return
        peer.send_error = problem
        endpoint = format_endpoint(peer.address, peer.port)
        if problem is None:
            log.info(
                "heartbeat path {path}: sending to {server} at {endpoint} works again",
                path=self.name,
                server=peer.name,
                endpoint=endpoint,
            )
        else:
            log.warn(
                "heartbeat path {path}: cannot send to {server} at {endpoint}: {problem}",
                path=self.name,
                server=peer.name,
                endpoint=endpoint,
                problem=problem,
            )


def lan_path(context, heartbeat):
    """The path of a LAN heartbeat resource (the factory of both LAN kinds)."""
    return LanHeartbeatPath(context.reactor, context.config, context.local, heartbeat,
                            context.incarnation, context.on_beat, key=context.key)


# Both kinds run the same code, each on its own port (the schemas differ in
# it only); the LAN kinds are the ones every server is on.
for _kind, _port in LAN_KINDS.items():
    HEARTBEAT_KINDS.register(_kind, schema=HeartbeatKindSchema(
        device_type="lan", every_server=True, udp_port=_port))(lan_path)


def _canonical_address(text):
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return None


def _describe(exc):
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (errno {exc.errno})"
    return str(exc) or exc.__class__.__name__
