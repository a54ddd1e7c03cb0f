"""Fuzzing the clp.conf loader (cpro.config) and clpcfchk on top of it.

Seeds are the example configurations under examples/ and the configurations
the config unit tests build (every heartbeat kind, NP resources, forced stop,
fip and every monitor type), loaded against one scratch configuration
directory that holds every script they name, a keyfile and BMC password files.
Structured inputs are seeds whose XML was changed: an element's text replaced
by a hostile value (huge digit runs, signs, non-ASCII, paths to a FIFO, a
device or a non-UTF-8 file), elements duplicated, removed, moved, renamed,
nested deep or given hostile names, and the whole written in another
declared encoding.

The contract: loading returns (ClusterConfig, warnings) or raises
ConfigError with at least one Problem; each Problem has a path and a message
(str); nothing else comes out, within the time bound. clpcfchk, run on
some of the inputs, exits 0 or 1 and prints only one-line findings and its
summary.
"""

import copy
import io
import os
import re
import tempfile
import xml.etree.ElementTree as ET

from twisted.trial.unittest import SynchronousTestCase

from cpro.cli import clpcfchk
from cpro.config import ConfigError, load_config_text
from cpro.config.model import ClusterConfig, Problem
from test.fuzz.harness import STRINGS, Finding, FuzzTestMixin, Target
from test.unit import test_config, test_config_partition

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")
_MISSING_SCRIPT = re.compile(r" (/\S+) does not exist\Z")

DIGITS = ("9" * 5000, "-" + "9" * 5000, "0" * 30 + "1", "1" * 4301, "-1", "+0", "-0", "2147483648",
          "18446744073709551616", "1e3", "0x10", " 7 ", "1_000", "\u0661\u0662", "\uff11", "3.5")
ADDRESSES = ("0.0.0.0", "::", "255.255.255.255", "fe80::1%eth0", "10.0.0.1/33", "10.0.0.1/-1",
             "127.0.0.1/" + "9" * 5000, "224.0.0.1", "::ffff:10.0.0.1", "10.0.0.1:99999")
# A valid monitor of every type (as in test.unit.test_config_monitors).
MONITORS = {
    "pidw": "<target>exec2</target>",
    "psw": "<parameters><processname>sshd</processname></parameters>",
    "genw": "<parameters><path>genw.sh</path></parameters>",
    "ipw": '<parameters><list id="0"><ip>127.0.0.1</ip></list></parameters>',
    "miiw": "<parameters><object>eth0</object></parameters>",
    "diskw": ('<parameters><object>/dev/sdb</object><disk id="0"><path>/</path><percent>90</percent>'
              '</disk></parameters>'),
    "userw": "",
    "sraw": "",
    "psrw": "<parameters><processname>java</processname></parameters>",
    "mtw": '<parameters><list id="0"><name>psw1</name></list></parameters>',
    "fipw": "<target>fip1</target>",
    "arpw": "<target>fip1</target>",
}
_RELATION = "<relation><type>grp</type><name>failover1</name></relation>"
MONITOR_SERVERS = "".join(
    f'<server name="srv{n}"><priority>{n - 1}</priority>'
    f'<device id="0"><type>lan</type><info>127.0.0.{n}</info></device>'
    f'<device id="1"><type>lan</type><info>10.0.0.{n}</info></device></server>' for n in (1, 2))
COMMANDS = ('a "b', "''", "$(reboot)", "; rm -rf /", "\\")


