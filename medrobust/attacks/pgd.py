"""PGD with an L∞ budget (Madry et al., 2018), torchattacks' algorithm inside card bounds.

With ``bounds=(0, 1)``, ``restarts=1``, ``fuse_bn=False`` and ``channels_last=False`` (the
parity mode) the output equals ``torchattacks.PGD(model, eps, alpha, steps, random_start)``
bit for bit when torchattacks runs after ``torch.manual_seed(seed)`` (on CPU, a
``torch.Generator`` seeded with ``seed`` draws the same uniform stream as the global
generator). By default (BatchNorm folded, ``channels_last`` for conv nets) the same
algorithm runs on a numerically equivalent model, and each step projects with one clamp
into the per-pixel box ``[max(x - eps, low), min(x + eps, high)]`` (torchattacks' two clamps up
to float rounding): outputs differ from torchattacks' where a gradient component is near zero
and its sign flips with float rounding.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks._utils import (
    ce_loss,
    check_bool,
    frozen_params,
    make_result,
    to_format,
    use_channels_last,
)
from medrobust.attacks.base import Attack, AttackResult, register_attack
from medrobust.limits import MAX_ATTACK_RESTARTS, MAX_ATTACK_STEPS
from medrobust.validation import check_int


@register_attack("pgd", "pgd-linf")
class PGD(Attack):
    """Projected gradient descent on the cross-entropy loss, L∞ ball.

    Each step costs exactly one forward and one input-gradient backward of the queried
    model (BatchNorm folded, parameters frozen: no weight gradients are computed); with
    one restart the only other model evaluation is the success forward on the returned
    images. ``queries`` is ``steps + 1`` per restart, plus 1 with several restarts.

    Args:
        model: Classifier returning logits.
        bounds: Intensity interval; defaults to the model card's bounds.
        seed: Seed of the random start.
        eps: L∞ budget in image units (e.g. ``8/255`` for [0, 1] images, HU for CT).
        alpha: Step size; default ``2.5 * eps / steps`` (Madry et al.). torchattacks'
            default is ``2/255`` whatever ``eps`` is.
        steps: Gradient steps per restart.
        random_start: Start uniformly inside the ball (clamped to the bounds).
        restarts: Independent random starts; per sample the first successful restart is
            kept, else the one with the highest final loss. Later restarts only run on
            samples not yet fooled.
        channels_last: Memory format for 4-D inputs; ``None`` uses ``channels_last`` for
            models with 2-D convolutions (measured faster on CPU).
        fuse_bn: Query a conv-BN folded copy (see :class:`~medrobust.attacks.base.Attack`).
    """

    norm: ClassVar[str | None] = "linf"
    fast_params: ClassVar[dict[str, Any]] = {"eps": 0.03, "steps": 3}

    def __init__(
        self,
        model: nn.Module,
        *,
        bounds: Any = None,
        seed: int = 0,
        eps: float = 8 / 255,
        alpha: float | None = None,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        channels_last: bool | None = None,
        **unused: Any,
    ) -> None:
        super().__init__(model, bounds=bounds, seed=seed, **unused)
        owner = type(self).__name__
        # An L∞ budget cannot exceed the intensity width; an L2 budget sums over pixels.
        self.eps = self.budget(eps, "eps", linf=self.norm == "linf")
        self.steps = check_int(steps, "steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else self.budget(alpha, "alpha", linf=False)
        self.random_start = check_bool(random_start, "random_start", owner)
        self.restarts = check_int(restarts, "restarts", owner, low=1, high=MAX_ATTACK_RESTARTS)
        self.channels_last = check_bool(channels_last, "channels_last", owner, allow_none=True)

    # -- the pieces a variant changes ----------------------------------------------------
    def _start(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        low, high = self.bounds
        noise = torch.empty(images.shape, dtype=images.dtype, device=images.device)  # NCHW draw order
        noise.uniform_(-self.eps, self.eps, generator=generator)
        return torch.add(images, noise).clamp_(min=low, max=high)  # in ``images``' memory format

    def _box(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per-pixel ``[max(x - eps, low), min(x + eps, high)]``: the L∞ ball and the bounds in one.

        ``None`` where the model is queried as given (the parity mode): then each step uses
        torchattacks' arithmetic, ``clamp(x + clamp(adv - x, -eps, eps), low, high)``, which the
        box equals up to float rounding of ``x ± eps``.
        """
        if self.net is self.model:
            return None
        low, high = self.bounds
        return (images - self.eps).clamp_(min=low), (images + self.eps).clamp_(max=high)

    def _step(
        self,
        adv: torch.Tensor,
        grad: torch.Tensor,
        images: torch.Tensor,
        box: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One signed-gradient step and projection, in place on ``adv`` (and ``grad``)."""
        adv.add_(grad.sign_(), alpha=self.alpha)  # alpha * sign is exact: same bits as adv + alpha * sign
        if box is not None:
            return adv.clamp_(min=box[0], max=box[1])
        low, high = self.bounds
        return adv.sub_(images).clamp_(min=-self.eps, max=self.eps).add_(images).clamp_(min=low, max=high)

    # -------------------------------------------------------------------------------------
    def _run(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One restart: returns the adversarial images (detached).

        Per step: one forward and one input-gradient backward of :attr:`net`, then the update
        without autograd and without allocating (the step works in place).
        """
        net = self.net
        adv = self._start(images, generator) if self.random_start else images.clone()
        box = self._box(images)
        for _ in range(self.steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(net(adv), labels), adv)
            adv = self._step(adv.detach(), grad, images, box)
        return adv

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> AttackResult:
        cl = use_channels_last(self.model, images, self.channels_last)
        x = to_format(images, cl)
        n = x.shape[0]
        info = {"channels_last": cl}
        with frozen_params(self.net):
            if self.restarts == 1:
                # Nothing to choose between: the success forward of __call__ is the only one.
                adv = self._run(x, labels, generator)
                return make_result(adv, images, None, torch.full_like(labels, self.steps + 1), info)
            best = x.clone()
            done = torch.zeros(n, dtype=torch.bool, device=x.device)
            best_loss = torch.full((n,), float("-inf"), device=x.device)
            queries = torch.ones(n, dtype=torch.long, device=x.device)  # the success forward
            for r in range(self.restarts):
                sel = torch.arange(n, device=x.device) if r == 0 else (~done).nonzero().squeeze(1)
                if sel.numel() == 0:
                    break
                xs, ys = (x, labels) if r == 0 else (x[sel], labels[sel])
                adv = self._run(xs, ys, generator)
                with torch.no_grad():
                    logits = self.query(adv)
                loss = ce_loss(logits, ys)
                succ = logits.argmax(dim=1) != ys
                queries[sel] += self.steps + 1
                better = succ | (loss > best_loss[sel]) | torch.isinf(best_loss[sel])
                upd = sel[better]
                best[upd] = adv[better]
                best_loss[upd] = loss[better]
                done[upd] = succ[better]
        return make_result(best, images, done, queries, info)
