"""genw: the custom monitor, a user script run synchronously or kept resident.

Synchronous (params['sync'] true, the default): every check runs the script and
compares its exit code with params['normalval']; any other code, a signal or a
failure to start it is an error. Cancelling the check (the engine's timeout)
stops the script's whole process group.

Asynchronous: start() launches the script and leaves it running; a check is
Normal while it still runs. During params['waitmonstart'] seconds after start()
checks are Normal whatever the script does (it may need time to settle). A
check that finds the script gone reports the error and launches it again, so
the following checks (retries) watch a fresh copy rather than repeating the
same error. stop() ends its process group (SIGTERM, then SIGKILL).

The script runs with the environment CLP_MONITORNAME, CLP_SERVERNAME,
CLP_SCRIPT_PATH and PATH (nothing inherited from the daemon); its output is
appended to params['userlog'] when set, else discarded. params['path'] is
expected absolute (the configuration resolves the product's genw.sh).
"""

import os

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from cpro.config.monitors import all_parameters, monitor_script
from cpro.config.schema import MonitorSchema, Param
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.resources.monitors.base import CheckResult
from cpro.system.process import DEFAULT_PATH, CommandError, run_command, spawn_resident

log = Logger()


def _check_parameters(loader, m):
    """The script (relative: in scripts/monitor.s/<monitor>/) must be executable;
    a relative userlog lives beside clp.conf. Per server too."""
    for values, paths in all_parameters(m):
        if values.get("path"):
            values["path"] = monitor_script(loader, m.name, values["path"])
            loader.check_executable(values["path"], paths["path"], "monitor script")
        if values.get("userlog"):
            values["userlog"] = os.path.join(loader.base_dir, values["userlog"])


SCHEMA = MonitorSchema(params=(
    Param("path", "text", required=True),
    Param("sync", "flag"),
    Param("normalval", "int", (0, 255)),
    Param("waitmonstart", "seconds", (0, 9999)),
    Param("userlog", "text"),
), check_parameters=_check_parameters)


@MONITOR_TYPES.register("genw", schema=SCHEMA)
@implementer(IMonitor)
class CustomMonitor:
    type = "genw"

    def __init__(self, reactor, config, params, env, kill_grace=2.0):
        self._reactor = reactor
        self.name = config.name
        self._path = params["path"]
        self._sync = bool(int(params.get("sync", 1)))
        self._normal_value = int(params.get("normalval", 0))
        self._wait_start = float(params.get("waitmonstart", 0) or 0)
        self._log_path = params.get("userlog") or None
        self._local = env.local
        self._kill_grace = kill_grace
        self._started = False
        self._watch_from = None  # async: reactor time after which a missing script is an error
        self._resident = None
        self._spawn_error = None
        self._last_exit = None
        self._checks = set()  # sync checks in flight, cancelled by stop()

    def _script_env(self):
        return {
            "CLP_MONITORNAME": self.name,
            "CLP_SERVERNAME": self._local,
            "CLP_SCRIPT_PATH": os.path.dirname(self._path),
            "PATH": DEFAULT_PATH,
        }

    def _cwd(self):
        directory = os.path.dirname(self._path)
        return directory if directory and os.path.isdir(directory) else None

    # IMonitor

    def start(self):
        if self._started:
            return None
        self._started = True
        if not self._sync:
            self._watch_from = self._reactor.seconds() + self._wait_start
            self._spawn()
        return None

    def check(self):
        if self._sync:
            return self._check_sync()
        return defer.succeed(self._check_async())

    def stop(self):
        self._started = False
        for d in list(self._checks):
            d.cancel()
        resident, self._resident = self._resident, None
        if resident is None or not resident.running:
            return None
        log.info("genw {name}: stopping resident script pid {pid}", name=self.name, pid=resident.pid)
        return resident.terminate(self._kill_grace).addCallback(lambda _: None)

    def describe(self):
        details = {"path": self._path, "sync": self._sync, "last_exit": self._last_exit}
        if not self._sync:
            details["pid"] = self._resident.pid if self._resident is not None and self._resident.running else None
        return details

    # synchronous

    def _check_sync(self):
        d = run_command(
            self._reactor,
            [self._path],
            env=self._script_env(),
            log_path=self._log_path,
            cwd=self._cwd(),
            kill_grace=self._kill_grace,
        )
        self._checks.add(d)

        def forget(outcome):
            self._checks.discard(d)
            return outcome

        def judge(result):
            self._last_exit = result.exit_code
            if result.signal is not None:
                return CheckResult.error(f"custom monitor script {self._path} {result.describe()}")
            if result.exit_code != self._normal_value:
                return CheckResult.error(
                    f"custom monitor script {self._path} exited with code {result.exit_code}"
                    f" (normal value {self._normal_value})"
                )
            return CheckResult.normal()

        def not_started(f):
            f.trap(CommandError)
            return CheckResult.error(f"custom monitor script: {f.value}")

        d.addBoth(forget)
        d.addCallbacks(judge, not_started)
        return d

    # asynchronous

    def _spawn(self):
        try:
            self._resident = spawn_resident(
                self._reactor, [self._path], self._script_env(), self._log_path, cwd=self._cwd()
            )
        except CommandError as e:
            self._resident = None
            self._spawn_error = str(e)
            log.warn("genw {name}: {err}", name=self.name, err=e)
            return
        self._spawn_error = None
        log.info("genw {name}: script {path} resident as pid {pid}", name=self.name, path=self._path, pid=self._resident.pid)

    def _check_async(self):
        if not self._started:
            return CheckResult.error("monitoring has not been started")
        resident = self._resident
        if resident is not None and resident.running:
            return CheckResult.normal()
        if self._reactor.seconds() < self._watch_from:
            return CheckResult.normal("waiting for the monitor start wait (waitmonstart) to pass")
        if resident is None:
            message = f"custom monitor script could not be started: {self._spawn_error}"
        else:
            self._last_exit = resident.result.exit_code
            message = f"resident custom monitor script {self._path} (pid {resident.pid}) {resident.result.describe()}"
        self._spawn()
        return CheckResult.error(message)
