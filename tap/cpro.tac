"""The cpro daemon as a .tac file, for `twistd -ny tap/cpro.tac` (foreground) or `twistd -y`.

The plugin form (`twistd -n cpro --config ... --server ...`) is the usual way;
this file serves setups that start Twisted applications from .tac files. It
takes its settings from the environment, as the systemd unit and init script
do (/etc/default/cpro):

    CPRO_CONFIG     clp.conf path            (default /etc/cpro/clp.conf)
    CPRO_SERVER     this server's name       (default: the short host name)
    CPRO_ADMIN      admin endpoint           (default unix:/run/cpro/cpro.sock)
    CPRO_STATE_DIR  logs and state           (default /var/lib/cpro)
    CPRO_OPTS       further daemon options, e.g. --no-autostart

Start-up refusals exit with the same codes as the plugin (docs/install.md).

Under the supervisor (docs/operations.md, "When the daemon crashes"):

    cpro-supervise -- twistd -ny tap/cpro.tac

cpro-supervise reads the same CPRO_* variables to find the configuration and
the state directory. It cannot add --after-crash to a .tac command line; a
daemon it restarts learns of the crash from the crash note the supervisor
leaves in the state directory, and behaves the same.
"""

import os
import shlex

from twisted.application import service

from cpro import tap

_argv = ["--config", os.environ.get("CPRO_CONFIG") or "/etc/cpro/clp.conf",
         "--admin", os.environ.get("CPRO_ADMIN") or tap.DEFAULT_ADMIN,
         "--state-dir", os.environ.get("CPRO_STATE_DIR") or tap.DEFAULT_STATE_DIR]
if os.environ.get("CPRO_SERVER"):
    _argv += ["--server", os.environ["CPRO_SERVER"]]
_argv += shlex.split(os.environ.get("CPRO_OPTS", ""))

_options = tap.Options()
_options.parseOptions(_argv)

application = service.Application("cpro")
tap.makeService(_options).setServiceParent(application)
