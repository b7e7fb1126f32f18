"""EOT-PGD: PGD with Expectation over Transformation for randomised targets (Athalye et al., ICML 2018)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from medrobust.attacks._budget import BudgetAttack
from medrobust.attacks._eot import (
    MAX_EOT_ITER,
    attack_randomness,
    eot_logits,
    eot_loss_and_grad,
    is_stochastic,
)
from medrobust.attacks._utils import (
    bview,
    ce_loss,
    check_bool,
    flat_norm,
    frozen_params,
    make_result,
    project_l2,
    random_l2_ball,
)
from medrobust.attacks.base import AttackResult, register_attack
from medrobust.limits import MAX_ATTACK_RESTARTS, MAX_ATTACK_STEPS
from medrobust.validation import check_int


@register_attack("eot-pgd")
class EOTPGD(BudgetAttack):
    """PGD on the cross-entropy loss, each gradient the mean over ``n_eot`` draws of the model's randomness.

    Against a randomised defense (noise injection, random resize-and-pad, test-time dropout:
    a module declaring ``stochastic = True``) a single-draw gradient is a noisy estimate of
    the direction that fools the defense *on average*; EOT averages ``n_eot`` of them per step
    (the draws are batched: the batch is repeated and sent in one forward pass). Every
    randomised module draws from the attack's generator while attacking, so the result is
    reproducible for a seed. On a deterministic model ``n_eot`` draws are identical and cost
    ``n_eot`` times more: use ``pgd`` there (``info["stochastic_target"]`` says which it was).

    Per restart: ``steps`` signed-gradient (L∞) or normalised-gradient (L2) steps of size
    ``alpha``, projected onto the ε-ball and the bounds, then the mean logits over ``n_eot``
    draws decide this attack's view of success (per sample, the first successful restart is
    kept, else the one with the highest mean loss). Success in the result is decided, as for
    every attack, by one forward of the model as given on the returned images (one draw).

    Args:
        model: Classifier returning logits (randomised or not).
        eps: Budget in image units (or ``"k/255"`` of the bounds' range).
        norm: "linf" or "l2".
        steps: Gradient steps per restart.
        alpha: Step size in image units; default ``2.5 * eps / steps`` (Madry et al.).
        n_eot: Draws of the model's randomness averaged per gradient (default 20).
        random_start: Start at a random point of the ε-ball (uniform in the L∞ box; uniform
            in the L2 ball).
        restarts: Independent random starts; later ones run only on samples not yet fooled.
        channels_last, bounds, seed, fuse_bn: See :class:`~medrobust.attacks._budget.BudgetAttack`.
    """

    fast_params: ClassVar[dict[str, Any]] = {"steps": 3, "n_eot": 2}
    #: The attack averages over the target's randomness (read by the audit's EOT flag).
    uses_eot: ClassVar[bool] = True

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        steps: int = 10,
        alpha: Any = None,
        n_eot: int = 20,
        random_start: bool = True,
        restarts: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        owner = type(self).__name__
        self.steps = check_int(steps, "steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else self.budget(alpha, "alpha", linf=False)
        self.n_eot = check_int(n_eot, "n_eot", owner, low=1, high=MAX_EOT_ITER)
        self.random_start = check_bool(random_start, "random_start", owner)
        self.restarts = check_int(restarts, "restarts", owner, low=1, high=MAX_ATTACK_RESTARTS)

    def _start(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.random_start:
            return images.clone()
        if self.norm == "linf":
            noise = torch.empty(images.shape, dtype=images.dtype, device=images.device)
            noise.uniform_(-self.eps, self.eps, generator=generator)
        else:
            noise = random_l2_ball(
                images.shape, self.eps, generator, dtype=images.dtype, device=images.device
            )
        return (images + noise).clamp(*self.bounds)

    def _step(self, adv: torch.Tensor, grad: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            adv = adv + self.alpha * grad.sign()
            delta = torch.clamp(adv - images, min=-self.eps, max=self.eps)
        else:
            step = grad / bview(flat_norm(grad).clamp_min(1e-12), grad)
            delta = project_l2(adv + self.alpha * step - images, self.eps)
        return (images + delta).clamp(*self.bounds)

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> AttackResult:
        with attack_randomness(generator, self.net, self.model), frozen_params(self.net):
            return self._attack_all(images, labels, generator)

    def _attack_all(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> AttackResult:
        logits_fn = self._logits_fn(images)
        n = images.shape[0]

        def loss_fn(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
            return ce_loss(z, y)

        best = images.clone()
        done = torch.zeros(n, dtype=torch.bool, device=images.device)
        best_loss = torch.full((n,), float("-inf"), device=images.device)
        queries = torch.ones(n, dtype=torch.long, device=images.device)  # the success forward
        for _ in range(self.restarts):
            sel = (~done).nonzero().squeeze(1)
            if sel.numel() == 0:
                break
            xs, ys = images[sel], labels[sel]
            adv = self._start(xs, generator)
            for _ in range(self.steps):
                _, _, grad = eot_loss_and_grad(logits_fn, adv, ys, None, loss_fn, self.n_eot)
                adv = self._step(adv, grad, xs)
            logits = eot_logits(logits_fn, adv, self.n_eot)
            loss = ce_loss(logits, ys)
            succ = logits.argmax(dim=1) != ys
            queries[sel] += (self.steps + 1) * self.n_eot
            better = succ | (loss > best_loss[sel])
            upd = sel[better]
            best[upd] = adv[better]
            best_loss[upd] = loss[better]
            done[upd] = succ[better]
        info = {"n_eot": self.n_eot, "stochastic_target": is_stochastic(self.model)}
        return make_result(best, images, done, queries, info)
