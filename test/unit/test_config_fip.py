"""Tests for cpro.config: fip resources, lan device prefixes and the subnet rule."""

import dataclasses

from twisted.trial.unittest import SynchronousTestCase

from cpro import plugins
from cpro.config.defaults import DEFAULTS, IP_RESOURCE_TYPES
from cpro.config.model import FipParams

from test.unit.test_config import ConfigTestMixin


def servers(*infos, extra=""):
    """Two servers srv1, srv2; infos[i] is a tuple of lan device infos of server i."""
    out = []
    for index, devices in enumerate(infos):
        body = "".join(f'<device id="{i}"><type>lan</type><info>{info}</info></device>'
                       for i, info in enumerate(devices))
        out.append(f'<server name="srv{index + 1}"><priority>{index}</priority>{body}</server>')
    return "".join(out) + extra


SERVERS = servers(("127.0.0.1", "10.0.0.1"), ("127.0.0.2", "10.0.0.2"))
GROUPS = ('<group name="failover1"><resource name="exec@exec1"/>'
          '<resource name="fip@fip1"/></group>')


def fip(name="fip1", ip="10.0.0.100", parameters="", extra=""):
    return (f'<fip name="{name}"><parameters><ip>{ip}</ip>{parameters}</parameters>'
            f'{extra}</fip>')


def resources(*fips):
    return '<resource><types name="fip"/><exec name="exec1"/>' + "".join(fips) + "</resource>"


class FipTestMixin(ConfigTestMixin):
    def load_fip(self, *fips, servers=SERVERS, groups=GROUPS, **parts):
        return self.load(servers=servers, groups=groups,
                         resources=resources(*(fips or (fip(),))), **parts)

    def fip_error(self, path, fragment, *fips, **parts):
        return self.assertError(path, fragment, servers=parts.pop("servers", SERVERS),
                                groups=parts.pop("groups", GROUPS),
                                resources=resources(*fips), **parts)


