"""cpro-supervise: run the cluster daemon and act at once when it dies abnormally.

    cpro-supervise [OPTIONS] -- twistd -n --pidfile= cpro --config PATH --server NAME ...

A crashed daemon must not leave a half-alive server: its floating IPs and the
processes its exec resources started would stay, and the other server's
duplicate check would rightly refuse to take the groups over. The supervisor
is the daemon's parent, so it sees the end of the daemon the moment it
happens, and then does what pm/exec0/recover (ClusterConfig.
daemon_failure_action, or --action) says:

  restart   delete the floating IPs the daemon left (a peer whose heartbeat
            timeout ends first must find them gone), then start the daemon
            again with --after-crash: the new incarnation removes the rest of
            what the old one left (resources/ledger.py) before the peers hear
            of it and rejoins without auto-starting groups. At most
            --max-restarts restarts within --restart-window seconds; the crash
            after that runs the shutdown action instead.
  shutdown  (the default, as in the original) remove what the daemon left,
  reboot    then run the configured OS action command (clp.conf
            <osaction><shutdown>/<reboot>, `systemctl poweroff` by default).

What is not a crash:
  - exit code 0, or the end by SIGTERM/SIGINT (twistd stops the daemon
    cleanly on those, then ends itself with the signal): the daemon was
    stopped, e.g. with `kill -TERM DAEMON_PID`; the supervisor exits with 0;
  - any end after the supervisor forwarded a SIGTERM/SIGINT it received
    (`systemctl stop cpro`): the supervisor exits too, with 0;
  - a start-up refusal: exit codes 3-7 (cpro/exitcodes.py), and any exit
    code of a daemon that had not got as far as starting its services (it
    never took over the ledger: bad options, an unreadable configuration...).
    Restarting cannot cure these: the supervisor exits with the same code.
A daemon killed by a signal it did not get from the supervisor, or exiting
with another code once running, has crashed.

The alert log belongs to the daemon, so the supervisor writes to stderr and
syslog (ident cpro-supervise) and leaves a crash note in the state directory
(cpro/crashnote.py) that the next daemon reports as alert pm 20.

Exit codes: 0 the daemon stopped cleanly; 1 internal error, or the
server-down action could not run or failed; 2 usage; 3-7 (and other codes of
a daemon that never started) the daemon's own code; 8 the daemon crashed and
the server-down action ran (the OS is going down; do not restart).

This is a separate process from the daemon, with its own reactor; blocking
briefly here (reading the configuration, writing the crash note) delays no
heartbeat.
"""

import collections
import os
import shlex
import signal
import sys
import syslog
import time

from twisted.internet import defer, error, protocol
from twisted.python import usage

from cpro import crashnote, exitcodes
from cpro.resources.ledger import (
    ADDRESS,
    LEDGER_NAME,
    Ledger,
    boot_id,
    cleanup_leftovers,
    default_removers,
    read_ledger_file,
)
from cpro.system.process import CommandError, run_command

EXIT_SERVER_DOWN = 8  # the daemon crashed and the server-down action ran
EXIT_FAILED = 1
EXIT_USAGE = 2
# Start-up refusals of the daemon: a restart cannot cure them.
REFUSALS = (exitcodes.CONFIG_INVALID, exitcodes.UNKNOWN_SERVER, exitcodes.ADDRESS_IN_USE,
            exitcodes.PERMISSION_DENIED, exitcodes.CONFIG_MISMATCH)
ACTIONS = ("restart", "shutdown", "reboot")
# The daemon stops cleanly on these (and then ends itself with the signal).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
DEFAULT_CONFIG = "/etc/cpro/clp.conf"
DEFAULT_STATE_DIR = "/var/lib/cpro"
# The daemon's ledger must have been written after this much before the spawn
# for the daemon to count as started (file time stamps are a little coarse).
READY_SLACK = 0.5


