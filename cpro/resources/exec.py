"""The exec group resource: a failover group's start and stop scripts.

Activation runs the start script, synchronously (wait for exit 0, within the
start timeout) or asynchronously (leave it resident; pidw watches its pid).
Deactivation runs the stop script, then ends a resident start script's whole
process group. Scripts get the CLUSTERPRO environment (CLP_EVENT, CLP_SERVER,
...; REFERENCE.md section 5.1) and append their output to the resource's log.

Deactivating a resource that was never activated by this daemon still runs the
stop script: after a daemon restart (or a failed activation) the service may be
running without this process knowing, and stop scripts are written to be safe
to run when the service is already down. Only a deactivation that follows a
successful deactivation here is skipped.

The module also declares the type's clp.conf schema (L{EXEC_SCHEMA}):

    <exec name="exec1">
      <parameters>
        <act><path>start.sh</path><sync>1</sync></act>
        <deact><path>stop.sh</path><sync>1</sync></deact>
        <timeout><start>1800</start><stop>1800</stop></timeout>
        <userlog>exec1.log</userlog>
      </parameters>
    </exec>

Relative script paths live in scripts/<group>/<resource>/ beside clp.conf; the
stop script is optional (used when given or present).
"""

import enum
import os

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from cpro.config.defaults import DEFAULTS
from cpro.config.model import ExecParams
from cpro.config.schema import ResourceSchema
from cpro.config.xmltree import unsupported_parameter
from cpro.interfaces import IGroupResource
from cpro.plugins import RESOURCE_TYPES
from cpro.resources.base import ResourceError
from cpro.resources.ledger import NULL_LEDGER, PROCESS_GROUP, ProcTable, process_group_value
from cpro.system.process import (
    DEFAULT_PATH,
    CommandError,
    kill_process_group,
    read_proc_stat,
    run_command,
    spawn_resident,
)

log = Logger()

MAX_ENV_VARS = 255  # limit on the script environment, as in the original product


class _Known(enum.Enum):
    ACTIVE = "active"  # start succeeded here (async: and the process may still run)
    INACTIVE = "inactive"  # stop succeeded here
    UNKNOWN = "unknown"  # never acted on, or the last action failed


# -- configuration ---------------------------------------------------------------


def _read(loader, node, r):
    """<parameters> of one exec resource into r (paths are resolved in _check)."""
    params = node.child("parameters")
    act = params.child("act") if params is not None else None
    deact = params.child("deact") if params is not None else None
    timeout = params.child("timeout") if params is not None else None

    r.start_path_given = act.string("path") if act is not None else None
    r.start_path_node = f"{node.path}/parameters/act/path"
    r.stop_path_given = deact.string("path") if deact is not None else None
    r.stop_path_node = f"{node.path}/parameters/deact/path"
    r.start_sync = loader.resource_integer("exec", act, "parameters/act", "sync")
    r.stop_sync = loader.resource_integer("exec", deact, "parameters/deact", "sync")
    r.start_timeout = loader.resource_integer("exec", timeout, "parameters/timeout", "start")
    r.stop_timeout = loader.resource_integer("exec", timeout, "parameters/timeout", "stop")
    r.userlog = None
    if params is not None:
        userlog = params.string("userlog")
        if userlog:
            r.userlog = os.path.join(loader.base_dir, userlog)
    for section in (act, deact, timeout, params):
        if section is not None:
            section.finish(unsupported_parameter)


def _script(loader, r, given, default_key):
    """Absolute path of a start/stop script given (or defaulted) for r."""
    text = given if given else DEFAULTS[default_key]
    if os.path.isabs(text):
        return os.path.normpath(text)
    return os.path.normpath(os.path.join(loader.base_dir, "scripts", r.group, r.name, text))


def _check(loader, resources):
    """The scripts of the exec resources in a group exist and are executable."""
    for r in resources:
        r.start_path = r.stop_path = None
        if r.group is None:
            continue
        r.start_path = _script(loader, r, r.start_path_given, "exec/parameters/act/path")
        loader.check_executable(r.start_path, r.start_path_node, "start script")
        stop = _script(loader, r, r.stop_path_given, "exec/parameters/deact/path")
        if r.stop_path_given or os.path.lexists(stop):
            r.stop_path = stop
            loader.check_executable(stop, r.stop_path_node, "stop script")


