"""Tests for cpro.config.heartbeats: the <heartbeat> section read and checked
through the schemas the kinds register, with no kind named in cpro.config."""

from twisted.trial.unittest import SynchronousTestCase

from cpro.config import heartbeats
from cpro.config.heartbeats import HeartbeatKindSchema
from cpro.plugins import HEARTBEAT_KINDS, Plugin
from test.unit.test_config import ConfigTestMixin
from test.unit.test_config_partition import server

COM = '<device id="200"><type>com</type><info>/dev/ttyS0</info></device>'


def pigeon_heartbeat(extra="<coop>north</coop>"):
    return ('<heartbeat><lanhb name="lanhb1"><priority>0</priority><device>0</device></lanhb>'
            f'<pigeonhb name="pigeonhb1"><priority>1</priority><device>200</device>{extra}</pigeonhb>'
            '</heartbeat>')


class RegisteredKindTests(ConfigTestMixin, SynchronousTestCase):
    """A kind registered by a module of its own is read through its schema alone."""

    def setUp(self):
        super().setUp()
        self.links = []
        self.clusters = []

        def read(report, node):
            coop = node.string("coop", "")
            if not coop:
                report.error(f"{node.path}/coop", "a pigeon needs its <coop>")
            return {}

        def check_links(report, hb, servers):
            self.links.append((hb.name, tuple(servers)))

        def check_cluster(report, hb, cluster):
            self.clusters.append((hb.name, cluster.hb_timeout))
            report.warning(hb.path, "pigeons are slow")

        schema = HeartbeatKindSchema(device_type="com", read=read, check_links=check_links,
                                     check_cluster=check_cluster)
        HEARTBEAT_KINDS.load_all()
        plugins = dict(HEARTBEAT_KINDS._plugins)
        plugins["pigeonhb"] = Plugin(HEARTBEAT_KINDS.kind, "pigeonhb", lambda context, hb: None, schema)
        self.patch(HEARTBEAT_KINDS, "_plugins", plugins)

    def servers(self, with_device=("srv1", "srv2")):
        return "".join(server(name, i, i + 1, COM if name in with_device else "")
                       for i, name in enumerate(("srv1", "srv2")))

    def test_read_through_the_schema(self):
        config, warnings = self.load(servers=self.servers(), heartbeat=pigeon_heartbeat())
        self.assertIn(("pigeonhb1", "pigeonhb"), [(h.name, h.kind) for h in config.heartbeats])
        self.assertEqual(self.links, [("pigeonhb1", ("srv1", "srv2"))])
        # The cluster's heartbeat timeout, in ms as clp.conf gives it.
        self.assertEqual(self.clusters, [("pigeonhb1", config.hb_timeout * 1000)])
        self.assertIn("pigeons are slow", " ".join(w.message for w in warnings))
        self.assertNotIn("not supported", " ".join(w.message for w in warnings))

    def test_own_element_errors_have_their_path(self):
        self.assertError("/root/heartbeat/pigeonhb@pigeonhb1/coop", "needs its <coop>",
                         servers=self.servers(), heartbeat=pigeon_heartbeat(extra=""))

    def test_device_type_from_the_schema(self):
        wrong = '<device id="200"><type>disk</type><info>/dev/sdb</info></device>'
        servers = server("srv1", 0, 1, wrong) + server("srv2", 1, 2, COM)
        self.assertError("/root/server@srv1/device@200", "needs a com device",
                         servers=servers, heartbeat=pigeon_heartbeat())

    def test_links_fewer_than_two(self):
        self.assertError("/root/heartbeat/pigeonhb@pigeonhb1", "links fewer than two servers",
                         servers=self.servers(with_device=("srv1",)), heartbeat=pigeon_heartbeat())
        self.assertEqual(self.links, [])


class RequiredKindTests(SynchronousTestCase):
    def test_the_message_names_the_kinds_every_server_is_on(self):
        self.assertEqual(heartbeats.every_server_kinds(), ["lanhb", "lankhb"])
        self.assertEqual(heartbeats.required_message(), "at least one lanhb or lankhb heartbeat is required")

    def test_schemas_of_the_built_in_kinds(self):
        devices = {p.name: p.schema.device_type for p in HEARTBEAT_KINDS.plugins()}
        self.assertEqual(devices, {"lanhb": "lan", "lankhb": "lan", "comhb": "com", "diskhb": "disk",
                                   "bmchb": "bmc", "witnesshb": "witness"})
        self.assertEqual(heartbeats.udp_port("lankhb"), "lankhb")
        self.assertIsNone(heartbeats.udp_port("comhb"))
