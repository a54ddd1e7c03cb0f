"""Forced stop (fencing): stopping a server declared down before its groups fail over.

Two implementations of L{cpro.interfaces.IForcedStop}:

- L{BmcForcedStop} (method "bmc"): a chassis control request (power off,
  reset, power cycle or NMI, as configured) to the server's BMC over IPMI;
  for "off" it then polls the power state until the BMC reports the chassis
  off. The whole stop is bounded by the configured timeout.
- L{ScriptForcedStop} (method "script"): runs the operator's script, no
  shell, in its own process group (killed on timeout), with
  CLP_SERVER_DOWN=<server to stop>, CLP_SERVER_LOCAL=<this server>,
  CLP_FORCESTOP_MODE=1; exit code 0 means the server is stopped.

Each method registers its factory, C{factory(context)} with a
L{ForcedStopContext}, and its L{cpro.config.partition.ForcedStopSchema} with
L{cpro.plugins.FORCED_STOP_METHODS}; L{make_forced_stop} builds the
configured one through the registry (None when forced stop is off).
Every failure is a L{ForcedStopError} naming the server and why; the
controller decides what a failure means (suppress the failover or not).
"""

from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from cpro.config.partition import ForcedStopSchema
from cpro.interfaces import IForcedStop
from cpro.plugins import FORCED_STOP_METHODS, UnknownType
from cpro.system.process import CommandError, run_command
from cpro.system.ipmi import POWER_ACTIONS, BmcClient, BmcError

log = Logger()

# Seconds between power-state reads while waiting for a chassis to go off.
CONFIRM_POLL = 0.25


class ForcedStopError(Exception):
    """A forced stop failed (or could not be tried)."""

    def __init__(self, server, reason):
        self.server = server
        self.reason = reason
        super().__init__(f"forced stop of {server} failed: {reason}")


class ForcedStopConfigError(ValueError):
    """The forced stop configuration cannot be used (unknown method, no script)."""


@implementer(IForcedStop)
class BmcForcedStop:
    """Forced stop through each server's BMC.

    @param runner: runs pyghmi off the reactor thread (L{cpro.system.runners}).
    @param forced_stop: the L{cpro.config.model.ForcedStopConfig}.
    @param servers: the L{cpro.config.model.ServerConfig}s (those without a
        BMC cannot be stopped: stop_server fails for them).
    @param clock: IReactorTime bounding each stop by C{forced_stop.timeout}
        and spacing the power-state polls; None: no bound, one poll (tests).
    @param client_factory: C{factory(bmc_config, timeout)} -> L{BmcClient} (tests).
    """

    method = "bmc"

    def __init__(self, runner, forced_stop, servers, clock=None, client_factory=None):
        if forced_stop.bmc_action not in POWER_ACTIONS or forced_stop.bmc_action == "on":
            raise ForcedStopConfigError(f"forced stop action {forced_stop.bmc_action!r} is not one of "
                                        "off, reset, cycle, nmi")
        self.action = forced_stop.bmc_action
        self.timeout = float(forced_stop.timeout)
        self._clock = clock
        if client_factory is None:
            def client_factory(bmc, timeout):
                return BmcClient(runner, bmc, timeout, clock=clock)
        self._clients = {s.name: client_factory(s.bmc, self.timeout)
                         for s in servers if s.bmc is not None}
        self._servers = {s.name for s in servers}

    def stop_server(self, server):
        """Run the configured power action on C{server}'s BMC (and for 'off' confirm it).

        A cancellable Deferred firing None, or failing with L{ForcedStopError}.
        """
        client = self._client(server)
        if client is None:
            return defer.fail(ForcedStopError(server, self._missing(server)))
        log.warn("forced stop of {server}: power {action} through its BMC at {address}",
                 server=server, action=self.action, address=client.address)
        d = defer.ensureDeferred(self._stop(server, client))
        if self._clock is not None and self.timeout > 0:
            d.addTimeout(self.timeout, self._clock, onTimeoutCancel=lambda result, timeout: _raise(
                ForcedStopError(server, f"not confirmed within {timeout:g} s")))

        def failed(failure):
            if failure.check(BmcError):
                raise ForcedStopError(server, failure.getErrorMessage())
            return failure

        d.addErrback(failed)
        return d

    async def _stop(self, server, client):
        if self.action == "off" and (await client.power_state()) == "off":
            log.info("forced stop of {server}: the chassis is already off", server=server)
            return None
        await client.power(self.action)
        if self.action != "off":
            log.warn("forced stop of {server}: its BMC accepted power {action}", server=server,
                     action=self.action)
            return None
        while True:
            if (await client.power_state()) == "off":
                log.warn("forced stop of {server}: its BMC reports the chassis off", server=server)
                return None
            if self._clock is None:
                raise ForcedStopError(server, "the BMC accepted power off but still reports the chassis on")
            await task.deferLater(self._clock, CONFIRM_POLL, lambda: None)

    def identify(self, server, seconds):
        """Light C{server}'s chassis ID lamp for C{seconds}. A Deferred (failing with ForcedStopError)."""
        client = self._client(server)
        if client is None:
            return defer.fail(ForcedStopError(server, self._missing(server)))
        d = client.identify(seconds)

        def failed(failure):
            failure.trap(BmcError)
            raise ForcedStopError(server, f"identify: {failure.getErrorMessage()}")

        d.addErrback(failed)
        return d

    def _client(self, server):
        return self._clients.get(server)

    def _missing(self, server):
        if server not in self._servers:
            return "not a server of this cluster"
        return "no BMC is configured for it"


