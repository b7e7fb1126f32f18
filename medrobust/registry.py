"""Name -> factory registries with "did you mean" lookups (timm / MONAI style).

Each component family (attacks, classifiers, denoisers, presets, sources, phantoms)
owns one :class:`Registry`. Components register themselves with a decorator in
the file that defines them; a package ``__init__`` imports its modules so the
registry is filled. Nothing is resolved by ``eval`` or import strings from configs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medrobust.errors import ConfigError

T = TypeVar("T")


def normalize_name(name: str) -> str:
    """Canonical form of a registered name: lower case, ``_`` and ``-`` treated alike."""
    return name.strip().lower().replace("_", "-")


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return a " Did you mean 'x'?" hint for ``name`` among ``choices`` (or "")."""
    close = difflib.get_close_matches(normalize_name(name), [normalize_name(c) for c in choices], n=1)
    if not close:
        return ""
    original = next(c for c in choices if normalize_name(c) == close[0])
    return f" Did you mean '{original}'?"


class Registry(Generic[T]):
    """A named collection of components.

    Args:
        kind: What is registered ("attack", "classifier", ...), used in messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._display: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (and optional aliases)."""

        def deco(obj: T) -> T:
            for n in (name, *aliases):
                key = normalize_name(n)
                if key in self._items and self._items[key] is not obj:
                    raise ValueError(f"{self.kind} {n!r} is already registered")
                self._items[key] = obj
            self._display[normalize_name(name)] = name
            return obj

        return deco

    def decorator(self, attr: str = "name") -> Callable[..., Callable[[T], T]]:
        """Make this registry's class decorator: ``register_X = REGISTRY.decorator()``.

        ``@register_X("name", "alias")`` stores ``"name"`` on the class as ``attr`` and registers
        it under the name and its aliases. Every component family gets its decorator here,
        so the rule (primary name on the class, aliases resolve, duplicates refused) is one.
        """

        def register(name: str, *aliases: str) -> Callable[[T], T]:
            def deco(obj: T) -> T:
                setattr(obj, attr, name)
                return self.register(name, *aliases)(obj)

            return deco

        register.__doc__ = f"Class decorator registering a {self.kind} under ``name`` (and ``aliases``)."
        return register

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` without a decorator."""
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        """Look ``name`` up; unknown names raise :class:`ConfigError` with a suggestion."""
        if not isinstance(name, str):
            raise ConfigError(f"The {self.kind} name must be a string. Got {name!r}.")
        key = normalize_name(name)
        if key not in self._items:
            names = self.names()
            raise ConfigError(
                f"Unknown {self.kind} {name!r}.{did_you_mean(name, names)} "
                f"Valid {self.kind} names: {', '.join(names)}."
            )
        return self._items[key]

    def names(self) -> list[str]:
        """Primary names (no aliases), sorted."""
        return sorted(self._display.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._display)


def import_submodules(package: str) -> None:
    """Import every module of ``package`` so their ``@register`` decorators run.

    Used by package ``__init__`` files instead of a hand-edited list of modules.
    Modules whose name starts with ``_`` are skipped.
    """
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
