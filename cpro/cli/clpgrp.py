"""clpgrp: start, stop or move failover groups.

  clpgrp -s [GROUP] [-h SERVER]    start GROUP (all groups when omitted) [on SERVER]
  clpgrp -t [GROUP] [-h SERVER]    stop GROUP (all groups when omitted)
  clpgrp -m [GROUP] [-a SERVER]    move GROUP to SERVER (by failover policy when omitted);
                                   -h SERVER is accepted as well
  clpgrp -n GROUP                  print the server GROUP runs on (nothing when stopped)
"""

import sys

from cpro.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    STATUS_TIMEOUT,
    Command,
    request_line,
    run_main,
)

ALL = object()  # -s/-t/-m given without a group name


def main(argv=None, *, stdout=None, stderr=None):
    command = Command("clpgrp", stdout, stderr)

    def body(argv):
        parser = command.parser("Start, stop or move failover groups.")
        action = parser.add_mutually_exclusive_group(required=True)
        for flag, name, text in (
            ("-s", "start", "start GROUP (every group when omitted)"),
            ("-t", "stop", "stop GROUP (every group when omitted)"),
            ("-m", "move", "move GROUP (every group when omitted)"),
        ):
            action.add_argument(flag, dest=name, nargs="?", const=ALL, default=None,
                                metavar="GROUP", help=text)
        action.add_argument("-n", dest="where", metavar="GROUP",
                            help="print the server GROUP is running on")
        parser.add_argument("-h", dest="host", metavar="SERVER",
                            help="server to act on (start/stop) or move to (move)")
        parser.add_argument("-a", dest="dest", metavar="SERVER",
                            help="move destination (same as -h with -m)")
        args = parser.parse_args(argv)

        if args.where is not None:
            if args.host or args.dest:
                parser.error("-n takes no -h/-a")
            return _where(command, args)

        verb = next(v for v in ("start", "stop", "move") if getattr(args, v) is not None)
        group = getattr(args, verb)
        server = args.host
        if args.dest is not None:
            if verb != "move":
                parser.error("-a SERVER is the move destination: use it with -m")
            if args.host is not None and args.host != args.dest:
                parser.error("-h and -a name different servers")
            server = args.dest
        line = request_line(
            "group", verb, None if group is ALL else group,
            "--server" if server else None, server,
        )
        return command.operate(args, line)

    return run_main(body, argv)


def _where(command, args):
    code, payload = command.call(args.admin, "status", args.timeout or STATUS_TIMEOUT)
    if code != EXIT_OK:
        return code
    for group in payload.get("groups") or []:
        if group.get("name") == args.where:
            if group.get("current"):
                command.out.write(f"{group['current']}\n")
            return EXIT_OK
    return command.fail(f"no group named {args.where!r}", EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