@implementer(IForcedStop)
class ScriptForcedStop:
    """Forced stop by the operator's script.

    @param reactor: IReactorProcess + IReactorTime.
    @param forced_stop: the L{cpro.config.model.ForcedStopConfig} (script set).
    @param local: name of the local server (CLP_SERVER_LOCAL).
    @param log_path: file the script's output is appended to (None: discarded).
    """

    method = "script"

    def __init__(self, reactor, forced_stop, local, log_path=None):
        if not forced_stop.script:
            raise ForcedStopConfigError("forced stop method script needs a script path")
        self.script = forced_stop.script
        self.timeout = float(forced_stop.timeout)
        self._reactor = reactor
        self._local = local
        self._log_path = log_path

    def environment(self, server):
        """The script's complete environment (nothing else is inherited; PATH is added)."""
        return {"CLP_SERVER_DOWN": server, "CLP_SERVER_LOCAL": self._local, "CLP_FORCESTOP_MODE": "1"}

    def stop_server(self, server):
        """Run the script for C{server}. A cancellable Deferred firing None when it exits 0,
        failing with L{ForcedStopError} otherwise (non-zero exit, signal, timeout, cannot run)."""
        log.warn("forced stop of {server}: running {script}", server=server, script=self.script)
        d = run_command(self._reactor, [self.script], env=self.environment(server),
                        timeout=self.timeout if self.timeout > 0 else None, log_path=self._log_path)

        def judge(result):
            if result.succeeded:
                log.warn("forced stop of {server}: {script} succeeded", server=server, script=self.script)
                return None
            raise ForcedStopError(server, f"{self.script} {result.describe()}")

        def cannot_run(failure):
            failure.trap(CommandError)
            raise ForcedStopError(server, failure.getErrorMessage())

        d.addCallbacks(judge, cannot_run)
        return d

    def identify(self, server, seconds):
        """A script cannot light an ID lamp: does nothing (best effort). A fired Deferred."""
        log.info("forced stop by script: no chassis identify for {server}", server=server)
        return defer.succeed(None)


@dataclass(frozen=True)
class ForcedStopContext:
    """What a forced-stop method is built with (its registered factory's argument).

    @ivar reactor: IReactorTime (+ IReactorProcess for a script).
    @ivar config: the L{cpro.config.model.ClusterConfig} (C{config.forced_stop}
        is enabled and names this method).
    @ivar local: name of the local server.
    @ivar runner: C{runner(fn, *args)} -> Deferred, for blocking calls (pyghmi).
    @ivar log_path: where an external command's output goes (None: discarded).
    """

    reactor: Any
    config: Any
    local: str
    runner: Callable
    log_path: Optional[str] = None


def _check_bmc_servers(report, servers):
    for server in servers.values():
        bmcs = [d for d in server.devices.values() if d.type == "bmc"]
        if not bmcs:
            report.error(server.path, f"forced stop through the BMC is on, but server {server.name} has no "
                                      "bmc device (<device id=\"600\"><type>bmc</type>...)")


@FORCED_STOP_METHODS.register("bmc", schema=ForcedStopSchema(check_servers=_check_bmc_servers))
def bmc_forced_stop(context):
    config = context.config
    stopper = BmcForcedStop(context.runner, config.forced_stop, config.servers, clock=context.reactor)
    without = [s.name for s in config.servers if s.bmc is None]
    if without:
        log.warn("forced stop by BMC: no BMC configured for {servers}; they cannot be stopped",
                 servers=", ".join(without))
    return stopper


def _check_script(loader, forced_stop, node_path):
    script_path = f"{node_path}/script"
    if forced_stop.script is None:
        loader.report.error(script_path, "forced stop method script needs <script>: the script's path")
    else:
        loader.check_executable(forced_stop.script, script_path, "forced stop script")


@FORCED_STOP_METHODS.register("script", schema=ForcedStopSchema(check=_check_script))
def script_forced_stop(context):
    return ScriptForcedStop(context.reactor, context.config.forced_stop, context.local,
                            log_path=context.log_path)


def make_forced_stop(reactor, config, local, runner, log_path=None):
    """The forced stop the configuration asks for, or None when it is not enabled.

    Built by the factory registered for the method with
    L{cpro.plugins.FORCED_STOP_METHODS}.

    @param config: the L{cpro.config.model.ClusterConfig}.
    @param runner: runs pyghmi off the reactor thread (method bmc).
    @param log_path: where a script's output goes (method script).
    @raise ForcedStopConfigError: unknown method, no script, bad action.
    """
    forced_stop = config.forced_stop
    if forced_stop is None or not forced_stop.enabled:
        return None
    try:
        plugin = FORCED_STOP_METHODS.get(forced_stop.method)
    except UnknownType:
        raise ForcedStopConfigError(f"forced stop method {forced_stop.method!r} is not one of "
                                    f"{', '.join(FORCED_STOP_METHODS.names())}") from None
    return plugin.factory(ForcedStopContext(reactor, config, local, runner, log_path))


def _raise(exception):
    raise exception