def _build(r):
    return ExecParams(
        start_path=r.start_path, stop_path=r.stop_path,
        start_sync=r.start_sync == 1, stop_sync=r.stop_sync == 1,
        start_timeout=float(r.start_timeout), stop_timeout=float(r.stop_timeout),
        userlog=r.userlog)


EXEC_SCHEMA = ResourceSchema(read=_read, build=_build, check=_check)


# -- the resource ------------------------------------------------------------------


@RESOURCE_TYPES.register("exec", schema=EXEC_SCHEMA)
@implementer(IGroupResource)
class ExecResource:
    """One <resource><exec>: runs params.start_path / params.stop_path.

    Built as every group resource (L{cpro.interfaces.IGroupResource}); base_env
    and kill_grace are for tests.
    """

    type = "exec"
    # The process groups this resource leaves running are recorded in the
    # leftovers ledger until it is deactivated, so that the next daemon kills
    # them if this one crashes. The class default records nothing.
    ledger = NULL_LEDGER

    def __init__(self, reactor, config, log_dir, *, ledger=NULL_LEDGER, base_env=None, kill_grace=2.0):
        self.ledger = ledger
        self._reactor = reactor
        self._config = config
        self._params = config.params
        self._base_env = dict(base_env or {})
        self._kill_grace = kill_grace
        self.name = config.name
        self.log_path = self._params.userlog or os.path.join(log_dir, f"{config.name}.log")
        self._known = _Known.UNKNOWN
        self._resident = None
        self._resident_start = None  # kernel start time of the resident script (pidw)
        self._held = []  # ledger values of the process groups left running
        self._last_exit = None
        # activate/deactivate run one at a time, in call order.
        self._lock = defer.DeferredLock()

    def reconfigure(self, config):
        """New timeouts (the only settings live reconfiguration changes on a
        resource that may be active; anything else rebuilds the group)."""
        self._config = config
        self._params = config.params

    @property
    def pid(self):
        """Pid of the running asynchronous start script, else None."""
        if self._resident is not None and self._resident.running:
            return self._resident.pid
        return None

    def resident(self):
        """(pid, kernel start time) of the running asynchronous start script, else None.

        The start time (L{read_proc_stat}) was read when the script was
        spawned; pidw compares it with the live process to tell the script
        from a later process that reuses its pid. It is None if it could not
        be read.
        """
        pid = self.pid
        if pid is None:
            return None
        return pid, self._resident_start

    def describe(self):
        return {"pid": self.pid, "log": self.log_path, "last_exit": self._last_exit}

    def activate(self, context):
        return self._lock.run(self._activate, context)

    def deactivate(self, context):
        return self._lock.run(self._deactivate, context)

    # activation

    def _activate(self, context):
        if self._params.start_sync and self._known is _Known.ACTIVE:
            return defer.succeed(None)
        if not self._params.start_sync and self.pid is not None:
            # Never start a second copy beside a resident one, whatever we believe.
            self._known = _Known.ACTIVE
            return defer.succeed(None)
        try:
            env = self._script_env(context, self._params.start_path)
            self._ensure_log_dir()
        except ResourceError:
            return defer.fail()
        if self._params.start_sync:
            return self._activate_sync(env)
        return self._activate_async(env)

    def _activate_sync(self, env):
        path = self._params.start_path
        d = self._run_script("start", path, env, self._params.start_timeout)
        d.addCallback(self._hold_left_behind)
        return self._record(d, _Known.ACTIVE)

    def _hold_left_behind(self, result):
        """A start script that left processes in its group (a service it
        started in the background): record the group. Its leader is gone, so
        the oldest member's start time stands in for the leader's."""
        try:
            if not kill_process_group(result.pid, 0):
                return  # the usual case: nothing left, and no /proc scan needed
        except OSError:
            pass  # EPERM: something is there
        members = ProcTable().group_members(result.pid)
        if members:
            self._hold(process_group_value(result.pid, min(s for _, s in members)))

    def _hold(self, value):
        self._held.append(value)
        self.ledger.record(self.name, PROCESS_GROUP, value)

    def _let_go(self, _=None):
        held, self._held = self._held, []
        for value in held:
            self.ledger.forget(self.name, PROCESS_GROUP, value)

    def _activate_async(self, env):
        path = self._params.start_path
        try:
            resident = spawn_resident(self._reactor, [path], env, self.log_path, cwd=os.path.dirname(path) or None)
        except CommandError as e:
            self._known = _Known.UNKNOWN
            return defer.fail(ResourceError(f"start script: {e}"))
        self._resident = resident
        stat = read_proc_stat(resident.pid)
        self._resident_start = stat[1] if stat is not None else None
        self._hold(process_group_value(resident.pid, self._resident_start))
        self._known = _Known.ACTIVE
        log.info("exec {name}: start script {path} resident as pid {pid}", name=self.name, path=path, pid=resident.pid)
        resident.ended.addCallback(self._resident_ended, resident).addErrback(
            lambda f: log.failure("exec {name}: watching resident start script", f, name=self.name)
        )
        return defer.succeed(None)

    def _resident_ended(self, result, resident):
        if resident is self._resident:
            # Ended on its own; an exit we caused by deactivating is not news.
            self._last_exit = result.exit_code
        log.info(
            "exec {name}: resident start script pid {pid} {how}",
            name=self.name,
            pid=result.pid,
            how=result.describe(),
        )

    # deactivation

    def _deactivate(self, context):
        if self._known is _Known.INACTIVE:
            return defer.succeed(None)
        d = defer.succeed(None)
        stop_path = self._params.stop_path
        if stop_path:
            try:
                extra = {"CLP_PID": str(self.pid)} if self.pid is not None else {}
                env = self._script_env(context, stop_path, extra)
                self._ensure_log_dir()
            except ResourceError:
                return defer.fail()
            d.addCallback(lambda _: self._run_script("stop", stop_path, env, self._params.stop_timeout))
        d.addCallback(lambda _: self._terminate_resident())
        d.addCallback(self._let_go)
        return self._record(d, _Known.INACTIVE)

    def _record(self, d, known):
        """What we know once d fires: `known` on success, UNKNOWN on failure."""

        def done(_):
            self._known = known

        def failed(f):
            self._known = _Known.UNKNOWN
            return f

        return d.addCallbacks(done, failed)

    def _terminate_resident(self):
        resident, self._resident = self._resident, None
        if resident is None or not resident.running:
            return None
        log.info("exec {name}: terminating resident start script pid {pid}", name=self.name, pid=resident.pid)
        return resident.terminate(self._kill_grace).addCallback(lambda _: None)

    # helpers

    def _run_script(self, which, path, env, timeout):
        """Run a script to completion; Deferred None on exit 0, else ResourceError."""
        d = run_command(
            self._reactor,
            [path],
            env=env,
            timeout=timeout,
            log_path=self.log_path,
            cwd=os.path.dirname(path) or None,
            kill_grace=self._kill_grace,
        )

        def check(result):
            self._last_exit = result.exit_code
            if result.timed_out:
                raise ResourceError(f"{which} script {path} timed out after {timeout:g} s (process group killed)")
            if result.signal is not None:
                raise ResourceError(f"{which} script {path} {result.describe()}")
            if result.exit_code != 0:
                raise ResourceError(f"{which} script {path} exited with code {result.exit_code}")
            log.info("exec {name}: {which} script {path} succeeded", name=self.name, which=which, path=path)
            return result

        def not_started(f):
            f.trap(CommandError)
            raise ResourceError(f"{which} script: {f.value}")

        d.addCallbacks(check, not_started)
        return d

    def _ensure_log_dir(self):
        directory = os.path.dirname(self.log_path)
        if directory:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise ResourceError(f"cannot create log directory {directory}: {e.strerror}") from e

    def _script_env(self, context, script_path, extra=None):
        """The complete script environment; the standard variables win over extra_env."""
        env = dict(self._base_env)
        env.update(context.extra_env)
        env.update(
            {
                "CLP_EVENT": context.event,
                "CLP_SERVER": "HOME" if context.home else "OTHER",
                "CLP_GROUPNAME": context.group,
                "CLP_RESOURCENAME": self.name,
                "CLP_FACTOR": context.factor,
                "CLP_DISK": context.disk,
                "CLP_SCRIPT_PATH": os.path.dirname(script_path),
                "CPRO_SERVER_NAME": context.server,
            }
        )
        env.update(extra or {})
        if not env.get("PATH"):
            env["PATH"] = DEFAULT_PATH
        if len(env) > MAX_ENV_VARS:
            raise ResourceError(
                f"script environment of {self.name} has {len(env)} variables, more than the limit of {MAX_ENV_VARS}"
            )
        return {str(k): str(v) for k, v in env.items()}
