"""MONAI ``UNet`` (residual units), 2D and 3D."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from medrobust.models.segmentation.registry import SegmenterArch, register_segmenter
from medrobust.validation import check_int


@register_segmenter("unet")
class UNetArch(SegmenterArch):
    """``monai.networks.nets.UNet``: ``channels`` per level, stride 2 between levels, residual units.

    Every input side must be a multiple of ``2 ** (len(channels) - 1)`` (8 with the defaults).
    """

    size_multiple: ClassVar[int] = 8
    test_kwargs: ClassVar[dict[str, Any]] = {"channels": [4, 8, 16, 16], "num_res_units": 1}

    @classmethod
    def build(
        cls,
        in_channels: int,
        num_classes: int,
        spatial_dims: int,
        spatial_size: Sequence[int],
        *,
        channels: Sequence[int] = (16, 32, 64, 128),
        num_res_units: int = 2,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> nn.Module:
        """Build the network (``channels`` must have 4 levels: the size multiple is 8)."""
        from monai.networks.nets import UNet

        chans = [check_int(c, "channels", cls.name, low=1, high=4096) for c in channels]
        if len(chans) != 4:
            from medrobust.errors import ConfigError

            raise ConfigError(
                f"The 'channels' parameter of segmenter 'unet' must have 4 levels. Got {chans}."
            )
        return UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=chans,
            strides=(2,) * (len(chans) - 1),
            num_res_units=check_int(num_res_units, "num_res_units", cls.name, low=0, high=8),
            norm=norm,
            dropout=float(dropout),
        )
