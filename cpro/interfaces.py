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
