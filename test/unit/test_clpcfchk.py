"""Tests for the clpcfchk command: output lines, JSON, exit codes."""

import io
import json
import os

from twisted.trial.unittest import SynchronousTestCase

from cpro.cli.clpcfchk import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VALID = """<root>
  <cluster><name>c1</name><key>k</key>
    <osaction><shutdown>/bin/true</shutdown><reboot>/bin/true</reboot></osaction></cluster>
  <server name="srv1"><priority>0</priority>
    <device id="0"><type>lan</type><info>127.0.0.1</info></device></server>
  <heartbeat><lanhb name="lanhb1"><priority>0</priority><device>0</device></lanhb></heartbeat>
  <group name="failover1"><resource name="exec@exec1"/></group>
  <resource><exec name="exec1"/></resource>
  {extra}
</root>
"""

BROKEN = """<root>
  <cluster><heartbeat><interval>3000</interval><timeout>1000</timeout></heartbeat></cluster>
  <server name="srv1"><priority>0</priority>
    <device id="0"><type>lan</type><info>169.254.0.1</info></device></server>
  <heartbeat><lanhb name="lanhb1"><priority>0</priority><device>0</device></lanhb></heartbeat>
  <group name="failover1"><resource name="exec@exec1"/><exclusive>9</exclusive></group>
  <resource><exec name="exec1"/><md name="md1"/></resource>
</root>
"""


