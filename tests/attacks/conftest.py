"""Shared fixtures for attack tests (ATTACKS-A and ATTACKS-B): tiny deterministic models.

* ``make_model(channels, classes, bounds, ...)`` builds a small conv net with a
  ``.card`` (``ModelCard``) whose normalisation maps ``bounds`` onto about [-1, 1], so the
  same net works for [0, 1], (-1, 2) or Hounsfield-like (-1024, 3071) inputs.
* ``make_images(model, n, size)`` draws inputs inside the model's bounds.
* ``trained_binary`` / ``trained_4class``: session-scoped models trained in about a
  second (1 thread) on a learnable synthetic task (a bright blob whose quadrant is the
  class), with held-out ``(images, labels)`` they classify well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.models.card import ModelCard


class Normalize(nn.Module):
    """Map ``bounds`` onto [-1, 1] inside the model (the card's intensity scale)."""

    def __init__(self, bounds: tuple[float, float]) -> None:
        super().__init__()
        low, high = bounds
        self.center = (low + high) / 2.0
        self.scale = (high - low) / 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.scale


class TinyConvNet(nn.Module):
    """Conv-BN-ReLU-pool x2, dropout, linear head. Works for any channels/classes."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        bounds: tuple[float, float] = (0.0, 1.0),
        width: int = 8,
    ) -> None:
        super().__init__()
        self.norm = Normalize(bounds)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(2 * width * 16, num_classes)
        self.card = ModelCard(
            in_channels=in_channels,
            class_names=[f"class{i}" for i in range(num_classes)],
            bounds=bounds,
            arch="tiny_conv_test",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(self.norm(x)).flatten(1)))


def build_model(
    channels: int = 1,
    classes: int = 2,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    train_mode: bool = False,
) -> TinyConvNet:
    """Deterministic :class:`TinyConvNet` (init under a forked, seeded RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyConvNet(channels, classes, bounds)
    return model.train(train_mode)


def build_images(
    model: nn.Module, n: int = 6, size: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images inside ``model.card.bounds`` and labels = the model's predictions."""
    card = model.card
    low, high = card.bounds
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, card.in_channels, size, size, generator=gen)
    images = low + (high - low) * u
    was = model.training
    model.eval()
    with torch.no_grad():
        labels = model(images).argmax(1)
    model.train(was)
    return images, labels


@pytest.fixture
def make_model() -> Callable[..., TinyConvNet]:
    return build_model


@pytest.fixture
def make_images() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    return build_images


def blob_data(n: int, classes: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 1-channel task: a Gaussian blob whose quadrant is the class, plus noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    quad = [(0.25, 0.25), (0.75, 0.75), (0.25, 0.75), (0.75, 0.25)]
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((n, 1, size, size), dtype=np.float32)
    for i, y in enumerate(labels):
        cy, cx = quad[y]
        cy += rng.normal(0, 0.04)
        cx += rng.normal(0, 0.04)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.08**2))
        images[i, 0] = 0.3 + 0.5 * blob + rng.normal(0, 0.05, (size, size))
    return torch.from_numpy(np.clip(images, 0.0, 1.0)), torch.from_numpy(labels).long()


@dataclass
class Trained:
    """A trained model with held-out images it classifies (mostly) correctly."""

    model: TinyConvNet
    images: torch.Tensor
    labels: torch.Tensor

    @property
    def clean_accuracy(self) -> float:
        with torch.no_grad():
            return (self.model(self.images).argmax(1) == self.labels).float().mean().item()


def train_blob_model(classes: int, seed: int = 0, n_test: int = 16) -> Trained:
    model = build_model(1, classes, (0.0, 1.0), seed=seed, train_mode=True)
    x, y = blob_data(512, classes, seed=seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), 64):
                idx = perm[i : i + 64]
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    model.eval()
    xt, yt = blob_data(n_test, classes, seed=seed + 2)
    return Trained(model, xt, yt)


@pytest.fixture(scope="session")
def trained_binary() -> Trained:
    torch.set_num_threads(1)
    return train_blob_model(2)


@pytest.fixture(scope="session")
def trained_4class() -> Trained:
    torch.set_num_threads(1)
    return train_blob_model(4)
