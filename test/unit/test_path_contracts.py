"""The heartbeat path and NP resolver contracts (cpro.testing.path_contracts),
run against every kind and type, on the fakes their own unit tests use, and
against the fakes of cpro.testing.fakes."""

import dataclasses

from twisted.internet import task
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from cpro.config.model import PingTarget
from cpro.plugins import HEARTBEAT_KINDS, NP_RESOLVERS
from cpro.services.heartbeat.base import HeartbeatContext
from cpro.services.heartbeat.bmchb import BmcHeartbeatPath
from cpro.services.heartbeat.comhb import ComHeartbeatPath
from cpro.services.heartbeat.diskhb import DiskHeartbeatPath
from cpro.services.heartbeat.lanhb import LanHeartbeatPath
from cpro.services.heartbeat.witnesshb import WitnessResolver
from cpro.services.partition.base import ResolverContext
from cpro.services.partition.httpnp import HttpResolver
from cpro.services.partition.pingnp import PingResolver
from cpro.system.ipmi import BmcClient
from cpro.system.runners import run_inline
from cpro.testing.fakes import FakeHeartbeatPath, FakeNPResolver, make_config
from cpro.testing.path_contracts import HeartbeatPathContractMixin, NPResolverContractMixin
from test.unit import test_bmchb, test_comhb, test_diskhb, test_heartbeat_service, test_httpnp, test_witnesshb
from test.unit.test_bmc import FakeBmc
from test.unit.test_pingnp import FakePinger


class EveryKindTests(SynchronousTestCase):
    """The contracts below cover every registered kind and type."""

    def test_every_heartbeat_kind_has_a_contract_test(self):
        covered = {LanHeartbeatContractTests.kind, LanKHeartbeatContractTests.kind, ComContractTests.kind,
                   DiskContractTests.kind, BmcContractTests.kind, WitnessPathContractTests.kind}
        self.assertEqual(covered, set(HEARTBEAT_KINDS.names()))

    def test_every_resolver_type_has_a_contract_test(self):
        covered = {PingContractTests.resolver_type, HttpContractTests.resolver_type,
                   WitnessResolverContractTests.resolver_type}
        self.assertEqual(covered, set(NP_RESOLVERS.names()))


# -- heartbeat paths -------------------------------------------------------------------


class LanHeartbeatContractTests(HeartbeatPathContractMixin, SynchronousTestCase):
    kind = "lanhb"

    def setUp(self):
        self.reactor = test_heartbeat_service.FakeUDPReactor()
        self.config = test_heartbeat_service.make_config()

    def make_path(self):
        heartbeat = next(h for h in self.config.heartbeats if h.kind == self.kind)
        path = LanHeartbeatPath(self.reactor, self.config, "srv1", heartbeat, test_heartbeat_service.INC1,
                                lambda *a: None)
        self.assertIs(type(HEARTBEAT_KINDS.get(self.kind).factory(self.context(), heartbeat)), type(path))
        return path

    def context(self):
        return HeartbeatContext(self.reactor, self.config, "srv1", test_heartbeat_service.INC1,
                                lambda *a: None, lambda *a: None, run_inline)

    def contract_clock(self):
        return self.reactor


class LanKHeartbeatContractTests(LanHeartbeatContractTests):
    kind = "lankhb"


class ComContractTests(HeartbeatPathContractMixin, SynchronousTestCase):
    kind = "comhb"

    def setUp(self):
        self.clock = task.Clock()
        self.devices = test_comhb.FakeDevices(present=test_comhb.TTY.values())

    def make_path(self):
        return ComHeartbeatPath(self.clock, test_comhb.com_config(), "srv1", test_comhb.HB, test_comhb.BOOT1,
                                lambda *a: None, opener=self.devices.open, reopen_delay=test_comhb.REOPEN)

    def contract_clock(self):
        return self.clock


class ComWithoutDeviceContractTests(ComContractTests):
    """A serial device that cannot be opened: the path retries on its clock, and stops that too."""

    def setUp(self):
        super().setUp()
        self.devices = test_comhb.FakeDevices(present=())


