"""Reading clp.conf safely and walking it in the original's path language.

This module turns bytes or text into an ElementTree (refusing DOCTYPE and
entity declarations, oversized files and absurd nesting, so no entity
expansion or quadratic walk can happen), reads the small files a clp.conf
names (keyfile, password files) without blocking on a FIFO or reading past a
bound, computes the configuration digest, and offers L{Node}: an element with its
clp.conf path (C{/root/group@failover1/policy@srv1}) that reads typed values,
records problems, and reports the children nobody asked for, so that no
element is ever silently ignored.
"""

import codecs
import hashlib
import os
import re
import stat
import xml.etree.ElementTree as ET

from cpro.config.model import Problem

MAX_CONFIG_BYTES = 10 * 1024 * 1024
# clp.conf is at most about eight levels deep; canonicalisation (the digest)
# is quadratic in the depth, so a file nested thousands deep would stall a load.
MAX_DEPTH = 32
# A 64-bit value has 20 characters with its sign; longer text is never a
# useful value, and int() refuses runs past 4300 digits with a ValueError.
MAX_INTEGER_CHARS = 24
# Longer values are shown cut short in messages (one readable line each).
MAX_SHOWN_CHARS = 40

# Codecs Python knows that are not character sets of a text file: they turn
# escapes into markup (\u003c -> <), produce lone surrogates or fail
# with their own exceptions. CLUSTERPRO writes UTF-8, EUC-JP or Shift_JIS.
_NOT_CHARSETS = frozenset({"idna", "punycode", "unicode_escape", "raw_unicode_escape",
                           "undefined", "utf_7"})

# Elements whose path form uses the 'id' attribute instead of 'name'
# (REFERENCE 1.2: clpconfin.c).
_ID_KEYED = frozenset({"device", "list", "hba", "grp", "servers", "netdev", "smtpsrv", "snmpsrv"})

# Metadata accepted anywhere without comment: it carries nothing cpro acts on.
SILENT_ELEMENTS = frozenset({"comment", "uuid"})

_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_DECLARED_ENCODING = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_FORBIDDEN = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def unsupported_parameter(node):
    """The warning for a parameter of the original that cpro does not act on."""
    return f"<{node.tag}> is not supported by cpro yet and is ignored"


class ConfigSyntaxError(Exception):
    """The text is not a clp.conf we are willing to parse; str() says why.

    An optional path names the element at fault (else the source file).
    """

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


def shown(text):
    """text as it appears in a message: quoted, escaped, cut short when long."""
    if len(text) <= MAX_SHOWN_CHARS:
        return repr(text)
    return f"{text[:MAX_SHOWN_CHARS // 2]!r}... ({len(text)} characters)"


class Report:
    """Collects every error and warning of one load, in the order found."""

    def __init__(self):
        self.errors = []
        self.warnings = []

    def error(self, path, message):
        self.errors.append(Problem(path, message))

    def warning(self, path, message):
        self.warnings.append(Problem(path, message))


def decode(data):
    """Bytes of a clp.conf -> text, honouring a BOM or the XML declaration.

    CLUSTERPRO may save EUC-JP or SJIS files; expat only knows a few
    encodings, so the text is decoded here and parsed as str.
    """
    if data.startswith(codecs.BOM_UTF8):
        encoding, data = "utf-8", data[len(codecs.BOM_UTF8):]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        match = _DECLARED_ENCODING.match(data[:200])
        encoding = match.group(1).decode("ascii") if match else "utf-8"
    _check_charset(encoding)
    try:
        return data.decode(encoding)
    except LookupError:  # a codec that is not bytes -> str (rot13, zlib, ...)
        raise ConfigSyntaxError(f"unknown encoding {encoding!r} in the XML declaration")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigSyntaxError(f"not valid {encoding} text: line {line}, byte {e.start}")
    except ValueError as e:  # UnicodeError and kin raised by a codec's own checks
        raise ConfigSyntaxError(f"not valid {encoding} text: {e}")


def _check_charset(encoding):
    """Refuse an encoding name Python does not know or that is no character set."""
    try:
        name = codecs.lookup(encoding).name.replace("-", "_")
    except LookupError:
        raise ConfigSyntaxError(f"unknown encoding {encoding!r} in the XML declaration")
    if name in _NOT_CHARSETS:
        raise ConfigSyntaxError(f"encoding {encoding!r} in the XML declaration is not a "
                                f"character set for a clp.conf; use UTF-8")


