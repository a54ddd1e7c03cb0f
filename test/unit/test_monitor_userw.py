"""Tests for the userw monitor: watchdog arming and feeding on a fake clock, lag reports."""

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cpro.config.model import OSActionCommands
from cpro.resources.monitors.base import CheckStatus
from cpro.resources.monitors.userw import UserSpaceMonitor
from cpro.system.watchdog import IWatchdog, WatchdogError

from test.unit.monitor_contract import MonitorContractMixin, make_environment, make_monitor_config

REBOOT = ("/bin/true", "reboot-marker")


@implementer(IWatchdog)
class FakeWatchdog:
    kind = "fake"

    def __init__(self, timeout, fail_start=False):
        self.timeout = timeout
        self.fail_start = fail_start
        self.alive = False
        self.feeds = 0
        self.stops = 0

    def start(self):
        if self.fail_start:
            return defer.fail(WatchdogError("cannot open /dev/watchdog: busy"))
        self.alive = True
        return defer.succeed(None)

    def feed(self):
        self.feeds += 1

    def stop(self):
        self.alive = False
        self.stops += 1
        return defer.succeed(None)

    def describe(self):
        return {"watchdog": "fake"}


class UserwTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.lag = 0.0
        self.made = []  # (arguments, watchdog) per factory call
        self.fail_start = False

    def factory(self, reactor, method, timeout, argv, action, log_path, pid_path):
        watchdog = FakeWatchdog(timeout, self.fail_start)
        self.made.append(((reactor, method, timeout, argv, action, log_path, pid_path), watchdog))
        return watchdog

    def make_userw(self, usehb=True, method="keepalive", action="RESET", interval=3.0,
                   timeout=60.0, commands=OSActionCommands(reboot=REBOOT)):
        config = make_monitor_config("userw", {"usehb": usehb, "method": method, "action": action},
                                     interval=interval, timeout=timeout)
        env = make_environment(state_dir="/var/lib/cpro", log_dir="/var/log/cpro", hb_interval=1.0, hb_timeout=9.0,
                               reactor_lag=lambda: self.lag, os_action_commands=commands)
        return UserSpaceMonitor(self.clock, config, config.params, env,
                                watchdog_factory=self.factory)

    def tearDown(self):
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ContractTests(MonitorContractMixin, UserwTestCase):
    monitor_type = "userw"

    def contract_reactor(self):
        return self.clock

    def make_monitor(self):
        return self.make_userw()


class WatchdogTests(UserwTestCase):
    def test_fake_watchdog_provides_iwatchdog(self):
        self.assertTrue(verifyObject(IWatchdog, FakeWatchdog(1.0)))

    def test_usehb_arms_with_the_heartbeat_timeout_and_feeds_at_its_interval(self):
        monitor = self.make_userw(usehb=True)
        self.assertIsNone(self.successResultOf(monitor.start()))
        (args, watchdog), = self.made
        self.assertEqual(args, (self.clock, "keepalive", 9.0, REBOOT, "reboot",
                                "/var/log/cpro/userw1.watchdog.log",
                                "/var/lib/cpro/userw1.watchdog.pid"))
        self.assertTrue(watchdog.alive)
        self.assertEqual(watchdog.feeds, 1)  # fed at once
        self.clock.pump([1.0] * 5)
        self.assertEqual(watchdog.feeds, 6)
        self.successResultOf(monitor.stop())
        self.assertEqual(watchdog.stops, 1)
        self.clock.advance(10)
        self.assertEqual(watchdog.feeds, 6)

    def test_own_timeout_and_interval_without_usehb(self):
        monitor = self.make_userw(usehb=False, interval=5.0, timeout=30.0)
        self.assertEqual((monitor.timeout, monitor.feed_interval), (30.0, 5.0))
        monitor = self.make_userw(usehb=False, interval=20.0, timeout=30.0)
        # Fed several times per timeout whatever the interval says.
        self.assertEqual((monitor.timeout, monitor.feed_interval), (30.0, 10.0))

    def test_panic_also_reboots(self):
        monitor = self.make_userw(action="PANIC")
        self.successResultOf(monitor.start())
        self.assertEqual(self.made[0][0][3:5], (REBOOT, "reboot"))
        monitor.stop()

    def test_method_none_arms_nothing(self):
        monitor = self.make_userw(method="none")
        self.assertIsNone(monitor.start())
        self.assertEqual(self.made, [])
        self.assertEqual(self.successResultOf(monitor.check()).status, CheckStatus.NORMAL)
        self.assertIsNone(monitor.stop())

    def test_start_failure_is_reported_by_start_and_check(self):
        self.fail_start = True
        monitor = self.make_userw()
        self.failureResultOf(monitor.start(), WatchdogError)
        result = self.successResultOf(monitor.check())
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertIn("not armed", result.message)
        self.successResultOf(monitor.stop())

    def test_without_a_reboot_command_the_keeper_cannot_be_armed(self):
        config = make_monitor_config("userw", {"usehb": True, "method": "softdog"})
        env = make_environment(os_action_commands=None)

        def keeper_only(reactor, method, timeout, argv, action, log_path, pid_path):
            from cpro.system.watchdog import KeeperWatchdog
            return KeeperWatchdog(reactor, timeout, argv, action, log_path, pid_path)

        monitor = UserSpaceMonitor(self.clock, config, config.params, env,
                                   watchdog_factory=keeper_only)
        failure = self.failureResultOf(monitor.start(), WatchdogError)
        self.assertIn("action command", failure.getErrorMessage())

    def test_watchdog_that_died_is_an_error(self):
        monitor = self.make_userw()
        self.successResultOf(monitor.start())
        self.made[0][1].alive = False  # e.g. the keeper process was killed
        self.assertEqual(self.successResultOf(monitor.check()).status, CheckStatus.ERROR)
        monitor.stop()

    def test_restart_after_stop_arms_a_new_watchdog(self):
        monitor = self.make_userw()
        self.successResultOf(monitor.start())
        self.successResultOf(monitor.stop())
        self.successResultOf(monitor.start())
        self.assertEqual(len(self.made), 2)
        self.assertTrue(self.made[1][1].alive)
        self.assertEqual(monitor.describe()["watchdog"], "fake")
        monitor.stop()


class LagTests(UserwTestCase):
    def check(self, monitor):
        return self.successResultOf(monitor.check())

    def test_engine_lag_against_the_timeout(self):
        monitor = self.make_userw()  # heartbeat timeout 9 s
        self.successResultOf(monitor.start())
        self.lag = 0.004
        result = self.check(monitor)
        self.assertEqual(result.status, CheckStatus.NORMAL)
        self.assertEqual(result.message, "reactor lag 0.004 s (timeout 9 s)")
        self.lag = 5.0
        self.assertEqual(self.check(monitor).status, CheckStatus.WARNING)
        self.lag = 9.5
        result = self.check(monitor)
        self.assertEqual(result.status, CheckStatus.ERROR)
        self.assertEqual(result.message, "the daemon stalled: reactor lag 9.500 s (timeout 9 s)")
        monitor.stop()

    def test_late_feed_is_reported_once(self):
        monitor = self.make_userw()  # feeds every 1 s
        self.successResultOf(monitor.start())
        self.clock.advance(1.0)
        self.clock.advance(6.0)  # the reactor was stuck for 6 s: that feed is 5 s late
        result = self.check(monitor)
        self.assertEqual(result.status, CheckStatus.WARNING)
        self.assertIn("5.000 s", result.message)
        self.clock.advance(1.0)
        self.assertEqual(self.check(monitor).status, CheckStatus.NORMAL)
        monitor.stop()