class Options(usage.Options):
    synopsis = "Usage: cpro-supervise [options] -- DAEMON COMMAND (e.g. twistd -n --pidfile= cpro --config ...)"
    longdesc = ("Runs the cpro daemon; when it ends abnormally, restarts it with --after-crash or runs the "
                "server-down action, as pm/exec0/recover (or --action) says. Exit codes: 0 stopped cleanly, "
                "1 error or the action failed, 2 usage, 3-7 the daemon's start-up refusal, 8 the daemon "
                "crashed and the server-down action ran.")
    optParameters = [
        ["config", "c", None, "clp.conf for pm/exec0/recover and the OS action commands "
                              "(default: the daemon's --config, $CPRO_CONFIG, " + DEFAULT_CONFIG + ")"],
        ["state-dir", "d", None, "the daemon's state directory (default: the daemon's --state-dir, "
                                 "$CPRO_STATE_DIR, " + DEFAULT_STATE_DIR + ")"],
        ["action", None, None, "restart | shutdown | reboot: overrides pm/exec0/recover"],
        ["max-restarts", None, 3, "restarts allowed within --restart-window", int],
        ["restart-window", None, 600.0, "seconds", float],
        ["action-timeout", None, 60.0, "seconds the OS action command may run", float],
        ["cleanup-grace", None, 2.0, "seconds between SIGTERM and SIGKILL for leftover process groups", float],
    ]

    def parseArgs(self, *command):
        if not command:
            raise usage.UsageError("no daemon command: give it after --")
        self["command"] = list(command)

    def postOptions(self):
        if self["action"] is not None and self["action"] not in ACTIONS:
            raise usage.UsageError(f"--action must be one of {', '.join(ACTIONS)}")
        if self["max-restarts"] < 0 or self["restart-window"] <= 0:
            raise usage.UsageError("--max-restarts must be >= 0 and --restart-window > 0")


def daemon_settings(command, environ=os.environ):
    """(config, state_dir, server) as the daemon command will use them.

    The plugin form (`... cpro --config X --state-dir Y --server Z`) is
    parsed with the daemon's own options; otherwise (a .tac file) the
    CPRO_* variables that the .tac reads.
    """
    settings = {"config": environ.get("CPRO_CONFIG") or DEFAULT_CONFIG,
                "state-dir": environ.get("CPRO_STATE_DIR") or DEFAULT_STATE_DIR,
                "server": environ.get("CPRO_SERVER") or os.uname().nodename.split(".")[0]}
    if "cpro" in command:
        from cpro.tap import Options as DaemonOptions

        daemon = DaemonOptions()
        try:
            daemon.parseOptions(command[command.index("cpro") + 1:])
        except usage.UsageError:
            return settings["config"], settings["state-dir"], settings["server"]
        settings.update({k: daemon[k] for k in ("config", "state-dir", "server") if daemon[k]})
    return settings["config"], os.path.abspath(settings["state-dir"]), settings["server"]


def with_after_crash(command):
    """The daemon command with --after-crash (plugin form only; a .tac daemon
    learns of the crash from the crash note)."""
    if "cpro" not in command or "--after-crash" in command:
        return list(command)
    at = command.index("cpro") + 1
    return command[:at] + ["--after-crash"] + command[at:]


class _Daemon(protocol.ProcessProtocol):
    def __init__(self, ended):
        self._ended = ended

    def processEnded(self, reason):
        value = reason.value
        if isinstance(value, error.ProcessDone):
            self._ended(0, None)
        else:
            self._ended(getattr(value, "exitCode", None), getattr(value, "signal", None))


