"""Contract-test mixins for heartbeat paths (IHeartbeatPath) and
network-partition resolvers (INPResolver).

Every heartbeat kind and every resolver type runs them, and so do the fakes
of L{cpro.testing.fakes}: a fake that passes its kind's contract can stand in
for the real part in other tests. Mix one into a trial
C{SynchronousTestCase} and give it its maker::

    class ComPathContractTests(HeartbeatPathContractMixin, SynchronousTestCase):
        kind = "comhb"                      # registered with HEARTBEAT_KINDS

        def make_path(self):
            # A path of this kind for the local server, not yet listening,
            # on fakes (a task.Clock, a fake serial line...).
            return ComHeartbeatPath(...)

        def contract_clock(self):           # optional
            return self.clock               # its delayed calls must be gone after stop

    class PingResolverContractTests(NPResolverContractMixin, SynchronousTestCase):
        resolver_type = "pingnp"            # registered with NP_RESOLVERS

        def make_resolver(self):
            return PingResolver(clock, target, pinger=fake_pinger)

        def answer(self, resolver):
            # Make the fakes answer the check in flight (reply to the pings).
            ...

        def factory_context(self):          # optional
            # A ResolverContext whose configuration gives the local server
            # at least one resolver of this type; None skips that test.
            ...

A fake sets C{kind = None} (or C{resolver_type = None}): it is not
registered, and the registry tests are skipped for it. Every contract test
is named test_contract_*.
"""

from twisted.internet import defer
from zope.interface.verify import verifyObject

from cpro.cluster.partition import Verdict
from cpro.config.heartbeats import HeartbeatKindSchema
from cpro.interfaces import IHeartbeatPath, INPResolver
from cpro.plugins import HEARTBEAT_KINDS, NP_RESOLVERS
from cpro.protocols.heartbeat import StateDigest
from cpro.services.partition.base import ResolverSchema

DIGEST = StateDigest("cafe", 3, "Running")


class HeartbeatPathContractMixin:
    """What every L{IHeartbeatPath} does, whatever it runs over.

    Checked: verifyObject, name and kind, the registry entry and its schema;
    counters are a dict of numbers and a copy; send_beat never raises, before
    start_listening, while listening and after stop_listening;
    start_listening is idempotent; stop_listening returns a Deferred that
    fires (never fails), also without a start and when called twice, and
    leaves no delayed call on the path's clock; forget accepts any name.
    """

    kind = None  # the kind registered with HEARTBEAT_KINDS; None for a fake
    peer = "srv2"  # a server the path may hear

    def make_path(self):
        """A path of this kind for the local server, not yet listening."""
        raise NotImplementedError

    def contract_clock(self):
        """The IReactorTime the path schedules on (its delayed calls are
        checked after stop), or None."""
        return None

    def contract_stop(self, path):
        """Stop the path: the result of stop_listening, which must have fired."""
        d = path.stop_listening()
        self.assertIsInstance(d, defer.Deferred)
        return self.successResultOf(d)

    def assert_nothing_scheduled(self):
        clock = self.contract_clock()
        if clock is not None:
            self.assertEqual(clock.getDelayedCalls(), [])

    def test_contract_provides_interface(self):
        path = self.make_path()
        self.assertTrue(verifyObject(IHeartbeatPath, path))
        self.assertIsInstance(path.name, str)
        self.assertTrue(path.name)
        self.assertIsInstance(path.kind, str)
        if self.kind is not None:
            self.assertEqual(path.kind, self.kind)

    def test_contract_registered_with_a_schema(self):
        if self.kind is None:
            return
        plugin = HEARTBEAT_KINDS.get(self.kind)
        self.assertTrue(callable(plugin.factory))
        self.assertIsInstance(plugin.schema, HeartbeatKindSchema)
        self.assertIsInstance(plugin.schema.device_type, str)
        if plugin.schema.udp_port is not None:
            self.assertTrue(plugin.schema.every_server)

    def test_contract_counters(self):
        path = self.make_path()
        counters = path.counters()
        self.assertIsInstance(counters, dict)
        self.assertTrue(all(isinstance(v, int) for v in counters.values()), counters)
        counters["contract"] = -1
        self.assertNotIn("contract", path.counters())

    def test_contract_beat_before_start(self):
        path = self.make_path()
        path.send_beat(DIGEST)
        self.contract_stop(path)
        self.assert_nothing_scheduled()

    def test_contract_beats_while_listening(self):
        path = self.make_path()
        path.start_listening()
        path.send_beat(DIGEST)
        path.send_beat(DIGEST)
        self.assertIsInstance(path.counters(), dict)
        self.contract_stop(path)
        self.assert_nothing_scheduled()

    def test_contract_start_is_idempotent(self):
        path = self.make_path()
        path.start_listening()
        path.start_listening()
        self.contract_stop(path)
        self.assert_nothing_scheduled()

    def test_contract_stop_without_start(self):
        path = self.make_path()
        self.contract_stop(path)
        self.assert_nothing_scheduled()

    def test_contract_stop_twice_then_beat(self):
        path = self.make_path()
        path.start_listening()
        self.contract_stop(path)
        self.contract_stop(path)
        path.send_beat(DIGEST)
        self.assert_nothing_scheduled()

    def test_contract_forget(self):
        path = self.make_path()
        path.forget(self.peer)
        path.forget("no-such-server")


