"""Exit codes of the cpro daemon (documented in docs/operations.md)."""

OK = 0
INTERNAL_ERROR = 1
USAGE = 2  # bad command-line options (twistd's own)
CONFIG_INVALID = 3  # the configuration file is missing or invalid
UNKNOWN_SERVER = 4  # --server names no server of the configuration
ADDRESS_IN_USE = 5  # a port or the admin socket is in use, or an address is not on this host
PERMISSION_DENIED = 6  # state directory, admin socket or a privileged port not accessible
CONFIG_MISMATCH = 7  # the configuration differs from the master's

NAMES = {
    OK: "ok",
    INTERNAL_ERROR: "internal error",
    USAGE: "usage error",
    CONFIG_INVALID: "invalid configuration",
    UNKNOWN_SERVER: "unknown server name",
    ADDRESS_IN_USE: "address in use or not available",
    PERMISSION_DENIED: "permission denied",
    CONFIG_MISMATCH: "configuration differs from the master's",
}


class StartupError(Exception):
    """The daemon cannot start; .code is one of the codes above."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
