"""Denoising-PGD, L∞ (Ning et al., arXiv:2306.16050): maximise ‖D(y + δ) − x‖² over ‖δ‖∞ ≤ ε."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.denoising.attacks.base import DenoiserAttack, register_denoiser_attack
from medrobust.limits import MAX_ATTACK_STEPS
from medrobust.validation import check_int


@register_denoiser_attack("denoise-pgd", "denoising-pgd")
class DenoisePGD(DenoiserAttack):
    """L∞ projected gradient ascent on the denoiser's squared output error.

    Signed-gradient steps of size α, projection onto the ε-ball, optional uniform random
    start; the δ with the largest error seen over all iterates is kept per image. On a
    non-differentiable (classical) denoiser the gradient is the BPDA straight-through
    one provided by the denoiser itself; the result then says ``method="bpda"``.

    Args:
        denoiser: Denoiser to attack.
        eps: L∞ budget in image units ("k/255": k/255 of the range), in (0, 1].
        steps: Number of iterations (>= 1).
        alpha: Step size (image units; "k/255": k/255 of the range); default ``2.5 * eps / steps``.
        random_start: Start from δ ~ U(−ε, ε) drawn from the attack's generator.
        bounds, clip_range, seed: See :class:`DenoiserAttack`.
    """

    norm: ClassVar[str] = "linf"
    fast_params: ClassVar[dict[str, Any]] = {"eps": 4 / 255, "steps": 3}

    def __init__(
        self,
        denoiser: nn.Module,
        *,
        eps: Any = 4 / 255,
        steps: int = 20,
        alpha: Any = None,
        random_start: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(denoiser, **kw)
        self.eps = self.budget(eps, "eps")
        self.steps = check_int(steps, "steps", "DenoisePGD", low=1, high=MAX_ATTACK_STEPS)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else self.budget(alpha, "alpha")
        self.random_start = bool(random_start)

    def _attack(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        eps, alpha = self.eps, self.alpha
        if self.random_start:
            delta = (torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype) * 2 - 1) * eps
        else:
            delta = torch.zeros_like(y)
        best = self.ascend(x, y, delta, self.steps, lambda d, g: (d + alpha * g.sign()).clamp(-eps, eps))
        return best, self.steps + 1, {"eps_abs": eps, "alpha_abs": alpha}