class DiskContractTests(HeartbeatPathContractMixin, SynchronousTestCase):
    kind = "diskhb"

    def setUp(self):
        self.clock = task.Clock()
        self.device = self.mktemp()
        test_diskhb.DiskPathTestCase.make_device(self.device)

    def make_path(self):
        config = test_diskhb.disk_config({"srv1": self.device, "srv2": self.device})
        return DiskHeartbeatPath(self.clock, config, "srv1", test_diskhb.HB, test_diskhb.INC1,
                                 lambda *a: None, run_inline)

    def contract_clock(self):
        return self.clock


class BmcContractTests(HeartbeatPathContractMixin, SynchronousTestCase):
    kind = "bmchb"

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.bmcs = {}

    def make_path(self):
        config = test_bmchb.config_with_bmcs()
        for server in config.servers:
            self.bmcs.setdefault(server.bmc.address, FakeBmc())
        context = HeartbeatContext(reactor=self.clock, config=config, local="srv1", incarnation=None,
                                   on_beat=lambda *a: None, on_alive=lambda *a: None, runner=run_inline)

        def client_factory(bmc, timeout):
            return BmcClient(run_inline, bmc, timeout, clock=self.clock,
                             command_factory=self.bmcs[bmc.address].factory)

        return BmcHeartbeatPath(context, test_bmchb.BMCHB, client_factory=client_factory)

    def contract_clock(self):
        return self.clock


class WitnessPathContractTests(HeartbeatPathContractMixin, SynchronousTestCase):
    kind = "witnesshb"

    def make_path(self):
        self.h = test_witnesshb.Harness(self)
        return self.h.path

    def contract_clock(self):
        return self.h.clock


class FakePathContractTests(HeartbeatPathContractMixin, SynchronousTestCase):
    kind = None

    def make_path(self):
        return FakeHeartbeatPath()


# -- NP resolvers -------------------------------------------------------------------------


class PingContractTests(NPResolverContractMixin, SynchronousTestCase):
    resolver_type = "pingnp"

    def setUp(self):
        self.clock = task.Clock()
        self.pinger = FakePinger()
        self.target = PingTarget(name="pingnp1", priority=0, device=10200,
                                 groups=(("10.0.0.254",), ("192.168.0.254", "192.168.0.253")),
                                 interval=0.2, timeout=1.0, servers=("srv1",))

    def make_resolver(self):
        return PingResolver(self.clock, self.target, self.pinger)

    def answer(self, resolver):
        for d, _, _ in list(self.pinger.pings.values()):
            if not d.called:
                d.callback(0.0003)

    def contract_clock(self):
        return self.clock

    def factory_context(self):
        config = make_config(servers=("srv1", "srv2"))
        np = dataclasses.replace(config.network_partition, ping=(self.target,))
        return ResolverContext(self.clock, dataclasses.replace(config, network_partition=np), "srv1")


class HttpContractTests(NPResolverContractMixin, SynchronousTestCase):
    resolver_type = "httpnp"

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.config = dataclasses.replace(test_httpnp.npconfig(path="/health"), servers=("srv1",))

    def make_resolver(self):
        return HttpResolver(self.reactor, self.config)

    def answer(self, resolver):
        test_httpnp.Connection(self.reactor).answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def contract_clock(self):
        return self.reactor

    def factory_context(self):
        config = make_config(servers=("srv1", "srv2"))
        np = dataclasses.replace(config.network_partition, http=(self.config,))
        return ResolverContext(self.reactor, dataclasses.replace(config, network_partition=np), "srv1")


class WitnessResolverContractTests(NPResolverContractMixin, SynchronousTestCase):
    resolver_type = "witness"

    def setUp(self):
        self.h = test_witnesshb.Harness(self)
        self.h.path.start_listening()

    def make_resolver(self):
        return WitnessResolver(self.h.path, 10.0)

    def answer(self, resolver):
        self.h.answer()

    def contract_clock(self):
        return self.h.clock

    def factory_context(self):
        return ResolverContext(self.h.clock, self.h.config, "srv1", (self.h.path,))


class FakeResolverContractTests(NPResolverContractMixin, SynchronousTestCase):
    resolver_type = None

    def setUp(self):
        self.clock = task.Clock()

    def make_resolver(self):
        return FakeNPResolver(self.clock)

    def answer(self, resolver):
        self.clock.advance(resolver.answer_after)

    def contract_clock(self):
        return self.clock


class FakeIsolatedResolverContractTests(FakeResolverContractTests):
    def make_resolver(self):
        return FakeNPResolver(self.clock, healthy=False)
