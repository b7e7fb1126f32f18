"""A tiny encoder-decoder for tests and smoke runs (2D and 3D, any side that is even)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.models.segmentation.registry import SegmenterArch, register_segmenter
from medrobust.validation import check_int


class TinySegNet(nn.Module):
    """conv -> strided conv -> transposed conv, with a skip connection; ReLU, no normalisation."""

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int, width: int = 8) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        up = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        self.enc = nn.Sequential(conv(in_channels, width, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(conv(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.up = up(2 * width, width, 2, stride=2)
        self.head = nn.Sequential(
            conv(2 * width, width, 3, padding=1), nn.ReLU(), conv(width, num_classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, *spatial)``."""
        skip = self.enc(x)
        return self.head(torch.cat([skip, self.up(self.down(skip))], dim=1))


@register_segmenter("tiny")
class TinyArch(SegmenterArch):
    """:class:`TinySegNet`: a few thousand parameters; sides multiples of 2."""

    size_multiple: ClassVar[int] = 2
    test_kwargs: ClassVar[dict[str, Any]] = {"width": 4}

    @classmethod
    def build(
        cls,
        in_channels: int,
        num_classes: int,
        spatial_dims: int,
        spatial_size: Sequence[int],
        *,
        width: int = 8,
    ) -> nn.Module:
        """Build the network."""
        return TinySegNet(
            in_channels, num_classes, spatial_dims, check_int(width, "width", cls.name, low=1, high=512)
        )
