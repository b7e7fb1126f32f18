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
