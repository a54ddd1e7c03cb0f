"""clpcfctrl: distribute a configuration to the running cluster, or fetch it.

  clpcfctrl --push -x DIR [--dry-run] [--force]
      check DIR/clp.conf completely, print each change and what applying it
      needs, ask, then distribute DIR to every running server and apply it
      there (a server that is down gets it when it starts)
  clpcfctrl --pull -x DIR
      write the running configuration directory of this server into DIR

Exit codes as every clp* command (0 success, 1 refused or failed: a broken
file is refused with every error and nothing changes anywhere, 2 usage,
3 daemon unreachable).
"""

import os
import sys

from cpro.cli.common import EXIT_FAILED, EXIT_OK, OPERATION_TIMEOUT, Command, request_line, run_main


def render_plan(payload):
    """The changes of a check or push, one per line, and the overall need."""
    changes = payload.get("changes") or []
    if not changes:
        return "No change: the running configuration is the same.\n"
    lines = ["Changes:"]
    for c in changes:
        target = f" {c['group']}" if c.get("need") == "group_restart" and c.get("group") else ""
        lines.append(f"  {c['path']}: {c['what']}\n      -> {c['needs']}{target}")
    for w in payload.get("warnings") or []:
        lines.append(f"warning: {w}")
    need = payload.get("need")
    summary = {
        "live": "Everything is applied live; nothing stops.",
        "group_restart": "Groups restarted: " + ", ".join(payload.get("groups_to_restart") or []) + ".",
        "suspend_resume": "The cluster is suspended and resumed around the change (groups keep running).",
        "service_restart": "The files are installed on every server; restart the cluster daemons "
                           "(systemctl restart cpro, one server after the other) to apply them.",
    }.get(need, "")
    if need:
        lines.append(summary)
    return "\n".join(lines) + "\n"


def render_push(payload):
    lines = []
    if payload.get("unchanged"):
        return "No change: the running configuration is the same.\n"
    for server in sorted(payload.get("applied") or {}):
        lines.append(f"{server}: configuration generation {payload.get('generation')} applied")
        for line in payload["applied"][server]:
            lines.append(f"  {line}")
    for server in payload.get("absent") or []:
        lines.append(f"{server}: not running; it gets the new configuration when it starts")
    return "\n".join(lines) + "\n"


def main(argv=None, *, stdout=None, stderr=None, stdin=None):
    command = Command("clpcfctrl", stdout, stderr)
    stdin = stdin if stdin is not None else sys.stdin

    def body(argv):
        parser = command.parser("Distribute a configuration to the cluster, or fetch the running one.")
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--push", dest="action", action="store_const", const="push",
                            help="check, distribute and apply the configuration in DIR")
        action.add_argument("--pull", dest="action", action="store_const", const="pull",
                            help="write the running configuration into DIR")
        parser.add_argument("-x", dest="directory", required=True, metavar="DIR",
                            help="the configuration directory (clp.conf, key file, scripts/)")
        parser.add_argument("--dry-run", action="store_true", help="only print what would change")
        parser.add_argument("--force", action="store_true", help="apply without asking")
        args = parser.parse_args(argv)
        directory = os.path.abspath(args.directory)
        timeout = args.timeout or OPERATION_TIMEOUT
        if args.action == "pull":
            code, payload = command.call(args.admin, request_line("config", "pull", directory), timeout)
            if code == EXIT_OK:
                command.out.write(f"The running configuration of {payload.get('server')} "
                                  f"(generation {payload.get('generation')}) was written to {directory}.\n")
            return code
        code, payload = command.call(args.admin, request_line("config", "check", directory), timeout)
        if code != EXIT_OK:
            return code
        command.out.write(render_plan(payload))
        if not payload.get("changes") or args.dry_run:
            return EXIT_OK
        if not args.force:
            command.out.write("Apply these changes to the cluster? [y/N] ")
            command.out.flush()
            answer = stdin.readline().strip().lower()
            if answer not in ("y", "yes"):
                command.out.write("Nothing was changed.\n")
                return EXIT_FAILED
        code, payload = command.call(args.admin, request_line("config", "push", directory), timeout)
        if code != EXIT_OK:
            return code
        command.out.write(render_push(payload))
        return EXIT_OK

    return run_main(body, argv)


if __name__ == "__main__":
    sys.exit(main())
