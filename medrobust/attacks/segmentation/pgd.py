"""PGD on a segmenter (Madry et al., 2018), L∞ ball: the objective over all pixels (or the lesion's)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._utils import check_bool
from medrobust.attacks.segmentation.base import ADV_PRED, SegmentationAttack, register_segmentation_attack
from medrobust.limits import MAX_ATTACK_STEPS
from medrobust.utils.labels import label_map
from medrobust.validation import check_int


@register_segmentation_attack("pgd", "pgd-linf")
class SegmentationPGD(SegmentationAttack):
    """Projected gradient ascent on :meth:`~.base.SegmentationAttack.objective`, L∞ ball of radius ``eps``.

    Each step costs one forward and one input-gradient backward; the iterate with the highest
    objective per image is returned (SegPGD and the L2 variant change :meth:`_start`,
    :meth:`_step` and :meth:`_loss`).

    Args:
        model: Segmenter returning per-pixel logits.
        eps: L∞ budget in image units ("k/255": k/255 of the bounds' range).
        alpha: Step size (image units); default ``2.5 * eps / steps``.
        steps: Gradient steps.
        random_start: Start uniformly inside the ball.
        bounds, seed, goal, loss, lesion_classes: See :class:`~.base.SegmentationAttack`.
    """

    norm: ClassVar[str | None] = "linf"
    fast_params: ClassVar[dict[str, Any]] = {"eps": "4/255", "steps": 3}

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: Any = "8/255",
        alpha: Any = None,
        steps: int = 10,
        random_start: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        owner = type(self).__name__
        self.eps = self.budget(eps, "eps", linf=self.norm == "linf")
        self.steps = check_int(steps, "steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else self.budget(alpha, "alpha", linf=False)
        self.random_start = check_bool(random_start, "random_start", owner)

    def _start(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.empty_like(images).uniform_(-self.eps, self.eps, generator=generator)
        return (images + noise).clamp(*self.bounds)

    def _step(self, adv: torch.Tensor, grad: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        delta = (adv + self.alpha * grad.sign() - images).clamp(-self.eps, self.eps)
        return (images + delta).clamp(*self.bounds)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
        """Per-sample value to ascend at ``step`` (1-based); plain PGD: the objective."""
        return self.objective(logits, labels)

    def _attack(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        adv = self._start(images, generator) if self.random_start else images.clone()
        best = adv.clone()
        best_value = torch.full((images.shape[0],), float("-inf"), device=images.device)
        best_pred = labels.clone()  # every entry is replaced at the first step (value > -inf)
        plain = type(self)._loss is SegmentationPGD._loss  # the ascended loss is the objective
        for t in range(1, self.steps + 1):
            adv.requires_grad_(True)
            logits = self.model(adv)
            loss = self._loss(logits, labels, t)
            with torch.no_grad():
                # rank iterates on the plain objective (computed once when it is the loss)
                value = loss.detach() if plain else self.objective(logits, labels)
                better = value > best_value
                if bool(better.any()):
                    best[better] = adv.detach()[better]
                    best_pred[better] = label_map(logits)[better]
                best_value = torch.where(better, value, best_value)
            (grad,) = torch.autograd.grad(loss.sum(), adv)
            adv = self._step(adv.detach(), grad, images)
        with torch.no_grad():
            logits = self.model(adv)
            better = self.objective(logits, labels) > best_value
            best[better] = adv[better]
            best_pred[better] = label_map(logits)[better]
        # the label map of the returned images comes from the ranking forwards: no extra forward
        info = {"eps_abs": self.eps, "alpha_abs": self.alpha, ADV_PRED: best_pred}
        return best, self.steps + 1, info
