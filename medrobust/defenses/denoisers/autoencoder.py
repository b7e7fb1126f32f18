"""MONAI 2D ``AutoEncoder`` denoiser (exposes ``encode``/``decode``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from medrobust.defenses.denoisers._common import (
    DeepDenoiser,
    check_images,
    pad_to_multiple,
    plain,
    to_unit,
)
from medrobust.defenses.denoisers.base import register_denoiser
from medrobust.defenses.denoisers.unet import check_channels
from medrobust.validation import check_int


@register_denoiser("autoencoder", "monai-autoencoder")
class MonaiAutoEncoder(DeepDenoiser):
    """MONAI ``AutoEncoder`` (no skip connections) with a sigmoid head in normalised space.

    Args:
        in_channels: Image channels.
        bounds: Intensity interval.
        channels: Encoder channels per level, e.g. ``(16, 32, 64)``.
        strides: Downsampling per level, one per channel entry (default 2 each).
        num_res_units: Residual units per block.
        norm: MONAI norm name.
    """

    fast_params: ClassVar[dict[str, Any]] = {"channels": (4, 8), "num_res_units": 0}

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        channels: Sequence[int] = (16, 32, 64),
        strides: Sequence[int] | None = None,
        num_res_units: int = 1,
        norm: str = "instance",
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds)
        from monai.networks.nets import AutoEncoder

        owner = type(self).__name__
        self.channels, self.strides = check_channels(channels, strides, owner, offset=0)
        self.num_res_units = check_int(num_res_units, "num_res_units", owner, low=0)
        self.norm = str(norm)
        self.net = AutoEncoder(
            spatial_dims=2,
            in_channels=self.in_channels,
            out_channels=self.in_channels,
            channels=self.channels,
            strides=self.strides,
            num_res_units=self.num_res_units,
            norm=self.norm,
        )
        self.multiple = 1
        for s in self.strides:
            self.multiple *= s

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent code (after MONAI's encode + intermediate blocks) of images in ``bounds``."""
        x = plain(x)
        check_images(x, self)
        u, _ = pad_to_multiple(to_unit(x, self.bounds), self.multiple)
        return self.net.intermediate(self.net.encode(u))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in ``bounds`` (padded size) from latent codes."""
        low, high = self.bounds
        return torch.sigmoid(self.net.decode(z)) * (high - low) + low

    def _forward_unit(self, u: torch.Tensor) -> torch.Tensor:
        up, (h, w) = pad_to_multiple(u, self.multiple)
        return torch.sigmoid(self.net(up))[..., :h, :w]

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            **super().config(),
            "channels": list(self.channels),
            "strides": list(self.strides),
            "num_res_units": self.num_res_units,
            "norm": self.norm,
        }
