"""What the clp* commands share: reaching the daemon's admin port, exit codes.

The commands are thin, blocking clients: each sends one ``json <request>``
line and reads one JSON reply line (see L{cpro.protocols.admin}).

Exit codes (all commands):
  0  success
  1  the daemon refused or failed the operation (its message on stderr)
  2  usage error (bad options; also when the daemon rejects the request syntax)
  3  the daemon cannot be reached or gave no usable answer
"""

import argparse
import json
import os
import shlex
import socket
import sys

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

ENV_ADMIN = "CPRO_ADMIN"
DEFAULT_ENDPOINT = "unix:/run/cpro/cpro.sock"
MAX_REPLY = 64 * 1024 * 1024  # a status or alerts reply is far smaller; bounds a bad peer
STATUS_TIMEOUT = 30.0
# Group and cluster operations wait for scripts with their own timeouts
# (minutes); the command waits as long as the original's does, i.e. until done.
OPERATION_TIMEOUT = 3600.0


class DaemonUnreachable(Exception):
    """No usable answer from the daemon (exit code 3); str() is the message to print."""


class UsageExit(Exception):
    """Raised by CommandParser instead of sys.exit, so main() can return a code."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def default_endpoint():
    return os.environ.get(ENV_ADMIN) or DEFAULT_ENDPOINT


def parse_endpoint(endpoint):
    """'unix:/path' | '/path' | 'tcp:HOST:PORT' -> (family, address).

    @raise ValueError: for anything else.
    """
    if endpoint.startswith("unix:"):
        path = endpoint[5:]
        if not path:
            raise ValueError(f"no path in admin endpoint {endpoint!r}")
        return socket.AF_UNIX, path
    if endpoint.startswith("tcp:"):
        host, _, port = endpoint[4:].rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"admin endpoint {endpoint!r} is not tcp:HOST:PORT")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, (host, int(port))
    if endpoint.startswith("/") or (":" not in endpoint and endpoint):
        return socket.AF_UNIX, endpoint
    raise ValueError(f"admin endpoint {endpoint!r} is not unix:PATH, a path or tcp:HOST:PORT")


def _display(endpoint):
    return endpoint if ":" in endpoint else f"unix:{endpoint}"


def admin_request(endpoint, line, timeout=STATUS_TIMEOUT):
    """Send ``json <line>`` to the daemon and return its reply dict.

    The reply always has {"result": {"code", "message"}}.
    @raise DaemonUnreachable: connection refused, no socket, timeout, garbled reply.
    @raise ValueError: the endpoint string is malformed.
    """
    family, address = parse_endpoint(endpoint)
    where = _display(endpoint)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(address)
        except OSError as e:
            reason = e.strerror or str(e)
            raise DaemonUnreachable(
                f"cannot reach the cpro daemon at {where}: {reason} (is it running? use --admin)"
            ) from None
        data = b""
        try:
            sock.sendall(b"json " + line.encode("utf-8") + b"\n")
            while b"\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_REPLY:
                    raise DaemonUnreachable(f"reply from the cpro daemon at {where} is too large")
        except socket.timeout:
            raise DaemonUnreachable(
                f"no reply from the cpro daemon at {where} within {timeout:g} s"
                " (the operation may still be in progress; see clpstat)"
            ) from None
        except OSError as e:
            raise DaemonUnreachable(
                f"connection to the cpro daemon at {where} failed: {e.strerror or e}"
            ) from None
    finally:
        sock.close()
    reply_line, newline, _ = data.partition(b"\n")
    if not newline:
        raise DaemonUnreachable(f"the cpro daemon at {where} closed the connection without a reply")
    text = reply_line.decode("utf-8", "replace").rstrip("\r")
    if text.startswith("ERR "):
        # Errors the daemon reports before it could parse the line (too long...).
        return {"result": {"code": EXIT_FAILED, "message": text[4:]}}
    try:
        reply = json.loads(text)
    except ValueError:
        raise DaemonUnreachable(f"unexpected reply from {where}: {text[:200]!r}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("result"), dict):
        raise DaemonUnreachable(f"unexpected reply from {where}: {text[:200]!r}")
    return reply


def request_line(*words):
    """Join words into one admin line, quoting what needs it."""
    return " ".join(shlex.quote(str(w)) for w in words if w is not None)


class CommandParser(argparse.ArgumentParser):
    """argparse writing to given streams and raising UsageExit instead of exiting.

    -h is left free (clpgrp/clprsc use it for the host, as the original);
    help is --help.
    """

    def __init__(self, *args, out=None, err=None, **kwargs):
        kwargs.setdefault("add_help", False)
        super().__init__(*args, **kwargs)
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self.add_argument("--help", action="help", help="show this help and exit")
        self.add_argument(
            "--admin",
            metavar="ENDPOINT",
            default=None,
            help=f"daemon admin endpoint: unix:PATH, PATH or tcp:HOST:PORT"
            f" (default: ${ENV_ADMIN} or {DEFAULT_ENDPOINT})",
        )
        self.add_argument(
            "--timeout",
            metavar="SECONDS",
            type=float,
            default=None,
            help=f"how long to wait for the daemon's answer (default {STATUS_TIMEOUT:g} s for"
            f" views, {OPERATION_TIMEOUT:g} s for operations)",
        )

    def print_help(self, file=None):
        super().print_help(file or self._out)

    def print_usage(self, file=None):
        super().print_usage(file or self._out)

    def exit(self, status=0, message=None):
        if message:
            self._err.write(message)
        raise UsageExit(status)

    def error(self, message):
        self.print_usage(self._err)
        self._err.write(f"{self.prog}: error: {message}\n")
        raise UsageExit(EXIT_USAGE)


class Command:
    """Shared plumbing of one invocation: streams, endpoint, request, codes."""

    def __init__(self, prog, stdout=None, stderr=None):
        self.prog = prog
        self.out = stdout or sys.stdout
        self.err = stderr or sys.stderr

    def parser(self, description):
        return CommandParser(prog=self.prog, description=description, out=self.out, err=self.err)

    def fail(self, message, code):
        self.err.write(f"{self.prog}: {message}\n")
        return code

    def call(self, endpoint, line, timeout):
        """Send a request. Returns (exit code, reply); reply is None unless code is 0."""
        endpoint = endpoint or default_endpoint()
        try:
            reply = admin_request(endpoint, line, timeout=timeout)
        except ValueError as e:
            return self.fail(str(e), EXIT_USAGE), None
        except DaemonUnreachable as e:
            return self.fail(str(e), EXIT_UNREACHABLE), None
        result = reply["result"]
        code = result.get("code", EXIT_FAILED)
        if code:
            message = result.get("message") or "the daemon reported a failure"
            return self.fail(message, EXIT_USAGE if code == EXIT_USAGE else EXIT_FAILED), None
        return EXIT_OK, {k: v for k, v in reply.items() if k != "result"}

    def operate(self, args, line):
        """Run an operation and print the original's 'Command succeeded.'."""
        code, _ = self.call(args.admin, line, args.timeout or OPERATION_TIMEOUT)
        if code == EXIT_OK:
            self.out.write("Command succeeded.\n")
        return code


def run_main(body, argv):
    """Run a command body(argv) and turn UsageExit into its exit code."""
    try:
        return body(argv)
    except UsageExit as e:
        return e.code
