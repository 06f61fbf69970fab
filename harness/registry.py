"""A small name -> object registry, the one mechanism behind every swappable part.

Stacking variants, losses, SUPERB tasks and teachers register themselves with a short,
stable, lowercase name in the module that defines them (lm-evaluation-harness style), and
YAML configs refer to them by that name. An unknown name fails with the nearest names.
"""

from __future__ import annotations

import difflib
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

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``.

        Raises:
            RegistryError: if ``name`` is not lowercase or is already taken.
        """
        if name != name.lower() or not name or " " in name:
            raise RegistryError(f"{self.kind} name {name!r} must be a non-empty lowercase word")

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
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}{did_you_mean(str(name), self.names())} "
                f"(registered: {', '.join(self.names())})"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
