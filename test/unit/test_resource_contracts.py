"""The group resource contract (cpro.testing.resource_contracts), run against
every registered type (exec with real scripts, fip on the fakes of its own
unit tests) and against the fake resource of cpro.testing.fakes."""

import ipaddress
import os

from twisted.internet import reactor, task
from twisted.trial import unittest

from cpro import plugins
from cpro.resources.exec import ExecResource
from cpro.testing.fakes import FakeResource
from cpro.testing.resource_contracts import GroupResourceContractMixin
from test.unit.fip_fakes import fip_config, make_fip
from test.unit.test_exec import make_config as exec_config
from test.unit.test_process import ProcessTestCase, write_script

FIP = ipaddress.ip_address("192.168.1.100")


class EveryTypeTests(unittest.SynchronousTestCase):
    def test_every_registered_type_has_contract_tests(self):
        covered = {c.resource_type for c in (ExecContractTests, FipContractTests)}
        self.assertEqual(set(plugins.RESOURCE_TYPES.names()), covered)


class ExecContractTests(GroupResourceContractMixin, ProcessTestCase):
    resource_type = "exec"

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.marker = os.path.join(self.dir, "running")
        self.start = write_script(self.dir, "start.sh", f"touch {self.marker}")
        self.stop = write_script(self.dir, "stop.sh", f"rm -f {self.marker}")

    def make_resource(self):
        return ExecResource(reactor, exec_config(self.start, self.stop), self.dir, kill_grace=0.3)

    def is_active(self, resource):
        return os.path.exists(self.marker)

    def factory_arguments(self):
        return reactor, exec_config(self.start, self.stop), self.dir


class FipContractTests(GroupResourceContractMixin, unittest.TestCase):
    resource_type = "fip"

    def setUp(self):
        self.clock = task.Clock()
        self.netlinks = {}

    def tearDown(self):
        # No timer may outlive a test: repeat bursts are cancelled by deactivation.
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def make_resource(self):
        resource, _, netlink = make_fip(self.clock)
        self.netlinks[id(resource)] = netlink
        return resource

    def is_active(self, resource):
        return self.netlinks[id(resource)].get("eth0").has(FIP)

    def settle(self, d):
        # Probes and the first announcement: a few clock steps finish any call.
        # (d.called is no test: a DeferredLock's Deferred is "called" while it
        # waits on the one it chained.)
        done = []

        def finished(result):
            done.append(True)
            return result

        d.addBoth(finished)
        for _ in range(10):
            if done:
                break
            self.clock.advance(0.1)
        return d

    def factory_arguments(self):
        return self.clock, fip_config(), "/nonexistent"


class FakeResourceContractTests(GroupResourceContractMixin, unittest.TestCase):
    resource_type = None  # not registered: a stand-in for the controller's tests

    def make_resource(self):
        return FakeResource("exec1")

    def is_active(self, resource):
        return resource.active