class ClpcfchkTests(SynchronousTestCase):
    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        directory = os.path.join(self.base, "scripts", "failover1", "exec1")
        os.makedirs(directory)
        start = os.path.join(directory, "start.sh")
        with open(start, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(start, 0o755)

    def write(self, text, name="clp.conf"):
        path = os.path.join(self.base, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_main(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def test_valid(self):
        path = self.write(VALID.format(extra=""))
        code, out, err = self.run_main(path)
        self.assertEqual(code, 0)
        self.assertEqual(out, f"clpcfchk: {path} is valid (0 warning(s))\n")
        self.assertEqual(err, "")

    def test_valid_with_warnings(self):
        path = self.write(VALID.format(extra="<messages/>"))
        code, out, _ = self.run_main(path)
        self.assertEqual(code, 0)
        self.assertEqual(out.splitlines(), [
            "warning: /root/messages: alert destination settings are not supported yet: "
            "<messages> is ignored",
            f"clpcfchk: {path} is valid (1 warning(s))",
        ])

    def test_several_errors(self):
        path = self.write(BROKEN)
        code, out, _ = self.run_main(path)
        self.assertEqual(code, 1)
        lines = out.splitlines()
        for expected in (
            "error: /root/cluster/name: the cluster name is required",
            "error: /root/cluster/heartbeat/timeout: heartbeat timeout 1000 ms must be longer "
            "than the interval 3000 ms",
            "error: /root/server@srv1/device@0/info: lan device address 169.254.0.1 is "
            "link-local; use a routable or loopback address",
            "error: /root/group@failover1/exclusive: 9 is not one of 0, 1, 2",
            "warning: /root/resource/md@md1: resource type 'md' is not supported yet: "
            "md1 is ignored",
        ):
            self.assertIn(expected, lines)
        self.assertTrue(any(line.startswith("error: /root/cluster/key: ") for line in lines))
        self.assertEqual(lines[-1], f"clpcfchk: {path}: 5 error(s), 1 warning(s)")
        # Errors come before warnings.
        kinds = [line.split(":")[0] for line in lines[:-1]]
        self.assertEqual(kinds, ["error"] * 5 + ["warning"])

    def test_json(self):
        path = self.write(BROKEN)
        code, out, _ = self.run_main(path, "--json")
        self.assertEqual(code, 1)
        report = json.loads(out)
        self.assertEqual(report["file"], path)
        self.assertFalse(report["valid"])
        self.assertEqual(len(report["errors"]), 5)
        self.assertIn({"path": "/root/group@failover1/exclusive",
                       "message": "9 is not one of 0, 1, 2"}, report["errors"])
        self.assertEqual(report["warnings"][0]["path"], "/root/resource/md@md1")
        self.assertIsNone(report["digest"])

    def test_json_valid(self):
        code, out, _ = self.run_main(self.write(VALID.format(extra="")), "--json")
        self.assertEqual(code, 0)
        report = json.loads(out)
        self.assertTrue(report["valid"])
        self.assertEqual((report["errors"], report["warnings"]), ([], []))
        self.assertEqual(len(report["digest"]), 64)

    def test_syntax_error(self):
        path = self.write("<root>\n  <cluster>\n</root>\n")
        code, out, _ = self.run_main(path)
        self.assertEqual(code, 1)
        self.assertIn(f"error: {path}: XML syntax error: mismatched tag: line 3", out)

    def test_unreadable(self):
        path = os.path.join(self.base, "nope.conf")
        code, out, _ = self.run_main(path)
        self.assertEqual(code, 2)
        self.assertIn(f"error: {path}: cannot read: No such file or directory", out)

    def test_usage(self):
        for argv in ([], ["a", "b"], ["--bogus", "x"]):
            code, out, err = self.run_main(*argv)
            self.assertEqual(code, 2, argv)
            self.assertEqual(out, "")
            self.assertIn("usage: clpcfchk", err)

    def test_environment_warnings(self):
        """Commands missing from this host and open keyfiles are warned about."""
        text = VALID.format(extra="").replace(
            "<key>k</key>", "<keyfile>cluster.key</keyfile>").replace(
            "<shutdown>/bin/true</shutdown>", "<shutdown>/nonexistent/poweroff now</shutdown>")
        key = os.path.join(self.base, "cluster.key")
        with open(key, "w") as f:
            f.write("key\n")
        os.chmod(key, 0o644)
        code, out, _ = self.run_main(self.write(text))
        self.assertEqual(code, 0)
        self.assertIn("warning: /root/cluster/osaction/shutdown: command '/nonexistent/poweroff' "
                      "is not found on this host", out)
        self.assertIn(f"warning: /root/cluster/keyfile: keyfile {key} is accessible by group "
                      "or others (mode 0644); use 0600", out)
        os.chmod(key, 0o600)
        code, out, _ = self.run_main(self.write(text))
        self.assertNotIn("keyfile", out)

    def test_examples(self):
        for name in ("two-server", "three-server", "floating-ip"):
            path = os.path.join(REPO, "examples", name, "clp.conf")
            code, out, _ = self.run_main(path)
            # logger may be missing on a minimal host: that is only a warning.
            self.assertEqual(code, 0, out)
            self.assertTrue(out.endswith(f"clpcfchk: {path} is valid"
                                         f" ({out.count('warning:')} warning(s))\n"), out)


class HostileFileTests(SynchronousTestCase):
    """Whatever is wrong in the files, clpcfchk prints one line per problem
    naming the element or file, and no traceback."""

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)

    def check(self, data, path_fragment, message_fragment, name="clp.conf"):
        path = os.path.join(self.base, name)
        with open(path, "wb") as f:
            f.write(data)
        out, err = io.StringIO(), io.StringIO()
        code = main([path], stdout=out, stderr=err)
        out, err = out.getvalue(), err.getvalue()
        self.assertEqual(code, 1, out)
        self.assertEqual(err, "")
        self.assertNotIn("Traceback", out)
        lines = out.splitlines()
        for line in lines:
            self.assertTrue(line.startswith(("error: ", "warning: ", "clpcfchk: ")), line)
            self.assertLess(len(line), 400)
        errors = [line for line in lines if line.startswith("error: ")]
        self.assertTrue(any(path_fragment in line and message_fragment in line for line in errors), out)
        self.assertEqual(lines[-1], f"clpcfchk: {path}: {len(errors)} error(s), "
                                    f"{out.count(chr(10) + 'warning: ') + out.startswith('warning: ')} warning(s)")
        return path, errors

    def test_integer_with_thousands_of_digits(self):
        text = VALID.format(extra="").replace("<priority>0</priority>", f"<priority>{'9' * 5000}</priority>", 1)
        self.check(text.encode(), "error: /root/server@srv1/priority: ", "(5000 characters) is not an integer")

    def test_unusable_encoding(self):
        data = b'<?xml version="1.0" encoding="punycode"?>' + VALID.format(extra="").encode()
        path, _ = self.check(data, "error: ", "'punycode'")
        self.assertIn(f"error: {path}: ", self.check(data, "", "punycode")[1][0])

    def test_password_file_not_utf8(self):
        password = os.path.join(self.base, "bmc.pw")
        with open(password, "wb") as f:
            f.write("pässword".encode("latin-1"))
        bmc = (f'<device id="600"><type>bmc</type><info>192.168.0.9</info>'
               f'<passwordfile>{password}</passwordfile></device></server>')
        text = VALID.format(extra="").replace("</server>", bmc, 1)
        self.check(text.encode(), "error: /root/server@srv1/device@600/passwordfile: ",
                   f"password file {password} is not UTF-8 text")

    def test_deep_nesting(self):
        text = VALID.format(extra="<x>" * 50000 + "</x>" * 50000)
        self.check(text.encode(), "error: /root/x/x/", "nested more than")

    def test_control_characters_are_escaped(self):
        """A name holding a newline or a terminal escape stays on its line, inert."""
        # XML 1.0 allows C1 controls (0x9b is an 8-bit CSI) and bidi overrides.
        text = VALID.format(extra="").replace('<server name="srv1">', '<server name="s&#10;r&#x9b;2J&#x202e;v">')
        _, errors = self.check(text.encode(), "error: /root/server@s\\nr\\x9b2J\\u202ev", "")
        self.assertTrue(errors)
