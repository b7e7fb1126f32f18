"""The house's rules, checked on the source: no import cycles, a kernel that imports nothing above
it, and one definition of each shared mechanism."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medrobust"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """Every medrobust module ``name`` imports, at module level or inside functions."""
    path = MODULES[name]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != name and target.startswith("medrobust"):
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_modules():
    graph = {name: _imports(name) for name in MODULES}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


KERNEL_MAY_IMPORT = ("medrobust.errors", "medrobust.limits", "medrobust.validation", "medrobust.registry")


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("medrobust.run")))
def test_run_kernel_imports_nothing_above_it(name):
    above = {
        m
        for m in _imports(name)
        if not m.startswith(("medrobust.run", "medrobust.utils")) and m not in KERNEL_MAY_IMPORT
    }
    # ``import medrobust`` for __version__ is the package root, not a floor above.
    assert above - {"medrobust"} == set()


def _definitions(pattern: str) -> list[str]:
    regex = re.compile(pattern, re.M)
    return sorted(
        f"{path.relative_to(PACKAGE.parent)}"
        for path in PACKAGE.rglob("*.py")
        for _ in regex.finditer(path.read_text(encoding="utf-8"))
    )


@pytest.mark.parametrize(
    ("what", "pattern", "where"),
    [
        ("YAML parsing", r"yaml\.safe_load\(", "medrobust/utils/yaml_io.py"),
        ("seed derivation", r"^def derive_seed\(", "medrobust/run/seeds.py"),
        ("environment record", r"^def environment\(", "medrobust/run/environment.py"),
        ("config loader", r"^def load_config\(\s*cls", "medrobust/run/config.py"),
        ("non-finite JSON policy", r"^def finite_or_none\(", "medrobust/utils/io.py"),
        ("registry decorator factory", r"    def decorator\(self", "medrobust/registry.py"),
        ("lazy package attributes", r"^def lazy_attributes\(", "medrobust/utils/lazy.py"),
        ("budget unit conversion", r"^def budget_to_image_units\(", "medrobust/validation.py"),
        ("training loop over epochs", r"^\s+for epoch in ", "medrobust/run/loop.py"),
        ("resumable-state scheme", r"^class RunState\b", "medrobust/run/state.py"),
    ],
)
def test_one_definition_of_each_shared_mechanism(what, pattern, where):
    assert _definitions(pattern) == [where], what


def test_no_hand_written_registry_decorators_or_lazy_getattr():
    assert _definitions(r"^def register_\w+\(name: str") == []
    assert _definitions(r"^def __getattr__\(") == []
