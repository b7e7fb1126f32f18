"""MONAI 2D U-Net denoiser."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from medrobust.defenses.denoisers._common import DeepDenoiser, pad_to_multiple
from medrobust.defenses.denoisers.base import register_denoiser
from medrobust.errors import ConfigError
from medrobust.validation import check_int


def check_channels(channels: Any, strides: Any, owner: str, offset: int = 1) -> tuple[list[int], list[int]]:
    """Validate MONAI-style ``channels``/``strides`` (len(strides) == len(channels) - offset)."""
    if not isinstance(channels, Sequence) or len(channels) < 2:
        raise ConfigError(
            f"The 'channels' parameter of {owner} must be a list of >= 2 ints. Got {channels!r}."
        )
    chans = [check_int(c, "channels", owner, low=1, high=4096) for c in channels]
    if strides is None:
        strides = [2] * (len(chans) - offset)
    if not isinstance(strides, Sequence) or len(strides) != len(chans) - offset:
        raise ConfigError(
            f"The 'strides' parameter of {owner} must have {len(chans) - offset} ints "
            f"(len(channels) - {offset}). "
            f"Got {strides!r}."
        )
    return chans, [check_int(s, "strides", owner, low=1, high=4) for s in strides]


@register_denoiser("unet")
class UNetDenoiser(DeepDenoiser):
    """MONAI ``UNet`` (2D) with a sigmoid head in normalised space (output always inside ``bounds``).

    Args:
        in_channels: Image channels.
        bounds: Intensity interval.
        channels: Channels per level, e.g. ``(16, 32, 64)``.
        strides: Downsampling per level (default 2 each); inputs are padded to their product.
        num_res_units: Residual units per block (MONAI).
        norm: MONAI norm name ("instance", "batch", ...).
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
        from monai.networks.nets import UNet

        owner = type(self).__name__
        self.channels, self.strides = check_channels(channels, strides, owner)
        self.num_res_units = check_int(num_res_units, "num_res_units", owner, low=0)
        self.norm = str(norm)
        self.net = UNet(
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
