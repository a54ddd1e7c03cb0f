"""The admin line protocol: the codec of the telnet-like shell the clp* commands talk to.

Pure: bytes and words in, requests out; payloads in, reply bytes out. No I/O,
no reactor. The endpoint that reads the lines, runs the requests and writes
the replies is L{cpro.services.admin}.

One request per line, ``[json] VERB [ARGS...]`` (shell-like quoting)::

    help
    status [detail|groupmap|heartbeats|monitors]
    alerts [N]
    cluster start|stop|restart|suspend|resume [--all]
    group start|stop|move [GROUP] [--server SERVER]
    resource start|stop RESOURCE [--server SERVER]
    monitor suspend|resume|clear [MONITOR] [--server SERVER]
    monitor dummy on|off [MONITOR] [--server SERVER]
    monitor recovery on|off
    config check|push|pull DIR
    quit

This module only parses and validates syntax (L{decode_line},
L{parse_request}); the decision is the handler's (an
L{cpro.interfaces.IAdminHandler}). Replies (L{ok_reply}, L{error_reply}):

  - text mode: the rendered payload (status/alerts views, result lines) and
    always a last line ``OK`` or ``ERR <message>``;
  - json mode (line starts with ``json``): exactly one line
    ``{"result": {"code": 0, "message": ""}, ...payload}``, the original
    product's REST shape; code is non-zero and message set on error.

Result codes: 0 success, 1 operation refused or failed (L{AdminError}),
2 usage error, 3 internal error.
"""

import json
import re
import shlex
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from cpro import statusview

CODE_OK = 0
CODE_FAILED = 1
CODE_USAGE = 2
CODE_INTERNAL = 3

DEFAULT_ALERT_COUNT = 100
MAX_ALERT_COUNT = 1000
MAX_NAME = 255

CLUSTER_ACTIONS = ("start", "stop", "restart", "suspend", "resume")
GROUP_ACTIONS = ("start", "stop", "move")
RESOURCE_ACTIONS = ("start", "stop")
MONITOR_ACTIONS = ("suspend", "resume", "clear")  # plus 'dummy on|off' and 'recovery on|off'
CONFIG_ACTIONS = ("check", "push", "pull")
MAX_PATH = 4096
SWITCHES = {"on": True, "off": False}
STATUS_VIEWS = ("detail", "groupmap", "heartbeats", "monitors")
_ALERT_COUNT = re.compile(r"[0-9]{1,10}")

USAGE = {
    "help": "help",
    "status": "status [detail|groupmap|heartbeats|monitors]",
    "alerts": f"alerts [N]  (N = 1..{MAX_ALERT_COUNT}, default {DEFAULT_ALERT_COUNT})",
    "cluster": "cluster start|stop|restart|suspend|resume [--all]",
    "group": "group start|stop|move [GROUP] [--server SERVER]",
    "resource": "resource start|stop RESOURCE [--server SERVER]",
    "monitor": "monitor suspend|resume|clear [MONITOR] [--server SERVER] | "
               "monitor dummy on|off [MONITOR] [--server SERVER] | monitor recovery on|off",
    "config": "config check|push|pull DIR  (DIR: an absolute path to a configuration directory)",
    "quit": "quit",
}
HELP_LINES = [
    "commands (prefix a line with 'json' for a one-line JSON reply):",
    *(f"  {USAGE[verb]}" for verb in USAGE),
]


@dataclass(frozen=True)
class AdminRequest:
    """One parsed request, as the handler sees it."""

    verb: str  # 'status', 'alerts', 'cluster', 'group', 'resource', 'monitor'
    action: Optional[str] = None  # 'start', 'stop', ...; the view for 'status'
    target: Optional[str] = None  # group, resource or monitor name (None = all); config: the directory
    server: Optional[str] = None  # --server: where to act / move destination
    all: bool = False  # --all: every server (cluster verb)
    count: Optional[int] = None  # alerts N
    switch: Optional[bool] = None  # monitor dummy|recovery on (True) / off (False)


class AdminError(Exception):
    """The handler refused or failed the operation; message is shown to the operator."""

    def __init__(self, message, code=CODE_FAILED):
        super().__init__(message)
        self.message = str(message)
        self.code = code if code else CODE_FAILED


