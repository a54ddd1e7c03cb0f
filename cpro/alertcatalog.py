"""The alert catalogue: every alert the daemon raises, one entry per (module, id).

An entry holds the module (the original's module types: pm, nm, cl, rc, rm),
the event id (the ids of the original's message list where it has one, see
docs/operations.md), the level and a str.format template with named fields.
Call sites never write an alert text; they fill an entry:

    self.alerts.emit(*catalog.SERVER_STOPPED.format(server=name))

The catalogue is what per-message settings (alert log, syslog, mail, SNMP
trap: the original's /root/messages/<module>@<id>) hang off, so an id means
one thing. Where one id carries more than one sentence today (the same event
seen in different situations, e.g. rc 61 "no destination" and "not failed
over"), the other sentences are variants of the entry: same module and id,
their own level and template, the same settings.

`python -m cpro.alertcatalog` prints the table of docs/operations.md.

This module is a leaf: it imports nothing of cpro but the Level enum.
"""

import string
from dataclasses import dataclass
from typing import NamedTuple

from twisted.logger import Logger

from cpro.cluster.states import Level

__all__ = ["AlertEntry", "Raised", "entries", "every_alert", "lookup", "variants", "markdown_table"]

log = Logger()

_FORMATTER = string.Formatter()
_ENTRIES = {}  # (module, event_id) -> AlertEntry: the entry of that id
_VARIANTS = {}  # (module, event_id) -> [AlertEntry]: its other sentences
_ORDER = []  # every entry and variant, in definition order


class Raised(NamedTuple):
    """An alert filled in: the arguments of L{cpro.interfaces.IAlertSink.emit}."""

    module: str
    event_id: int
    level: Level
    message: str


@dataclass(frozen=True)
class AlertEntry:
    """One alert of the catalogue (or a variant of one)."""

    module: str
    event_id: int
    level: Level
    template: str
    variant: bool = False

    @property
    def key(self):
        return (self.module, self.event_id)

    @property
    def fields(self):
        """The names of the template's fields."""
        return frozenset(name for _, name, _, _ in _FORMATTER.parse(self.template) if name is not None)

    @property
    def display(self):
        """The template with its fields bare ({wait} for {wait:g}): for documentation."""
        return "".join(literal + ("" if name is None else "{" + name + "}")
                       for literal, name, _, _ in _FORMATTER.parse(self.template))

    def text(self, **fields):
        """The message for these fields.

        A call site that passes the wrong fields still gets its alert (the
        template with the values given) and a logged error: an alert is often
        raised on a failure path that must go on.
        """
        try:
            return self.template.format(**fields)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
            log.error("alert {module} {event_id}: template does not format with {fields}: {error!r}",
                      module=self.module, event_id=self.event_id, fields=sorted(fields), error=e)
            given = ", ".join(f"{k}={v}" for k, v in sorted(fields.items()))
            return f"{self.template} [{given}]"

    def format(self, **fields):
        """(module, event_id, level, message) for IAlertSink.emit(*...)."""
        return Raised(self.module, self.event_id, self.level, self.text(**fields))


def _entry(module, event_id, level, template):
    key = (module, event_id)
    if key in _ENTRIES:
        raise ValueError(f"alert {module} {event_id} is in the catalogue twice")
    entry = _ENTRIES[key] = AlertEntry(module, event_id, level, template)
    _ORDER.append(entry)
    return entry


def _variant(of, level=None, template=None):
    """Another sentence (or level) under the id of `of`."""
    entry = AlertEntry(of.module, of.event_id, level or of.level, template or of.template, variant=True)
    _VARIANTS.setdefault(of.key, []).append(entry)
    _ORDER.append(entry)
    return entry


def lookup(module, event_id):
    """The entry of (module, event_id), or None."""
    return _ENTRIES.get((module, int(event_id)))


def entries():
    """Every (module, id), one entry each, in catalogue order."""
    return [e for e in _ORDER if not e.variant]


def variants(entry):
    """The other sentences of entry's id."""
    return list(_VARIANTS.get(entry.key, ()))


def every_alert():
    """Every entry and variant, in catalogue order."""
    return list(_ORDER)


