"""OS-level actions (shut down, reboot) through configurable commands.

Production runs the real commands; tests, demos and benchmarks configure
harmless ones (clp.conf <osaction>), so nothing here ever powers a host off
by itself.
"""

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from cpro import alertcatalog as catalog
from cpro.interfaces import IOSActions
from cpro.system.process import run_command

log = Logger()


@implementer(IOSActions)
class OSActions:
    def __init__(self, reactor, commands, alerts, local, timeout=60.0):
        self._reactor = reactor
        self._commands = commands
        self._alerts = alerts
        self._local = local
        self._timeout = timeout

    def reconfigure(self, commands):
        """Use new commands from the next action on (live reconfiguration)."""
        self._commands = commands

    @defer.inlineCallbacks
    def run(self, action, reason):
        argv = getattr(self._commands, action, None)
        if not argv:
            raise ValueError(f"unknown OS action: {action}")
        self._alerts.emit(*catalog.OS_ACTION_RUNNING.format(
            action=action, server=self._local, reason=reason, command=" ".join(argv)))
        env = {"CPRO_ACTION": action, "CPRO_REASON": reason, "CPRO_SERVER_NAME": self._local}
        try:
            result = yield run_command(self._reactor, list(argv), env=env, timeout=self._timeout)
        except Exception as e:
            self._alerts.emit(*catalog.OS_ACTION_NOT_RUN.format(action=action, error=e))
            return None
        if result.exit_code != 0:
            self._alerts.emit(*catalog.OS_ACTION_FAILED.format(
                action=action, exit_code=result.exit_code, signal=result.signal))
        return result
