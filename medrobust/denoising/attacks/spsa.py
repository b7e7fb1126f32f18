"""Gradient-free denoising attack (SPSA, Spall 1992 / Uesato et al. 2018) for classical denoisers."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.denoising.attacks.base import DenoiserAttack, register_denoiser_attack
from medrobust.limits import MAX_ATTACK_QUERIES, MAX_ATTACK_STEPS
from medrobust.validation import check_int


@register_denoiser_attack("denoise-spsa")
class DenoiseSPSA(DenoiserAttack):
    """L∞ SPSA ascent on ‖D(y + δ) − x‖² using only forward passes.

    Each step draws ``samples`` Rademacher directions ``v`` per image, estimates the
    gradient as ``mean[(L(δ + c v) − L(δ − c v)) / (2c) · v]`` and takes a signed step
    of size α followed by projection onto the ε-ball. The best iterate is kept. Works on
    any denoiser (no autograd), hence ``method="spsa"``.

    Args:
        denoiser: Denoiser to attack.
        eps: L∞ budget (image units; "k/255": k/255 of the range), in (0, 1].
        steps: Iterations (>= 1).
        samples: Direction pairs per step (>= 1); each costs two forward passes.
        delta_fd: Finite-difference size ``c`` (image units, like ``eps``); default ``eps / 2``.
        alpha: Step size (image units; "k/255": k/255 of the range); default ``2.5 * eps / steps``.
        bounds, clip_range, seed: See :class:`DenoiserAttack`.
    """

    norm: ClassVar[str] = "linf"
    gradient_free: ClassVar[bool] = True
    fast_params: ClassVar[dict[str, Any]] = {"eps": 4 / 255, "steps": 2, "samples": 2}

    def __init__(
        self,
        denoiser: nn.Module,
        *,
        eps: Any = 4 / 255,
        steps: int = 10,
        samples: int = 4,
        delta_fd: Any = None,
        alpha: Any = None,
        **kw: Any,
    ) -> None:
        super().__init__(denoiser, **kw)
        self.eps = self.budget(eps, "eps")
        self.steps = check_int(steps, "steps", "DenoiseSPSA", low=1, high=MAX_ATTACK_STEPS)
        self.samples = check_int(samples, "samples", "DenoiseSPSA", low=1, high=MAX_ATTACK_QUERIES)
        self.delta_fd = self.eps / 2 if delta_fd is None else self.budget(delta_fd, "delta_fd")
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else self.budget(alpha, "alpha")

    @property
    def method(self) -> str:
        """Always "spsa"."""
        return "spsa"

    @torch.no_grad()
    def _attack(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        eps, alpha, c = self.eps, self.alpha, self.delta_fd
        shape = (-1, *([1] * (y.ndim - 1)))
        delta = torch.zeros_like(y)
        best, best_loss = delta.clone(), self.loss(self.apply(y, delta), x)
        queries = 1
        for _ in range(self.steps):
            grad = torch.zeros_like(y)
            for _ in range(self.samples):
                v = torch.randint(0, 2, y.shape, generator=generator, device=y.device).to(y.dtype) * 2 - 1
                diff = self.loss(self.apply(y, delta + c * v), x) - self.loss(self.apply(y, delta - c * v), x)
                grad += (diff / (2 * c)).view(shape) * v
                queries += 2
            delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
            loss = self.loss(self.apply(y, delta), x)
            queries += 1
            better = loss > best_loss
            best[better] = delta[better]
            best_loss = torch.where(better, loss, best_loss)
        return best, queries, {"eps_abs": eps, "alpha_abs": alpha, "delta_fd_abs": c, "method": "spsa"}
