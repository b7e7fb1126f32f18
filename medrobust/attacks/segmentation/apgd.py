"""APGD on a segmenter (Croce & Hein, ICML 2020), L∞ ball: Auto-PGD on the objective over all pixels.

The iteration is the classifier APGD's own (:func:`medrobust.attacks._apgd.apgd_run`): random
start on the ε-sphere, step size ``2 * eps`` halved at the paper's checkpoints (``0.22 N`` first,
then shrinking by ``0.03 N`` down to ``0.06 N``) when the loss oscillated or stalled, momentum
0.75, and the highest-loss iterate kept per image. What it ascends is
:meth:`~medrobust.attacks.segmentation.base.SegmentationAttack.objective`: the per-pixel
cross-entropy averaged over all pixels (``goal="untargeted"``), minus it towards the background on
the lesion pixels (``goal="erase-lesion"``), or the soft-Dice forms (``loss="dice"``).

``apgd_run`` drops a sample from the batch once its predicted class is wrong; a segmentation map has
no single prediction, so every image stays for all ``steps``. The segmenter is handed to
``apgd_run`` as a "classifier" whose logits are the flattened per-pixel logits behind one leading
column that is always the largest (class 0, the label ``apgd_run`` is given), so no image ever
counts as fooled and the loss unflattens the rest.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import torch
from torch import nn

from medrobust.attacks.segmentation.base import SegmentationAttack, register_segmentation_attack
from medrobust.limits import MAX_ATTACK_RESTARTS, MAX_ATTACK_STEPS
from medrobust.validation import check_float, check_int


@register_segmentation_attack("apgd", "apgd-ce")
class SegmentationAPGD(SegmentationAttack):
    """Auto-PGD on :meth:`~.base.SegmentationAttack.objective`, L∞ ball of radius ``eps``.

    Each iteration costs one forward and one input-gradient backward, like a PGD step; the step
    size needs no tuning. With ``restarts`` > 1 the highest-objective result per image is kept.

    Args:
        model: Segmenter returning per-pixel logits.
        eps: L∞ budget in image units ("k/255": k/255 of the bounds' range).
        steps: Iterations per restart (N in the paper).
        restarts: Runs from independent random starts.
        rho: Oscillation threshold of the step-size schedule (0.75 in the paper).
        bounds, seed, goal, loss, lesion_classes: See :class:`~.base.SegmentationAttack`.
    """

    norm: ClassVar[str | None] = "linf"
    fast_params: ClassVar[dict[str, Any]] = {"eps": "4/255", "steps": 3}

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: Any = "8/255",
        steps: int = 20,
        restarts: int = 1,
        rho: float = 0.75,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        owner = type(self).__name__
        self.eps = self.budget(eps, "eps", linf=self.norm == "linf")
        self.steps = check_int(steps, "steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.restarts = check_int(restarts, "restarts", owner, low=1, high=MAX_ATTACK_RESTARTS)
        self.rho = check_float(rho, "rho", owner, low=0.0, high=1.0)

    def _flat_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1 + K * pixels)``: a column above every logit (argmax 0: never fooled), then the logits."""
        flat = self.model(x).flatten(1)
        return torch.cat([flat.detach().amax(1, keepdim=True) + 1.0, flat], 1)

    def _attack(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        from medrobust.attacks._apgd import apgd_run

        n, spatial = images.shape[0], tuple(images.shape[2:])

        def loss_fn(logits: torch.Tensor, _: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
            # apgd_run passes the masks through as its targets (subset with the batch).
            return self.objective(
                logits[:, 1:].reshape(logits.shape[0], -1, *spatial), cast(torch.Tensor, masks)
            )

        never = torch.zeros(n, dtype=torch.long, device=images.device)
        best = images.clone()
        best_value = torch.full((n,), float("-inf"), device=images.device)
        queries = 0
        for _ in range(self.restarts):
            adv, _, used = apgd_run(
                self._flat_logits,
                images,
                never,
                loss_fn=loss_fn,
                targets=labels,
                eps=self.eps,
                norm=str(self.norm),
                steps=self.steps,
                rho=self.rho,
                bounds=self.bounds,
                generator=generator,
            )
            queries += int(used.max()) if n else 0
            if self.restarts == 1:
                return adv, queries, {"eps_abs": self.eps, "restarts": 1}
            with torch.no_grad():
                value = self.objective(self.model(adv), labels)
            queries += 1
            better = value > best_value
            best[better] = adv[better]
            best_value = torch.where(better, value, best_value)
        return best, queries, {"eps_abs": self.eps, "restarts": self.restarts}