INFO, WARNING, ERROR = Level.INFO, Level.WARNING, Level.ERROR

# -- pm: the cluster daemon -------------------------------------------------------------

DAEMON_STARTING = _entry("pm", 1, INFO, "Starting the cluster daemon...")
DAEMON_STOPPING = _entry("pm", 2, INFO, "Shutting down the cluster daemon...")
DAEMON_STARTED = _entry("pm", 3, INFO, "The cluster daemon has been started properly.")
CONFIG_MISMATCH = _entry("pm", 10, ERROR, "The configuration of {server} differs from this server's ({detail}).")
CONFIG_NOT_CHECKED = _entry(
    "pm", 11, WARNING,
    "The configuration could not be checked against the master {master} within {wait:g} s.")
DAEMON_CRASHED = _entry(
    "pm", 20, ERROR,
    "The cluster daemon process (pid {pid}) was terminated abnormally at {time}: {how}; {action}{detail}.")
LEFTOVERS_CLEANED = _entry("pm", 21, WARNING, "Cleaned up after the previous cluster daemon on {server}: {summary}.")
LEFTOVERS_NOT_ALL_REMOVED = _variant(LEFTOVERS_CLEANED, level=ERROR)
STALE_LEFTOVERS_DROPPED = _variant(LEFTOVERS_CLEANED, level=INFO)
AUTO_START_SKIPPED = _entry(
    "pm", 22, WARNING,
    "Groups are not started automatically on {server}: {reason}. Start a group that runs nowhere with clpgrp -s.")
AUTO_START_AFTER_UNCLEAN_STOP = _entry(
    "pm", 23, INFO,
    "The previous cluster daemon on {server} did not stop cleanly ({reason}), but no other server is running: "
    "starting groups as usual.")
OS_ACTION_RUNNING = _entry("pm", 90, WARNING, "Running OS action '{action}' on {server} ({reason}): {command}")
OS_ACTION_NOT_RUN = _entry("pm", 91, ERROR, "OS action '{action}' could not run: {error}")
OS_ACTION_FAILED = _variant(
    OS_ACTION_NOT_RUN, template="OS action '{action}' failed (exit {exit_code}, signal {signal}).")

# -- nm: servers, heartbeat paths, network partitions -----------------------------------

SERVER_STARTED = _entry("nm", 1, INFO, "Server {server} has started.")
SERVER_STOPPED = _entry("nm", 2, WARNING, "Server {server} has been stopped.")
SERVER_RESTARTED = _variant(SERVER_STOPPED, template="Server {server} has been restarted.")
HEARTBEAT_PATH_UP = _entry("nm", 3, INFO, "Resource {path} of server {server} has started.")
HEARTBEAT_PATH_DOWN = _entry("nm", 4, WARNING, "Resource {path} of server {server} has stopped.")
STARTUP_WAITING = _entry("nm", 5, INFO, "Waiting for all servers to start.")
STARTUP_ALL_STARTED = _entry("nm", 6, INFO, "All servers have started.")
STARTUP_WAIT_OVER = _entry(
    "nm", 7, WARNING, "Startup synchronisation wait ({wait:g} s) is over; starting without {missing}.")
NETWORK_PARTITION = _entry(
    "nm", 30, ERROR,
    "Network partition was detected (server {server} lost and the resolution failed). "
    "Action on {local} to protect data: {action}.")
EMERGENCY_RELEASE = _entry("nm", 31, WARNING, "Emergency release on {server} after a network partition: {summary}.")
PARTITION_HEALTHY_SIDE = _entry(
    "nm", 32, INFO,
    "Network partition resolution for server {server}: {local} is on the healthy side ({reasons}).")
RESOLVER_FAILS = _entry("nm", 33, WARNING, "Network partition resolver {resolver} on {server} fails: {reason}.")
RESOLVER_STOPPED_WORKING = _variant(
    RESOLVER_FAILS,
    template="Network partition resolver {resolver} on {server} fails: {reason}. If every heartbeat were lost "
             "now, {server} would take itself for the cut-off side.")
