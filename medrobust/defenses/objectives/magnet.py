"""MagNet-style baseline: a DAE trained on adversarial images with a reconstruction loss only."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from medrobust.defenses.denoisers.base import Denoiser
from medrobust.defenses.objectives.base import Batch, DefenseObjective, register_defense_kind, unit_mse


@register_defense_kind("magnet")
class MagNetDAE(DefenseObjective):
    """``|D(x') - x|^2``: adversarial input, clean target, no classifier in the loss.

    (MagNet's reformer, Meng & Chen 2017, was trained on noisy clean data; training it on
    adversarial twins is the "denoise the attack" variant the Siamese-DAE is compared with.)
    """

    terms = ("rec",)
    default_weights: ClassVar[dict[str, float]] = {"rec": 1.0}
    needs_adversarial = True

    def losses(self, denoiser: Denoiser, classifier: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """The reconstruction term."""
        assert batch.x_adv is not None
        return {"rec": unit_mse(denoiser(batch.x_adv), batch.x, denoiser.bounds)}
