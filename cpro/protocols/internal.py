"""Internal communication between servers: AMP commands over TLS, and the
mutual authentication with the cluster key.

Authentication is a challenge/response bound to the TLS channel: both proofs
cover the server certificate's fingerprint as each side sees it, so a
man-in-the-middle (which must present its own certificate) cannot relay
them. The TLS certificates themselves are throwaway, self-signed ones.
"""

import hashlib
import hmac
import json
import os

from twisted.protocols import amp

MAX_JSON = 60000  # below AMP's 64 KiB value limit


class AuthenticationFailed(Exception):
    pass


class OperationRefused(Exception):
    pass


class JSON(amp.Argument):
    """A JSON value carried as one AMP string (bounded)."""

    def toString(self, inObject):
        data = json.dumps(inObject, separators=(",", ":")).encode()
        if len(data) > MAX_JSON:
            raise ValueError(f"message too large ({len(data)} bytes)")
        return data

    def fromString(self, inString):
        return json.loads(inString.decode())


class Challenge(amp.Command):
    """Client asks for the server's nonce."""

    arguments = []
    response = [(b"nonce", amp.String())]


class Authenticate(amp.Command):
    arguments = [
        (b"cluster", amp.Unicode()),
        (b"server", amp.Unicode()),
        (b"incarnation", amp.Unicode()),
        (b"config", amp.Unicode()),  # configuration digest
        (b"nonce", amp.String()),
        (b"proof", amp.String()),
    ]
    response = [
        (b"server", amp.Unicode()),
        (b"incarnation", amp.Unicode()),
        (b"config", amp.Unicode()),  # the responder's configuration digest
        (b"service", amp.Unicode()),  # the responder's cluster service state (ClusterServiceState value)
        (b"proof", amp.String()),
    ]
    errors = {AuthenticationFailed: b"AUTH_FAILED"}
    fatalErrors = {AuthenticationFailed: b"AUTH_FAILED"}


class PushState(amp.Command):
    """The sender's state report (see ClusterController.local_report)."""

    arguments = [(b"report", JSON())]
    response = []


class Call(amp.Command):
    """Ask the receiver to perform an operation (see ClusterController.handle_call).

    The answer carries the receiver's state report as it is after the
    operation: pushed reports travel on the receiver's own link, which may
    deliver them after this answer, and a caller that acts next (the second
    half of a move) must already see what the operation changed.
    """

    arguments = [(b"op", amp.Unicode()), (b"args", JSON())]
    response = [(b"result", JSON()), (b"report", JSON(optional=True))]
    errors = {OperationRefused: b"REFUSED"}


class GetConfig(amp.Command):
    """A chunk of the receiver's configuration text."""

    arguments = [(b"offset", amp.Integer())]
    response = [(b"digest", amp.Unicode()), (b"chunk", amp.String()), (b"total", amp.Integer())]


def new_nonce():
    return os.urandom(16)


def fingerprint(x509):
    """SHA-256 fingerprint of a pyOpenSSL X509 certificate."""
    from OpenSSL import crypto

    return hashlib.sha256(crypto.dump_certificate(crypto.FILETYPE_ASN1, x509)).digest()


def proof(key, role, cluster, client, server_nonce, client_nonce, cert_fp, config_digest):
    """HMAC proof that the sender holds the cluster key, bound to this channel."""
    msg = b"|".join([
        b"cpro-internal-v1", role.encode(), cluster.encode(), client.encode(),
        server_nonce, client_nonce, cert_fp, config_digest.encode(),
    ])
    return hmac.new(key, msg, hashlib.sha256).digest()


def proofs_equal(a, b):
    return hmac.compare_digest(a, b)