RESOLVER_WORKS_AGAIN = _entry(
    "nm", 34, INFO, "Network partition resolver {resolver} on {server} works again: {reason}.")
FORCED_STOP_STARTED = _entry("nm", 40, WARNING, "Forced stop of server {server} ({method}) has started.")
FORCED_STOP_SUCCEEDED = _entry("nm", 41, INFO, "Forced stop of server {server} has succeeded.")
FORCED_STOP_FAILED = _entry("nm", 42, ERROR, "Forced stop of server {server} has failed: {reason}.")
FAILOVER_SUPPRESSED = _entry(
    "nm", 43, ERROR,
    "Failover of the groups of server {server} is suppressed because its forced stop failed. "
    "Check the server and start the groups by hand.")
PEER_AUTHENTICATION_FAILED = _entry(
    "nm", 80, ERROR, "Internal communication with {server} failed authentication: {reason}")

# -- cl: operator requests --------------------------------------------------------------

SUSPEND_REQUESTED = _entry("cl", 5, INFO, "Suspend of the cluster service was requested.")
RESUME_REQUESTED = _entry("cl", 7, INFO, "Resume of the cluster service was requested.")

# -- rc: groups and group resources -----------------------------------------------------

GROUP_STARTING = _entry("rc", 10, INFO, "Start group {group} (event {event}).")
GROUP_STARTED = _entry("rc", 11, INFO, "Group {group} has started.")
GROUP_START_FAILED = _entry("rc", 12, ERROR, "Failed to start group {group} ({resource}: {error}).")
GROUP_STOPPING = _entry("rc", 20, INFO, "Stop group {group}.")
DUPLICATE_STOPPING = _variant(
    GROUP_STOPPING, level=WARNING,
    template="Stopping group {group} on {server}: it is also active on the higher-priority server {holder}.")
GROUP_STOPPED = _entry("rc", 21, INFO, "Group {group} has stopped.")
GROUP_STOP_FAILED = _entry("rc", 22, ERROR, "Failed to stop group {group} ({resource}: {error}).")
RESOURCE_ACTIVATING = _entry("rc", 30, INFO, "Activating {resource} resource has started.")
RESOURCE_ACTIVATED = _entry("rc", 31, INFO, "Activating {resource} resource has completed.")
RESOURCE_ACTIVATION_FAILED = _entry("rc", 32, ERROR, "Activating {resource} resource has failed.({error})")
RESOURCE_STOPPING = _entry("rc", 40, INFO, "Stopping {resource} resource has started.")
RESOURCE_STOPPED = _entry("rc", 41, INFO, "Stopping {resource} resource has completed.")
RESOURCE_STOP_FAILED = _entry("rc", 42, ERROR, "Stopping {resource} resource has failed.({error})")
GROUP_MOVING = _entry("rc", 50, INFO, "Move group {group} from {source} to {target}.")
GROUP_MOVED = _entry("rc", 51, INFO, "Group {group} has moved to {target}.")
GROUP_MOVE_FAILED = _entry(
    "rc", 52, ERROR, "Failed to move group {group} to {target}: {error}. Starting it again on {origin}.")
FAILOVER_DESTINATION = _entry(
    "rc", 60, INFO, "Server {target} has been set as the destination for the group {group} (reason: {reason}).")
NO_DESTINATION = _entry("rc", 61, ERROR, "There is no appropriate destination for the group {group}.")
FAILOVER_START_FAILED = _variant(NO_DESTINATION, template="Failed to start group {group} on {target}: {error}")
FAILOVER_AFTER_RESUME = _variant(
    NO_DESTINATION, level=WARNING,
    template="The cluster is suspended: groups {groups} of {server} are failed over when it resumes.")
MANUAL_FAILOVER = _variant(
    NO_DESTINATION, level=WARNING, template="Group {group} is not failed over (manual failover).")
