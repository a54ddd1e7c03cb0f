"""A small HTTP(S) client for one L{cpro.config.model.HttpTarget}: the
witness heartbeat and the httpnp resolver.

Built on C{twisted.web.client.Agent} with the injected reactor. Every
request ends by itself: the connection attempt, the answer and the body
together are bounded by the target's timeout, the body by C{max_body}
bytes, and the Deferred is cancellable (the connection is dropped). With
C{tls}, the server's certificate is verified against the target's
C{ca_file} (or the system's CAs) and its host name or IP address.

Failures reach the caller as L{HttpRequestError}s whose message says what
went wrong in words an operator can act on ("connection refused",
"no answer within 3 s", "TLS: certificate verify failed").
"""

import re
from dataclasses import dataclass

from twisted.internet import defer, error, protocol, ssl
from twisted.internet.abstract import isIPv6Address
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import client, http_headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

log = Logger()

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
MAX_CA_FILE = 1024 * 1024


class HttpRequestError(Exception):
    """A request that got no usable answer; the message says why."""


class AnswerTooLarge(HttpRequestError):
    pass


@dataclass(frozen=True)
class HttpAnswer:
    code: int
    headers: http_headers.Headers
    body: bytes

    def header(self, name):
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


def load_ca_file(path):
    """The trust root of the PEM certificates in C{path} (read now, blocking: call at setup).

    @raise ValueError: unreadable, too large, or without a certificate.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CA_FILE + 1)
    except OSError as e:
        raise ValueError(f"cannot read CA file {path}: {e.strerror or e}") from None
    if len(data) > MAX_CA_FILE:
        raise ValueError(f"CA file {path} is larger than {MAX_CA_FILE} bytes")
    certificates = []
    for block in _PEM_CERT.findall(data):
        try:
            certificates.append(ssl.Certificate.loadPEM(block))
        except Exception as e:
            raise ValueError(f"CA file {path}: bad certificate: {e}") from None
    if not certificates:
        raise ValueError(f"CA file {path} holds no PEM certificate")
    return ssl.trustRootFromCertificates(certificates)


@implementer(IPolicyForHTTPS)
class _BrokenPolicy:
    """TLS policy standing in for an unusable CA file: every connection fails with why."""

    def __init__(self, reason):
        self.reason = reason

    def creatorForNetloc(self, hostname, port):
        raise HttpRequestError(self.reason)


class _BoundedBody(protocol.Protocol):
    def __init__(self, finished, limit):
        self._finished = finished
        self._limit = limit
        self._parts = []
        self._size = 0

    def dataReceived(self, data):
        if self._finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._finished.errback(AnswerTooLarge(f"answer larger than {self._limit} bytes"))
            self.transport.stopProducing()
            return
        self._parts.append(data)

    def abort(self):
        if self.transport is not None:
            self.transport.stopProducing()

    def connectionLost(self, reason):
        if self._finished.called:
            return
        if reason.check(client.ResponseDone, client.PotentialDataLoss):
            self._finished.callback(b"".join(self._parts))
        else:
            self._finished.errback(reason)


class HttpClient:
    """Requests to one HTTP(S) target.

    @param reactor: IReactorTCP + IReactorTime (+ IReactorSSL... via the Agent).
    @param target: the L{cpro.config.model.HttpTarget}.
    @param persistent: keep one connection open between requests (the
        witness heartbeat: one TLS handshake, not one per beat); call
        L{close} when done. Not persistent: each request connects anew (a
        reachability test must really reach).
    @param max_body: largest answer body accepted, bytes.
    """

    def __init__(self, reactor, target, persistent=False, max_body=65536):
        self._reactor = reactor
        self.target = target
        self.timeout = float(target.timeout)
        self.max_body = max_body
        self.scheme = "https" if target.tls else "http"
        host = f"[{target.host}]" if isIPv6Address(target.host) else target.host
        self.base_url = f"{self.scheme}://{host}:{target.port}"
        self.config_problem = None
        policy = client.BrowserLikePolicyForHTTPS()
        if target.tls and target.ca_file:
            try:
                policy = client.BrowserLikePolicyForHTTPS(trustRoot=load_ca_file(target.ca_file))
            except ValueError as e:
                # Not fatal here: the daemon keeps running, each request fails
                # saying why, and the operator fixes the file.
                self.config_problem = str(e)
                policy = _BrokenPolicy(str(e))
                log.error("HTTP target {url}: {problem}", url=self.base_url, problem=e)
        self._pool = client.HTTPConnectionPool(reactor, persistent=persistent)
        self._pool.maxPersistentPerHost = 1
        self._pool.retryAutomatically = False
        self._agent = client.Agent(reactor, contextFactory=policy,
                                   connectTimeout=self.timeout, pool=self._pool)

    def url(self, path):
        return self.base_url + path

    def request(self, method, path, headers=None, body=None):
        """A cancellable Deferred firing an L{HttpAnswer} (any status code) or
        failing with L{HttpRequestError} within the target's timeout."""
        try:
            hdrs = http_headers.Headers({b"User-Agent": [b"cpro"]})
            for name, value in (headers or {}).items():
                hdrs.setRawHeaders(name, [value])
            producer = _BytesProducer(body) if body is not None else None
            d = self._agent.request(method, self.url(path).encode("ascii"), hdrs, producer)
        except Exception as e:
            return defer.fail(HttpRequestError(describe(e, self.timeout)))

        def got_response(response):
            limit = 0 if method == b"HEAD" or response.code in (204, 304) else self.max_body
            finished = defer.Deferred(lambda _: reader.abort())
            reader = _BoundedBody(finished, limit)
            response.deliverBody(reader)
            finished.addCallback(lambda body: HttpAnswer(response.code, response.headers, body))
            return finished

        d.addCallback(got_response)
        return self._bounded(d)

    def _bounded(self, inner):
        """The outer Deferred: fires with C{inner}'s answer, fails with an
        L{HttpRequestError} (on the timeout: "no answer within N s"), or,
        when the caller cancels it, with CancelledError (the request is dropped)."""
        why = []  # "timeout" or "cancelled" once inner was cancelled on purpose

        def time_out():
            why.append("timeout")
            inner.cancel()

        def cancel(_):
            why.append("cancelled")
            inner.cancel()

        timer = self._reactor.callLater(self.timeout, time_out)
        outer = defer.Deferred(cancel)

        def finish(result):
            if timer.active():
                timer.cancel()
            if "cancelled" in why or outer.called:
                return None  # Deferred.cancel fails outer with CancelledError itself
            if not isinstance(result, Failure):
                outer.callback(result)
            elif "timeout" in why:
                outer.errback(HttpRequestError(f"no answer within {self.timeout:g} s"))
            else:
                try:
                    reason = describe(result.value, self.timeout)
                except Exception:
                    reason = result.getErrorMessage()
                outer.errback(HttpRequestError(reason))
            return None

        inner.addBoth(finish)
        return outer

    def close(self):
        """Close kept connections. A Deferred (never failing)."""
        d = defer.maybeDeferred(self._pool.closeCachedConnections)
        d.addErrback(lambda f: None)
        return d


