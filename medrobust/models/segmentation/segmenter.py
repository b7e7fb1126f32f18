"""``MedicalSegmenter``: a segmentation network plus its card, with normalisation inside.

Attacks and metrics call the segmenter on images in image space (inside ``card.bounds``,
``(N, C, *spatial)``) and always get per-pixel logits ``(N, K, *spatial)`` back. When the card
sets ``roi_size`` and an input's size differs from it, the network runs through the
differentiable sliding window (:mod:`medrobust.models.segmentation.sliding`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.models.classifier import Normalize
from medrobust.models.segmentation.card import SegmentationCard
from medrobust.models.segmentation.registry import create_segmenter, get_segmenter_arch


class MedicalSegmenter(nn.Module):
    """A segmenter as deployed: normalisation layer + network, described by a :class:`SegmentationCard`.

    The network is stored as ``backbone`` (the classifiers' name, so checkpoints load the same way).

    Args:
        backbone: Network mapping normalised inputs to logits ``(N, K, *spatial)``.
        card: The card (bounds, label names, sliding window...).
        arch_kwargs: Keyword arguments the network was built with (saved in checkpoints).
    """

    def __init__(
        self, backbone: nn.Module, card: SegmentationCard, arch_kwargs: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        if not isinstance(card, SegmentationCard):
            raise ConfigError(f"The 'card' parameter must be a SegmentationCard. Got {type(card).__name__}.")
        self.card = card
        self.arch_kwargs = dict(arch_kwargs or {})
        self.normalize = Normalize(card.mean, card.std, card.spatial_dims)
        self.backbone = backbone

    @property
    def num_classes(self) -> int:
        """Number of labels (background included)."""
        return self.card.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits ``(N, K, *spatial)`` for image-space input ``(N, C, *spatial)``."""
        z = self.normalize(x)
        roi = self.card.roi_size
        if roi is not None and tuple(z.shape[2:]) != tuple(roi):
            from medrobust.models.segmentation.sliding import sliding_window_logits

            return sliding_window_logits(self.backbone, z, roi, self.card.sw_overlap, self.card.sw_batch_size)
        return self.backbone(z)


def build_segmenter(arch: str, card: SegmentationCard, **kw: Any) -> MedicalSegmenter:
    """Create a registered network sized by ``card`` and wrap it as a :class:`MedicalSegmenter`.

    The network is built for ``card.roi_size`` (else ``card.spatial_size``, else 64 per axis). A
    fixed-size family (UNETR) gets ``roi_size`` set to that size, so other sizes use the sliding window.
    """
    family = get_segmenter_arch(arch)
    size = card.roi_size or card.spatial_size or (64,) * card.spatial_dims
    net = create_segmenter(
        family.name, card.network_channels, card.num_classes, card.spatial_dims, size, **kw
    )
    update: dict[str, Any] = {}
    if card.arch != family.name:
        update["arch"] = family.name
    if family.fixed_size and card.roi_size is None:
        update["roi_size"] = tuple(int(s) for s in size)
    if update:
        card = card.model_copy(update=update)
    return MedicalSegmenter(net, card, arch_kwargs=kw)