def _seed_texts():
    """(name, text) of every seed configuration, before file paths are filled in."""
    texts = []
    for name in sorted(os.listdir(EXAMPLES)):
        path = os.path.join(EXAMPLES, name, "clp.conf")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                texts.append((f"example {name}", f.read()))
    texts.append(("minimal", test_config.conf()))
    texts.append(("full", test_config.FullFileTests.FULL))
    partition = test_config_partition
    bmc_file = ('<device id="600"><type>bmc</type><info>192.168.0.{n}</info><user>admin</user>'
                '<passwordfile>{{PASSWORD}}</passwordfile></device>')
    servers = (partition.server("srv1", 0, 1, partition.devices(1))
               + partition.server("srv2", 1, 2, partition.devices(2, bmc=False) + bmc_file.format(n=2)))
    texts.append(("partition", test_config.conf(cluster=partition.CLUSTER, servers=servers,
                                                heartbeat=partition.EVERY_HEARTBEAT, extra=partition.NP)))
    every = "<monitor>" + "".join(f'<{t} name="{t}1">{body}{_RELATION}</{t}>'
                                  for t, body in sorted(MONITORS.items())) + "</monitor>"
    texts.append(("monitors", test_config.conf(
        servers=MONITOR_SERVERS,
        groups=('<group name="failover1"><resource name="exec@exec1"/><resource name="exec@exec2"/>'
                '<resource name="fip@fip1"/></group>'),
        resources=('<resource><exec name="exec1"/><exec name="exec2"><parameters><act><sync>0</sync></act>'
                   '</parameters></exec><fip name="fip1"><parameters><ip>10.0.0.100</ip></parameters></fip>'
                   '</resource>'),
        extra=every)))
    fip_servers = "".join(
        f'<server name="srv{n}"><priority>{n - 1}</priority>'
        f'<device id="0"><type>lan</type><info>127.0.0.{n}</info></device>'
        f'<device id="1"><type>lan</type><info>10.0.0.{n}/24</info></device></server>' for n in (1, 2))
    texts.append(("fip", test_config.conf(
        servers=fip_servers,
        groups='<group name="failover1"><resource name="exec@exec1"/><resource name="fip@fip1"/></group>',
        resources=('<resource><types name="fip"/><exec name="exec1"/><fip name="fip1"><parameters>'
                   '<ip>10.0.0.100</ip><ping><timeout>1</timeout></ping></parameters></fip></resource>'))))
    return texts


