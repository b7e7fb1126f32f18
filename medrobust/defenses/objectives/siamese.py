"""Siamese-DAE (Shim & Jo, IEEE Access 2025): one shared-weight denoiser on clean/adversarial pairs.

Loss = w_rec * (|D(x) - x|^2 + |D(x') - x|^2)
     + w_siam * agreement(branch x, branch x')      (latent codes and/or outputs)
     + w_cls * (KL(f(x) || f(D(x'))) + KL(f(x) || f(D(x))))   (or CE to the labels)

The paper publishes only its abstract; the exact terms, the stop-gradient on the
clean branch and the weights are medrobust's choices (docs/siamese_dae.md).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.defenses.denoisers.base import Denoiser
from medrobust.defenses.objectives.base import (
    Batch,
    DefenseObjective,
    forward_with_latent,
    register_defense_kind,
    unit_mse,
)


def consistency(
    clean_logits: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, target: str
) -> torch.Tensor:
    """KL(softmax(clean_logits) || softmax(logits)) (``target="kl"``) or CE(logits, y) (``"ce"``)."""
    if target == "ce":
        return F.cross_entropy(logits, y)
    p = F.softmax(clean_logits.float(), dim=1)
    return F.kl_div(F.log_softmax(logits.float(), dim=1), p, reduction="batchmean")


@register_defense_kind("siamese-dae", "siamese")
class SiameseDAE(DefenseObjective):
    """The Siamese-DAE objective (reconstruction + Siamese agreement + classification consistency)."""

    terms = ("rec", "siam", "cls")
    default_weights: ClassVar[dict[str, float]] = {"rec": 1.0, "siam": 1.0, "cls": 0.1}
    needs_adversarial = True

    def losses(self, denoiser: Denoiser, classifier: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Rec, siam and cls terms (only the active ones)."""
        x, x_adv = batch.x, batch.x_adv
        assert x_adv is not None
        bounds = denoiser.bounds
        n = x.shape[0]
        # Both branches in one pass: same weights, and batch-norm layers (if any) see the pair.
        out, z = forward_with_latent(denoiser, torch.cat([x, x_adv]))
        d_clean, d_adv = out[:n], out[n:]
        terms: dict[str, torch.Tensor] = {}
        if "rec" in self.weights:
            terms["rec"] = unit_mse(d_clean, x, bounds) + unit_mse(d_adv, x, bounds)
        if "siam" in self.weights:
            terms["siam"] = self._agreement(d_clean, d_adv, z, n, bounds)
        if "cls" in self.weights:
            with torch.no_grad():
                clean_logits = classifier(x)
            logits = classifier(out)
            target = self.options.get("cls_target", "kl")
            terms["cls"] = consistency(clean_logits, logits[n:], batch.y, target) + consistency(
                clean_logits, logits[:n], batch.y, target
            )
        return terms

    def _agreement(
        self,
        d_clean: torch.Tensor,
        d_adv: torch.Tensor,
        z: torch.Tensor | None,
        n: int,
        bounds: tuple[float, float],
    ) -> torch.Tensor:
        on = self.options.get("siam_on", "both")
        stop = self.options.get("siam_stop_grad", True)
        parts: list[torch.Tensor] = []
        if on in ("latent", "both") and z is not None:
            z_clean, z_adv = z[:n].flatten(1), z[n:].flatten(1)
            if stop:
                z_clean = z_clean.detach()
            if self.options.get("siam_distance", "cosine") == "cosine":
                parts.append((1.0 - F.cosine_similarity(z_clean, z_adv, dim=1, eps=1e-8)).mean())
            else:
                parts.append(F.mse_loss(z_adv, z_clean))
        if on in ("output", "both") or (on == "latent" and z is None):
            target = d_clean.detach() if stop else d_clean
            parts.append(unit_mse(d_adv, target, bounds))
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]
