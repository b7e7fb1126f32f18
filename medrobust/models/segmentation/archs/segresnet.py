"""MONAI ``SegResNet`` (Myronenko 2018, without the VAE branch), 2D and 3D."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from medrobust.models.segmentation.registry import SegmenterArch, register_segmenter
from medrobust.validation import check_int


@register_segmenter("segresnet")
class SegResNetArch(SegmenterArch):
    """``monai.networks.nets.SegResNet``, 4 levels (blocks_down 1, 2, 2, 4); sides multiples of 8.

    ``init_filters`` must be a multiple of 8 (group normalisation with 8 groups).
    """

    size_multiple: ClassVar[int] = 8
    test_kwargs: ClassVar[dict[str, Any]] = {"init_filters": 8}

    @classmethod
    def build(
        cls,
        in_channels: int,
        num_classes: int,
        spatial_dims: int,
        spatial_size: Sequence[int],
        *,
        init_filters: int = 16,
        dropout: float = 0.0,
    ) -> nn.Module:
        """Build the network."""
        from monai.networks.nets import SegResNet

        from medrobust.errors import ConfigError

        filters = check_int(init_filters, "init_filters", cls.name, low=8, high=1024)
        if filters % 8:
            raise ConfigError(
                f"The 'init_filters' parameter of segmenter 'segresnet' must be a multiple of 8 (group "
                f"normalisation in 8 groups). Got {filters}."
            )
        return SegResNet(
            spatial_dims=spatial_dims,
            init_filters=filters,
            in_channels=in_channels,
            out_channels=num_classes,
            dropout_prob=float(dropout) or None,
        )
