"""A fake event-fed monitor type, for the engine's and the service's tests.

L{FakeEventMonitor} is the smallest event-fed type: built on
L{cpro.resources.monitors.base.EventFedMonitor}, it has no source of its
own; the test plays the event source with L{FakeEventMonitor.receive} (the
type's own path) or with C{MonitorService.deliver} (the receivers' path).
L{fake_event_plugin} registers it for a service under L{FAKE_EVENT_TYPE},
without touching the global registry.
"""

from twisted.internet import defer

from cpro import plugins
from cpro.config.schema import MonitorSchema
from cpro.resources.monitors.base import EventFedMonitor

FAKE_EVENT_TYPE = "fakeevent"
FAKE_EVENT_SCHEMA = MonitorSchema(event_fed=True)


class FakeEventMonitor(EventFedMonitor):
    """An event-fed monitor whose events the test sends.

    .starts/.stops count the lifecycle calls; set .fail_start to an
    Exception to fail the next start(); .clearable as the test needs.
    The constructor matches the registry's: (reactor, config, params, env, report=...).
    """

    type = FAKE_EVENT_TYPE

    def __init__(self, reactor, config, params=None, env=None, report=None, clearable=True):
        super().__init__(reactor, config, params, env, report)
        self.clearable = clearable
        self.starts = 0
        self.stops = 0
        self.fail_start = None

    def start(self):
        self.starts += 1
        error, self.fail_start = self.fail_start, None
        if error is not None:
            return defer.fail(error)
        return super().start()

    def stop(self):
        self.stops += 1
        super().stop()
        return defer.succeed(None)


def fake_event_plugin(made=None, clearable=True):
    """A L{plugins.Plugin} for L{FakeEventMonitor} (schema event_fed); the
    monitors it builds go into made (a dict, by name) when given."""

    def factory(reactor, config, params, env, report):
        monitor = FakeEventMonitor(reactor, config, params, env, report=report, clearable=clearable)
        if made is not None:
            made[config.name] = monitor
        return monitor

    return plugins.Plugin(plugins.MONITOR_TYPES.kind, FAKE_EVENT_TYPE, factory, FAKE_EVENT_SCHEMA)
