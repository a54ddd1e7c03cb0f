"""userw: user-space stall monitoring of the cluster daemon itself.

A stalled reactor cannot run the check that would notice the stall, so the
protection is a watchdog (L{cpro.system.watchdog}) armed by start() and
fed by a LoopingCall on the daemon's own reactor: if the reactor stops for
the timeout, the watchdog resets the server from outside. check() only
reports, after the fact, the worst reactor lag seen (the engine's
measurement, env.reactor_lag, and the gaps between feeds): Error over the
timeout, Warning over half of it.

Parameters (clp.conf userw/parameters):
- usehb (default 1): take the heartbeat timeout and interval (env.hb_timeout,
  env.hb_interval) instead of the monitor's polling timeout and interval.
- method: keepalive | softdog | ipmi: the kernel's /dev/watchdog when
  present (those drivers all provide it), else a keeper process;
  none: no watchdog, the lag check only.
- action: RESET | PANIC: both run the cluster's reboot command
  (<osaction><reboot>, env.os_action_commands.reboot) in the keeper; cpro
  has no sysrq panic. With the kernel device the driver resets the machine
  itself whatever the action says.

Suspending or stopping the monitor disarms the watchdog cleanly; a daemon
that dies without stopping it leaves it armed, and it fires unless the
restarted daemon starts userw again within the timeout (it then takes the
device or replaces the keeper named in <state_dir>/<name>.watchdog.pid).
"""

import os

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from cpro.config.schema import MonitorSchema, Param
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.resources.monitors.base import CheckResult
from cpro.system.watchdog import WatchdogError, make_watchdog

log = Logger()

# Feed at least this many times per timeout, so one late feed is not a reset.
FEEDS_PER_TIMEOUT = 3


def _check_parameters(loader, m):
    """With usehb the monitor's own polling interval and timeout are not used: say so."""
    if m.params.get("usehb"):
        for key, given in m.polling_given.items():
            if given:
                loader.warning(f"{m.path}/polling/{key}", "ignored while parameters/usehb is 1: "
                                                          "userw uses the heartbeat "
                                                          f"{key}")


def _polling(cluster, m, interval, timeout):
    """usehb: the heartbeat's interval and timeout (clp.conf milliseconds)."""
    if m.params.get("usehb"):
        return cluster.hb_interval / 1000.0, cluster.hb_timeout / 1000.0
    return interval, timeout


# userw acts on the server itself; the original writes relation cls/LocalServer.
SCHEMA = MonitorSchema(params=(
    Param("usehb", "flag"),
    Param("method", "choice", ("keepalive", "softdog", "ipmi", "none")),
    Param("action", "choice", ("RESET", "PANIC")),
), check_parameters=_check_parameters, polling=_polling, default_relation="cls")


@MONITOR_TYPES.register("userw", schema=SCHEMA)
@implementer(IMonitor)
class UserSpaceMonitor:
    type = "userw"

    def __init__(self, reactor, config, params, env, watchdog_factory=make_watchdog):
        self.name = config.name
        self._reactor = reactor
        self._env = env
        self._factory = watchdog_factory
        usehb = bool(params.get("usehb", True))
        self.timeout = float(env.hb_timeout if usehb else config.timeout)
        interval = float(env.hb_interval if usehb else config.interval)
        self.feed_interval = max(0.01, min(interval, self.timeout / FEEDS_PER_TIMEOUT))
        self.method = params.get("method") or "keepalive"
        self.action = params.get("action") or "RESET"
        self._watchdog = None
        self._feeder = None
        self._last_feed = None
        self._worst_gap = 0.0  # worst lateness of a feed since the last check, s

    # IMonitor

    def start(self):
        if self.method == "none" or self._feeder is not None:
            return None
        commands = self._env.os_action_commands
        argv = tuple(getattr(commands, "reboot", None) or ())
        log_path = (os.path.join(self._env.log_dir, f"{self.name}.watchdog.log")
                    if self._env.log_dir else None)
        pid_path = (os.path.join(self._env.state_dir, f"{self.name}.watchdog.pid")
                    if self._env.state_dir else None)
        try:
            # Both RESET and PANIC reboot: there is no sysrq panic here.
            self._watchdog = self._factory(self._reactor, self.method, self.timeout, argv,
                                           "reboot", log_path, pid_path)
        except ValueError as e:
            return defer.fail(WatchdogError(f"{self.name}: cannot arm a watchdog: {e}"))
        d = self._watchdog.start()
        d.addCallback(self._start_feeding)
        return d

    def _start_feeding(self, _):
        self._last_feed = None
        self._feeder = task.LoopingCall(self._feed)
        self._feeder.clock = self._reactor
        self._feeder.start(self.feed_interval, now=True).addErrback(
            lambda f: log.failure("userw {name}: feeding stopped", f, name=self.name))

    def _feed(self):
        now = self._reactor.seconds()
        if self._last_feed is not None:
            self._worst_gap = max(self._worst_gap, now - self._last_feed - self.feed_interval)
        self._last_feed = now
        self._watchdog.feed()

    def check(self):
        lag = max(self._env.reactor_lag() or 0.0, self._worst_gap)
        self._worst_gap = 0.0
        if self.method != "none" and (self._watchdog is None or not self._watchdog.alive):
            return defer.succeed(CheckResult.error(
                f"the watchdog ({self.method}) is not armed: a stall would go unnoticed"))
        text = f"reactor lag {lag:.3f} s (timeout {self.timeout:g} s)"
        if lag > self.timeout:
            return defer.succeed(CheckResult.error(f"the daemon stalled: {text}"))
        if lag > self.timeout / 2:
            return defer.succeed(CheckResult.warning(f"the daemon is slow: {text}"))
        return defer.succeed(CheckResult.normal(text))

    def stop(self):
        if self._feeder is not None:
            if self._feeder.running:
                self._feeder.stop()
            self._feeder = None
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return None
        return watchdog.stop()

    def describe(self):
        details = {"method": self.method, "action": self.action, "timeout": self.timeout,
                   "feed_interval": self.feed_interval}
        if self._watchdog is not None:
            details.update(self._watchdog.describe())
        return details
