"""clpstat: show the cluster status (or the alert log) from the local daemon.

  clpstat                 the CLUSTER STATUS view
  clpstat -g              group map (which group runs where)
  clpstat -n              heartbeat view
  clpstat -m              monitor view: each monitor's state per server, last check duration,
                          recovery counters and last error
  clpstat --detail        status with priorities, resource types and owners
  clpstat --alerts [N]    the last N alerts of the cluster-wide alert log (default 100)
  clpstat --json          the status payload as JSON (REST shapes); with --alerts, the alerts
"""

import json
import sys

from cpro import statusview
from cpro.cli.common import STATUS_TIMEOUT, Command, run_main, EXIT_OK


def main(argv=None, *, stdout=None, stderr=None):
    command = Command("clpstat", stdout, stderr)

    def body(argv):
        parser = command.parser("Show the status of the cluster.")
        view = parser.add_mutually_exclusive_group()
        view.add_argument("-s", dest="view", action="store_const", const="status",
                          help="cluster status (the default)")
        view.add_argument("-g", dest="view", action="store_const", const="groupmap",
                          help="group map: which group runs on which server")
        view.add_argument("-n", dest="view", action="store_const", const="heartbeats",
                          help="servers and heartbeat paths")
        view.add_argument("-m", dest="view", action="store_const", const="monitors",
                          help="monitor resources")
        view.add_argument("-p", dest="view", action="store_const", const="partition",
                          help="network partition resolution and forced stop")
        view.add_argument("--detail", dest="view", action="store_const", const="detail",
                          help="status with priorities, resource types and owners")
        view.add_argument("--alerts", nargs="?", type=int, const=100, default=None, metavar="N",
                          help="the last N alerts (1-1000, default 100)")
        parser.add_argument("--json", action="store_true",
                            help="print the payload as JSON instead of text")
        args = parser.parse_args(argv)
        if args.alerts is not None and not 1 <= args.alerts <= 1000:
            parser.error("--alerts N must be between 1 and 1000")
        timeout = args.timeout or STATUS_TIMEOUT
        if args.alerts is not None:
            code, payload = command.call(args.admin, f"alerts {args.alerts}", timeout)
            render = statusview.render_alerts
        else:
            code, payload = command.call(args.admin, "status", timeout)
            def render(payload):
                return statusview.render_view(args.view, payload)
        if code != EXIT_OK:
            return code
        if args.json:
            command.out.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        else:
            command.out.write(render(payload))
        return EXIT_OK

    return run_main(body, argv)


if __name__ == "__main__":
    sys.exit(main())
