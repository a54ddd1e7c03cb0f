"""Exit codes of the cpro daemon (documented in docs/install.md)."""

OK = 0
INTERNAL_ERROR = 1  # also bad command-line options: twistd prints its usage and exits 1
CONFIG_INVALID = 3  # the configuration file is missing or invalid
UNKNOWN_SERVER = 4  # --server names no server of the configuration
ADDRESS_IN_USE = 5  # a port or the admin socket is in use, or an address is not on this host
PERMISSION_DENIED = 6  # state directory, admin socket or a privileged port not accessible
CONFIG_MISMATCH = 7  # the configuration differs from the master's


class StartupError(Exception):
    """The daemon cannot start; .code is one of the codes above."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
