"""A tiny convolutional classifier for tests, demos and quick audits (2D and 3D)."""

from __future__ import annotations

import torch
from torch import nn

from medrobust.models.registry import ClassifierArch, register_classifier
from medrobust.validation import check_float, check_int


class SmallCNNNet(nn.Module):
    """``depth`` blocks of conv-BN-ReLU(-maxpool), global average pooling and a linear head.

    Args:
        in_channels: Input channels.
        num_classes: Output logits.
        spatial_dims: 2 or 3.
        width: Channels of the first block (doubles per block).
        depth: Number of conv blocks (each but the last halves the spatial size).
        dropout: Dropout before the linear head.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 2,
        width: int = 16,
        depth: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        gap = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(depth):
            out = width * 2**i
            layers += [conv(ch, out, kernel_size=3, padding=1, bias=False), norm(out), nn.ReLU(inplace=True)]
            if i < depth - 1:
                layers.append(pool(2))
            ch = out
        self.features = nn.Sequential(*layers)
        self.pool = gap(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)``."""
        feats = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(feats))


@register_classifier("small_cnn", "smallcnn")
class SmallCNN(ClassifierArch):
    """A fast few-layer CNN; works for 1 or 3 channels and any size >= 28 (2D and 3D)."""

    min_size = 8

    @classmethod
    def build(
        cls,
        in_channels: int,
        num_classes: int,
        spatial_dims: int,
        *,
        width: int = 16,
        depth: int = 3,
        dropout: float = 0.0,
    ) -> nn.Module:
        """Build the network."""
        return SmallCNNNet(
            in_channels,
            num_classes,
            spatial_dims,
            width=check_int(width, "width", cls.name, low=1),
            depth=check_int(depth, "depth", cls.name, low=1, high=6),
            dropout=check_float(
                dropout, "dropout", cls.name, low=0, high=1, low_inclusive=True, high_inclusive=False
            ),
        )
