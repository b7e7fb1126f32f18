"""The defense-objective contract: one training loss per file, found through ``DEFENSE_KINDS``.

An objective turns a batch (clean ``x``, labels ``y`` and, when it needs one, the
adversarial twin ``x_adv`` crafted against the frozen classifier) into named,
*unweighted* loss terms. The trainer multiplies each term by its config weight
(``w_rec``, ``w_siam``, ``w_cls``), drops ablated terms, and sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.defenses.denoisers.base import Denoiser
from medrobust.registry import Registry

DEFENSE_KINDS: Registry[type[DefenseObjective]] = Registry("defense kind")

#: Loss term -> the config field holding its weight.
WEIGHT_FIELDS = {"rec": "w_rec", "siam": "w_siam", "cls": "w_cls"}


#: ``@register_defense_kind("name", *aliases)``: registers the class and sets its ``name``.
register_defense_kind = DEFENSE_KINDS.decorator("name")


@dataclass
class Batch:
    """One training batch on the training device.

    Attributes:
        x: Clean images in the card's bounds.
        y: Labels.
        x_adv: Adversarial twins of ``x`` (None for objectives that need none).
        generator: Private generator for any randomness (e.g. Gaussian noise).
    """

    x: torch.Tensor
    y: torch.Tensor
    x_adv: torch.Tensor | None
    generator: torch.Generator


class DefenseObjective:
    """Base class of the training objectives.

    Class attributes:
        terms: Names of the loss terms this objective produces (subset of rec/siam/cls).
        default_weights: Weight of each term when the config leaves it unset (None).
        needs_adversarial: Whether batches must carry adversarial twins.

    Args:
        weights: Resolved weight per term (ablated terms already removed).
        options: The config's objective options (``siam_on``, ``siam_distance``,
            ``cls_target``, ``noise_sigma``, ``bounds``).
    """

    name: ClassVar[str] = "objective"
    terms: ClassVar[tuple[str, ...]] = ("rec",)
    default_weights: ClassVar[dict[str, float]] = {"rec": 1.0}
    needs_adversarial: ClassVar[bool] = True

    def __init__(self, weights: dict[str, float], options: dict[str, Any]) -> None:
        self.weights = dict(weights)
        self.options = dict(options)

    def losses(self, denoiser: Denoiser, classifier: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Unweighted loss terms for active terms (keys of ``self.weights``)."""
        raise NotImplementedError

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the active terms."""
        out = None
        for name, value in terms.items():
            part = self.weights[name] * value
            out = part if out is None else out + part
        if out is None:
            raise RuntimeError("no active loss term")  # prevented by config validation
        return out


def unit_mse(a: torch.Tensor, b: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Mean squared error in bounds-relative units (so weights do not depend on the modality)."""
    span = bounds[1] - bounds[0]
    return F.mse_loss(a / span, b / span)


def forward_with_latent(denoiser: Denoiser, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Denoised images and, for denoisers with ``encode``/``decode``, the latent codes (one pass).

    ``decode(encode(x))`` cropped to the input size and clamped equals ``denoiser(x)``
    for the DAE and the MONAI AutoEncoder (tested).
    """
    if callable(getattr(denoiser, "encode", None)) and callable(getattr(denoiser, "decode", None)):
        z = denoiser.encode(x)
        out = denoiser.clamp(denoiser.decode(z)[..., : x.shape[-2], : x.shape[-1]])
        return out, z
    return denoiser(x), None