class UsageError(Exception):
    """The line does not follow the grammar."""


def _name(value, what):
    if not value or len(value) > MAX_NAME or not value.isprintable():
        raise UsageError(f"invalid {what} name {value!r}")
    return value


def _take_options(args, allowed):
    """Split '--server S' / '--server=S' / '--all' out of args. Returns (positional, options)."""
    positional, options = [], {}
    i = 0
    while i < len(args):
        arg = args[i]
        key, _, inline = arg.partition("=")
        if key.startswith("--"):
            name = key[2:]
            if name not in allowed:
                raise UsageError(f"unknown option {key}")
            if allowed[name]:  # takes a value
                if inline:
                    value = inline
                elif "=" in arg:
                    raise UsageError(f"option {key} needs a value")
                else:
                    i += 1
                    if i >= len(args):
                        raise UsageError(f"option {key} needs a value")
                    value = args[i]
                options[name] = value
            else:
                if "=" in arg:
                    raise UsageError(f"option {key} takes no value")
                options[name] = True
        else:
            positional.append(arg)
        i += 1
    return positional, options


def parse_request(words):
    """Turn the words of one line (without the 'json' prefix) into an AdminRequest.

    @raise UsageError: with the text to show ('usage: ...' or 'unknown command ...').
    """
    verb, args = words[0], words[1:]
    if verb not in USAGE:
        raise UsageError(f"unknown command {verb!r} (try 'help')")
    usage = UsageError(f"usage: {USAGE[verb]}")
    try:
        if verb in ("help", "quit"):
            if args:
                raise usage
            return AdminRequest(verb)
        if verb == "status":
            if len(args) > 1 or (args and args[0] not in STATUS_VIEWS):
                raise usage
            return AdminRequest(verb, action=args[0] if args else None)
        if verb == "alerts":
            if len(args) > 1:
                raise usage
            count = DEFAULT_ALERT_COUNT
            if args:
                # ASCII digits only, bounded: str.isdigit() accepts '²', which
                # int() refuses, and int() refuses over 4300 digits.
                if not _ALERT_COUNT.fullmatch(args[0]) or not 1 <= int(args[0]) <= MAX_ALERT_COUNT:
                    raise usage
                count = int(args[0])
            return AdminRequest(verb, count=count)
        if verb == "cluster":
            positional, options = _take_options(args, {"all": False})
            if len(positional) != 1 or positional[0] not in CLUSTER_ACTIONS:
                raise usage
            return AdminRequest(verb, action=positional[0], all=bool(options.get("all")))
        if verb == "group":
            positional, options = _take_options(args, {"server": True})
            if not 1 <= len(positional) <= 2 or positional[0] not in GROUP_ACTIONS:
                raise usage
            target = _name(positional[1], "group") if len(positional) == 2 else None
            server = _name(options["server"], "server") if "server" in options else None
            return AdminRequest(verb, action=positional[0], target=target, server=server)
        if verb == "resource":
            positional, options = _take_options(args, {"server": True})
            if len(positional) != 2 or positional[0] not in RESOURCE_ACTIONS:
                raise usage
            server = _name(options["server"], "server") if "server" in options else None
            return AdminRequest(
                verb, action=positional[0], target=_name(positional[1], "resource"), server=server
            )
        if verb == "monitor":
            return _parse_monitor(args, usage)
        if verb == "config":
            if len(args) != 2 or args[0] not in CONFIG_ACTIONS:
                raise usage
            if not args[1].startswith("/") or "\0" in args[1] or len(args[1]) > MAX_PATH:
                raise UsageError(f"not an absolute path: {args[1][:80]!r}")
            return AdminRequest(verb, action=args[0], target=args[1])
    except UsageError as e:
        if str(e).startswith("usage:"):
            raise
        raise UsageError(f"{e}; usage: {USAGE[verb]}") from None
    raise AssertionError(verb)  # pragma: no cover - every verb returns above


