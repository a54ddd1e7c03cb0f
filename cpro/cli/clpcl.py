"""clpcl: start, stop, restart, suspend or resume the cluster service.

  clpcl -s [-a]          start the cluster service (on the local server, or all with -a)
  clpcl -t [-a]          stop it
  clpcl -r [-a]          restart it
  clpcl --suspend [-a]   suspend (groups keep running, monitoring and failover pause)
  clpcl --resume [-a]    resume
"""

import sys

from cpro import statusview
from cpro.cli.common import EXIT_FAILED, EXIT_OK, OPERATION_TIMEOUT, Command, request_line, run_main

LABELS = {
    "start": "Start",
    "stop": "Stop",
    "restart": "Restart",
    "suspend": "Suspend",
    "resume": "Resume",
}


def main(argv=None, *, stdout=None, stderr=None):
    command = Command("clpcl", stdout, stderr)

    def body(argv):
        parser = command.parser("Control the cluster service.")
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("-s", dest="action", action="store_const", const="start",
                            help="start the cluster service")
        action.add_argument("-t", dest="action", action="store_const", const="stop",
                            help="stop the cluster service")
        action.add_argument("-r", dest="action", action="store_const", const="restart",
                            help="restart the cluster service")
        action.add_argument("--suspend", dest="action", action="store_const", const="suspend",
                            help="suspend the cluster")
        action.add_argument("--resume", dest="action", action="store_const", const="resume",
                            help="resume the cluster")
        parser.add_argument("-a", "--all", action="store_true", help="on every server")
        args = parser.parse_args(argv)
        line = request_line("cluster", args.action, "--all" if args.all else None)
        code, payload = command.call(args.admin, line, args.timeout or OPERATION_TIMEOUT)
        if code != EXIT_OK:
            return code
        command.out.write(statusview.render_operation(payload, LABELS[args.action]))
        return EXIT_FAILED if statusview.operation_failed(payload) else EXIT_OK

    return run_main(body, argv)


if __name__ == "__main__":
    sys.exit(main())
