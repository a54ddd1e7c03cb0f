"""The httpnp network-partition resolver: can this server reach a web server?

As in the original, the server that can still send an HTTP HEAD request to
the target (usually the witness server, whose C{/} answers 200) is on the
healthy side. Any HTTP answer below 500 proves the path works; a refused
connection, a timeout, a TLS failure or a 5xx answer does not.
"""

from twisted.internet import defer
from zope.interface import implementer

from cpro.cluster.partition import Verdict
from cpro.interfaces import INPResolver
from cpro.plugins import NP_RESOLVERS
from cpro.services.partition.base import ResolverSchema
from cpro.system.httpclient import HttpClient


@implementer(INPResolver)
class HttpResolver:
    """One httpnp resource.

    @param reactor: IReactorTCP + IReactorTime (+ SSL).
    @param config: the L{cpro.config.model.HttpNPConfig}.
    @param client: an L{HttpClient} (tests); built from C{config.target} when None.
    """

    kind = "httpnp"

    def __init__(self, reactor, config, client=None):
        self.name = config.name
        self.config = config
        self.timeout = float(config.target.timeout)
        # Not persistent: a kept connection would prove an old path, not today's.
        self._client = client if client is not None else HttpClient(
            reactor, config.target, persistent=False, max_body=0)
        self.url = self._client.url(config.target.path)

    def check(self, lost):
        """A cancellable Deferred firing a L{Verdict} (C{lost} does not matter here)."""
        d = self._client.request(b"HEAD", self.config.target.path)

        def answered(answer):
            if answer.code < 500:
                return Verdict(True, f"reached {self.url} ({answer.code})")
            return Verdict(False, f"{self.url} answered {answer.code}")

        def failed(failure):
            if failure.check(defer.CancelledError):
                return failure  # the engine's own timeout: it says so itself
            return Verdict(False, f"cannot reach {self.url}: {failure.getErrorMessage()}")

        d.addCallbacks(answered, failed)
        return d


@NP_RESOLVERS.register(HttpResolver.kind, schema=ResolverSchema(order=20))
def http_resolvers(context):
    """A resolver for each httpnp resource this server uses."""
    return [HttpResolver(context.reactor, config) for config in context.config.network_partition.http
            if context.local in config.servers]
