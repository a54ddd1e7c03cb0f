"""zope.interface contracts between the parts of cpro.

Every implementation and every fake is checked against these with
verifyObject/verifyClass in the tests.
"""

from zope.interface import Attribute, Interface


class IGroupResource(Interface):
    """One part of a failover group (exec, fip, disk, ...) on the local server.

    activate and deactivate are idempotent; they never enforce their own
    overall timeout beyond what their configuration says and never know
    about the network.

    A type lives in one module of L{cpro.resources} and registers its factory
    (usually the class) and its configuration schema (a
    L{cpro.config.schema.ResourceSchema}) with
    C{@cpro.plugins.RESOURCE_TYPES.register("TYPE", schema=...)}. The node
    builds every group resource with one signature::

        factory(reactor, config, log_dir, *, ledger)

    - reactor: the injected reactor (time, processes, threads);
    - config: its L{cpro.config.model.ResourceConfig} (C{config.params} is
      what the schema's build returned);
    - log_dir: the daemon's log directory (script output, ...);
    - ledger: the leftovers ledger (L{cpro.resources.ledger.Ledger}): what
      the resource holds while active (process groups, addresses) is
      recorded there, so that the next daemon removes it if this one
      crashes. Defaults to a ledger that records nothing.

    Further keyword arguments, with production defaults, are the type's own
    seams for tests (a fake netlink, runner, ...). The contract-test mixin
    L{cpro.testing.resource_contracts.GroupResourceContractMixin} runs against every
    implementation and fake.
    """

    name = Attribute("resource name as in clp.conf")
    type = Attribute("CLUSTERPRO short type name: 'exec', 'fip', ...")

    def activate(context):
        """Bring the resource up.

        @param context: a L{cpro.resources.base.ActionContext}.
        @return: Deferred firing None on success, failing with
            L{cpro.resources.base.ResourceError} (message says why) otherwise.
        """

    def deactivate(context):
        """Bring the resource down. Same contract as activate."""

    def describe():
        """A dict of run-time details for status views (may be empty)."""


class IMonitorLifecycle(Interface):
    """What every monitor resource shares, polled (L{IMonitor}) or event-fed
    (L{IEventMonitor}): a name, a type, start, stop and describe.

    A type lives in one module of L{cpro.resources.monitors} and registers
    its factory and its schema (a L{cpro.config.schema.MonitorSchema}) with
    C{@cpro.plugins.MONITOR_TYPES.register("TYPE", schema=...)}; the schema's
    C{event_fed} says which of the two it is. The engine
    (L{cpro.cluster.monitoring.MonitorRunner}) runs both with one state
    machine: retries, suspend/resume, dummy failure, recovery, status.
    """

    name = Attribute("monitor name as in clp.conf")
    type = Attribute("CLUSTERPRO short type name: 'pidw', 'genw', 'mrw', ...")

    def start():
        """Prepare to monitor (open devices, start a resident process, subscribe).

        Called when monitoring starts or resumes on this server (for a polled
        monitor after firstmonwait is scheduled, before the first check).
        Returns None or a Deferred.
        """

    def stop():
        """Stop monitoring (kill resident processes, close devices). None or a Deferred."""

    def describe():
        """A dict of run-time details for status views (may be empty)."""


class IMonitor(IMonitorLifecycle):
    """One polled monitor resource (pidw, genw, fipw, ...) on the local server.

    The engine (cpro.cluster.monitoring) schedules checks, enforces the
    timeout by cancelling the Deferred that check() returned, counts retries
    and runs recovery; a monitor only looks and reports. Built with
    C{factory(reactor, config, params, env)} (see
    L{cpro.resources.monitors.base}).
    """

    def check():
        """Run one check. Never blocks the reactor.

        @return: Deferred firing a L{cpro.resources.monitors.base.CheckResult}.
            A failure is taken as an error whose text is the exception's
            message. Cancelling the Deferred must abort the check and kill
            any process it started (the engine cancels on timeout).
        """


class IEventMonitor(IMonitorLifecycle):
    """One event-fed monitor resource (mrw, bmcw, ...) on the local server.

    It is never polled: its schema says C{event_fed=True} and it is built
    with C{factory(reactor, config, params, env, report=report)}, where
    C{report(result)} hands the engine a
    L{cpro.resources.monitors.base.CheckResult} when an event arrives and
    returns whether it was taken. Results also come from outside the type:
    L{cpro.services.monitors.MonitorService.deliver} (the SNMP trap receiver,
    clprexec) feeds the same engine by monitor name.

    What the engine does with the results (L{cpro.cluster.monitoring}):
      - an error is confirmed after C{polling/reconfirmation} further
        consecutive error reports, then recovered exactly as a polled
        monitor's error;
      - the monitor shows Normal once started and until an error is
        reported; a Warning report shows Warning;
      - reports are refused (C{report} returns False) while monitoring is
        stopped or suspended, during a dummy failure, while the recovery step
        of a confirmed error is carried out, and, when C{clearable} is
        false, a report other than an error while the monitor shows Error;
      - the recovery counters are reset by a Normal report (or clpmonctrl
        -c), not by monitoring starting again: no news is no proof of health.
    """

    clearable = Attribute("whether a Normal (or Warning) report may end an Error")