def parse(text):
    """Text -> the <root> Element. Raises ConfigSyntaxError."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigSyntaxError(f"file is larger than {MAX_CONFIG_BYTES} bytes")
    forbidden = _FORBIDDEN.search(text)
    if forbidden:
        line = text.count("\n", 0, forbidden.start()) + 1
        raise ConfigSyntaxError(
            f"<!{forbidden.group(1).upper()}> is not allowed in clp.conf (line {line})"
        )
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ConfigSyntaxError(f"XML syntax error: {e}")
    except ValueError as e:  # a str that is no XML text (a lone surrogate)
        raise ConfigSyntaxError(f"not XML text: {e}")
    if root.tag != "root":
        raise ConfigSyntaxError(f"the document element is {shown(root.tag)}, expected <root>")
    _check_depth(root)
    return root


def _check_depth(root):
    """Refuse elements nested deeper than MAX_DEPTH, naming the first one."""
    # ElementPath walks level by level (no recursion, linear in the elements).
    too_deep = root.find("/".join(["*"] * MAX_DEPTH))
    if too_deep is None:
        return
    parents = {child: parent for parent in root.iter() for child in parent}
    chain = [too_deep]
    while chain[-1] in parents and parents[chain[-1]] is not root:
        chain.append(parents[chain[-1]])
    path = "/".join(["/root"] + [segment(e) for e in reversed(chain)])
    raise ConfigSyntaxError(f"elements are nested more than {MAX_DEPTH} levels deep", path)


def read_small_file(path, limit, what="file"):
    """The bytes of the regular file path, at most limit bytes long.

    Opened without blocking (a FIFO would stall the load forever) and read
    only to limit + 1 bytes. Raises ConfigSyntaxError with a message that
    names what the file is for and its path.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise ConfigSyntaxError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigSyntaxError(f"{what} {path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ConfigSyntaxError(f"cannot read {what} {path}: {e.strerror or e}")
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ConfigSyntaxError(f"{what} {path} is larger than {limit} bytes")
    return data


def digest(text):
    """sha256 hex of the canonical form: blind to whitespace, comments, attribute order."""
    canonical = ET.canonicalize(text, strip_text=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def segment(element):
    """The path segment of an element: tag, or tag@name / tag@id."""
    key = "id" if element.tag in _ID_KEYED else "name"
    value = element.get(key)
    return element.tag if value is None else f"{element.tag}@{value}"


class Node:
    """An element, its clp.conf path, and the children consumed so far."""

    def __init__(self, element, path, report):
        self.element = element
        self.path = path
        self.report = report
        self._consumed = set()
        self._duplicates_reported = set()

    @property
    def tag(self):
        return self.element.tag

    def attr(self, name):
        return self.element.get(name)

    def _wrap(self, child):
        return Node(child, f"{self.path}/{segment(child)}", self.report)

    def child(self, tag):
        """The one child named tag (or None); a repeated element is an error."""
        found = [c for c in self.element if c.tag == tag]
        self._consumed.add(tag)
        if not found:
            return None
        if tag not in self._duplicates_reported:
            self._duplicates_reported.add(tag)
            for extra in found[1:]:
                self.report.error(f"{self.path}/{segment(extra)}", f"<{tag}> is given more than once")
        return self._wrap(found[0])

    def children(self, tag):
        self._consumed.add(tag)
        return [self._wrap(c) for c in self.element if c.tag == tag]

    def ignore(self, *tags):
        """Accept these children without reading them (documented as ignored)."""
        self._consumed.update(tags)

    def unconsumed(self):
        """Children no reader asked for, as Nodes, in document order."""
        return [self._wrap(c) for c in self.element
                if c.tag not in self._consumed and c.tag not in SILENT_ELEMENTS]

    def finish(self, explain=None):
        """Warn about every child that was not consumed.

        explain(node) may return a specific message for a known but
        unsupported element; otherwise the element is reported as unknown.
        """
        for node in self.unconsumed():
            message = explain(node) if explain else None
            self.report.warning(node.path, message or f"unknown element <{node.tag}> is ignored")

    def text(self):
        """Stripped text of this element ('' when empty)."""
        return (self.element.text or "").strip()

    def string(self, tag, default=None):
        """Text of child tag, default when the child is absent."""
        node = self.child(tag)
        if node is None:
            return default
        return node.text()

    def integer(self, tag, default=None, limits=None, required=False):
        """Integer value of child tag, checked against limits.

        Returns default when absent (error if required), None when invalid
        (after recording an error naming the child's path).
        """
        node = self.child(tag)
        if node is None:
            if required:
                self.report.error(f"{self.path}/{tag}", f"<{tag}> is required")
            return default
        return node.as_integer(limits)

    def as_integer(self, limits=None):
        return check_integer(self.text(), self.path, self.report, limits)


def check_integer(text, path, report, limits=None):
    """Parse a decimal integer and check it; record an error and return None if bad."""
    if len(text) > MAX_INTEGER_CHARS or not _INTEGER.match(text):
        report.error(path, f"{shown(text)} is not an integer")
        return None
    value = int(text)
    if isinstance(limits, frozenset):
        if value not in limits:
            allowed = ", ".join(str(v) for v in sorted(limits))
            report.error(path, f"{value} is not one of {allowed}")
            return None
    elif limits is not None:
        low, high = limits
        if not low <= value <= high:
            report.error(path, f"{value} is out of range ({low}-{high})")
            return None
    return value


class Subtree:
    """The sections under one element, read by relative path ('garp/repeat/delay').

    A section read twice is the same L{Node}, so what it consumed adds up;
    L{finish} then warns about every child of every section visited that no
    reader asked for.
    """

    def __init__(self, node):
        self.node = node
        self._sections = {"": node}

    @property
    def path(self):
        return self.node.path

    def section(self, relative):
        """The Node at relative ('' is the element itself), or None when absent."""
        if relative in self._sections:
            return self._sections[relative]
        parent_path, _, tag = relative.rpartition("/")
        parent = self.section(parent_path)
        node = parent.child(tag) if parent is not None else None
        self._sections[relative] = node
        return node

    def leaf(self, relative):
        """(section holding the value, its tag, the value's full path)."""
        parent_path, _, tag = relative.rpartition("/")
        return self.section(parent_path), tag, f"{self.node.path}/{relative}"

    def string(self, relative, default=None):
        parent, tag, _ = self.leaf(relative)
        return parent.string(tag, default) if parent is not None else default

    def integer(self, relative, default=None, limits=None):
        parent, tag, _ = self.leaf(relative)
        return parent.integer(tag, default, limits) if parent is not None else default

    def given(self, relative):
        """True when the element at relative is present."""
        parent, tag, _ = self.leaf(relative)
        return parent is not None and parent.child(tag) is not None

    def finish(self, explain=None):
        for node in self._sections.values():
            if node is not None:
                node.finish(explain)
