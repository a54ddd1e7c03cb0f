"""Contract-test mixin for group resources (IGroupResource).

Every group resource type runs it, and so do the fakes of
L{cpro.testing.fakes}: a fake that passes it can stand in for a real
resource in other tests. Mix it into a C{twisted.trial.unittest.TestCase}
(the tests return Deferreds: exec runs real scripts) and give it its maker::

    class FipContractTests(GroupResourceContractMixin, unittest.TestCase):
        resource_type = "fip"              # registered with RESOURCE_TYPES

        def make_resource(self):
            # A fresh resource on fakes, never activated.
            return make_fip(self.clock)

        def is_active(self, resource):
            # Whether what the resource manages is up now (the address is
            # on the fake NIC, the service's marker file exists...).
            return fake_netlink.holds(...)

        def settle(self, d):               # optional
            # Let a call finish (advance a task.Clock); return d.
            self.clock.advance(1)
            return d

        def factory_arguments(self):       # optional
            # (reactor, config, log_dir) for the registered factory, called
            # with ledger=...; None skips that test.
            return self.clock, config, "/nonexistent"

A fake sets C{resource_type = None}: it is not registered, and the
registry tests are skipped for it. Every contract test is named
test_contract_*.

Checked (after OCF's ocf-tester): verifyObject and the registry entry;
activate and deactivate return Deferreds, are idempotent and leave the
resource in the state they say; deactivating a resource never activated
by this process succeeds (a daemon restarting after a crash stops what it
does not know it holds); a resource can be activated again after a
deactivation; describe() is a dict at every step; the registered factory
takes the one group resource signature (L{cpro.interfaces.IGroupResource}).
"""

from twisted.internet import defer
from zope.interface.verify import verifyObject

from cpro.interfaces import IGroupResource
from cpro.plugins import RESOURCE_TYPES
from cpro.resources.base import ActionContext
from cpro.resources.ledger import NULL_LEDGER

START = ActionContext(event="START", group="failover1", server="srv1", home=True)
STOP = ActionContext(event="START", group="failover1", server="srv1", home=True, factor="GROUPSTOP")


class GroupResourceContractMixin:
    """What every L{IGroupResource} does (see the module docstring)."""

    resource_type = None

    # hooks

    def make_resource(self):
        raise NotImplementedError("define make_resource() returning a fresh resource")

    def is_active(self, resource):
        raise NotImplementedError("define is_active(resource)")

    def settle(self, d):
        return d

    def factory_arguments(self):
        return None

    # helpers

    def _call(self, method, context):
        d = method(context)
        self.assertIsInstance(d, defer.Deferred, f"{method.__name__}() must return a Deferred")
        return self.settle(d)

    @defer.inlineCallbacks
    def _activate(self, resource):
        result = yield self._call(resource.activate, START)
        self.assertIsNone(result)
        self.assertIsInstance(resource.describe(), dict)
        self.assertTrue(self.is_active(resource), "not active after activate()")

    @defer.inlineCallbacks
    def _deactivate(self, resource):
        result = yield self._call(resource.deactivate, STOP)
        self.assertIsNone(result)
        self.assertIsInstance(resource.describe(), dict)
        self.assertFalse(self.is_active(resource), "still active after deactivate()")

    def _made(self):
        resource = self.make_resource()
        # Whatever a test leaves up is brought down.
        self.addCleanup(lambda: self.settle(defer.maybeDeferred(resource.deactivate, STOP)))
        return resource

    # the contract

    def test_contract_provides_igroupresource(self):
        resource = self.make_resource()
        self.assertTrue(verifyObject(IGroupResource, resource))
        self.assertIsInstance(resource.name, str)
        self.assertTrue(resource.name)
        self.assertIsInstance(resource.describe(), dict)
        if self.resource_type is None:
            return
        self.assertEqual(resource.type, self.resource_type)
        plugin = RESOURCE_TYPES.get(self.resource_type)
        self.assertIsInstance(resource, plugin.factory)
        self.assertIsNotNone(plugin.schema, "a resource type declares its configuration schema")

    def test_contract_factory_signature(self):
        arguments = self.factory_arguments() if self.resource_type is not None else None
        if arguments is None:
            return
        reactor, config, log_dir = arguments
        resource = RESOURCE_TYPES.get(self.resource_type).factory(reactor, config, log_dir, ledger=NULL_LEDGER)
        self.assertTrue(verifyObject(IGroupResource, resource))
        self.assertEqual(resource.name, config.name)

    @defer.inlineCallbacks
    def test_contract_activate_is_idempotent(self):
        resource = self._made()
        yield self._activate(resource)
        yield self._activate(resource)

    @defer.inlineCallbacks
    def test_contract_deactivate_is_idempotent(self):
        resource = self._made()
        yield self._activate(resource)
        yield self._deactivate(resource)
        yield self._deactivate(resource)

    @defer.inlineCallbacks
    def test_contract_deactivate_never_activated(self):
        resource = self._made()
        self.assertFalse(self.is_active(resource))
        yield self._deactivate(resource)

    @defer.inlineCallbacks
    def test_contract_activate_again_after_deactivate(self):
        resource = self._made()
        yield self._activate(resource)
        yield self._deactivate(resource)
        yield self._activate(resource)
        yield self._deactivate(resource)
