"""DnCNN (Zhang et al., 2017): a residual CNN that predicts the noise and subtracts it."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.defenses.denoisers._common import DeepDenoiser
from medrobust.defenses.denoisers.base import register_denoiser
from medrobust.validation import check_int


@register_denoiser("dncnn")
class DnCNN(DeepDenoiser):
    """Residual denoiser: ``out = clamp(x - net(x))`` in normalised space.

    Output range: a clamp, not a sigmoid, because DnCNN is residual (the identity must be
    representable exactly and near-identity at initialisation); the clamp only acts on
    pixels pushed past the bounds. The last layer is zero-initialised, so a fresh DnCNN
    is the identity.

    Args:
        in_channels: Image channels.
        bounds: Intensity interval.
        depth: Number of convolution layers (17 in the paper).
        width: Feature channels (64 in the paper).
        batch_norm: Batch norm in the middle layers, as in the paper.
    """

    fast_params: ClassVar[dict[str, Any]] = {"depth": 3, "width": 8}

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        depth: int = 17,
        width: int = 64,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds)
        owner = type(self).__name__
        self.depth = check_int(depth, "depth", owner, low=2, high=256)
        self.width = check_int(width, "width", owner, low=1, high=2048)
        self.batch_norm = bool(batch_norm)
        layers: list[nn.Module] = [
            nn.Conv2d(self.in_channels, self.width, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        for _ in range(self.depth - 2):
            layers.append(nn.Conv2d(self.width, self.width, 3, padding=1, bias=not self.batch_norm))
            if self.batch_norm:
                layers.append(nn.BatchNorm2d(self.width))
            layers.append(nn.ReLU(inplace=True))
        last = nn.Conv2d(self.width, self.in_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted noise in normalised units for images already mapped to ``[0, 1]``."""
        return self.net(x)

    def _forward_unit(self, u: torch.Tensor) -> torch.Tensor:
        return u - self.net(u)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {**super().config(), "depth": self.depth, "width": self.width, "batch_norm": self.batch_norm}
