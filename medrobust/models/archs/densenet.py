"""MONAI DenseNet-121 (2D and 3D). Never downloads weights (``pretrained=False``)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from medrobust.models.registry import ClassifierArch, register_classifier
from medrobust.validation import check_float, check_int


@register_classifier("densenet121")
class DenseNet121(ClassifierArch):
    """``monai.networks.nets.DenseNet121`` trained from scratch."""

    test_kwargs: ClassVar[dict[str, Any]] = {"init_features": 8, "growth_rate": 8}

    @classmethod
    def build(
        cls,
        in_channels: int,
        num_classes: int,
        spatial_dims: int,
        *,
        init_features: int = 64,
        growth_rate: int = 32,
        dropout_prob: float = 0.0,
    ) -> nn.Module:
        """Build the network; ``init_features``/``growth_rate`` narrow it for cheap runs."""
        from monai.networks.nets import DenseNet121 as MonaiDenseNet121

        return MonaiDenseNet121(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=num_classes,
            init_features=check_int(init_features, "init_features", cls.name, low=1),
            growth_rate=check_int(growth_rate, "growth_rate", cls.name, low=1),
            dropout_prob=check_float(
                dropout_prob, "dropout_prob", cls.name, low=0, high=1, low_inclusive=True
            ),
            pretrained=False,
        )
