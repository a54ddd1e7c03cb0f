"""clpmonctrl: control monitor resources.

  clpmonctrl -s [-m MONITOR] [-h SERVER]          suspend MONITOR (every monitor when omitted)
  clpmonctrl -r [-m MONITOR] [-h SERVER]          resume it
  clpmonctrl -c [-m MONITOR] [-h SERVER]          clear the recovery counters (reactivations, failovers)
  clpmonctrl -n -m MONITOR [-h SERVER]            dummy failure on: checks report an error without
  clpmonctrl --dummy-failure on -m MONITOR ...    running, to rehearse the recovery
  clpmonctrl -o [-m MONITOR] [-h SERVER]          dummy failure off (every monitor when omitted)
  clpmonctrl --dummy-failure off [-m MONITOR] ...
  clpmonctrl --recovery on|off                    cpro extension: enable or disable the recovery
                                                  actions of every monitor on every running server
                                                  (monitors still detect and alert)
  clpmonctrl -v [-m MONITOR] [-h SERVER]          list monitors: state, last check, counters, last error

Without -h the command acts on the local server, as the original. Exit codes
are those of every clp command (cpro.cli.common).
"""

import sys

from cpro import statusview
from cpro.cli.common import (EXIT_FAILED, EXIT_OK, OPERATION_TIMEOUT, STATUS_TIMEOUT, Command, request_line,
                             run_main)


def _listing(payload, monitor, server):
    """The -v listing: one block per monitor on one server (local by default)."""
    server = server or payload.get("local")
    lines = []
    for m in payload.get("monitors") or []:
        if monitor and m.get("name") != monitor:
            continue
        entry = next((e for e in m.get("servers") or [] if e.get("name") == server), {})
        duration = entry.get("duration")
        lines.append(f" Resource Name    : {m.get('name', '?')}")
        lines.append(f"   Type           : {m.get('type', '?')}")
        lines.append(f"   Server         : {server}")
        lines.append(f"   Status         : {entry.get('status', 'Unknown')}")
        lines.append("   Last Check     : " + (f"{duration:.3f} s" if isinstance(duration, (int, float))
                                               and not isinstance(duration, bool) else "-"))
        lines.append(f"   Restart Count  : {entry.get('restarts', 0)}")
        lines.append(f"   Failover Count : {entry.get('failovers', 0)}")
        lines.append(f"   Final Action   : {'executed' if entry.get('final_action_done') else 'not executed'}")
        lines.append(f"   Dummy Failure  : {'on' if entry.get('dummy') else 'off'}")
        lines.append(f"   Last Error     : {entry.get('error') or '-'}")
    return "\n".join(lines) + "\n" if lines else ""


def main(argv=None, *, stdout=None, stderr=None):
    command = Command("clpmonctrl", stdout, stderr)

    def body(argv):
        parser = command.parser("Control monitor resources.")
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("-s", dest="action", action="store_const", const="suspend",
                            help="suspend monitoring")
        action.add_argument("-r", dest="action", action="store_const", const="resume",
                            help="resume monitoring")
        action.add_argument("-c", dest="action", action="store_const", const="clear",
                            help="clear the recovery counters")
        action.add_argument("-n", dest="action", action="store_const", const="dummy-on",
                            help="enable dummy failure (needs -m)")
        action.add_argument("-o", dest="action", action="store_const", const="dummy-off",
                            help="disable dummy failure")
        action.add_argument("--dummy-failure", dest="dummy", choices=("on", "off"),
                            help="enable or disable dummy failure (as -n / -o)")
        action.add_argument("--recovery", choices=("on", "off"),
                            help="enable or disable the recovery actions of all monitors on every server")
        action.add_argument("-v", dest="action", action="store_const", const="list",
                            help="list monitors with their state and counters")
        parser.add_argument("-m", dest="monitor", metavar="MONITOR", help="the monitor resource")
        parser.add_argument("-h", dest="host", metavar="SERVER", help="the server to act on (default: this one)")
        args = parser.parse_args(argv)
        if args.dummy is not None:
            args.action = f"dummy-{args.dummy}"
        elif args.recovery is not None:
            args.action = "recovery"

        if args.action == "list":
            code, payload = command.call(args.admin, "status", args.timeout or STATUS_TIMEOUT)
            if code != EXIT_OK:
                return code
            if args.monitor and args.monitor not in {m.get("name") for m in payload.get("monitors") or []}:
                return command.fail(f"no such monitor: {args.monitor}", EXIT_FAILED)
            command.out.write(_listing(payload, args.monitor, args.host))
            return EXIT_OK
        if args.action == "recovery":
            if args.monitor or args.host:
                parser.error("--recovery applies to every monitor on every server: no -m or -h")
            code, payload = command.call(args.admin, request_line("monitor", "recovery", args.recovery),
                                         args.timeout or OPERATION_TIMEOUT)
            if code != EXIT_OK:
                return code
            command.out.write(statusview.render_operation(payload, "Recovery " + args.recovery))
            return EXIT_FAILED if statusview.operation_failed(payload) else EXIT_OK
        if args.action == "dummy-on" and not args.monitor:
            parser.error("dummy failure on needs a monitor (-m MONITOR)")
        if args.action.startswith("dummy-"):
            words = ("monitor", "dummy", args.action.split("-")[1])
        else:
            words = ("monitor", args.action)
        line = request_line(*words, args.monitor, "--server" if args.host else None, args.host)
        return command.operate(args, line)

    return run_main(body, argv)


if __name__ == "__main__":
    sys.exit(main())