class IHeartbeatPath(Interface):
    """One path of liveness between this server and its peers (lanhb, comhb, diskhb, ...).

    A kind lives in one module of L{cpro.services.heartbeat} and registers
    its factory and its configuration schema (a
    L{cpro.config.heartbeats.HeartbeatKindSchema}: device type, own elements,
    cross-checks) with
    C{@cpro.plugins.HEARTBEAT_KINDS.register("KIND", schema=...)}. The
    heartbeat service builds every path with one signature::

        factory(context, heartbeat_config)

    - context: a L{cpro.services.heartbeat.base.HeartbeatContext} (reactor,
      configuration, local server, incarnation, callbacks, runner for
      blocking calls);
    - heartbeat_config: its L{cpro.config.model.HeartbeatConfig}, for a
      heartbeat this server takes part in.

    It raises L{cpro.services.heartbeat.base.HeartbeatConfigError} when the
    configuration cannot give this server the path. What the path hears
    goes to the context's callbacks:
      - C{context.on_beat(path_name, packet)}: an authentic, fresh
        L{cpro.protocols.heartbeat.HeartbeatPacket} from a peer (paths that
        carry packets: LAN, COM, disk);
      - C{context.on_alive(path_name, server, incarnation, age)}: a third-party
        or hardware view that C{server} was alive C{age} seconds ago
        (witness, BMC); C{incarnation} is None when the path cannot tell.

    The contract-test mixin L{cpro.testing.path_contracts.HeartbeatPathContractMixin}
    runs against every kind and the fake.
    """

    name = Attribute("heartbeat resource name, e.g. 'lanhb1'")
    kind = Attribute("'lanhb', 'lankhb', 'comhb', 'diskhb', 'bmchb', 'witnesshb'")

    def start_listening():
        """Open what the path needs (socket, serial line, disk). Idempotent.

        Raises only for what cannot heal by itself (a LAN port in use); a
        missing device or an unreachable peer is logged and retried by the
        path, which keeps running."""

    def stop_listening():
        """Close everything. A Deferred firing when closed (never failing)."""

    def send_beat(digest):
        """Send one heartbeat carrying the state digest on this path. Never raises."""

    def counters():
        """A dict of this path's counters (sent, received, malformed, ...)."""

    def forget(server):
        """Accept the next authentic beat of C{server} whatever its incarnation."""


class INPResolver(Interface):
    """One network-partition resolution method (pingnp, httpnp, the witness view).

    A resolver type lives in one module and registers its factory with
    C{@cpro.plugins.NP_RESOLVERS.register("TYPE",
    schema=cpro.services.partition.base.ResolverSchema(order=N))}. Every type
    is built with one signature, once per daemon start::

        factory(context) -> [INPResolver, ...]

    - context: a L{cpro.services.partition.base.ResolverContext} (reactor,
      configuration, local server, this server's heartbeat paths);
    - the result: the resolvers of this type this server runs (an empty
      list when the configuration gives it none); the server's list puts
      the types in their schema's order.

    The contract-test mixin L{cpro.testing.path_contracts.NPResolverContractMixin}
    runs against every type and the fake.
    """

    name = Attribute("resource name, e.g. 'pingnp1'")
    kind = Attribute("'pingnp', 'httpnp', 'witness'")
    timeout = Attribute("seconds the engine waits for check() before cancelling it")

    def check(lost):
        """Is this server on the healthy side, now that the servers in C{lost} are silent?

        A cancellable Deferred firing a L{cpro.cluster.partition.Verdict}.
        Failing or being cancelled counts as "cannot prove it"."""


class IForcedStop(Interface):
    """Fencing: stop a server declared down before its groups fail over.

    A method lives in one module and registers its factory and its
    configuration schema (a L{cpro.config.partition.ForcedStopSchema}: its
    checks of <forcestop> and of the servers) with
    C{@cpro.plugins.FORCED_STOP_METHODS.register("METHOD", schema=...)}.
    The configured method is built with one signature::

        factory(context) -> IForcedStop

    - context: a L{cpro.services.partition.forcestop.ForcedStopContext}
      (reactor, configuration with forced stop on, local server, runner for
      blocking calls, log path for external commands).
    """

    method = Attribute("'bmc' or 'script'")

    def stop_server(server):
        """Power off (or reset, ...) C{server}. A cancellable Deferred firing on
        success and failing with a ForcedStopError naming the server and why."""

    def identify(server, seconds):
        """Light C{server}'s chassis ID lamp (best effort). A Deferred."""


class IPeerChannel(Interface):
    """Reaching the other servers over internal communication."""

    def call(server, op, **args):
        """Ask server to perform op. Deferred firing the result dict or failing."""

    def broadcast_state(state):
        """Push the local state report to every connected peer (best effort)."""

    def connected_servers():
        """Names of the peers with an authenticated connection now."""


class IAlertSink(Interface):
    """Where state changes and errors are reported."""

    def emit(module, event_id, level, message, **details):
        """Record one alert (time and server are added by the sink)."""


class IOSActions(Interface):
    """OS-level actions; real commands in production, harmless ones in tests."""

    def run(action, reason):
        """Run 'shutdown', 'reboot', ... Returns a Deferred."""


class IAdminHandler(Interface):
    """What executes admin requests (the daemon's controller side).

    The admin endpoint (L{cpro.services.admin}) hands it every request the
    line protocol (L{cpro.protocols.admin}) parsed, one at a time per
    connection, and renders what it returns.
    """

    def execute(request):
        """Execute a L{cpro.protocols.admin.AdminRequest}.

        @return: a dict payload (or a Deferred firing one):
            - status: the status payload (see L{cpro.statusview});
            - alerts: {"alerts": [{"time", "server", "module", "id", "level", "message"}]};
            - cluster/group/resource: {} or optional per-server results
              {"servers": [{"name", "code", "message"}]} (code 0 = done on
              that server) and/or {"message": "text" or [lines]}.
        @raise cpro.protocols.admin.AdminError: (or fail with it) when the
            operation is refused or fails; its message and code go to the client.
        """
