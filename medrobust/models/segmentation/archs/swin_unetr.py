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

    Sides must be multiples of 32 and at least 64 (the deepest of its five levels keeps 2 voxels).

    MONAI's Swin blocks need the ``einops`` package.
    """

    size_multiple: ClassVar[int] = 32
    min_size: ClassVar[int] = 64
    requires: ClassVar[tuple[str, ...]] = ("einops",)
    #: MONAI's Swin blocks call ``.item()`` while building: the size is bounded by the ranges below.
    meta_build: ClassVar[bool] = False
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
            feature_size=check_int(feature_size, "feature_size", cls.name, low=12, high=192),
            depths=tuple(check_int(d, "depths", cls.name, low=1, high=24) for d in depths),
            num_heads=tuple(check_int(h, "num_heads", cls.name, low=1, high=64) for h in num_heads),
            drop_rate=float(dropout),
            spatial_dims=spatial_dims,
        )
