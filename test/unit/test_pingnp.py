"""The ping NP resolver: groups of targets, any address per group, every group."""

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from cpro.config.model import PingTarget
from cpro.interfaces import INPResolver
from cpro.resources.monitors.ipw import PingError
from cpro.services.partition.pingnp import PingResolver


class FakePinger:
    def __init__(self):
        self.pings = {}  # address text -> Deferred
        self.users = 0

    def acquire(self):
        self.users += 1

    def release(self):
        self.users -= 1

    def ping(self, address, wait, attempts):
        d = defer.Deferred()
        self.pings[str(address)] = (d, wait, attempts)
        return d

    def answer(self, address, rtt=0.0003):
        self.pings[address][0].callback(rtt)

    def silent(self, address):
        self.pings[address][0].errback(PingError("no reply within 1 s"))


def resolver(groups, pinger):
    target = PingTarget(name="pingnp1", priority=0, device=10200, groups=groups, interval=0.2, timeout=1.0)
    return PingResolver(task.Clock(), target, pinger)


class PingResolverTests(SynchronousTestCase):
    def setUp(self):
        self.pinger = FakePinger()
        self.verdicts = []

    def check(self, groups):
        r = resolver(groups, self.pinger)
        r.check(frozenset({"srv1"})).addCallback(self.verdicts.append)
        return r

    def test_interface_and_timeout(self):
        r = resolver((("10.0.0.254",),), self.pinger)
        verifyObject(INPResolver, r)
        self.assertGreater(r.timeout, 1.0)

    def test_every_group_answering_is_healthy(self):
        self.check((("10.0.0.254",), ("192.168.0.254",)))
        self.assertEqual(self.pinger.pings["10.0.0.254"][1:], (1.0, 5))
        self.pinger.answer("10.0.0.254")
        self.assertEqual(self.verdicts, [])
        self.pinger.answer("192.168.0.254")
        self.assertTrue(self.verdicts[0].healthy)
        self.assertEqual(self.pinger.users, 0)

    def test_any_address_of_a_group_is_enough(self):
        self.check((("10.0.0.254", "10.0.0.253"),))
        self.pinger.silent("10.0.0.254")
        self.assertEqual(self.verdicts, [])
        self.pinger.answer("10.0.0.253")
        self.assertTrue(self.verdicts[0].healthy)

    def test_a_silent_group_is_isolation(self):
        self.check((("10.0.0.254",), ("192.168.0.254", "192.168.0.253")))
        self.pinger.answer("10.0.0.254")
        self.pinger.silent("192.168.0.254")
        self.pinger.silent("192.168.0.253")
        (verdict,) = self.verdicts
        self.assertFalse(verdict.healthy)
        self.assertIn("192.168.0.253: no reply", verdict.reason)
        self.assertEqual(self.pinger.users, 0)

    def test_cancel_fails_with_cancelled_error(self):
        """The engine cancels a check at its timeout and recognises CancelledError as that."""
        r = resolver((("10.0.0.254",), ("192.168.0.254",)), self.pinger)
        d = r.check(frozenset({"srv1"}))
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(self.pinger.users, 0)
