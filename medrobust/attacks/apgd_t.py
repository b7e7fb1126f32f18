"""APGD-T: targeted Auto-PGD on the DLR loss (Croce & Hein, ICML 2020), any K >= 2, with optional EOT."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._apgd import apgd_run, ranked_targets
from medrobust.attacks._eot import eot_logits
from medrobust.attacks._losses import DLR_SUBSTITUTE_NOTE, targeted_loss
from medrobust.attacks._utils import frozen_params, make_result
from medrobust.attacks.apgd_ce import APGDCE
from medrobust.attacks.base import AttackResult, register_attack
from medrobust.validation import check_int


@register_attack("apgd-t")
class APGDT(APGDCE):
    """Targeted APGD on the targeted DLR loss, one run per target class.

    The targets are the classes with the 2nd, 3rd, ... largest clean logit, ``min(
    n_target_classes, K - 1)`` of them (9 in AutoAttack); each target run attacks only the
    samples still classified correctly. Success is untargeted (any misclassification),
    as in AutoAttack. The targeted DLR loss needs the 4th-largest logit, so for
    ``K < 4`` the targeted margin (CW) loss ``z_t - z_y`` is used and ``info["loss"]`` /
    ``info["notes"]`` say so.

    Args:
        n_target_classes: Upper bound on the number of target classes (9 in AutoAttack).
        eps, norm, steps, restarts, rho, eot_iter, channels_last, bounds, seed: As in
            :class:`APGDCE` (with EOT the targets are ranked by the mean clean logits).
    """

    fast_params: ClassVar[dict[str, Any]] = {"steps": 3, "n_target_classes": 2}

    def __init__(self, model: nn.Module, *, n_target_classes: int = 9, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.n_target_classes = check_int(n_target_classes, "n_target_classes", type(self).__name__, low=1)

    def _attack_all(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> AttackResult:
        logits_fn = self._logits_fn(images)
        clean = eot_logits(logits_fn, images, self.eot_iter)
        num_classes = clean.shape[1]
        loss_name, loss = targeted_loss(num_classes)
        n_targets = min(self.n_target_classes, num_classes - 1)
        robust = clean.argmax(dim=1) == labels
        queries = torch.full_like(labels, self.eot_iter)
        adv = images.clone()
        fooled_by_target = [0] * n_targets
        with frozen_params(self.net):
            for rank in range(2, n_targets + 2):
                for _ in range(self.restarts):
                    todo = robust.nonzero().squeeze(1)
                    if todo.numel() == 0:
                        break
                    # Targets from the clean logits of the still-robust points (reference
                    # recomputes them with a forward pass: counted).
                    targets = ranked_targets(clean[todo], rank)
                    queries[todo] += 1
                    a, f, q = apgd_run(
                        logits_fn,
                        images[todo],
                        labels[todo],
                        loss_fn=loss,
                        targets=targets,
                        eot_iter=self.eot_iter,
                        eps=self.eps,
                        norm=self.norm,
                        steps=self.steps,
                        rho=self.rho,
                        bounds=self.bounds,
                        generator=generator,
                    )
                    queries[todo] += q
                    adv[todo[f]] = a[f]
                    robust[todo[f]] = False
                    fooled_by_target[rank - 2] += int(f.sum())
        success = ~robust  # our view; __call__ decides on the model as given
        queries += 1
        info: dict[str, Any] = {
            "loss": loss_name,
            "n_target_classes": n_targets,
            "fooled_per_target_rank": fooled_by_target,
            "eot_iter": self.eot_iter,
        }
        if loss_name != "dlr-targeted":
            info["notes"] = [f"K={num_classes}: {DLR_SUBSTITUTE_NOTE}"]
        return make_result(adv, images, success, queries, info)
