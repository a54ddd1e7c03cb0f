"""Loading clp.conf: parse -> validate -> immutable L{ClusterConfig}.

    config, warnings = load_config("/etc/cpro/clp.conf")

Every problem of a file is reported at once: L{ConfigError} carries all
errors (and the warnings found on the way), each a L{Problem} naming the
element in the original's path language. Warnings name elements cpro does
not act on (yet); nothing is dropped without one.

Loading reads the file, the keyfile and checks that scripts exist: small,
local, blocking I/O meant for start-up or a reload, not for a busy reactor.
"""

import dataclasses
import os

from cpro.config.model import ClusterConfig, ConfigError, Problem
from cpro.config.validate import load_tree
from cpro.config.xmltree import (
    MAX_CONFIG_BYTES,
    ConfigSyntaxError,
    Report,
    decode,
    digest,
    parse,
)

__all__ = ["load_config", "load_config_text", "ConfigError", "ConfigFileError",
           "ClusterConfig", "Problem"]


class ConfigFileError(ConfigError):
    """The file itself could not be read (missing, unreadable, a directory).

    A ConfigError, so callers need not care; clpcfchk tells it apart to exit 2.
    """


def load_config(path):
    """Load and validate a clp.conf file.

    @return: (ClusterConfig, warnings) where warnings is a tuple of Problem.
    @raise ConfigError: with every error found (ConfigFileError when the
        file cannot be read).
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigFileError([Problem(path, f"cannot read: {e.strerror or e}")])
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([Problem(path, f"file is larger than {MAX_CONFIG_BYTES} bytes")])
    try:
        text = decode(data)
    except ConfigSyntaxError as e:
        raise ConfigError([Problem(path, str(e))])
    base_dir = os.path.dirname(os.path.abspath(path))
    return load_config_text(text, base_dir, source_name=path)


def load_config_text(text, base_dir, source_name="<text>"):
    """Load and validate clp.conf text (str, or bytes decoded per its declaration).

    base_dir is the configuration directory: relative script paths resolve
    to base_dir/scripts/<group>/<resource>/ and a relative keyfile to
    base_dir. source_name names the text in syntax-error problems.
    """
    try:
        if isinstance(text, bytes):
            text = decode(text)
        text = text.removeprefix("\ufeff")
        root = parse(text)
    except ConfigSyntaxError as e:
        raise ConfigError([Problem(e.path or source_name, str(e))])
    report = Report()
    config = load_tree(root, base_dir, report)
    warnings = tuple(report.warnings)
    if config is None:
        raise ConfigError(report.errors, warnings)
    return dataclasses.replace(config, digest=digest(text), source=text), warnings
