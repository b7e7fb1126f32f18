"""``defend(classifier, denoiser)``: one module (denoiser -> classifier) attacks can target end-to-end."""

from __future__ import annotations

import torch
from torch import nn

from medrobust.defenses.denoisers.base import Denoiser
from medrobust.errors import ConfigError


class DefendedClassifier(nn.Module):
    """A classifier behind a denoiser: ``logits = classifier(denoiser(x))``.

    It carries the classifier's model card (same bounds, channels and classes), so every
    attack and the audit treat it like any other classifier. ``uses_bpda`` is True when the
    denoiser's gradient is a straight-through approximation; results of gradient-based
    attacks on it must then be labelled "BPDA".

    Args:
        classifier: A classifier with a ``card`` (``medrobust.models.MedicalClassifier``).
        denoiser: A :class:`Denoiser` with the card's channels and bounds.
    """

    def __init__(self, classifier: nn.Module, denoiser: Denoiser) -> None:
        super().__init__()
        card = getattr(classifier, "card", None)
        if card is None:
            raise ConfigError(
                "defend() needs a classifier with a model card (medrobust.models.MedicalClassifier or "
                "load_model(...)). Got a module without a 'card' attribute."
            )
        if not isinstance(denoiser, Denoiser):
            raise ConfigError(
                f"defend() needs a medrobust Denoiser (create_denoiser / load_denoiser). "
                f"Got {type(denoiser).__name__}."
            )
        if denoiser.in_channels != card.in_channels:
            raise ConfigError(
                f"defend(): the denoiser has in_channels={denoiser.in_channels} but the classifier's card "
                f"expects {card.in_channels}."
            )
        low, high = (float(b) for b in card.bounds)
        span = high - low
        if abs(denoiser.bounds[0] - low) > 1e-6 * span or abs(denoiser.bounds[1] - high) > 1e-6 * span:
            raise ConfigError(
                f"defend(): the denoiser's bounds {tuple(denoiser.bounds)} differ from the classifier card's "
                f"bounds {(low, high)}. Build the denoiser with bounds=card.bounds."
            )
        self.classifier = classifier
        self.denoiser = denoiser
        self.card = card

    @property
    def uses_bpda(self) -> bool:
        """True when gradients through the denoiser are BPDA (straight-through) approximations."""
        return not self.denoiser.differentiable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the classifier on the denoised images."""
        return self.classifier(self.denoiser(x))


def defend(classifier: nn.Module, denoiser: Denoiser) -> DefendedClassifier:
    """Put ``denoiser`` in front of ``classifier``; the result has the classifier's card.

    Example:
        >>> defended = defend(load_model("runs/cxr"), load_denoiser("runs/sdae"))  # doctest: +SKIP
        >>> create_attack("pgd", defended, eps=2 / 255)(images, labels)           # doctest: +SKIP
    """
    return DefendedClassifier(classifier, denoiser)
