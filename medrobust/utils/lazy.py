"""Lazy package attributes (PEP 562): one implementation for every package ``__init__``.

A package lists ``name -> "module"`` (the attribute has the same name there) or
``name -> "module:attribute"`` and gets its ``__getattr__``/``__dir__`` from
:func:`lazy_attributes`, so ``import medrobust.x`` stays light and heavy modules load on use.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` resolving the names of ``table`` on first access."""

    def module_getattr(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module_name), attr or name)
        setattr(sys.modules[package], name, value)  # cache: the next access is a plain lookup
        return value

    def module_dir() -> list[str]:
        module = sys.modules[package]
        return sorted(set(vars(module)) | set(getattr(module, "__all__", ())) | set(table))

    return module_getattr, module_dir
