"""Internal communication service (TCP 29001): TLS-encrypted AMP between servers.

Listens on this server's address; keeps one authenticated outbound link to
every peer (reconnecting with back-off). State reports are pushed on the
outbound link; requests from peers arrive on inbound connections and go to
the controller. Implements IPeerChannel for the controller.
"""

import collections
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.application import service
from twisted.internet import defer, endpoints, protocol, ssl
from twisted.logger import Logger
from twisted.protocols import amp
from zope.interface import implementer

from cpro import alertcatalog as catalog
from cpro.cluster.configcheck import PeerRun
from cpro.cluster.controller import OperationError
from cpro.interfaces import IPeerChannel
from cpro.protocols import internal as wire
from cpro.protocols.keyring import accepted_keys, signing_key
from cpro.protocols.ratelog import worth_logging

log = Logger()

LINK_WAIT = 10.0  # seconds a request waits for the link to a peer to come up
AUTH_TIMEOUT = 5.0  # seconds the far end has to answer the authentication exchange
RECONNECT_MIN = 0.2  # seconds before reconnecting to a peer, growing to
RECONNECT_MAX = 2.0


class ConfigurationDiffers(Exception):
    """The peer proved the key but runs another configuration."""


def make_tls_identity(common_name):
    """A throwaway self-signed certificate (the channel is authenticated by the
    cluster key, not by a PKI)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return crypto.PKey.from_cryptography_key(key), crypto.X509.from_cryptography(cert)


class InternalProtocol(amp.AMP):
    """One connection, inbound or outbound.

    Nothing but the authentication exchange is answered until the other end
    has proved the cluster key on this TLS channel: on an inbound connection
    by its Authenticate, on an outbound one by the server proof that
    L{PeerLink} checks (and which sets C{peer}). Malformed boxes and
    arguments close the connection quietly and are counted (hub.counters).
    """

    def __init__(self, hub, outbound_peer=None, link=None):
        super().__init__()
        self.hub = hub
        self.link = link  # the PeerLink of an outbound connection
        self._generation = None  # set once the link adopted this connection
        self.peer = None  # the other end's name, once it proved the key
        self.config_ok = False  # the peer runs our configuration (else: GetConfig only)
        self.outbound_peer = outbound_peer
        self._server_nonce = None
        self._dropped = False

    @property
    def direction(self):
        return "inbound" if self.outbound_peer is None else "outbound"

    def _who(self):
        if self.peer is not None:
            return self.peer
        peer = self.transport.getPeer() if self.transport is not None else None
        where = f"{peer.host}:{peer.port}" if hasattr(peer, "host") else "?"
        return f"{where} ({self.direction}, not authenticated)"

    def _drop(self, counter, why):
        self.hub.count(counter, f"internal connection with {self._who()} closed: {why}")
        self._dropped = True
        if self.transport is not None:
            self.transport.loseConnection()

    def ampBoxReceived(self, box):
        if self._dropped:
            return  # the rest of a chunk that arrived with the offending box
        problem = wire.box_problem(box)
        if problem is None:
            try:
                super().ampBoxReceived(box)
                return
            except Exception as e:  # an answer to no question, a bad error box...
                problem = f"{type(e).__name__} in AMP"
        self._drop("malformed", f"malformed message ({problem})")

    def locateResponder(self, name):
        command = wire.COMMANDS.get(name)
        if command is None:
            self._drop("malformed", f"unknown request {name!r}")
            return None
        if self.peer is None:
            if command not in wire.BEFORE_PROOF[self.direction]:
                self._drop("unauthenticated", f"request {command.__name__} before authentication")
                return None
        elif command in (wire.Challenge, wire.Authenticate):
            self._drop("malformed", f"{command.__name__} after authentication")
            return None
        elif not self.config_ok and command is not wire.GetConfig:
            self.hub.count("refused", f"request {command.__name__} from {self.peer} refused: "
                                      "its configuration differs")
            return None
        responder = super().locateResponder(name)
        if responder is None:
            return None

        def parsed_first(box):
            # AMP would log a traceback for arguments that do not parse.
            try:
                command.parseArguments(box, self)
            except Exception as e:
                self._drop("malformed", f"{command.__name__} with malformed arguments ({type(e).__name__})")
                raise amp.RemoteAmpError(b"MALFORMED", "malformed arguments", fatal=True) from None
            return responder(box)

        return parsed_first

    def adopted(self, generation):
        """The outbound link uses this connection from now on. (Called through
        ClientService's protocol proxy, which is why it is a method.)"""
        self._generation = generation

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if self.link is not None and self._generation is not None:
            self.link.connection_lost(self._generation)

    # -- server side --------------------------------------------------------

    @wire.Challenge.responder
    def challenge(self):
        self._server_nonce = wire.new_nonce()
        return {"nonce": self._server_nonce}

    @wire.Authenticate.responder
    def authenticate(self, cluster, server, incarnation, config, nonce, proof):
        hub = self.hub
        if len(nonce) != wire.NONCE_SIZE:
            hub.auth_failed(server, "malformed authentication")
            raise wire.AuthenticationFailed("malformed authentication")
        if self._server_nonce is None or cluster != hub.config.name or server == hub.local \
                or hub.config.server(server) is None:
            hub.auth_failed(server, "unknown cluster or server")
            raise wire.AuthenticationFailed("unknown cluster or server")
        # The key the client proved with (during a rotation: the old or the new);
        # the answer proves the same one.
        key = next((k for k in accepted_keys(hub.keys()) if wire.proofs_equal(
            wire.proof(k, "client", cluster, server, self._server_nonce, nonce, hub.fingerprint, config), proof)),
            None)
        if key is None:
            hub.auth_failed(server, "bad proof (wrong cluster key?)")
            raise wire.AuthenticationFailed("authentication failed")
        self.peer = server
        self.config_ok = config == hub.config.digest
        if not self.config_ok:
            hub.config_mismatch(server, f"{server} has {config[:12]}, {hub.local} has {hub.config.digest[:12]}")
        return {"server": hub.local, "incarnation": hub.incarnation, "config": hub.config.digest,
                "service": hub.controller.service.value,
                "generation": hub.controller.config_generation,
                "proof": wire.proof(key, "server", cluster, server, self._server_nonce, nonce,
                                    hub.fingerprint, config)}

    @wire.PushState.responder
    def push_state(self, report):
        try:
            self.hub.controller.peer_report(self.peer, report)
        except ValueError as e:
            self.hub.count("malformed", f"state report from {self.peer} dropped: {e}")
        return {}

    @wire.Call.responder
    def call(self, op, args):
        d = defer.maybeDeferred(self.hub.controller.handle_call, op, args)

        def refused(f):
            if f.check(OperationError, KeyError, ValueError):
                raise wire.OperationRefused(str(f.value))
            log.failure("request {op} from {p} failed", f, op=op, p=self.peer)
            raise wire.OperationRefused(f"internal error: {f.value}")

        d.addCallbacks(lambda r: {"result": r or {}, "report": self.hub.controller.local_report()}, refused)
        return d

    @wire.GetConfig.responder
    def get_config(self, offset):
        data = self.hub.config.source.encode()
        chunk = data[offset:offset + 50000] if 0 <= offset <= len(data) else b""
        return {"digest": self.hub.config.digest, "chunk": chunk, "total": len(data)}


class _Factory(protocol.Factory):
    def __init__(self, hub, link=None):
        self.hub = hub
        self.link = link

    def buildProtocol(self, addr):
        p = InternalProtocol(self.hub, outbound_peer=self.link.name if self.link else None, link=self.link)
        p.factory = self
        return p


class PeerLink(service.Service):
    """The authenticated outbound connection to one peer, reconnecting with
    back-off while the service runs."""

    def __init__(self, hub, server_config):
        self.hub = hub
        self.name = server_config.name
        self.protocol = None  # the adopted (authenticated) connection
        self._generation = 0
        self._waiters = []
        self._delay = RECONNECT_MIN
        self._attempt = None
        self._retry = None
        self._handshake = None  # the connection being authenticated
        local = hub.config.server(hub.local)
        self._endpoint = endpoints.SSL4ClientEndpoint(
            hub.reactor, server_config.address, server_config.ports.internal,
            ssl.CertificateOptions(), timeout=5, bindAddress=(local.address, 0))

    def startService(self):
        super().startService()
        self._connect()

    def stopService(self):
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._attempt is not None:
            self._attempt.cancel()
        self._retry = self._attempt = None
        for p in (self.protocol, self._handshake):
            if p is not None:
                p.transport.loseConnection()
        return defer.succeed(None)

    def _connect(self):
        self._retry = None
        if not self.running:
            return
        self._attempt = self._endpoint.connect(_Factory(self.hub, link=self))
        self._attempt.addCallback(self._authenticate)
        self._attempt.addErrback(self._failed)

    def _failed(self, failure):
        self._attempt = None
        if failure.check(defer.CancelledError) or not self.running:
            return
        log.debug("connection to {p} failed: {e}", p=self.name, e=failure.getErrorMessage())
        self._schedule()

    def _schedule(self):
        if self.running and self._retry is None and self._attempt is None and self.protocol is None:
            self._retry = self.hub.reactor.callLater(self._delay, self._connect)
            self._delay = min(self._delay * 1.5, RECONNECT_MAX)

    def _authenticate(self, p):
        """Run the authentication exchange on a new outbound connection,
        bounded by AUTH_TIMEOUT: a far end that never answers must not hold
        the link."""
        self._handshake = p
        timer = self.hub.reactor.callLater(AUTH_TIMEOUT, self._handshake_timed_out, p)

        def done(result):
            if timer.active():
                timer.cancel()
            if self._handshake is p:
                self._handshake = None
            return result

        return self._prove(p).addBoth(done)

    def _handshake_timed_out(self, p):
        self.hub.auth_failed(self.name, f"no answer to the authentication within {AUTH_TIMEOUT:g} s")
        p.transport.abortConnection()

    @defer.inlineCallbacks
    def _prove(self, p):
        hub = self.hub
        try:
            r = yield p.callRemote(wire.Challenge)
            server_nonce = r["nonce"]
            cert = p.transport.getPeerCertificate()
            if cert is None:
                raise wire.AuthenticationFailed(f"{self.name} showed no TLS certificate")
            fp = wire.fingerprint(cert)
            nonce = wire.new_nonce()
            r = yield p.callRemote(
                wire.Authenticate, cluster=hub.config.name, server=hub.local,
                incarnation=hub.incarnation, config=hub.config.digest, nonce=nonce,
                proof=wire.proof(signing_key(hub.keys()), "client", hub.config.name, hub.local, server_nonce,
                                 nonce, fp, hub.config.digest))
            proven = any(wire.proofs_equal(wire.proof(k, "server", hub.config.name, hub.local, server_nonce,
                                                      nonce, fp, hub.config.digest), r["proof"])
                         for k in accepted_keys(hub.keys()))
            if r["server"] != self.name or not proven:
                raise wire.AuthenticationFailed(f"{self.name} failed to prove the cluster key")
            # The far end proved the key on this channel: from now on its
            # requests on this connection are answered like an inbound peer's.
            p.peer = self.name
            p.config_ok = r["config"] == hub.config.digest
            if r["config"] != hub.config.digest:
                # Authenticated, but another configuration: only GetConfig is allowed.
                yield hub.config_mismatch(self.name, f"{self.name} has {r['config'][:12]}, "
                                                     f"{hub.local} has {hub.config.digest[:12]}", via=p,
                                          peer_run=PeerRun(r["service"], r["incarnation"], r.get("generation")))
                raise ConfigurationDiffers()
        except Exception as e:
            if not isinstance(e, ConfigurationDiffers):
                hub.auth_failed(self.name, str(e))
            p.transport.loseConnection()
            raise
        self._attempt = None
        self._delay = RECONNECT_MIN
        self._generation += 1
        p.adopted(self._generation)
        self.protocol = p
        hub.link_up(self)
        self._release_waiters()

    def connection_lost(self, generation):
        if generation == self._generation and self.protocol is not None:
            self.protocol = None
            self.hub.link_down(self)
            self._schedule()

    def call(self, command, wait=LINK_WAIT, **kwargs):
        """Send a command on the link, waiting up to `wait` seconds for the
        link to come up (a peer that just restarted is still connecting)."""
        if self.protocol is not None:
            return self.protocol.callRemote(command, **kwargs)
        if wait <= 0:
            return defer.fail(OperationError(f"no connection to server {self.name}"))
        waiter = defer.Deferred()
        self._waiters.append(waiter)

        def give_up():
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                waiter.errback(OperationError(f"no connection to server {self.name}"))

        timer = self.hub.reactor.callLater(wait, give_up)

        def send(p):
            if timer.active():
                timer.cancel()
            return p.callRemote(command, **kwargs)

        return waiter.addCallback(send)

    def _release_waiters(self):
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.callback(self.protocol)


@implementer(IPeerChannel)
class InternalService(service.MultiService):
    def __init__(self, reactor, config, local, incarnation, controller, alerts, keyring=None):
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.local = local
        self.incarnation = incarnation
        self.controller = controller
        self.alerts = alerts
        self.port = None
        self.on_config_mismatch = lambda peer, detail, via, peer_run: None
        self._auth_alerted = set()
        self._mismatch_alerted = set()
        self.counters = collections.Counter()  # dropped or refused messages, by kind
        self.keyring = keyring  # the cluster keys during a rotation; None: the configuration's key
        pkey, cert = make_tls_identity(f"cpro-{local}")
        self._tls = ssl.CertificateOptions(privateKey=pkey, certificate=cert)
        self.fingerprint = wire.fingerprint(cert)
        self.links = {}
        for s in config.servers:
            if s.name != local:
                link = PeerLink(self, s)
                self.links[s.name] = link
                link.setServiceParent(self)

    def keys(self):
        """The key or the keyring the proofs are made and checked with."""
        return self.keyring if self.keyring is not None else self.config.key

    def reconfigure(self, config):
        """A new configuration with the same servers and ports (live
        reconfiguration): its digest goes into the next handshakes, its text
        to GetConfig."""
        self.config = config

    def listen(self):
        """Bind the listening port (raises CannotListenError)."""
        local = self.config.server(self.local)
        self.port = self.reactor.listenSSL(local.ports.internal, _Factory(self), self._tls,
                                           interface=local.address)

    def stopService(self):
        d = defer.maybeDeferred(super().stopService)
        if self.port is not None:
            port, self.port = self.port, None
            d.addCallback(lambda _: port.stopListening())
        return d

    # -- link events ---------------------------------------------------------

    def link_up(self, link):
        self._auth_alerted.discard(link.name)
        log.info("internal link to {p} is up", p=link.name)
        link.call(wire.PushState, wait=0, report=self.controller.local_report()).addErrback(
            lambda f: log.warn("push to {p} failed: {e}", p=link.name, e=f.getErrorMessage()))
        self.refresh(link.name)

    def link_down(self, link):
        log.info("internal link to {p} is down", p=link.name)

    def refresh(self, server):
        """Fetch a peer's state report now."""
        link = self.links.get(server)
        if link is None or link.protocol is None:
            return defer.succeed(None)
        d = link.call(wire.Call, wait=0, op="get_state", args={})
        d.addCallback(lambda r: self.controller.peer_report(server, r["result"]))
        d.addErrback(lambda f: log.warn("state fetch from {p} failed: {e}", p=server, e=f.getErrorMessage()))
        return d

    def count(self, kind, message):
        """A message was dropped or refused: count it; log the 1st, 10th,
        100th... of each kind (an attacker must not flood the log)."""
        self.counters[kind] += 1
        if worth_logging(self.counters[kind]):
            log.warn("{message} ({kind}: {n} so far)", message=message, kind=kind, n=self.counters[kind])

    def auth_failed(self, server, why):
        if server not in self._auth_alerted:
            self._auth_alerted.add(server)
            self.alerts.emit(*catalog.PEER_AUTHENTICATION_FAILED.format(server=server, reason=why))

    def config_mismatch(self, server, detail, via=None, peer_run=None):
        """A peer runs another configuration. via: an outbound connection on
        which its configuration can still be fetched; peer_run: the peer's
        L{PeerRun}, as it said when answering on via."""
        if server not in self._mismatch_alerted:
            self._mismatch_alerted.add(server)
            self.alerts.emit(*catalog.CONFIG_MISMATCH.format(server=server, detail=detail))
        return defer.maybeDeferred(self.on_config_mismatch, server, detail, via, peer_run)

    @defer.inlineCallbacks
    def fetch_config(self, p):
        """(digest, text) of the configuration of the peer at the other end of p."""
        chunks, offset, total, digest = [], 0, None, ""
        while total is None or offset < total:
            r = yield p.callRemote(wire.GetConfig, offset=offset)
            total, digest = r["total"], r["digest"]
            if not r["chunk"]:
                break
            chunks.append(r["chunk"])
            offset += len(r["chunk"])
        return digest, b"".join(chunks).decode()

    # -- IPeerChannel -----------------------------------------------------------

    def call(self, server, op, **args):
        link = self.links.get(server)
        if link is None:
            return defer.fail(OperationError(f"no such server: {server}"))
        d = link.call(wire.Call, op=op, args=args)

        def unwrap(r):
            if r.get("report") is not None:
                self.controller.peer_report(server, r["report"])
            return r["result"]

        def refused(f):
            if f.check(wire.OperationRefused):
                raise OperationError(str(f.value))
            raise OperationError(f"request to {server} failed: {f.getErrorMessage()}")

        d.addCallbacks(unwrap, refused)
        return d

    def broadcast_state(self, report):
        for link in self.links.values():
            if link.protocol is not None:
                link.call(wire.PushState, wait=0, report=report).addErrback(lambda f: None)

    def connected_servers(self):
        return [n for n, link in self.links.items() if link.protocol is not None]
