"""APGD-CE: Auto-PGD on the cross-entropy loss (Croce & Hein, ICML 2020), L∞ and L2, with optional EOT."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._apgd import LossFn, apgd_run
from medrobust.attacks._budget import BudgetAttack
from medrobust.attacks._eot import MAX_EOT_ITER, attack_randomness, eot_logits
from medrobust.attacks._losses import ce_loss
from medrobust.attacks._utils import frozen_params, make_result
from medrobust.attacks.base import AttackResult, register_attack
from medrobust.limits import MAX_ATTACK_RESTARTS, MAX_ATTACK_STEPS
from medrobust.validation import check_float, check_int


@register_attack("apgd-ce")
class APGDCE(BudgetAttack):
    """Auto-PGD on the cross-entropy loss, untargeted.

    Step size ``2 * eps`` halved at adaptive checkpoints, momentum 0.75 (the paper's
    schedule); each restart starts at a random point on the ``eps``-sphere and runs only
    on samples still classified correctly. A sample stops costing forward passes as
    soon as it is misclassified.

    For randomised targets (noise injection, random resize-and-pad: ``stochastic = True``),
    ``eot_iter`` > 1 averages every loss, gradient and logit over that many draws of the
    model's randomness (Expectation over Transformation, as AutoAttack's ``rand`` version
    does with 20); the clean check and the "fooled" decision then read the mean logits, and
    the model's randomness is drawn from the attack's generator (reproducible for a seed).

    Args:
        model: Classifier returning logits.
        eps: Budget (L∞ or L2) in image units.
        norm: "linf" or "l2".
        steps: Iterations per restart (100 in AutoAttack).
        restarts: Random restarts (1 in AutoAttack ``standard``).
        rho: Oscillation threshold of the step-size schedule (0.75).
        eot_iter: Draws of the model's randomness averaged per iterate (1: no EOT; 20 in
            AutoAttack's ``rand`` version).
        channels_last: Use ``channels_last`` for 4-D inputs (None: on for conv nets).
        bounds, seed: See :class:`~medrobust.attacks.base.Attack`.
    """

    fast_params: ClassVar[dict[str, Any]] = {"steps": 3}
    loss_name: ClassVar[str] = "ce"

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        eot_iter: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        owner = type(self).__name__
        self.steps = check_int(steps, "steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.restarts = check_int(restarts, "restarts", owner, low=1, high=MAX_ATTACK_RESTARTS)
        self.rho = check_float(rho, "rho", owner, low=0.0, high=1.0)
        self.eot_iter = check_int(eot_iter, "eot_iter", owner, low=1, high=MAX_EOT_ITER)
        #: Averages over the target's randomness (read by the audit's EOT flag).
        self.uses_eot = self.eot_iter > 1

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> AttackResult:
        with attack_randomness(generator, self.net, self.model):
            return self._attack_all(images, labels, generator)

    def _loss(self, num_classes: int) -> tuple[str, LossFn, list[str]]:
        """The per-sample loss to maximise for ``num_classes``: (name, fn, notes); subclasses change it."""
        return self.loss_name, lambda z, y, t: ce_loss(z, y), []

    def _attack_all(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> AttackResult:
        logits_fn = self._logits_fn(images)
        clean = eot_logits(logits_fn, images, self.eot_iter)
        loss_name, loss, notes = self._loss(clean.shape[1])
        robust = clean.argmax(dim=1) == labels
        queries = torch.full_like(labels, self.eot_iter)
        adv = images.clone()
        with frozen_params(self.net):
            for _ in range(self.restarts):
                todo = robust.nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                a, f, q = apgd_run(
                    logits_fn,
                    images[todo],
                    labels[todo],
                    loss_fn=loss,
                    targets=None,
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
        success = ~robust  # our view; __call__ decides on the model as given
        queries += 1
        info: dict[str, Any] = {"loss": loss_name, "eot_iter": self.eot_iter}
        if notes:
            info["notes"] = notes
        return make_result(adv, images, success, queries, info)