class Supervisor:
    """Runs one daemon command; L{start} returns a Deferred firing the exit code."""

    def __init__(self, reactor, command, config_path, state_dir, server, action=None, max_restarts=3,
                 restart_window=600.0, action_timeout=60.0, cleanup_grace=2.0, removers=None, say=None):
        self.reactor = reactor
        self.command = list(command)
        self.config_path = config_path
        self.state_dir = state_dir
        self.server = server
        self.action_override = action
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.action_timeout = action_timeout
        self.cleanup_grace = cleanup_grace
        self.removers = removers if removers is not None else default_removers(reactor)
        self.say = say or _say
        self.kill = os.kill  # a seam for tests
        self.pid = None
        self.restarts = collections.deque()  # reactor times of the restarts in the window
        self.stopping = False
        self._transport = None
        self._spawned_at = None
        self._config = None
        self._busy = False  # handling a crash: cleanup or OS action in progress
        self.done = defer.Deferred()

    @property
    def ledger_path(self):
        return os.path.join(self.state_dir, LEDGER_NAME)

    # -- the daemon ----------------------------------------------------------------

    def start(self):
        self._config = self._load_config() or self._config
        self._spawn(self.command)
        return self.done

    def _spawn(self, argv):
        self._spawned_at = time.time()
        try:
            self._transport = self.reactor.spawnProcess(_Daemon(self._ended), argv[0], argv, env=dict(os.environ),
                                                        childFDs={0: 0, 1: 1, 2: 2})
        except OSError as e:
            self.say(f"cannot start the daemon {argv[0]}: {e}")
            self._finish(EXIT_FAILED)
            return
        self.pid = self._transport.pid
        self.say(f"daemon started as pid {self.pid}: {shlex.join(argv)}")

    def stop(self, sig=signal.SIGTERM):
        """A stop request for the supervisor: forward it, then exit with the daemon."""
        if self.stopping:
            return
        self.stopping = True
        if self._transport is not None and self.pid is not None:
            self.say(f"forwarding signal {sig} to the daemon (pid {self.pid})")
            try:
                self.kill(self.pid, sig)
            except ProcessLookupError:
                pass
        elif not self._busy:
            self._finish(0)
        # else: the crash handling in progress finishes first, then exits.

    def _ended(self, exit_code, sig):
        pid, self._transport = self.pid, None
        how = crashnote.how_it_ended(exit_code, sig)
        if self.stopping:
            self.say(f"daemon (pid {pid}) stopped: {how}")
            clean = exit_code == 0 or sig in STOP_SIGNALS
            self._finish(0 if clean else (exit_code or EXIT_FAILED))
            return
        if (sig is None and exit_code == 0) or sig in STOP_SIGNALS:
            # twistd stops cleanly on SIGTERM/SIGINT, then ends itself with
            # that signal: someone (the operator, an init script) stopped it.
            self.say(f"daemon (pid {pid}) stopped ({how})")
            self._finish(0)
            return
        if sig is None and (exit_code in REFUSALS or not self._daemon_started(pid)):
            self.say(f"daemon (pid {pid}) refused to run or did not start ({how}): not a crash, "
                     f"not restarting it")
            self._finish(exit_code)
            return
        self.say(f"daemon (pid {pid}) ended abnormally: {how}")
        self._busy = True
        d = self._crashed(pid, exit_code, sig)
        d.addErrback(self._internal_error)

    def _daemon_started(self, pid):
        """Whether that daemon had taken over the ledger (it does so when its
        services start): only a daemon that ran can have crashed."""
        data = read_ledger_file(self.ledger_path)
        if not data or data.get("pid") != pid:
            return False
        try:
            return os.stat(self.ledger_path).st_mtime >= self._spawned_at - READY_SLACK
        except OSError:
            return False

    # -- after a crash ---------------------------------------------------------------

    @defer.inlineCallbacks
    def _crashed(self, pid, exit_code, sig):
        config = self._load_config() or self._config
        action = self.action_override or getattr(config, "daemon_failure_action", None) or "shutdown"
        detail = ""
        if action == "restart":
            now = self.reactor.seconds()
            while self.restarts and now - self.restarts[0] > self.restart_window:
                self.restarts.popleft()
            if len(self.restarts) < self.max_restarts and not self.stopping:
                self.restarts.append(now)
                detail = f"restart {len(self.restarts)} of at most {self.max_restarts} in {self.restart_window:g} s"
                # The peers fail over when their heartbeat timeout ends, which can
                # come before the new daemon has started and removed the old
                # floating IPs: their duplicate check would refuse the addresses
                # and the groups would stay down. Deleting an address takes
                # milliseconds; the new daemon removes the rest (process groups
                # get a SIGTERM grace) and reports its leftovers as usual.
                removed = yield self._remove_addresses()
                if removed:
                    detail += f"; removed {'; '.join(removed)} before restarting it"
                if self.stopping:  # a stop request came during the removal
                    self._note(pid, exit_code, sig, "restart", detail + "; stopped instead of restarting")
                    self._busy = False
                    self._finish(0)
                    return
                self._note(pid, exit_code, sig, "restart", detail)
                self.say(f"restarting the daemon with --after-crash ({detail})")
                self._busy = False
                self._spawn(with_after_crash(self.command))
                return
            detail = f"{len(self.restarts)} restarts within {self.restart_window:g} s already"
            self.say(f"not restarting the daemon again ({detail}): running the shutdown action")
            action = "shutdown"
        self._note(pid, exit_code, sig, action, detail)
        # Remove what the daemon left before the OS action: an OS shutdown can
        # take minutes, and the peer may take over as soon as its heartbeat
        # timeout ends.
        report = yield cleanup_leftovers(self.reactor, Ledger(self.ledger_path), self.removers,
                                         grace=self.cleanup_grace)
        self.say(f"leftovers of the daemon: {report.summary()}")
        code = yield self._run_os_action(action, config, f"cluster daemon pid {pid} "
                                                         f"{crashnote.how_it_ended(exit_code, sig)}")
        self._busy = False
        self._finish(code)

    @defer.inlineCallbacks
    def _remove_addresses(self):
        """Delete the addresses the dead daemon's ledger records; their entries stay for the
        next daemon's cleanup. Returns what was removed, as phrases."""
        remover = self.removers.get(ADDRESS)
        removed = []
        if remover is None:
            return removed
        for entry in Ledger(self.ledger_path).leftovers():
            if entry.kind != ADDRESS:
                continue
            try:
                where = yield defer.maybeDeferred(remover, entry.value).addTimeout(10, self.reactor)
            except Exception as e:
                self.say(f"cannot remove {entry.describe()}: {e}")
                continue
            if where:
                removed.append(entry.describe())
        if removed:
            self.say(f"removed {'; '.join(removed)} before restarting the daemon")
        return removed

    def _note(self, pid, exit_code, sig, action, detail):
        try:
            crashnote.add_note(self.state_dir, pid, exit_code, sig, action, boot_id(), detail=detail)
        except OSError as e:
            self.say(f"cannot write the crash note in {self.state_dir}: {e}")

    @defer.inlineCallbacks
    def _run_os_action(self, action, config, reason):
        commands = getattr(config, "os_actions", None)
        argv = list(getattr(commands, action, None) or ())
        if not argv:
            from cpro.config.defaults import DEFAULTS

            argv = shlex.split(DEFAULTS[f"cluster/osaction/{action}"])
        self.say(f"running the server-down action '{action}': {shlex.join(argv)}")
        env = {"CPRO_ACTION": action, "CPRO_REASON": reason, "CPRO_SERVER_NAME": self.server}
        try:
            result = yield run_command(self.reactor, argv, env=env, timeout=self.action_timeout)
        except CommandError as e:
            self.say(f"the server-down action '{action}' could not run: {e}")
            return EXIT_FAILED
        if not result.succeeded:
            self.say(f"the server-down action '{action}' failed: {result.describe()}")
            return EXIT_FAILED
        return EXIT_SERVER_DOWN

    def _load_config(self):
        from cpro.config import load_config
        from cpro.config.model import ConfigError

        try:
            config, _ = load_config(self.config_path)
        except ConfigError as e:
            first = e.errors[0] if e.errors else "unknown problem"
            self.say(f"cannot read {self.config_path} ({first}); using what was read before, or the defaults")
            return None
        return config

    def _internal_error(self, failure):
        self.say(f"internal error: {failure.getTraceback()}")
        self._busy = False
        self._finish(EXIT_FAILED)

    def _finish(self, code):
        if not self.done.called:
            self.done.callback(code)


