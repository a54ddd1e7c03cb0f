"""The one plug-in pattern: a registry for each pluggable kind.

Pluggable kinds: group resource types (exec, fip, ...), monitor types (pidw,
genw, ...), heartbeat kinds (lanhb, comhb, ...), network-partition resolvers
(pingnp, httpnp, ...) and forced-stop methods (bmc, script).

A type lives in one module, which registers one L{Plugin} with the registry
of its kind::

    @RESOURCE_TYPES.register("exec", schema=EXEC_SCHEMA)
    class ExecResource: ...

- C{name}: the clp.conf type name (the original's short names are kept);
- C{schema}: the type's configuration declaration, read by L{cpro.config}
  through the registry (elements, defaults, ranges, cross-checks, error
  messages with element paths); its shape is the kind's own;
- C{factory}: what the daemon calls to build the running part from the
  validated model, with every collaborator passed to the constructor.

Each registry knows the modules of the built-in types by name and imports
them on first use, so that cpro.config, the services and the controller
name no concrete type and import no type module. Adding a type is one
module, its tests and the contract-test mixin of its kind.
"""

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Plugin:
    """One type of one pluggable kind."""

    kind: str  # the registry's kind, for messages
    name: str  # clp.conf type name
    factory: Callable
    schema: Any = None


class UnknownType(LookupError):
    """No type of that name is registered for this kind."""

    def __init__(self, kind, name, known):
        self.kind = kind
        self.name = name
        super().__init__(f"unknown {kind} {name!r} (known: {', '.join(known) or 'none'})")


class Registry:
    """The types of one pluggable kind, by clp.conf name."""

    def __init__(self, kind, modules=()):
        self.kind = kind
        self._modules = tuple(modules)  # built-in type modules, imported on first use
        self._plugins = {}
        self._loaded = False

    def register(self, *names, schema=None):
        """Decorator for a factory (usually a class): register it under names."""

        def add(factory):
            for name in names:
                self.add(Plugin(self.kind, name, factory, schema))
            return factory

        return add

    def add(self, plugin):
        existing = self._plugins.get(plugin.name)
        if existing is not None and existing.factory is not plugin.factory:
            raise ValueError(f"{self.kind} {plugin.name!r} is registered twice")
        self._plugins[plugin.name] = plugin

    def load_all(self):
        """Import every built-in type module (idempotent)."""
        if not self._loaded:
            for module in self._modules:
                importlib.import_module(module)
            self._loaded = True

    def get(self, name):
        """The L{Plugin} registered as name; raises L{UnknownType}."""
        plugin = self._plugins.get(name)
        if plugin is None:
            self.load_all()
            plugin = self._plugins.get(name)
        if plugin is None:
            raise UnknownType(self.kind, name, self.names())
        return plugin

    def __contains__(self, name):
        try:
            self.get(name)
        except UnknownType:
            return False
        return True

    def names(self):
        """Every registered type name, sorted."""
        self.load_all()
        return sorted(self._plugins)

    def plugins(self):
        """Every registered L{Plugin}, by name."""
        self.load_all()
        return [self._plugins[n] for n in sorted(self._plugins)]


# The registries of the built-in kinds. The module lists are the only place
# where a concrete type is named outside its own module.
RESOURCE_TYPES = Registry("group resource type", (
    "cpro.resources.exec",
    "cpro.resources.fip",
))
MONITOR_TYPES = Registry("monitor type", tuple(f"cpro.resources.monitors.{m}" for m in (
    "pidw", "psw", "genw", "ipw", "miiw", "diskw", "userw", "sraw", "psrw", "mtw", "fipw", "arpw",
)))
HEARTBEAT_KINDS = Registry("heartbeat kind", tuple(f"cpro.services.heartbeat.{m}" for m in (
    "lanhb", "comhb", "diskhb", "bmchb", "witnesshb",
)))
NP_RESOLVERS = Registry("network partition resolver", tuple(f"cpro.services.partition.{m}" for m in (
    "pingnp", "httpnp",
)) + ("cpro.services.heartbeat.witnesshb",))
FORCED_STOP_METHODS = Registry("forced stop method", (
    "cpro.services.partition.forcestop",
))
