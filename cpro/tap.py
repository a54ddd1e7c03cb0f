"""twistd plugin wiring: `twistd -n cpro --config PATH --server NAME`.

Only this module touches the global reactor. Startup failures print one line
`cpro: ...` on stderr and exit with a code from cpro.exitcodes.
"""

import os
import sys

from twisted.python import usage

from cpro import exitcodes

DEFAULT_ADMIN = "unix:/run/cpro/cpro.sock"
DEFAULT_STATE_DIR = "/var/lib/cpro"


class Options(usage.Options):
    synopsis = "--config PATH --server NAME [--admin ENDPOINT] [--state-dir DIR]"
    longdesc = ("Run one cpro cluster server. Exit codes: 3 invalid configuration, 4 unknown server, "
                "5 address in use or not available, 6 permission denied, 7 configuration differs "
                "from the master's.")
    optParameters = [
        ["config", "c", "/etc/cpro/clp.conf", "clp.conf file"],
        ["server", "s", None, "name of this server in the configuration (default: the host name)"],
        ["admin", "a", DEFAULT_ADMIN, "admin endpoint: unix:PATH or tcp:PORT:interface=127.0.0.1"],
        ["state-dir", "d", DEFAULT_STATE_DIR, "directory for logs and state"],
    ]
    optFlags = [
        ["no-autostart", None, "do not start the cluster service at launch (start it with clpcl -s)"],
        ["after-crash", None, "the previous daemon crashed: clean up after it and rejoin without "
                              "auto-starting groups (cpro-supervise adds it when it restarts the daemon)"],
    ]

    def postOptions(self):
        if not self["server"]:
            self["server"] = os.uname().nodename.split(".")[0]


def _die(code, message):
    print(f"cpro: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def makeService(options):
    from twisted.internet import reactor

    from cpro.config import load_config
    from cpro.config.model import ConfigError
    from cpro.services.node import ClusterNode

    try:
        config, warnings = load_config(options["config"])
    except ConfigError as e:
        first = e.errors[0] if e.errors else "unknown problem"
        more = f" (and {len(e.errors) - 1} more; run clpcfchk {options['config']})" if len(e.errors) > 1 else ""
        _die(exitcodes.CONFIG_INVALID, f"invalid configuration {options['config']}: {first}{more}")
    for w in warnings:
        print(f"cpro: warning: {w}", file=sys.stderr)
    if config.server(options["server"]) is None:
        names = ", ".join(s.name for s in config.servers)
        _die(exitcodes.UNKNOWN_SERVER, f"server '{options['server']}' is not in {options['config']} "
                                       f"(servers: {names}; use --server)")
    state_dir = os.path.abspath(options["state-dir"])
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        probe = os.path.join(state_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as e:
        _die(exitcodes.PERMISSION_DENIED, f"state directory {state_dir}: {e.strerror}")
    admin = options["admin"]
    if admin.startswith("unix:"):
        sock_dir = os.path.dirname(os.path.abspath(admin[5:].split(":")[0]))
        try:
            os.makedirs(sock_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            _die(exitcodes.PERMISSION_DENIED, f"admin socket directory {sock_dir}: {e.strerror}")
        if not os.access(sock_dir, os.W_OK):
            _die(exitcodes.PERMISSION_DENIED, f"admin socket directory {sock_dir}: permission denied")

    node = ClusterNode(reactor, config, options["server"], state_dir, admin,
                       autostart=not options["no-autostart"], after_crash=bool(options["after-crash"]),
                       config_path=options["config"])
    try:
        node.bind()
    except exitcodes.StartupError as e:
        _die(e.code, str(e))

    def exit_with_code():
        if node.exit_code is not None:
            os._exit(node.exit_code)

    reactor.addSystemEventTrigger("after", "shutdown", exit_with_code)
    return node
