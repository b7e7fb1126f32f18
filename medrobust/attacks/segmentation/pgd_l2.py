"""PGD on a segmenter, L2 ball: steps along the L2-normalised gradient, projected onto the ball."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._utils import bview, project_l2, random_l2_ball
from medrobust.attacks.segmentation.base import register_segmentation_attack
from medrobust.attacks.segmentation.pgd import SegmentationPGD


@register_segmentation_attack("pgd-l2")
class SegmentationPGDL2(SegmentationPGD):
    """As :class:`~.pgd.SegmentationPGD` with ``eps`` and ``alpha`` as L2 lengths in image units.

    The L2 norm of a whole image (or volume) grows with its pixel count, so L2 budgets of
    segmentation audits are larger than classifiers'; the default ``"255/255"`` is one full intensity
    range (1.0 on a [0, 1] card, 4095 HU on a CT card).
    """

    norm: ClassVar[str | None] = "l2"
    fast_params: ClassVar[dict[str, Any]] = {"eps": "128/255", "steps": 3}

    def __init__(self, model: nn.Module, *, eps: Any = "255/255", **kwargs: Any) -> None:
        super().__init__(model, eps=eps, **kwargs)

    def _start(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        delta = random_l2_ball(images.shape, self.eps, generator, dtype=images.dtype, device=images.device)
        return (images + delta).clamp(*self.bounds)

    def _step(self, adv: torch.Tensor, grad: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = project_l2(adv + self.alpha * grad / bview(norms, grad) - images, self.eps)
        return (images + delta).clamp(*self.bounds)
