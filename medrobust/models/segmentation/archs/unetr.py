"""MONAI ``UNETR`` (Hatamizadeh et al. 2022): a ViT encoder for one fixed input size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from medrobust.models.segmentation.registry import SegmenterArch, register_segmenter
from medrobust.validation import check_int


@register_segmenter("unetr")
class UNETRArch(SegmenterArch):
    """``monai.networks.nets.UNETR`` built for ``spatial_size`` (patches of 16; sides multiples of 16).

    The network only takes inputs of the size it was built for: the card's ``roi_size`` is set to
    it and larger images go through the (differentiable) sliding window. MONAI's attention blocks
    need the ``einops`` package.
    """

    size_multiple: ClassVar[int] = 16
    fixed_size: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("einops",)
    test_kwargs: ClassVar[dict[str, Any]] = {
        "feature_size": 4,
        "hidden_size": 48,
        "mlp_dim": 96,
        "num_heads": 4,
    }

    @classmethod
    def build(
        cls,
        in_channels: int,
        num_classes: int,
        spatial_dims: int,
        spatial_size: Sequence[int],
        *,
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        dropout: float = 0.0,
    ) -> nn.Module:
        """Build the network for inputs of ``spatial_size``."""
        from monai.networks.nets import UNETR

        return UNETR(
            in_channels=in_channels,
            out_channels=num_classes,
            img_size=tuple(int(s) for s in spatial_size),
            feature_size=check_int(feature_size, "feature_size", cls.name, low=1, high=1024),
            hidden_size=check_int(hidden_size, "hidden_size", cls.name, low=1, high=8192),
            mlp_dim=check_int(mlp_dim, "mlp_dim", cls.name, low=1, high=65536),
            num_heads=check_int(num_heads, "num_heads", cls.name, low=1, high=128),
            dropout_rate=float(dropout),
            spatial_dims=spatial_dims,
        )
