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


class IMonitor(Interface):
    """One monitor resource (pidw, genw, fipw, ...) on the local server.

    The engine (cpro.cluster.monitoring) schedules checks, enforces the
    timeout by cancelling the Deferred that check() returned, counts retries
    and runs recovery; a monitor only looks and reports.
    """

    name = Attribute("monitor name as in clp.conf")
    type = Attribute("CLUSTERPRO short type name: 'pidw', 'genw', ...")

    def start():
        """Prepare to monitor (open devices, start a resident process).

        Called when monitoring starts on this server (after firstmonwait is
        scheduled, before the first check). Returns None or a Deferred.
        """

    def check():
        """Run one check. Never blocks the reactor.

        @return: Deferred firing a L{cpro.resources.monitors.base.CheckResult}.
            A failure is taken as an error whose text is the exception's
            message. Cancelling the Deferred must abort the check and kill
            any process it started (the engine cancels on timeout).
        """

    def stop():
        """Stop monitoring (kill resident processes, close devices). None or a Deferred."""

    def describe():
        """A dict of run-time details for status views (may be empty)."""


class IHeartbeatPath(Interface):
    """One path of liveness between this server and its peers (lanhb, ...)."""

    name = Attribute("heartbeat resource name, e.g. 'lanhb1'")
    kind = Attribute("'lanhb', 'lankhb', ...")

    def send_beat(digest):
        """Send one heartbeat carrying the state digest to every peer on this path."""


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
