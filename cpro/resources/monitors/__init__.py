"""Monitor resources, one module per type; `base.registry()` maps type names to classes."""

import importlib
import pkgutil

_NOT_TYPES = frozenset({"base", "contract"})


def load_all():
    """Import every type module; each registers its class with base.monitor_type."""
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_TYPES and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