class NPResolverContractMixin:
    """What every L{INPResolver} does, whatever it asks.

    Checked: verifyObject, name, kind and a positive timeout, the registry
    entry and its schema, the factory's signature (through a
    L{cpro.services.partition.base.ResolverContext}); check() returns a
    Deferred firing a L{Verdict} with a reason, with and without lost
    servers; a cancelled check has fired (CancelledError or a Verdict) and
    leaves no delayed call on the resolver's clock.
    """

    resolver_type = None  # the type registered with NP_RESOLVERS; None for a fake
    lost = frozenset({"srv2"})

    def make_resolver(self):
        """A resolver of this type whose checks the fakes can answer."""
        raise NotImplementedError

    def answer(self, resolver):
        """Make the fakes answer the check in flight."""

    def contract_clock(self):
        """The IReactorTime the resolver schedules on, or None."""
        return None

    def factory_context(self):
        """A ResolverContext giving the local server at least one resolver of
        this type, or None to skip the factory test."""
        return None

    def assert_nothing_scheduled(self):
        clock = self.contract_clock()
        if clock is not None:
            self.assertEqual(clock.getDelayedCalls(), [])

    def checked(self, resolver, lost):
        d = resolver.check(lost)
        self.assertIsInstance(d, defer.Deferred)
        self.answer(resolver)
        verdict = self.successResultOf(d)
        self.assertIsInstance(verdict, Verdict)
        self.assertIsInstance(verdict.healthy, bool)
        self.assertIsInstance(verdict.reason, str)
        self.assertTrue(verdict.reason)
        return verdict

    def test_contract_provides_interface(self):
        resolver = self.make_resolver()
        self.assertTrue(verifyObject(INPResolver, resolver))
        self.assertIsInstance(resolver.name, str)
        self.assertTrue(resolver.name)
        self.assertIsInstance(resolver.kind, str)
        self.assertGreater(resolver.timeout, 0)
        if self.resolver_type is not None:
            self.assertEqual(resolver.kind, self.resolver_type)

    def test_contract_registered_with_a_schema(self):
        if self.resolver_type is None:
            return
        plugin = NP_RESOLVERS.get(self.resolver_type)
        self.assertTrue(callable(plugin.factory))
        self.assertIsInstance(plugin.schema, ResolverSchema)
        self.assertIsInstance(plugin.schema.order, int)

    def test_contract_factory_builds_resolvers_of_its_type(self):
        if self.resolver_type is None:
            return
        context = self.factory_context()
        if context is None:
            return
        resolvers = list(NP_RESOLVERS.get(self.resolver_type).factory(context))
        self.assertTrue(resolvers)
        for resolver in resolvers:
            self.assertTrue(verifyObject(INPResolver, resolver))
            self.assertEqual(resolver.kind, self.resolver_type)

    def test_contract_check_fires_a_verdict(self):
        resolver = self.make_resolver()
        self.checked(resolver, self.lost)
        self.assert_nothing_scheduled()

    def test_contract_routine_check(self):
        """With nothing lost (the routine checks between partitions)."""
        resolver = self.make_resolver()
        self.checked(resolver, frozenset())
        self.assert_nothing_scheduled()

    def test_contract_checks_again(self):
        resolver = self.make_resolver()
        self.checked(resolver, self.lost)
        self.checked(resolver, self.lost)

    def test_contract_cancel(self):
        """The engine cancels a check at its timeout: the check fires at once
        and leaves nothing behind."""
        resolver = self.make_resolver()
        d = resolver.check(self.lost)
        d.cancel()
        results = []
        d.addBoth(results.append)
        self.assertEqual(len(results), 1)
        (result,) = results
        if not isinstance(result, Verdict):
            result.trap(defer.CancelledError)
        self.assert_nothing_scheduled()
