"""MONAI ResNet-18 and ResNet-50 (2D and 3D), trained from scratch."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from medrobust.models.registry import ClassifierArch, register_classifier
from medrobust.validation import check_float


class _MonaiResNet(ClassifierArch):
    factory: str = "resnet18"
    test_kwargs: ClassVar[dict[str, Any]] = {"widen_factor": 0.25}

    @classmethod
    def build(
        cls,
        in_channels: int,
        num_classes: int,
        spatial_dims: int,
        *,
        widen_factor: float = 1.0,
        no_max_pool: bool = False,
    ) -> nn.Module:
        """Build the network; ``widen_factor`` < 1 narrows it for cheap runs."""
        from monai.networks import nets

        kwargs: dict[str, Any] = {
            "spatial_dims": spatial_dims,
            "n_input_channels": in_channels,
            "num_classes": num_classes,
            "widen_factor": check_float(widen_factor, "widen_factor", cls.name, low=0),
            "no_max_pool": bool(no_max_pool),
            "pretrained": False,
        }
        return getattr(nets, cls.factory)(**kwargs)


@register_classifier("resnet18")
class ResNet18(_MonaiResNet):
    """``monai.networks.nets.resnet18``."""

    factory = "resnet18"


@register_classifier("resnet50")
class ResNet50(_MonaiResNet):
    """``monai.networks.nets.resnet50`` (bottleneck blocks)."""

    factory = "resnet50"
