"""Event-fed monitor types: the contract (EventMonitorContractMixin) run against
the fake type and the EventFedMonitor base, the schema flag of every
registered type matching its interface, and a type taken from the registry
by the monitor service built with its report callback."""

import dataclasses

from twisted.internet import task
from twisted.trial import unittest
from zope.interface.verify import verifyClass

from cpro import plugins
from cpro.cluster.states import MonitorState
from cpro.interfaces import IEventMonitor, IMonitor
from cpro.resources.monitors.base import CheckResult, EventFedMonitor
from cpro.services.monitors import MonitorService
from cpro.testing.event_monitors import FAKE_EVENT_SCHEMA, FAKE_EVENT_TYPE, FakeEventMonitor, fake_event_plugin
from cpro.testing.fakes import FakeAlerts, make_config, make_monitor
from test.unit.monitor_contract import EventMonitorContractMixin, make_environment, make_monitor_config


class FakeEventMonitorContractTests(EventMonitorContractMixin, unittest.TestCase):
    monitor_type = FAKE_EVENT_TYPE

    def plugin(self):
        return fake_event_plugin()

    def make_monitor(self, report):
        return self.plugin().factory(task.Clock(), make_monitor_config(FAKE_EVENT_TYPE, {}), {},
                                     make_environment(), report=report)

    def make_event(self, monitor):
        monitor.receive(CheckResult.error("trap received"))
        return True


class NotClearable(EventFedMonitor):
    """A type with no event source of its own, whose errors only end with monitoring."""

    type = "noclearw"
    clearable = False


class SourcelessContractTests(EventMonitorContractMixin, unittest.TestCase):
    monitor_type = "noclearw"

    def plugin(self):
        return plugins.Plugin(plugins.MONITOR_TYPES.kind, "noclearw", NotClearable, FAKE_EVENT_SCHEMA)

    def make_monitor(self, report):
        return NotClearable(task.Clock(), make_monitor_config("noclearw", {}), {}, make_environment(),
                            report=report)


class RegisteredTypesTests(unittest.SynchronousTestCase):
    def test_schema_flag_matches_the_interface(self):
        for plugin in plugins.MONITOR_TYPES.plugins():
            expected = IEventMonitor if plugin.schema.event_fed else IMonitor
            self.assertTrue(verifyClass(expected, plugin.factory), plugin.name)

    def test_base_and_fake_provide_ieventmonitor(self):
        verifyClass(IEventMonitor, EventFedMonitor)
        verifyClass(IEventMonitor, FakeEventMonitor)

    def test_the_service_builds_a_registered_event_fed_type_with_its_report(self):
        made = {}
        plugins.MONITOR_TYPES.add(fake_event_plugin(made))
        self.addCleanup(plugins.MONITOR_TYPES._plugins.pop, FAKE_EVENT_TYPE)

        class Controller:
            service = None
            groups = {}

            def notify_changed(self):
                pass

            def end_recovery(self, group, monitor):
                pass

        config = dataclasses.replace(make_config(), monitors=(make_monitor(name="ev1", type=FAKE_EVENT_TYPE),))
        service = MonitorService(task.Clock(), config, "srv1", Controller(), FakeAlerts(), "/nonexistent",
                                 "/nonexistent")
        runner = service.runners["ev1"]
        self.assertTrue(runner.event_fed)
        runner.start()
        self.assertEqual(runner.state, MonitorState.NORMAL)
        self.assertTrue(made["ev1"].receive(CheckResult.warning("late")))
        self.assertEqual(runner.state, MonitorState.WARNING)
        self.assertTrue(service.deliver("ev1", CheckResult.normal()))
        self.assertEqual(runner.state, MonitorState.NORMAL)
        runner.stop()