class ConfigTarget(Target):
    name = "config"
    max_size = 8192
    time_bound = 1.0

    def __init__(self):
        self._scratch = None
        self._trees = []
        self._count = 0

    # -- the configuration directory -------------------------------------------

    def _make_base(self):
        """A scratch configuration directory with the files the seeds name."""
        self._scratch = tempfile.TemporaryDirectory(prefix="cpro-fuzz-config-")
        base = self.base = self._scratch.name
        os.makedirs(os.path.join(base, "keys"))
        self.files = {
            "key": self._write("keys/cluster.key", b"key from file\n"),
            "password": self._write("bmc.pw", "p\u00e4ssword\n".encode("utf-8")),
            "latin1": self._write("bmc-latin1.pw", "p\u00e4ssword\n".encode("latin-1")),
            "large": self._write("large.pw", b"x" * 70000),
            "empty": self._write("empty.key", b""),
            "stop": self._write("stop-it", b"#!/bin/sh\nexit 0\n", 0o755),
            "directory": os.path.join(base, "keys"),
            "fifo": os.path.join(base, "fifo"),
            "missing": os.path.join(base, "missing"),
            "device": "/dev/zero",
        }
        os.mkfifo(self.files["fifo"])
        return base

    def _write(self, relative, data, mode=0o600):
        path = os.path.join(self.base, relative)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def _fill_in(self, text):
        return (text.replace("{PASSWORD}", self.files["password"])
                .replace("/opt/stop-it", self.files["stop"]))

    def _provide_scripts(self, text):
        """Create every script the text names under the base until it loads."""
        for _ in range(20):
            try:
                load_config_text(text, self.base)
                return
            except ConfigError as e:
                missing = [m.group(1) for m in (_MISSING_SCRIPT.search(p.message) for p in e.errors) if m]
                missing = [p for p in missing if p.startswith(self.base + os.sep)]
                if not missing:
                    raise AssertionError(f"seed does not load: {e}")
                for path in missing:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    self._write(os.path.relpath(path, self.base), b"#!/bin/sh\nexit 0\n", 0o755)

    def seeds(self, rng):
        self._make_base()
        seeds = []
        for _, text in _seed_texts():
            text = self._fill_in(text)
            self._provide_scripts(text)
            data = text.encode("utf-8")
            seeds.append(data)
            self._trees.append(ET.fromstring(data))
        return seeds

    # -- structured inputs ----------------------------------------------------------

    def _hostile_text(self, rng):
        kind = rng.randrange(6)
        if kind == 0:
            return rng.choice(DIGITS)
        if kind == 1:
            return rng.choice(STRINGS)
        if kind == 2:
            return rng.choice(ADDRESSES)
        if kind == 3:
            return rng.choice(list(self.files.values()) + ["keys/../keys/cluster.key", "/", "."])
        if kind == 4:
            return rng.choice(COMMANDS)
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 30)))

    def _edit(self, root, rng):
        """One structural change somewhere in the tree."""
        parents = {child: parent for parent in root.iter() for child in parent}
        elements = list(root.iter())
        element = rng.choice(elements)
        parent = parents.get(element)
        op = rng.randrange(9)
        if op <= 2:
            element.text = self._hostile_text(rng)
        elif op == 3 and parent is not None:
            parent.insert(list(parent).index(element), copy.deepcopy(element))
        elif op == 4 and parent is not None:
            parent.remove(element)
        elif op == 5:
            child = ET.SubElement(element, rng.choice([e.tag for e in elements]))
            child.text = self._hostile_text(rng)
        elif op == 6:
            node = element
            for _ in range(rng.choice((5, 31, 33, 200))):
                node = ET.SubElement(node, rng.choice(("x", element.tag)))
        elif op == 7:
            element.set(rng.choice(("name", "id")), self._hostile_text(rng)[:200])
        elif op == 8 and parent is not None:
            target = rng.choice(elements)
            if element not in target.iter():
                parent.remove(element)
                target.append(element)
        else:
            element.tag = rng.choice([e.tag for e in elements])

    def structured(self, rng):
        root = copy.deepcopy(rng.choice(self._trees))
        for _ in range(rng.randrange(1, 4)):
            self._edit(root, rng)
        text = ET.tostring(root, encoding="unicode")
        encoding = None
        if rng.random() < 0.2:  # most inputs test the values, some the declared encoding
            encoding = rng.choice(("UTF-8", "EUC-JP", "Shift_JIS", "utf-16", "latin-1", "punycode", "utf-7",
                                   "unicode_escape", "x-nonsense", "rot13"))
        if encoding is None:
            return text.encode("utf-8", "surrogatepass")
        text = f'<?xml version="1.0" encoding="{encoding}"?>\n' + text
        try:
            return text.encode(encoding, "replace")
        except (LookupError, UnicodeError):
            return text.encode("utf-8", "surrogatepass")

    # -- the contract -----------------------------------------------------------------

    def check(self, data):
        self._count += 1
        source = data
        if self._count % 5 == 0:  # callers also hand the loader text
            try:
                source = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
        try:
            config, warnings = load_config_text(source, self.base, source_name="fuzz.conf")
        except ConfigError as e:
            if not e.errors:
                raise Finding("ConfigError without errors")
            self._check_problems(e.errors + e.warnings)
        else:
            if not isinstance(config, ClusterConfig):
                raise Finding(f"loaded {type(config).__name__}, not a ClusterConfig")
            self._check_problems(warnings)
        if self._count % 10 == 0:
            self._check_clpcfchk(data)

    def _check_problems(self, problems):
        for p in problems:
            if not isinstance(p, Problem) or not isinstance(p.path, str) or not isinstance(p.message, str):
                raise Finding(f"not a Problem with a str path and message: {p!r}")
            if not p.path or not p.message:
                raise Finding(f"a problem without a path or message: {p!r}")

    def _check_clpcfchk(self, data):
        path = os.path.join(self.base, "clp.conf")
        with open(path, "wb") as f:
            f.write(data)
        out, err = io.StringIO(), io.StringIO()
        code = clpcfchk.main([path], stdout=out, stderr=err)
        if code not in (clpcfchk.EXIT_VALID, clpcfchk.EXIT_ERRORS):
            raise Finding(f"clpcfchk exited {code} on a readable file")
        if err.getvalue():
            raise Finding(f"clpcfchk wrote to stderr: {err.getvalue()[:200]!r}")
        for line in out.getvalue().splitlines():
            if not line.startswith(("error: ", "warning: ", "clpcfchk: ")):
                raise Finding(f"clpcfchk printed a line that is no finding: {line[:200]!r}")


class ConfigFuzzTests(FuzzTestMixin, SynchronousTestCase):
    target = ConfigTarget()
    inputs = 2000  # loading takes up to a few milliseconds