class FipLoadTests(FipTestMixin, SynchronousTestCase):
    def test_supported(self):
        SUPPORTED_RESOURCE_TYPES = plugins.RESOURCE_TYPES.names()
        self.assertIn("fip", SUPPORTED_RESOURCE_TYPES)
        self.assertIn("fip", IP_RESOURCE_TYPES)

    def test_defaults(self):
        config, warnings = self.load_fip()
        self.assertEqual(warnings, ())
        fip1 = config.resource("fip1")
        self.assertEqual((fip1.type, fip1.group, fip1.depends), ("fip", "failover1", None))
        self.assertEqual(fip1.params, FipParams(ip="10.0.0.100"))
        # The original retries a floating IP 5 times; the rest as for exec.
        self.assertEqual((fip1.act_retry, fip1.act_fo, fip1.act_action), (5, 1, 1))
        self.assertEqual((fip1.deact_retry, fip1.deact_action), (0, 4))

    def test_default_table_matches_model(self):
        """DEFAULTS (clp.conf units, ms) and FipParams defaults (s) agree."""
        defaults = {f.name: f.default for f in dataclasses.fields(FipParams) if f.name != "ip"}
        table = {
            "probe_count": DEFAULTS["fip/parameters/probe/count"],
            "probe_interval": DEFAULTS["fip/parameters/probe/interval"] / 1000.0,
            "probe_wait": DEFAULTS["fip/parameters/probe/wait"] / 1000.0,
            "ping_check": bool(DEFAULTS["fip/parameters/ping/use"]),
            "ping_timeout": DEFAULTS["fip/parameters/ping/timeout"] / 1000.0,
            "garp_count": DEFAULTS["fip/parameters/garp/count"],
            "garp_interval": DEFAULTS["fip/parameters/garp/interval"] / 1000.0,
            "garp_repeat_delay": DEFAULTS["fip/parameters/garp/repeat/delay"] / 1000.0,
            "garp_repeat_count": DEFAULTS["fip/parameters/garp/repeat/count"],
        }
        self.assertEqual(table, defaults)

    def test_ip_first_in_activation_order(self):
        config, _ = self.load_fip()
        self.assertEqual(config.group("failover1").resources, ("fip1", "exec1"))
        self.assertEqual([r.name for r in config.resources], ["fip1", "exec1"])

    def test_every_parameter(self):
        parameters = ("<probe><count>0</count><interval>100</interval><wait>250</wait></probe>"
                      "<ping><use>1</use><timeout>1500</timeout></ping>"
                      "<garp><count>7</count><interval>30</interval>"
                      "<repeat><delay>0</delay><count>2</count></repeat></garp>")
        extra = ("<act><retry>2</retry><fo>3</fo><action>3</action></act>"
                 "<deact><retry>1</retry><action>5</action></deact>")
        config, warnings = self.load_fip(fip(parameters=parameters, extra=extra))
        self.assertEqual(warnings, ())
        fip1 = config.resource("fip1")
        self.assertEqual(fip1.params, FipParams(
            ip="10.0.0.100", probe_count=0, probe_interval=0.1, probe_wait=0.25,
            ping_check=True, ping_timeout=1.5, garp_count=7, garp_interval=0.03,
            garp_repeat_delay=0.0, garp_repeat_count=2))
        self.assertEqual((fip1.act_retry, fip1.act_fo, fip1.act_action), (2, 3, 3))
        self.assertEqual((fip1.deact_retry, fip1.deact_action), (1, 5))

    def test_ipv6(self):
        srv = servers(("127.0.0.1", "fd00::1"), ("127.0.0.2", "fd00::2"))
        config, _ = self.load_fip(fip(ip="FD00:0::abcd"), servers=srv)
        self.assertEqual(config.resource("fip1").params.ip, "fd00::abcd")

    def test_explicit_dependencies(self):
        # exec1 without depend@ waits for every address resource, so a fip that
        # names exec1 closes a loop.
        resources_xml = ('<resource><exec name="exec1"/>'
                         + fip(extra='<depend name="exec1"/>') + "</resource>")
        self.assertError("/root/resource/exec@exec1", "dependency cycle: exec1 -> fip1 -> exec1",
                         servers=SERVERS, groups=GROUPS, resources=resources_xml)
        # exec1 names only exec0 (which waits for the fip by default).
        self.script("failover1", "exec0")
        groups = GROUPS.replace("<resource", '<resource name="exec@exec0"/><resource', 1)
        resources_xml = ('<resource><exec name="exec0"/><exec name="exec1">'
                         '<depend name="exec0"/></exec>' + fip() + "</resource>")
        config, _ = self.load(servers=SERVERS, groups=groups, resources=resources_xml)
        self.assertEqual(config.group("failover1").resources, ("fip1", "exec0", "exec1"))
        self.assertEqual(config.resource("exec1").depends, ("exec0",))

    def test_not_in_group(self):
        config, warnings = self.load_fip(fip(), groups='<group name="failover1">'
                                                       '<resource name="exec@exec1"/></group>')
        self.assertProblem(warnings, "/root/resource/fip@fip1",
                           "fip resource fip1 is not in any group")
        self.assertIsNone(config.resource("fip1"))

    def test_unknown_parameters_warned(self):
        _, warnings = self.load_fip(fip(parameters="<arpcnt>3</arpcnt><garp><x>1</x></garp>",
                                        extra="<act><timeout>10</timeout></act>"))
        for path in ("/root/resource/fip@fip1/parameters/arpcnt",
                     "/root/resource/fip@fip1/parameters/garp/x",
                     "/root/resource/fip@fip1/act/timeout"):
            self.assertProblem(warnings, path, "not supported")
        self.assertEqual(len(warnings), 3)


