"""MONAI EfficientNet-B0 (2D and 3D) with ``pretrained=False``: weights are never downloaded."""

from __future__ import annotations

from torch import nn

from medrobust.models.registry import ClassifierArch, register_classifier


@register_classifier("efficientnet-b0", "efficientnet_b0")
class EfficientNetB0(ClassifierArch):
    """``monai.networks.nets.EfficientNetBN("efficientnet-b0", pretrained=False)``."""

    @classmethod
    def build(cls, in_channels: int, num_classes: int, spatial_dims: int) -> nn.Module:
        """Build the network from scratch."""
        from monai.networks.nets import EfficientNetBN

        return EfficientNetBN(
            "efficientnet-b0",
            pretrained=False,
            progress=False,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=num_classes,
        )
