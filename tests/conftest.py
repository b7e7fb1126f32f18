"""Shared fixtures: everything synthetic, written into tmp_path; no downloads."""

from __future__ import annotations

import os

# Keep each xdist worker to one intra-op thread: 2 workers x 1 thread fits a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def load_benchmark():
    """Import a script of ``benchmarks/`` by name: ``load_benchmark("defenses").main([...])``."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
