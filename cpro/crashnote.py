"""Crash notes: how the supervisor tells the next daemon that the last one crashed.

While the daemon is dead nobody can write the cluster's alert log safely, so
the supervisor (cpro.supervisor) leaves a note in the state directory
(L{NOTE_NAME}): when the daemon ended, how (exit code or signal) and what the
supervisor did about it (restarted it, or ran the server-down action). The
next daemon takes the notes at start (L{take_notes}), turns each into an
alert (pm 20) and, if one is from this boot, rejoins without auto-starting
groups. A note from an earlier boot (the server-down action powered the host
off) is reported only.

The file is small JSON, replaced whole (temporary file + rename); it keeps
the last L{MAX_NOTES} notes if several crashes come before a daemon reads
them.
"""

import json
import os
import signal
import time

from cpro import alertcatalog as catalog

NOTE_NAME = "crash.json"
MAX_NOTES = 20

# What the supervisor did, in words for the alert.
ACTIONS = {
    "restart": "the supervisor restarted it",
    "shutdown": "the supervisor ran the server-down action 'shutdown'",
    "reboot": "the supervisor ran the server-down action 'reboot'",
}


def _path(state_dir):
    return os.path.join(state_dir, NOTE_NAME)


def _read(path):
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(1 << 20).decode("utf-8"))
    except (OSError, ValueError):
        return []
    notes = data.get("crashes") if isinstance(data, dict) else None
    return [n for n in notes if isinstance(n, dict)] if isinstance(notes, list) else []


def add_note(state_dir, pid, exit_code, sig, action, boot, when=None, detail=""):
    """Append one crash note (blocking file I/O: for the supervisor, not a reactor).

    @param exit_code: the daemon's exit code, or None if a signal ended it.
    @param sig: the signal that ended it, or None.
    @param action: a key of L{ACTIONS}.
    """
    path = _path(state_dir)
    notes = _read(path)
    notes.append({"time": time.time() if when is None else when, "pid": pid, "exit_code": exit_code,
                  "signal": sig, "action": action, "boot_id": boot, "detail": detail})
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"crashes": notes[-MAX_NOTES:]}, f)
    os.replace(tmp, path)


def take_notes(state_dir):
    """The notes left since the last daemon start, removing the file."""
    path = _path(state_dir)
    notes = _read(path)
    try:
        os.unlink(path)
    except OSError:
        pass
    return notes


def same_boot(note, boot):
    """Whether the crash happened in this boot (unknown boot ids count as this one)."""
    written = note.get("boot_id")
    return not written or not boot or written == boot


def how_it_ended(exit_code, sig):
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by signal {sig} ({name})"
    return f"exit code {exit_code}"


def alert_fields(note):
    """The fields of the pm 20 alert (L{catalog.DAEMON_CRASHED}) for one note."""
    when = note.get("time")
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(when)))
    except (TypeError, ValueError, OverflowError):
        stamp = "an unknown time"
    action = ACTIONS.get(note.get("action"), f"the supervisor's action was {note.get('action')!r}")
    detail = f" ({note['detail']})" if note.get("detail") else ""
    return dict(pid=note.get("pid"), time=stamp, how=how_it_ended(note.get("exit_code"), note.get("signal")),
                action=action, detail=detail)


def describe(note):
    """The pm 20 alert text for one note."""
    return catalog.DAEMON_CRASHED.text(**alert_fields(note))
