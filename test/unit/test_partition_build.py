"""Tests for cpro.services.partition.build and make_forced_stop: resolvers and
forced stop built through the registries, with no type named."""

import dataclasses

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from cpro.config.model import ForcedStopConfig, HttpNPConfig, HttpTarget, PingTarget
from cpro.config.partition import ForcedStopSchema
from cpro.plugins import FORCED_STOP_METHODS, NP_RESOLVERS, Plugin
from cpro.services.partition.base import ResolverSchema
from cpro.services.partition.build import build_resolvers
from cpro.services.partition.forcestop import ForcedStopConfigError, make_forced_stop
from cpro.system.runners import run_inline
from cpro.testing.fakes import FakeHeartbeatPath, make_config

PING = PingTarget(name="pingnp1", priority=0, device=10200, groups=(("10.0.0.254",),), interval=0.2,
                  timeout=1.0, servers=("srv1",))
HTTP = HttpNPConfig(name="httpnp1", priority=1, device=10700, servers=("srv1", "srv2"),
                    target=HttpTarget(host="127.0.0.1", port=8080, timeout=3.0))


def np_config(ping=(PING,), http=(HTTP,), use_witness=True):
    config = make_config()
    np = dataclasses.replace(config.network_partition, ping=ping, http=http, use_witness=use_witness)
    return dataclasses.replace(config, network_partition=np)


class BuildResolversTests(SynchronousTestCase):
    def test_type_by_type_in_order(self):
        resolvers = build_resolvers(task.Clock(), np_config(), "srv1")
        self.assertEqual([(r.kind, r.name) for r in resolvers], [("pingnp", "pingnp1"), ("httpnp", "httpnp1")])

    def test_only_what_this_server_uses(self):
        resolvers = build_resolvers(task.Clock(), np_config(), "srv2")
        self.assertEqual([r.name for r in resolvers], ["httpnp1"])

    def test_the_witness_of_the_used_witness_paths(self):
        used = FakeHeartbeatPath("witnesshb1", "witnesshb")
        used.used = True
        used.target = HTTP.target
        unused = FakeHeartbeatPath("witnesshb2", "witnesshb")
        unused.used = False
        lan = FakeHeartbeatPath("lanhb1", "lanhb")
        resolvers = build_resolvers(task.Clock(), np_config(ping=(), http=()), "srv1", (lan, used, unused))
        self.assertEqual([(r.kind, r.name) for r in resolvers], [("witness", "witnesshb1")])
        off = build_resolvers(task.Clock(), np_config(ping=(), http=(), use_witness=False), "srv1", (used,))
        self.assertEqual(off, [])

    def test_a_registered_type_is_built_with_the_common_signature(self):
        contexts = []

        def factory(context):
            contexts.append(context)
            return ["made"]

        NP_RESOLVERS.load_all()
        plugins = dict(NP_RESOLVERS._plugins)
        plugins["carrierpigeon"] = Plugin(NP_RESOLVERS.kind, "carrierpigeon", factory, ResolverSchema(order=15))
        self.patch(NP_RESOLVERS, "_plugins", plugins)
        config = np_config()
        resolvers = build_resolvers(task.Clock(), config, "srv1", ())
        self.assertEqual([getattr(r, "kind", r) for r in resolvers], ["pingnp", "made", "httpnp"])
        (context,) = contexts
        self.assertEqual((context.config, context.local, context.heartbeat_paths), (config, "srv1", ()))


class MakeForcedStopTests(SynchronousTestCase):
    def config(self, method):
        return dataclasses.replace(make_config(), forced_stop=ForcedStopConfig(enabled=True, method=method,
                                                                               script="/bin/true"))

    def test_a_registered_method_is_built_with_its_context(self):
        contexts = []
        FORCED_STOP_METHODS.load_all()
        plugins = dict(FORCED_STOP_METHODS._plugins)
        plugins["pigeon"] = Plugin(FORCED_STOP_METHODS.kind, "pigeon", contexts.append, ForcedStopSchema())
        self.patch(FORCED_STOP_METHODS, "_plugins", plugins)
        clock = task.Clock()
        config = self.config("pigeon")
        make_forced_stop(clock, config, "srv1", run_inline, log_path="/tmp/x.log")
        (context,) = contexts
        self.assertEqual((context.reactor, context.config, context.local, context.runner, context.log_path),
                         (clock, config, "srv1", run_inline, "/tmp/x.log"))

    def test_unknown_method(self):
        e = self.assertRaises(ForcedStopConfigError, make_forced_stop, task.Clock(), self.config("pigeon"),
                              "srv1", run_inline)
        self.assertIn("is not one of bmc, script", str(e))

    def test_built_in_methods(self):
        self.assertEqual(FORCED_STOP_METHODS.names(), ["bmc", "script"])
        for method in FORCED_STOP_METHODS.names():
            stopper = make_forced_stop(task.Clock(), self.config(method), "srv1", run_inline)
            self.assertEqual(stopper.method, method)