def _parse_monitor(args, usage):
    positional, options = _take_options(args, {"server": True})
    if not positional:
        raise usage
    action, rest = positional[0], positional[1:]
    server = _name(options["server"], "server") if "server" in options else None
    if action in MONITOR_ACTIONS:
        if len(rest) > 1:
            raise usage
        target = _name(rest[0], "monitor") if rest else None
        return AdminRequest("monitor", action=action, target=target, server=server)
    if action == "dummy":
        if not 1 <= len(rest) <= 2 or rest[0] not in SWITCHES:
            raise usage
        target = _name(rest[1], "monitor") if len(rest) == 2 else None
        return AdminRequest("monitor", action=action, target=target, server=server, switch=SWITCHES[rest[0]])
    if action == "recovery":
        if len(rest) != 1 or rest[0] not in SWITCHES or server is not None:
            raise usage
        return AdminRequest("monitor", action=action, switch=SWITCHES[rest[0]])
    raise usage


# -- lines ----------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One received line, split: how to answer it and its words."""

    text: str  # as received, decoded (for the log)
    json_mode: bool  # the line started with 'json': one JSON line answers it
    words: tuple  # without the 'json' prefix; empty for an empty line (nothing to answer)


class BadLine(UsageError):
    """A line that cannot be split into words (not UTF-8, unbalanced quotes, a bare 'json')."""

    def __init__(self, message, json_mode=False):
        super().__init__(message)
        self.json_mode = json_mode  # how to answer it, as far as it could be told


def decode_line(raw):
    """Split one received line (bytes, without the newline) into its words.

    @return: a L{Line}; its words are empty for an empty line.
    @raise BadLine: with the text to show and the mode to answer in.
    """
    raw = raw[:-1] if raw.endswith(b"\r") else raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadLine("line is not valid UTF-8") from None
    try:
        words = shlex.split(text)
    except ValueError as e:  # unbalanced quotes
        raise BadLine(f"syntax error: {e}", json_mode=text.split(None, 1)[:1] == ["json"]) from None
    json_mode = bool(words) and words[0] == "json"
    if json_mode:
        words = words[1:]
        if not words:
            raise BadLine("usage: json VERB [ARGS...]", json_mode=True)
    return Line(text, json_mode, tuple(words))


# -- replies --------------------------------------------------------------------


def _json_default(value):
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _one_line(text):
    return " ".join(str(text).splitlines()) or "error"


def encode_lines(lines):
    """The bytes of reply lines, each ended by a newline."""
    return ("\n".join(lines) + "\n").encode("utf-8")


def ok_reply(json_mode, request, payload):
    """The reply to a request the handler carried out, as bytes.

    @param payload: the dict the handler returned.
    @raise TypeError: the payload is not a dict; or whatever rendering a
        malformed payload raises: the whole reply is built before anything is
        written, so the caller can answer with an error instead.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"handler returned {type(payload).__name__}, expected dict")
    if json_mode:
        reply = {"result": {"code": CODE_OK, "message": ""}}
        reply.update((k, v) for k, v in payload.items() if k != "result")
        return encode_lines([json.dumps(reply, default=_json_default, ensure_ascii=False)])
    return encode_lines(render_text(request, payload) + ["OK"])


def help_reply(json_mode):
    """The reply to 'help': the grammar, one line per verb."""
    return ok_reply(json_mode, AdminRequest("help"), {"help": HELP_LINES})


def error_reply(json_mode, code, message):
    """The reply to a request refused or failed (code: one of the CODE_* values)."""
    message = _one_line(message)
    if json_mode:
        return encode_lines([json.dumps({"result": {"code": code, "message": message}})])
    return encode_lines([f"ERR {message}"])


def notice(message):
    """An ERR line sent when no request is being answered (a connection closed
    or refused by the endpoint): text whatever mode the client used."""
    return error_reply(False, CODE_FAILED, message)


def render_text(request, payload):
    """The text-mode lines of a successful reply, without the final OK."""
    if request.verb == "help":
        return list(payload["help"])
    if request.verb == "status":
        return statusview.render_view(request.action, payload).rstrip("\n").split("\n")
    if request.verb == "alerts":
        return statusview.render_alerts(payload).rstrip("\n").split("\n")
    lines = []
    message = payload.get("message")
    if isinstance(message, str) and message:
        lines += message.splitlines()
    elif isinstance(message, list):
        lines += [str(m) for m in message]
    if isinstance(payload.get("servers"), list) and payload["servers"]:
        label = (request.action or "").capitalize()
        lines += statusview.render_operation(payload, label).rstrip("\n").split("\n")
    return lines
