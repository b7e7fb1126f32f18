"""Explicit seeding helpers. Nothing here touches global RNG state unless asked."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a ``torch.Generator`` on ``device`` seeded with ``seed``."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def numpy_rng(seed: int) -> np.random.Generator:
    """Return a NumPy ``Generator`` seeded with ``seed``."""
    return np.random.default_rng(int(seed))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs (used by training entry points only)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
