"""Plain denoising autoencoder baseline: reconstruct clean images from Gaussian-noised ones."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from medrobust.defenses.denoisers.base import Denoiser
from medrobust.defenses.objectives.base import Batch, DefenseObjective, register_defense_kind, unit_mse


@register_defense_kind("dae")
class PlainDAE(DefenseObjective):
    """``|D(clip(x + sigma * span * N(0, 1))) - x|^2`` with ``sigma = noise_sigma`` (bounds-relative)."""

    terms = ("rec",)
    default_weights: ClassVar[dict[str, float]] = {"rec": 1.0}
    needs_adversarial = False

    def losses(self, denoiser: Denoiser, classifier: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """The reconstruction term."""
        low, high = denoiser.bounds
        sigma = float(self.options.get("noise_sigma", 0.1)) * (high - low)
        noise = torch.randn(batch.x.shape, generator=batch.generator, device="cpu").to(batch.x)
        noisy = (batch.x + sigma * noise).clamp(low, high)
        return {"rec": unit_mse(denoiser(noisy), batch.x, denoiser.bounds)}
