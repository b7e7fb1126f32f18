"""SPSA on a segmenter (Spall 1992; Uesato et al. 2018): the gradient-free check for gradient masking."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks.segmentation.base import SegmentationAttack, register_segmentation_attack
from medrobust.limits import MAX_ATTACK_QUERIES, MAX_ATTACK_STEPS
from medrobust.validation import check_int


@register_segmentation_attack("spsa")
class SegmentationSPSA(SegmentationAttack):
    """L∞ ascent on the objective with gradients estimated from forward passes only.

    Each step draws ``samples`` Rademacher directions ``v`` per image and estimates the gradient
    as the mean of ``(J(x + c v) − J(x − c v)) / (2c) · v``, then takes a signed step of ``alpha``
    and projects onto the ε-ball; the best iterate per image is kept. A segmenter that resists
    PGD but not SPSA is masking its gradients.

    Args:
        model: Segmenter returning per-pixel logits.
        eps: L∞ budget in image units ("k/255": k/255 of the bounds' range).
        steps: Iterations.
        samples: Direction pairs per step (each costs two forward passes).
        delta_fd: Finite-difference size ``c`` (image units); default ``eps / 2``.
        alpha: Step size (image units); default ``2.5 * eps / steps``.
        bounds, seed, goal, loss, lesion_classes: See :class:`~.base.SegmentationAttack`.
    """

    norm: ClassVar[str | None] = "linf"
    gradient_free: ClassVar[bool] = True
    fast_params: ClassVar[dict[str, Any]] = {"eps": "4/255", "steps": 2, "samples": 2}

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: Any = "8/255",
        steps: int = 20,
        samples: int = 8,
        delta_fd: Any = None,
        alpha: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        owner = type(self).__name__
        self.eps = self.budget(eps, "eps")
        self.steps = check_int(steps, "steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.samples = check_int(samples, "samples", owner, low=1, high=MAX_ATTACK_QUERIES)
        self.delta_fd = self.eps / 2 if delta_fd is None else self.budget(delta_fd, "delta_fd")
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else self.budget(alpha, "alpha")

    @torch.no_grad()
    def _attack(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        low, high = self.bounds
        c, shape = self.delta_fd, (-1, *([1] * (images.ndim - 1)))

        def value(x: torch.Tensor) -> torch.Tensor:
            return self.objective(self.model(x.clamp(low, high)), labels)

        adv = images.clone()
        best, best_value = adv.clone(), value(adv)
        queries = 1
        for _ in range(self.steps):
            grad = torch.zeros_like(images)
            for _ in range(self.samples):
                v = torch.randint(0, 2, images.shape, generator=generator, device=images.device)
                v = v.to(images.dtype) * 2 - 1
                grad += ((value(adv + c * v) - value(adv - c * v)) / (2 * c)).view(shape) * v
                queries += 2
            delta = (adv + self.alpha * grad.sign() - images).clamp(-self.eps, self.eps)
            adv = (images + delta).clamp(low, high)
            current = value(adv)
            queries += 1
            better = current > best_value
            best[better] = adv[better]
            best_value = torch.where(better, current, best_value)
        return best, queries, {"eps_abs": self.eps, "alpha_abs": self.alpha, "delta_fd_abs": c}
