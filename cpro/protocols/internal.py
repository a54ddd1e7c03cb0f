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
        (b"generation", amp.Integer(optional=True)),  # the responder's configuration generation
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


COMMANDS = {c.commandName: c for c in (Challenge, Authenticate, PushState, Call, GetConfig)}
# What a connection answers before the other end has proved the cluster key:
# the server side (inbound) plays the challenge; the client side (outbound)
# asked the questions and answers nothing.
BEFORE_PROOF = {"inbound": frozenset((Challenge, Authenticate)), "outbound": frozenset()}
NONCE_SIZE = 16
_MAX_TAG = 20  # bytes of an _ask/_answer/_error tag (AMP counts in hex)


def box_problem(box):
    """Why an AMP box is not one this protocol can take, or None.

    AMP itself raises into the reactor on an empty box, an answer to no
    question, or a command name that is not ASCII; this check runs first."""
    kinds = [k for k in (b"_command", b"_answer", b"_error") if k in box]
    if len(kinds) != 1:
        return "not exactly one of command, answer, error"
    kind = kinds[0]
    # Every request cpro sends asks for an answer: a command without _ask
    # would have its failure logged by AMP as unhandled.
    tag = box.get(b"_ask") if kind == b"_command" else box[kind]
    if tag is None:
        return "command without a question tag"
    if not (0 < len(tag) <= _MAX_TAG and tag.isalnum() and tag.isascii()):
        return "bad tag"
    if kind == b"_command":
        name = box[b"_command"]
        if not (name.isascii() and name.isalnum() and 0 < len(name) <= 64):
            return "bad command name"
    if kind == b"_error" and not (b"_error_code" in box and b"_error_description" in box):
        return "error without code or description"
    return None


def new_nonce():
    return os.urandom(NONCE_SIZE)


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