@implementer(IBodyProducer)
class _BytesProducer:
    """The whole body at once (FileBodyProducer would use the global cooperator)."""

    def __init__(self, data):
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


def describe(exc, timeout=None):
    """Words for why a request failed."""
    if isinstance(exc, HttpRequestError):
        return str(exc)
    if isinstance(exc, (defer.TimeoutError, error.TimeoutError)):
        return f"no answer within {timeout:g} s" if timeout is not None else "timed out"
    if isinstance(exc, error.ConnectingCancelledError):
        return "connection attempt cancelled"
    if isinstance(exc, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, error.DNSLookupError):
        return f"cannot resolve the host name: {exc}"
    if isinstance(exc, (client.ResponseNeverReceived, client.RequestTransmissionFailed,
                        client.ResponseFailed)):
        reasons = [describe(r.value, timeout) for r in getattr(exc, "reasons", [])]
        return "; ".join(r for r in reasons if r) or exc.__class__.__name__
    if isinstance(exc, error.ConnectionDone):
        return "connection closed by the server"
    if isinstance(exc, error.ConnectionLost):
        return "connection lost"
    if isinstance(exc, error.ConnectError):
        text = exc.osError or exc.args and exc.args[0] or ""
        return f"cannot connect: {text}" if text else "cannot connect"
    name = exc.__class__.__name__
    if name == "Error" and exc.__class__.__module__.startswith("OpenSSL"):
        return "TLS: " + _openssl_reason(exc)
    return str(exc) or name


def _openssl_reason(exc):
    try:
        return ", ".join(entry[2] for entry in exc.args[0]) or "handshake failed"
    except Exception:
        return str(exc) or "handshake failed"