class FipErrorTests(FipTestMixin, SynchronousTestCase):
    IP = "/root/resource/fip@fip1/parameters/ip"

    def test_ip_required(self):
        self.fip_error(self.IP, "<ip> is required", '<fip name="fip1"/>')
        self.fip_error(self.IP, "<ip> is required",
                       '<fip name="fip1"><parameters><ip></ip></parameters></fip>')

    def test_not_an_address(self):
        self.fip_error(self.IP, "'fip.example' is not an IPv4 or IPv6 address",
                       fip(ip="fip.example"))

    def test_prefix_refused(self):
        self.fip_error(self.IP, "without a prefix length", fip(ip="10.0.0.100/24"))

    def test_link_local(self):
        self.fip_error(self.IP, "link-local", fip(ip="169.254.3.4"))
        self.fip_error(self.IP, "link-local", fip(ip="fe80::5"))

    def test_multicast_loopback_unspecified(self):
        self.fip_error(self.IP, "multicast", fip(ip="224.0.0.5"))
        self.fip_error(self.IP, "multicast", fip(ip="ff02::1"))
        self.fip_error(self.IP, "loopback", fip(ip="127.0.0.9"))
        self.fip_error(self.IP, "loopback", fip(ip="::1"))
        self.fip_error(self.IP, "unspecified", fip(ip="0.0.0.0"))
        self.fip_error(self.IP, "unspecified", fip(ip="::"))

    def test_parameter_ranges(self):
        for relative, xml in (
                ("probe/count", "<probe><count>100</count></probe>"),
                ("probe/interval", "<probe><interval>0</interval></probe>"),
                ("probe/wait", "<probe><wait>10001</wait></probe>"),
                ("ping/use", "<ping><use>2</use></ping>"),
                ("ping/timeout", "<ping><timeout>0</timeout></ping>"),
                ("garp/count", "<garp><count>-1</count></garp>"),
                ("garp/interval", "<garp><interval>x</interval></garp>"),
                ("garp/repeat/delay", "<garp><repeat><delay>3600001</delay></repeat></garp>"),
                ("garp/repeat/count", "<garp><repeat><count>100</count></repeat></garp>")):
            self.fip_error(f"/root/resource/fip@fip1/parameters/{relative}", "",
                           fip(parameters=xml))

    def test_recovery_ranges(self):
        self.fip_error("/root/resource/fip@fip1/act/retry", "out of range",
                       fip(extra="<act><retry>100</retry></act>"))
        self.fip_error("/root/resource/fip@fip1/deact/action", "not one of",
                       fip(extra="<deact><action>2</action></deact>"))

    def test_outside_subnet_of_one_server(self):
        srv = servers(("127.0.0.1", "10.0.0.1"), ("127.0.0.2", "10.0.1.2"))
        p = self.fip_error(self.IP, "outside every lan subnet of server srv2", fip(),
                           servers=srv)
        self.assertIn("127.0.0.0/24, 10.0.1.0/24", p.message)
        self.assertIn("which may run group failover1", p.message)

    def test_only_policy_servers_count(self):
        """A server outside the group's policy need not reach the address."""
        srv = servers(("127.0.0.1", "10.0.0.1"), ("127.0.0.2", "10.0.1.2"),
                      ("127.0.0.3", "10.0.0.3"))
        groups = ('<group name="failover1"><resource name="exec@exec1"/>'
                  '<resource name="fip@fip1"/><policy name="srv1"><order>0</order></policy>'
                  '<policy name="srv3"><order>1</order></policy></group>')
        config, _ = self.load_fip(servers=srv, groups=groups)
        self.assertEqual(config.resource("fip1").params.ip, "10.0.0.100")
        groups = groups.replace("srv3", "srv2")
        self.fip_error(self.IP, "server srv2", fip(), servers=srv, groups=groups)

    def test_family_must_match(self):
        p = self.fip_error(self.IP, "outside every lan subnet", fip(ip="fd00::9"))
        self.assertIn("no IPv6 lan device", p.message)

    def test_duplicate_address(self):
        groups = GROUPS.replace("</group>", '<resource name="fip@fip2"/></group>')
        self.fip_error("/root/resource/fip@fip2/parameters/ip", "also used by fip fip1",
                       fip(), fip("fip2", ip="10.0.0.100"), groups=groups)

    def test_server_device_address(self):
        p = self.fip_error(self.IP, "server srv2's own address (device@1)", fip(ip="10.0.0.2"))
        self.assertIn("10.0.0.2", p.message)

    def test_server_internal_address(self):
        srv = SERVERS.replace("</server>", "<address>10.0.0.50</address></server>", 1)
        self.fip_error(self.IP, "server srv1's own address (address)", fip(ip="10.0.0.50"),
                       servers=srv)

    def test_group_member_of_wrong_type(self):
        groups = '<group name="failover1"><resource name="exec@exec1"/><resource name="exec@fip1"/></group>'
        self.fip_error("/root/group@failover1/resource@exec@fip1", "of type fip, not exec",
                       fip(), groups=groups)


