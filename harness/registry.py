"""A small name -> object registry, the one mechanism behind every swappable part.

Stacking variants, losses, SUPERB tasks and teachers register themselves with a short,
stable, lowercase name in the module that defines them (lm-evaluation-harness style), and
YAML configs refer to them by that name. An unknown name fails with the nearest names.

A registry whose entries live in modules that are costly to import or that import the
registry's own module (the teacher adapters) declares them up front as lazy
``"module:object"`` placeholders (:meth:`Registry.register_lazy`, lm-eval's pattern): the
names are known without importing anything, and :meth:`Registry.get` imports the module
on first use. Nothing is imported only so that it registers itself.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable, Generic, Iterator, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")


class RegistryError(KeyError, HarnessError):
    """Raised for an unknown or duplicate name; the message lists the nearest valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one readable line.
        return str(self.args[0])


def nearest(name: str, choices: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``choices`` closest to ``name`` (difflib ratio)."""
    return difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Format a hint such as ``"; did you mean 'mse'?"`` (empty when nothing is close)."""
    close = nearest(name, choices)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


class Registry(Generic[T]):
    """Maps short lowercase names to objects (classes, builder functions).

    Args:
        kind: what the registry holds, used in error messages ("stacking variant").

    Example:
        >>> LOSSES = Registry("loss")
        >>> @LOSSES.register("mse")
        ... def mse(a, b): ...
        >>> LOSSES.get("mse") is mse
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}  # name -> "module:object", until first get()

    @staticmethod
    def _check_name(kind: str, name: str) -> None:
        if name != name.lower() or not name or " " in name:
            raise RegistryError(f"{kind} name {name!r} must be a non-empty lowercase word")

    def register_lazy(self, name: str, target: str) -> None:
        """Declare ``name`` as ``"package.module:object"``, imported on first :meth:`get`.

        The module may (and usually does) also decorate the object with
        :meth:`register` under the same name; that replaces the placeholder.

        Raises:
            RegistryError: a bad name or target, or ``name`` already taken.
        """
        self._check_name(self.kind, name)
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise RegistryError(f"{self.kind} {name!r}: lazy target {target!r} is not 'module:object'")
        if name in self._items or name in self._lazy:
            raise RegistryError(f"{self.kind} {name!r} is registered twice")
        self._lazy[name] = target

    def _resolve(self, name: str) -> None:
        module, _, attr = self._lazy[name].partition(":")
        obj = getattr(importlib.import_module(module), attr)
        # the import may have registered it through the decorator already (same object)
        if self._items.setdefault(name, obj) is not obj:
            raise RegistryError(f"{self.kind} {name!r}: {self._lazy[name]} is not what {module} registered")
        del self._lazy[name]

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``.

        Raises:
            RegistryError: if ``name`` is not lowercase or is already taken.
        """
        self._check_name(self.kind, name)

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises:
            RegistryError: for an unknown name, listing the nearest registered names.
        """
        if name in self._lazy:
            self._resolve(name)
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}{did_you_mean(str(name), self.names())} "
                f"(registered: {', '.join(self.names())})"
            ) from None

    def names(self) -> list[str]:
        """Registered names (lazy ones included, nothing imported), sorted."""
        return sorted({*self._items, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
