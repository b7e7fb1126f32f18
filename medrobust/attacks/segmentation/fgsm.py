"""FGSM on a segmenter (Goodfellow et al., 2015): one signed-gradient step of size ``eps`` over all pixels."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks.segmentation.base import SegmentationAttack, register_segmentation_attack


@register_segmentation_attack("fgsm")
class SegmentationFGSM(SegmentationAttack):
    """One step ``x + eps * sign(grad)`` of the objective (see :mod:`.base`), clamped to the bounds.

    Args:
        model: Segmenter returning per-pixel logits.
        eps: L∞ budget in image units ("k/255": k/255 of the bounds' range).
        bounds, seed, goal, loss, lesion_classes: See :class:`~.base.SegmentationAttack`.
    """

    norm: ClassVar[str | None] = "linf"
    fast_params: ClassVar[dict[str, Any]] = {"eps": "4/255"}

    def __init__(self, model: nn.Module, *, eps: Any = "8/255", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.eps = self.budget(eps, "eps")

    def _attack(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        x = images.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.objective(self.model(x), labels).sum(), x)
        return images + self.eps * grad.sign(), 1, {"eps_abs": self.eps}
