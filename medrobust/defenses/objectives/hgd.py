"""HGD-style baseline (Liao et al., CVPR 2018): a denoiser guided by the classifier's logits."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.defenses.denoisers.base import Denoiser
from medrobust.defenses.objectives.base import Batch, DefenseObjective, register_defense_kind, unit_mse


@register_defense_kind("hgd")
class HGD(DefenseObjective):
    """``mean |f(D(x')) - f(x)|_1`` on the logits (HGD's "LGD" variant), optional pixel term.

    HGD's feature-guided variant needs a feature layer, which imported classifiers do not
    expose uniformly; the logit-guided variant works for every classifier. ``w_rec``
    (default 0) adds ``|D(x') - x|^2`` for stability.
    """

    terms = ("cls", "rec")
    default_weights: ClassVar[dict[str, float]] = {"cls": 1.0, "rec": 0.0}
    needs_adversarial = True

    def losses(self, denoiser: Denoiser, classifier: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Logit-guided term (and the pixel term when its weight is > 0)."""
        assert batch.x_adv is not None
        denoised = denoiser(batch.x_adv)
        terms: dict[str, torch.Tensor] = {}
        if "cls" in self.weights:
            with torch.no_grad():
                clean_logits = classifier(batch.x).float()
            terms["cls"] = F.l1_loss(classifier(denoised).float(), clean_logits)
        if "rec" in self.weights:
            terms["rec"] = unit_mse(denoised, batch.x, denoiser.bounds)
        return terms
