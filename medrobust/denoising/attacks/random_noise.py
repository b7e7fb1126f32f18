"""Random perturbation of the same norm: the baseline that adversarial attacks must beat."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.denoising.attacks.base import DenoiserAttack, register_denoiser_attack
from medrobust.denoising.attacks.pgd_l2 import zero_mean
from medrobust.validation import check_choice


@register_denoiser_attack("random-noise")
class RandomNoise(DenoiserAttack):
    """A random δ with the attack budget, drawn from the attack's generator.

    ``norm="linf"``: random signs times ε (every pixel at the L∞ budget, the strongest
    random L∞ perturbation). ``norm="l2"``: a zero-mean Gaussian direction scaled to an
    L2 norm of exactly ε. ``method="random"``.

    Args:
        denoiser: Denoiser to evaluate.
        eps: Budget (image units; "k/255": k/255 of the range), > 0 (and <= 1 for L∞).
        norm: "linf" or "l2".
        bounds, clip_range, seed: See :class:`DenoiserAttack`.
    """

    fast_params: ClassVar[dict[str, Any]] = {"eps": 4 / 255}

    def __init__(self, denoiser: nn.Module, *, eps: Any = 4 / 255, norm: str = "linf", **kw: Any) -> None:
        super().__init__(denoiser, **kw)
        self.norm = check_choice(norm, "norm", ["linf", "l2"], "RandomNoise")  # type: ignore[misc]
        self.eps = self.budget(eps, "eps", linf=self.norm == "linf")

    @property
    def method(self) -> str:
        """Always "random"."""
        return "random"

    def _attack(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        eps = self.eps
        if self.norm == "linf":
            signs = torch.randint(0, 2, y.shape, generator=generator, device=y.device).to(y.dtype) * 2 - 1
            return signs * eps, 0, {"eps_abs": eps}
        d = zero_mean(torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype))
        d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (y.ndim - 1)))
        return d * eps, 0, {"eps_abs": eps}
