"""MONAI ``SwinUNETR`` (Hatamizadeh et al. 2022): a Swin-transformer encoder, sides multiples of 32."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from medrobust.models.segmentation.registry import SegmenterArch, register_segmenter
from medrobust.validation import check_int


@register_segmenter("swin_unetr", "swinunetr")
class SwinUNETRArch(SegmenterArch):
    """``monai.networks.nets.SwinUNETR``; builds on CPU at small sizes (``feature_size`` 12, depths 1).

    MONAI's Swin blocks need the ``einops`` package.
    """

    size_multiple: ClassVar[int] = 32
    requires: ClassVar[tuple[str, ...]] = ("einops",)
    test_kwargs: ClassVar[dict[str, Any]] = {"feature_size": 12, "depths": [1, 1, 1, 1]}

    @classmethod
    def build(
        cls,
        in_channels: int,
        num_classes: int,
        spatial_dims: int,
        spatial_size: Sequence[int],
        *,
        feature_size: int = 24,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        dropout: float = 0.0,
    ) -> nn.Module:
        """Build the network (``feature_size`` must be a multiple of 12)."""
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(
            in_channels=in_channels,
            out_channels=num_classes,
            feature_size=check_int(feature_size, "feature_size", cls.name, low=12, high=1024),
            depths=tuple(int(d) for d in depths),
            num_heads=tuple(int(h) for h in num_heads),
            drop_rate=float(dropout),
            spatial_dims=spatial_dims,
        )
