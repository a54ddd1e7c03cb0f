"""clprsc: start or stop one group resource.

  clprsc -s RESOURCE [-h SERVER]   start RESOURCE [on SERVER]
  clprsc -t RESOURCE [-h SERVER]   stop RESOURCE [on SERVER]
"""

import sys

from cpro.cli.common import Command, request_line, run_main


def main(argv=None, *, stdout=None, stderr=None):
    command = Command("clprsc", stdout, stderr)

    def body(argv):
        parser = command.parser("Start or stop a group resource.")
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("-s", dest="start", metavar="RESOURCE", help="start RESOURCE")
        action.add_argument("-t", dest="stop", metavar="RESOURCE", help="stop RESOURCE")
        parser.add_argument("-h", dest="host", metavar="SERVER", help="server to act on")
        args = parser.parse_args(argv)
        verb, resource = ("start", args.start) if args.start is not None else ("stop", args.stop)
        line = request_line(
            "resource", verb, resource, "--server" if args.host else None, args.host
        )
        return command.operate(args, line)

    return run_main(body, argv)


if __name__ == "__main__":
    sys.exit(main())
