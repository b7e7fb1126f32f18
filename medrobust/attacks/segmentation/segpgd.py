"""SegPGD (Gu, Zhao, Tresp and Torr, ECCV 2022): PGD that reweights correct and fooled pixels over the steps.

Why SegPGD and not CosPGD (Agnihotri et al., ICML 2024): both cost one forward and one backward per
step like PGD, but SegPGD's weighting needs only which pixels are already fooled, so it applies
unchanged to the targeted "erase the lesion" goal (a lesion pixel is "done" once it reads
background) and to any number of labels, with no hyperparameter beyond PGD's; its schedule was
shown to reach a given attack strength in far fewer steps than PGD on segmentation networks
(Gu et al., Tables 1-3), which is what matters on CPU and on 3D volumes. CosPGD's cosine weighting
of softmax and one-hot vectors was designed to cover pixel-wise regression (optical flow) as well,
which medrobust's segmenters do not need.

Step ``t`` of ``T`` ascends ``(1 - λ_t) · mean_{pixels not yet fooled} L + λ_t · mean_{fooled} L`` with
``λ_t = (t - 1) / (2T)``: early steps attack the pixels still right, later ones keep the fooled
pixels fooled. "Fooled" means predicted != true label (untargeted) or predicted == background on a
lesion pixel (erase). ``loss="dice"`` keeps plain PGD steps (the reweighting is per pixel).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from medrobust.attacks.segmentation.base import register_segmentation_attack
from medrobust.attacks.segmentation.pgd import SegmentationPGD
from medrobust.utils.labels import label_map


@register_segmentation_attack("segpgd")
class SegPGD(SegmentationPGD):
    """SegPGD, L∞ ball; parameters as :class:`~.pgd.SegmentationPGD`."""

    fast_params: ClassVar[dict[str, Any]] = {"eps": "4/255", "steps": 3}

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
        if self.loss == "dice":
            return self.objective(logits, labels)
        per_pixel, scored = self.pixel_objective(logits, labels)
        target, _ = self.targets(labels)
        pred = label_map(logits.detach())
        fooled = (pred != labels) if self.goal == "untargeted" else (pred == target)
        lam = (step - 1) / (2.0 * self.steps)
        weight = torch.where(fooled, lam, 1.0 - lam) * scored
        return (per_pixel * weight).flatten(1).sum(1) / scored.flatten(1).sum(1).clamp_min(1)
