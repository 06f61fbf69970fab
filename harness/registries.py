"""Every registry of the harness, for ``harness ls`` and for validating names in configs.

Each registry lives in the module that defines its entries (or declares them lazily, like
``TEACHERS``); this module imports those modules on demand.
"""

from __future__ import annotations

import importlib

from harness.registry import Registry

# registry name -> (module that defines it, attribute)
_REGISTRIES: dict[str, tuple[str, str]] = {
    "stacking": ("harness.stacking", "STACKING"),
    "criteria": ("harness.losses", "CRITERIA"),
    "objectives": ("harness.losses", "OBJECTIVES"),
    "teachers": ("harness.teachers", "TEACHERS"),
    "tasks": ("harness.superb", "TASKS"),
    "importers": ("harness.data.importers", "IMPORTERS"),
}


def all_registries() -> dict[str, Registry]:
    """Name -> Registry for every registry whose defining module is installed."""
    out: dict[str, Registry] = {}
    for name, (module, attr) in _REGISTRIES.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:  # that part of the harness is not built yet
                continue
            raise
        out[name] = getattr(mod, attr)
    return out
