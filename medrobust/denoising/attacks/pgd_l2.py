"""Denoising-PGD, L2 with zero-mean perturbations (keeps y + δ − x close to Gaussian noise)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.denoising.attacks.base import DenoiserAttack, register_denoiser_attack
from medrobust.limits import MAX_ATTACK_STEPS
from medrobust.validation import check_int


def zero_mean(t: torch.Tensor) -> torch.Tensor:
    """Subtract each image's mean (over all channels and pixels)."""
    return t - t.flatten(1).mean(dim=1).view(-1, *([1] * (t.ndim - 1)))


def project_l2(t: torch.Tensor, radius: float) -> torch.Tensor:
    """Project each image of ``t`` onto the L2 ball of ``radius``."""
    norms = t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))
    return t * (radius / norms).clamp(max=1.0)


@register_denoiser_attack("denoise-pgd-l2", "denoising-pgd-l2")
class DenoisePGDL2(DenoiserAttack):
    """L2 projected gradient ascent with zero-mean perturbations.

    Each step moves along the zero-mean part of the gradient (normalised to unit L2
    norm), then projects δ to zero mean per image and onto the L2 ball; both projections
    commute (scaling keeps a zero mean), so without ``clip_range`` δ has zero mean up to
    rounding. With ``clip_range`` the final clamp can break the zero mean slightly; the
    result's ``info["max_abs_mean"]`` reports it.

    Args:
        denoiser: Denoiser to attack.
        eps: L2 radius in image units ("k/255": k/255 of the range) (a per-pixel RMS of ``r`` on
            an image of ``P`` values is ``eps = r * sqrt(P)``), > 0.
        steps: Number of iterations (>= 1).
        alpha: Step length (image units; "k/255": k/255 of the range); default ``2.5 * eps / steps``.
        random_start: Start from a random zero-mean Gaussian direction with radius ~ U(0, ε).
        bounds, clip_range, seed: See :class:`DenoiserAttack`.
    """

    norm: ClassVar[str] = "l2"
    fast_params: ClassVar[dict[str, Any]] = {"eps": 0.5, "steps": 3}

    def __init__(
        self,
        denoiser: nn.Module,
        *,
        eps: Any = 0.5,
        steps: int = 20,
        alpha: Any = None,
        random_start: bool = True,
        **kw: Any,
    ) -> None:
        super().__init__(denoiser, **kw)
        self.eps = self.budget(eps, "eps", linf=False)
        self.steps = check_int(steps, "steps", "DenoisePGDL2", low=1, high=MAX_ATTACK_STEPS)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else self.budget(alpha, "alpha", linf=False)
        self.random_start = bool(random_start)

    def _project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        return project_l2(zero_mean(delta), eps)

    def _attack(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        eps, alpha = self.eps, self.alpha
        shape = (-1, *([1] * (y.ndim - 1)))
        if self.random_start:
            d = zero_mean(torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype))
            d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
            r = torch.rand((y.shape[0],), generator=generator, device=y.device, dtype=y.dtype)
            delta = d * (r * eps).view(shape)
        else:
            delta = torch.zeros_like(y)

        def step(d: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
            g = zero_mean(grad)
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
            return self._project(d + alpha * g, eps)

        best = self.ascend(x, y, delta, self.steps, step)
        means = best.flatten(1).mean(dim=1).abs().max().item() if best.numel() else 0.0
        return best, self.steps + 1, {"eps_abs": eps, "alpha_abs": alpha, "max_abs_mean": means}