class DevicePrefixTests(FipTestMixin, SynchronousTestCase):
    def test_prefix_kept_apart_from_address(self):
        srv = servers(("127.0.0.1", "10.0.0.1/16"), ("127.0.0.2", "10.0.0.2/255.255.0.0"))
        config, _ = self.load_fip(fip(ip="10.0.200.1"), servers=srv)
        device = config.server("srv1").device(1)
        self.assertEqual((device.info, device.prefix), ("10.0.0.1", 16))
        self.assertEqual(config.server("srv2").device(1).prefix, 16)
        self.assertEqual(config.server("srv1").device(0).prefix, 0)  # not given

    def test_default_prefix_24_and_64(self):
        self.fip_error(FipErrorTests.IP, "(127.0.0.0/24, 10.0.0.0/24)", fip(ip="10.0.1.1"))
        srv = servers(("127.0.0.1", "fd00::1"), ("127.0.0.2", "fd00::2"))
        config, _ = self.load_fip(fip(ip="fd00::ffff:1"), servers=srv)
        self.assertEqual(config.resource("fip1").params.ip, "fd00::ffff:1")
        self.fip_error(FipErrorTests.IP, "fd00::/64", fip(ip="fd00:0:0:1::1"), servers=srv)

    def test_narrow_prefix(self):
        srv = servers(("127.0.0.1", "10.0.0.1/30"), ("127.0.0.2", "10.0.0.2/30"))
        self.load_fip(fip(ip="10.0.0.3"), servers=srv)
        self.fip_error(FipErrorTests.IP, "10.0.0.0/30", fip(ip="10.0.0.5"), servers=srv)

    def test_heartbeat_uses_plain_address(self):
        """The lan heartbeat and the internal address get the address without the prefix."""
        srv = servers(("127.0.0.1/8",), ("127.0.0.2/8",))
        config, _ = self.load(servers=srv)
        self.assertEqual(config.server("srv1").device(0).info, "127.0.0.1")
        self.assertEqual(config.server("srv1").address, "127.0.0.1")
        self.assertEqual(config.server("srv2").address, "127.0.0.2")

    def test_bad_prefix(self):
        for info in ("10.0.0.1/33", "10.0.0.1/", "10.0.0.1/x", "fd00::1/129"):
            srv = servers(("127.0.0.1", info), ("127.0.0.2", "10.0.0.2"))
            self.assertError("/root/server@srv1/device@1/info", "valid prefix length",
                             servers=srv)

    def test_prefix_with_link_local_address(self):
        srv = servers(("127.0.0.1", "169.254.0.1/16"), ("127.0.0.2", "10.0.0.2"))
        self.assertError("/root/server@srv1/device@1/info", "link-local", servers=srv)

    def test_bindings_still_clash(self):
        srv = servers(("127.0.0.1/8",), ("127.0.0.1/24",))
        self.assertError("/root/server@srv2", "already used", servers=srv)

