"""Carlini-Wagner L2 (Carlini & Wagner, 2017) with a batched binary search over ``c``.

Works for any bounds: the tanh change of variables maps onto ``[low, high]``, and the
distance term is measured in units of the bounds' width (``(adv - x) / (high - low)``)
so that ``c`` has the same meaning for [0, 1] images and for CT in Hounsfield units.
Returned norms (``l2``, ``linf``) are in image units.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._utils import (
    bview,
    check_bool,
    frozen_params,
    make_result,
    margin,
    to_format,
    use_channels_last,
)
from medrobust.attacks.base import Attack, AttackResult, register_attack
from medrobust.limits import MAX_ATTACK_STEPS
from medrobust.validation import check_float, check_int


@register_attack("cw", "cw-l2")
class CW(Attack):
    """CW-L2: minimal L2 perturbations found by Adam in tanh space.

    Minimises ``||adv - x||² + c · max(z_y - max_{j≠y} z_j, -kappa)`` per sample. Every
    sample has its own ``c``: after each binary step, samples that succeeded lower their
    upper bound (``c`` halves towards the lower bound), samples that failed raise their
    lower bound (``c`` is multiplied by 10 until an upper bound exists). Across all binary
    steps the successful adversarial with the smallest L2 norm is kept per sample.

    Samples never fooled are returned **unchanged** (the original image) with
    ``success=False``; robust accuracy at an L2 budget is derived from ``success`` and
    ``l2`` by the audit. Like the original, optimisation of a binary step stops early when
    the total loss has not decreased over a tenth of the steps.

    Args:
        model: Classifier returning logits.
        bounds: Intensity interval; defaults to the model card's bounds.
        seed: Unused (the attack is deterministic); recorded in results.
        c: Initial trade-off constant (per sample, adapted by the binary search).
        kappa: Confidence margin κ ≥ 0 in logits; success needs ``max_{j≠y} z_j - z_y > κ``.
        steps: Adam steps per binary step.
        binary_steps: Binary-search steps over ``c``.
        lr: Adam learning rate (in tanh space).
        channels_last: Memory format for 4-D inputs; ``None`` picks ``channels_last``
            for conv nets.
        fuse_bn: Query a conv-BN folded copy (see :class:`~medrobust.attacks.base.Attack`).
    """

    norm: ClassVar[str | None] = None
    minimal: ClassVar[bool] = True
    fast_params: ClassVar[dict[str, Any]] = {"steps": 10, "binary_steps": 2}

    def __init__(
        self,
        model: nn.Module,
        *,
        bounds: Any = None,
        seed: int = 0,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 100,
        binary_steps: int = 9,
        lr: float = 0.01,
        channels_last: bool | None = None,
        **unused: Any,
    ) -> None:
        super().__init__(model, bounds=bounds, seed=seed, **unused)
        owner = type(self).__name__
        self.c = check_float(c, "c", owner, low=0.0, high=None)
        self.kappa = check_float(kappa, "kappa", owner, low=0.0, high=None, low_inclusive=True)
        self.steps = check_int(steps, "steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.binary_steps = check_int(binary_steps, "binary_steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.lr = check_float(lr, "lr", owner, low=0.0, high=None)
        self.channels_last = check_bool(channels_last, "channels_last", owner, allow_none=True)

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> AttackResult:
        low, high = self.bounds
        width = high - low
        cl = use_channels_last(self.model, images, self.channels_last)
        x = to_format(images, cl)
        n = x.shape[0]
        dev = x.device
        u = ((x - low) / width).clamp(0.0, 1.0)
        w0 = torch.atanh((2.0 * u - 1.0) * (1.0 - 1e-6))

        const = torch.full((n,), self.c, device=dev)
        lower = torch.zeros(n, device=dev)
        upper = torch.full((n,), math.inf, device=dev)
        best_dist = torch.full((n,), math.inf, device=dev)
        best_adv = x.clone()
        queries = torch.zeros(n, dtype=torch.long, device=dev)
        check_every = max(self.steps // 10, 1)
        aborted = 0

        net = self.net
        with frozen_params(net):
            for _ in range(self.binary_steps):
                w = w0.clone().requires_grad_(True)
                opt = torch.optim.Adam([w], lr=self.lr)
                succeeded = torch.zeros(n, dtype=torch.bool, device=dev)
                prev = math.inf
                for step in range(self.steps):
                    adv_u = (torch.tanh(w) + 1.0) / 2.0
                    adv = low + width * adv_u
                    m = margin(net(adv), labels)
                    dist = (adv_u - u).square().flatten(1).sum(dim=1)
                    loss = (dist + const * torch.clamp(m, min=-self.kappa)).sum()
                    (w.grad,) = torch.autograd.grad(loss, w)
                    opt.step()
                    queries += 1
                    with torch.no_grad():
                        ok = m.detach() < -self.kappa
                        improve = ok & (dist.detach() < best_dist)
                        best_dist = torch.where(improve, dist.detach(), best_dist)
                        best_adv = torch.where(bview(improve, x), adv.detach(), best_adv)
                        succeeded |= ok
                    if step % check_every == 0:
                        value = loss.item()
                        if value > prev * 0.9999:
                            aborted += 1
                            break
                        prev = value
                # Per-sample binary search over c.
                upper = torch.where(succeeded, torch.minimum(upper, const), upper)
                lower = torch.where(succeeded, lower, torch.maximum(lower, const))
                const = torch.where(torch.isfinite(upper), (lower + upper) / 2.0, const * 10.0)

            found = torch.isfinite(best_dist)
            best_adv = torch.where(bview(found, x), best_adv.clamp(low, high), x)
            with torch.no_grad():
                success = found & (self.query(best_adv).argmax(dim=1) != labels)
            queries += 2  # this check, and the success forward of __call__ on the model as given
            best_adv = torch.where(bview(success, x), best_adv, x)
        info = {"channels_last": cl, "early_aborts": aborted, "final_c": const.tolist()}
        return make_result(best_adv, images, success, queries, info)