GROUP_RESTARTING = _entry("rc", 70, INFO, "Restarting group {group} (monitor {monitor}).")
GROUP_RESTARTED = _entry("rc", 71, INFO, "Group {group} has been restarted.")
GROUP_RESTART_FAILED = _entry("rc", 72, ERROR, "Failed to restart group {group}. ({error})")
FAILBACK_STARTED = _entry("rc", 74, INFO, "Failback of group {group} to {target} has started.")
RESOURCE_RESTARTING = _entry("rc", 80, INFO, "Restarting resource {resource} (monitor {monitor}).")
RESOURCE_RESTARTED = _entry("rc", 81, INFO, "Resource {resource} has been restarted.")
RESOURCE_RESTART_FAILED = _entry("rc", 82, ERROR, "Failed to restart resource {resource}. ({error})")
DUAL_ACTIVATION = _entry("rc", 92, ERROR, "Group {group} has started on more than one server ({servers}).")
RESOURCE_FINAL_ACTION = _entry("rc", 200, ERROR, "Final action for {resource} of group {group}: {action}.")

# -- rm: monitors and their recovery ----------------------------------------------------

_BECAUSE = "because an error was detected in monitoring {monitor}."

MONITOR_STARTED = _entry("rm", 1, INFO, "Monitoring {monitor} has started.")
MONITOR_STOPPED = _entry("rm", 2, INFO, "Monitoring {monitor} has stopped.")
MONITOR_WARNING = _entry("rm", 4, WARNING, "Warn monitoring {monitor}. ({detail})")
MONITOR_CONFIG_INVALID = _entry("rm", 6, ERROR, "Monitor configuration of {monitor} is invalid. ({reason})")
MONITOR_START_FAILED = _entry("rm", 7, ERROR, "Failed to start monitoring {monitor}. ({error})")
MONITOR_ERROR = _entry("rm", 9, ERROR, "Detected an error in monitoring {monitor}. ({detail})")
RECOVERY_TARGET_STOPPED = _entry("rm", 12, INFO, "Recovery target {target} has stopped " + _BECAUSE)
RECOVERY_TARGET_RESTARTED = _entry("rm", 13, INFO, "Recovery target {target} has restarted " + _BECAUSE)
RECOVERY_TARGET_FAILED_OVER = _entry("rm", 14, INFO, "Recovery target {target} failed over to {server} " + _BECAUSE)
CLUSTER_STOP_REQUIRED = _entry("rm", 15, INFO, "Stopping the cluster has been required " + _BECAUSE)
SHUTDOWN_REQUIRED = _entry("rm", 16, INFO, "Stopping the system has been required " + _BECAUSE)
REBOOT_REQUIRED = _entry("rm", 17, INFO, "Rebooting the system has been required " + _BECAUSE)
_FINAL_ACTION_FAILED = ("Attempted the final action ({action}) for {target} due to the error detected in "
                        "monitoring {monitor}, but failed. ({error})")
TARGET_STOP_FAILED = _entry("rm", 18, ERROR, _FINAL_ACTION_FAILED)
RECOVERY_RESTART_FAILED = _entry(
    "rm", 19, ERROR,
    "Attempted to restart the recovery target {target} due to the error detected in monitoring {monitor}, "
    "but failed. ({error})")
RECOVERY_FAILOVER_FAILED = _entry(
    "rm", 20, ERROR,
    "Attempted to fail over {target} due to the error detected in monitoring {monitor}, but failed. ({error})")
CLUSTER_STOP_FAILED = _entry("rm", 21, ERROR, _FINAL_ACTION_FAILED)
SHUTDOWN_FAILED = _entry("rm", 22, ERROR, _FINAL_ACTION_FAILED)
REBOOT_FAILED = _entry("rm", 23, ERROR, _FINAL_ACTION_FAILED)
RECOVERY_GROUP_UNKNOWN = _entry("rm", 24, ERROR, "The group of {target} resource is unknown.")
RECOVERY_TARGET_NOT_ACTIVE = _entry(
    "rm", 25, WARNING, "Recovery will not be executed since the recovery target {target} is not active.")
MONITOR_ERROR_CLEARED = _entry("rm", 26, INFO, "{monitor} status changed from error to normal.")
MONITOR_SUSPENDED = _entry("rm", 29, INFO, "Monitoring {monitor} was suspended.")
MONITOR_RESUMED = _entry("rm", 30, INFO, "Monitoring {monitor} was resumed.")
ALL_MONITORS_SUSPENDED = _entry("rm", 31, INFO, "All monitors were suspended.")
ALL_MONITORS_RESUMED = _entry("rm", 32, INFO, "All monitors were resumed.")


