"""Fixtures of the denoiser-study tests: a tiny seeded conv denoiser and small images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.defenses.denoisers.base import Denoiser


class TinyConvDenoiser(Denoiser):
    """Residual two-layer conv denoiser with seeded random weights (not registered)."""

    def __init__(self, in_channels: int = 1, bounds=(0.0, 1.0), seed: int = 0) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds)
        gen = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, in_channels, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.bounds
        u = (x - low) / (high - low)
        return self.clamp((u - self.c2(torch.relu(self.c1(u)))) * (high - low) + low)


@pytest.fixture
def tiny_denoiser():
    return TinyConvDenoiser


def make_pair(n: int = 3, size: int = 24, bounds=(0.0, 1.0), sigma: float = 15 / 255, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    low, high = bounds
    x = low + (high - low) * (0.1 + 0.8 * torch.rand((n, 1, size, size), generator=gen))
    y = x + torch.randn(x.shape, generator=gen) * sigma * (high - low)
    return x, y


@pytest.fixture
def pair():
    return make_pair
