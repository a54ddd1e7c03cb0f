"""A user-space watchdog process: runs an action when the daemon stops feeding it.

Used by userw where there is no /dev/watchdog. The daemon starts it with
L{cpro.system.watchdog.KeeperWatchdog} and writes to its stdin from the
reactor thread; a stalled reactor stops writing, and after C{--timeout}
seconds without a byte this process runs the action command (the cluster's
reboot command) on its own, which the stalled daemon could not do.

    python -I .../watchdog_keeper.py --timeout 90 --action reboot -- systemctl reboot

stdin protocol, as the kernel watchdog device's write(): every byte feeds
(restarts the countdown). End of input after a last byte of C{V} (the
"magic close") is a clean stop: the keeper exits 0. End of input without it
means the daemon died: the keeper keeps counting and fires, as the kernel
watchdog does when its device is closed without the magic character.
SIGTERM is a deliberate stop by an operator (exit 0 without acting);
SIGINT and SIGHUP are ignored, so a terminal or session closing does not
disarm it. It moves to its own session so signals meant for the daemon's
process group do not reach it.

Exit codes: 0 clean stop, 2 the action ran, 64 bad usage. Messages go to
stderr (the daemon points it at a log file). Standard library only, so
it starts fast and does not depend on the daemon's import path.
"""

import argparse
import os
import select
import signal
import subprocess
import sys
import time

MAGIC_CLOSE = b"V"
EXIT_CLEAN = 0
EXIT_FIRED = 2
EXIT_USAGE = 64
ACTION_WAIT = 60.0  # s to wait for the action command before exiting anyway


def log(message):
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        sys.stderr.write(f"{stamp} watchdog_keeper[{os.getpid()}]: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # the log is gone: acting matters more than saying so


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="watchdog_keeper", description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, required=True,
                        help="seconds without a feed before the action runs")
    parser.add_argument("--action", default="reboot", help="action name, for the log and CPRO_ACTION")
    parser.add_argument("--reason", default="the cluster daemon stopped feeding its watchdog",
                        help="text passed to the action as CPRO_REASON")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the action command and its arguments, after --")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("an action command is required after --")
    if not args.timeout > 0:
        parser.error("--timeout must be positive")
    return args


def _prepare_process():
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def on_term(signum, frame):
        log("SIGTERM: stopped by request, no action")
        raise SystemExit(EXIT_CLEAN)

    signal.signal(signal.SIGTERM, on_term)
    # Best effort: a keeper starved of CPU by the overload that stalls the
    # daemon would fire late. It sleeps in select(), so a real-time
    # priority costs nothing otherwise.
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):
        pass


def watch(fd, timeout, clock=time.monotonic):
    """Wait on fd until a clean stop (returns True) or timeout s without a byte (False)."""
    deadline = clock() + timeout
    open_input = True
    clean = False
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        if not open_input:
            time.sleep(remaining)
            continue
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError as e:
            log(f"cannot read the feed pipe ({e}): counting down to the action")
            data = b""
        if not data:
            if clean:
                return True
            open_input = False
            log("the daemon went away without a clean stop: the action runs when the timeout ends")
            continue
        deadline = clock() + timeout
        clean = data.endswith(MAGIC_CLOSE)


def _ordinary_child():
    """In the action's child: undo the keeper's real-time priority and ignored signals."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def fire(args):
    log(f"not fed for {args.timeout:g} s: running action {args.action}: {' '.join(args.command)}")
    env = dict(os.environ)
    env.update({"CPRO_ACTION": args.action, "CPRO_REASON": args.reason})
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    try:
        child = subprocess.Popen(args.command, stdin=subprocess.DEVNULL, env=env,
                                 preexec_fn=_ordinary_child)
    except OSError as e:
        log(f"cannot run the action command: {e}")
        return
    try:
        code = child.wait(ACTION_WAIT)
        log(f"action command exited with {code}")
    except subprocess.TimeoutExpired:
        log(f"action command still running after {ACTION_WAIT:g} s; leaving it")


def main(argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_CLEAN
    _prepare_process()
    log(f"armed: timeout {args.timeout:g} s, action {args.action}")
    if watch(sys.stdin.fileno(), args.timeout):
        log("clean stop")
        return EXIT_CLEAN
    fire(args)
    return EXIT_FIRED


if __name__ == "__main__":
    sys.exit(main())
