"""clpcfchk: check a clp.conf file before it is used.

    clpcfchk FILE [--json]

Prints every error and warning (one per line, `error: PATH: message`,
control characters escaped), then a summary. Exit status: 0 valid
(warnings allowed), 1 errors found, 2 usage error or unreadable file.
Besides the loader's checks it looks at the local host where that is
cheap: OS-action commands present, keyfile not readable by others, user
log directories present (all as warnings).
"""

import argparse
import json
import os
import shutil
import stat
import sys
import unicodedata
import xml.etree.ElementTree as ET

from cpro.config import ConfigError, ConfigFileError, load_config
from cpro.config.model import Problem

EXIT_VALID = 0
EXIT_ERRORS = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    # argparse would call sys.exit itself; main() returns the status instead.
    def error(self, message):
        raise _UsageError(message)


def _parser():
    parser = _Parser(prog="clpcfchk", description="Check a cpro clp.conf configuration file.")
    parser.add_argument("file", metavar="FILE", help="the clp.conf to check")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    return parser


def environment_warnings(config, config_path):
    """Warnings about the local host that the loader does not check."""
    found = []
    for tag, argv in (("shutdown", config.os_actions.shutdown),
                      ("reboot", config.os_actions.reboot)):
        program = argv[0]
        if shutil.which(program) is None:
            found.append(Problem(f"/root/cluster/osaction/{tag}",
                                 f"command {program!r} is not found on this host"))
    for resource in config.resources:
        userlog = getattr(resource.params, "userlog", None)
        if userlog and not os.path.isdir(os.path.dirname(userlog)):
            found.append(Problem(f"/root/resource/{resource.type}@{resource.name}/parameters/userlog",
                                 f"directory {os.path.dirname(userlog)} does not exist"))
    found.extend(_keyfile_warnings(config, config_path))
    return found


def _keyfile_warnings(config, config_path):
    try:
        keyfile = ET.fromstring(config.source).findtext("cluster/keyfile")
    except ET.ParseError:
        return []
    if not keyfile:
        return []
    path = os.path.join(os.path.dirname(os.path.abspath(config_path)), keyfile.strip())
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return []
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return [Problem("/root/cluster/keyfile",
                        f"keyfile {path} is accessible by group or others "
                        f"(mode {stat.S_IMODE(mode):04o}); use 0600")]
    return []


def printable(text):
    """text with control and format characters escaped.

    Paths carry attribute values from the file: a newline would split a
    problem over two lines, a terminal escape or bidi override would
    change what the operator sees.
    """
    if text.isprintable():
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if _hidden(c) else c for c in text)


def _hidden(c):
    """True for a character that moves the cursor or hides (controls, separators)."""
    category = unicodedata.category(c)
    return category[0] == "C" or category in ("Zl", "Zp")


def _report(out, path, errors, warnings, as_json, digest=None):
    if as_json:
        json.dump({
            "file": path,
            "valid": not errors,
            "errors": [{"path": p.path, "message": p.message} for p in errors],
            "warnings": [{"path": p.path, "message": p.message} for p in warnings],
            "digest": digest,
        }, out, indent=2)
        out.write("\n")
        return
    for p in errors:
        out.write(f"error: {printable(p.path)}: {printable(p.message)}\n")
    for p in warnings:
        out.write(f"warning: {printable(p.path)}: {printable(p.message)}\n")
    path = printable(path)
    if errors:
        out.write(f"clpcfchk: {path}: {len(errors)} error(s), {len(warnings)} warning(s)\n")
    else:
        out.write(f"clpcfchk: {path} is valid ({len(warnings)} warning(s))\n")


def main(argv=None, stdout=None, stderr=None):
    """Entry point; returns the exit status."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    try:
        options = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except _UsageError as e:
        stderr.write(_parser().format_usage())
        stderr.write(f"clpcfchk: error: {e}\n")
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        config, warnings = load_config(options.file)
    except ConfigFileError as e:
        _report(stdout, options.file, e.errors, e.warnings, options.json)
        return EXIT_USAGE
    except ConfigError as e:
        _report(stdout, options.file, e.errors, e.warnings, options.json)
        return EXIT_ERRORS
    warnings = tuple(warnings) + tuple(environment_warnings(config, options.file))
    _report(stdout, options.file, (), warnings, options.json, config.digest)
    return EXIT_VALID


if __name__ == "__main__":
    sys.exit(main())