def _script_entries(words, started, completed, failed):
    what = f"Script before {words} upon failure in monitoring {{monitor}}"
    return (_entry("rm", started, INFO, what + " started."),
            _entry("rm", completed, INFO, what + " completed."),
            _entry("rm", failed, ERROR, what + " failed. ({error})"))


(SCRIPT_BEFORE_FAILOVER_STARTED, SCRIPT_BEFORE_FAILOVER_COMPLETED,
 SCRIPT_BEFORE_FAILOVER_FAILED) = _script_entries("failover", 33, 34, 35)
(SCRIPT_BEFORE_FINAL_ACTION_STARTED, SCRIPT_BEFORE_FINAL_ACTION_COMPLETED,
 SCRIPT_BEFORE_FINAL_ACTION_FAILED) = _script_entries("final action", 41, 42, 43)
(SCRIPT_BEFORE_REACTIVATION_STARTED, SCRIPT_BEFORE_REACTIVATION_COMPLETED,
 SCRIPT_BEFORE_REACTIVATION_FAILED) = _script_entries("reactivation", 44, 45, 46)
MONITOR_WARNING_CLEARED = _entry("rm", 49, INFO, "{monitor} status changed from warning to normal.")
MONITOR_DELAY = _entry(
    "rm", 71, WARNING,
    "Detected a monitor delay in monitoring {monitor}. (timeout={timeout:g} s actual-time={duration:.3f} s "
    "delay warning rate={ratio}%)")
RESTART_COUNT_EXCEEDED = _entry(
    "rm", 100, WARNING,
    "Restart count exceeded the maximum of {maximum}. Final action of monitoring {monitor} will not be executed.")
DUMMY_FAILURE_ENABLED = _entry("rm", 180, WARNING, "Dummy Failure of monitor resource {monitor} is enabled.")
DUMMY_FAILURE_DISABLED = _entry("rm", 181, INFO, "Dummy Failure of monitor resource {monitor} is disabled.")
DUMMY_FAILURE_ALL_ENABLED = _entry("rm", 182, WARNING, "Dummy Failure of all monitors will be enabled.")
DUMMY_FAILURE_ALL_DISABLED = _entry("rm", 183, INFO, "Dummy Failure of all monitors will be disabled.")
DUMMY_FAILURE_ENABLE_FAILED = _entry(
    "rm", 184, WARNING, "An attempt to enable Dummy Failure of monitor resource {monitor} failed.")
DUMMY_FAILURE_DISABLE_FAILED = _entry(
    "rm", 185, WARNING, "An attempt to disable Dummy Failure of monitor resource {monitor} failed.")
RECOVERY_ACTIONS_DISABLED = _entry("rm", 190, WARNING, "Recovery action caused by monitor resource error is disabled.")
RECOVERY_ACTIONS_ENABLED = _entry("rm", 191, INFO, "Recovery action caused by monitor resource error is enabled.")
RECOVERY_IGNORED_DISABLED = _entry(
    "rm", 192, WARNING,
    "Ignored the recovery action in monitoring {monitor} because recovery action caused by monitor resource "
    "error is disabled.")
RECOVERY_IGNORED_TIMEOUT = _entry(
    "rm", 193, WARNING,
    "Recovery action at timeout occurrence was disabled, so the recovery action of monitor {monitor} was not "
    "executed.")
FINAL_ACTION_SUPPRESSED = _entry(
    "rm", 200, WARNING,
    "Since there is no other normally running server, the final action({action}) for an error detection of "
    "monitor resource {monitor} was suppressed.")


# -- the table of docs/operations.md ----------------------------------------------------

def markdown_table():
    """Every alert as a Markdown table (module, id, level, message), variants under their entry."""
    lines = ["| module | id | level | message |", "|---|---|---|---|"]
    for entry in entries():
        for e in [entry] + variants(entry):
            lines.append(f"| {e.module} | {e.event_id} | {e.level.value} | {e.display} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