def _say(message):
    line = f"cpro-supervise: {message}"
    try:
        os.write(2, (line + "\n").encode("utf-8", "replace"))
    except OSError:
        pass
    try:
        syslog.openlog("cpro-supervise", syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_WARNING if "abnormal" in message or "action" in message else syslog.LOG_INFO,
                      message)
    except OSError:
        pass


def main(argv=None):
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print(f"cpro-supervise: {e}\n{options}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    command = options["command"]
    config, state_dir, server = daemon_settings(command)
    config = options["config"] or config
    state_dir = os.path.abspath(options["state-dir"] or state_dir)

    from twisted.internet import reactor

    supervisor = Supervisor(reactor, command, config, state_dir, server, action=options["action"],
                            max_restarts=options["max-restarts"], restart_window=options["restart-window"],
                            action_timeout=options["action-timeout"], cleanup_grace=options["cleanup-grace"])
    outcome = {"code": EXIT_FAILED}

    def forward(signum, frame):
        reactor.callFromThread(supervisor.stop, signum)

    def run():
        # After the reactor installed its own handlers (SIGCHLD is kept):
        # a stop request goes to the daemon, not to our reactor.
        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        supervisor.start().addBoth(stop_with)

    def stop_with(code):
        outcome["code"] = code if isinstance(code, int) else EXIT_FAILED
        reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()
    raise SystemExit(outcome["code"])


if __name__ == "__main__":
    main()
