"""``defend(classifier, denoiser)``: one module (denoiser -> classifier) attacks can target end-to-end."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medrobust.defenses.denoisers.base import Denoiser
from medrobust.errors import ConfigError


def denoise_axial_slices(denoiser: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D denoiser to every axial slice of volumes ``(N, C, X, Y, Z)`` (RAS: Z is axial).

    The slices go through the denoiser as one batch ``(N * Z, C, X, Y)`` and come back in place,
    so gradients (exact or BPDA) flow slice by slice as they would on 2D images.
    """
    n, c, sx, sy, sz = x.shape
    slices = x.permute(0, 4, 1, 2, 3).reshape(n * sz, c, sx, sy)
    return denoiser(slices).reshape(n, sz, c, sx, sy).permute(0, 2, 3, 4, 1)


def check_pairing(denoiser: nn.Module, card: Any, owner: str) -> bool:
    """Check that ``denoiser`` can sit in front of the model described by ``card``.

    Channels and bounds must match the card's. A denoiser filters the card's dimensionality
    directly, or, when it is 2D and the model 3D, each axial slice of the volume.

    Returns:
        True when it filters slice by slice (a 2D denoiser in front of a 3D model).

    Raises:
        ConfigError: naming what differs (not a Denoiser, channels, bounds, dimensionality).
    """
    if not isinstance(denoiser, Denoiser):
        raise ConfigError(
            f"{owner} needs a medrobust Denoiser (create_denoiser / load_denoiser). "
            f"Got {type(denoiser).__name__}."
        )
    channels = int(card.in_channels)
    if denoiser.in_channels != channels:
        raise ConfigError(
            f"{owner}: the denoiser has in_channels={denoiser.in_channels} but the model's card expects "
            f"{channels}."
        )
    low, high = (float(b) for b in card.bounds)
    span = high - low
    if abs(denoiser.bounds[0] - low) > 1e-6 * span or abs(denoiser.bounds[1] - high) > 1e-6 * span:
        raise ConfigError(
            f"{owner}: the denoiser's bounds {tuple(denoiser.bounds)} differ from the model card's bounds "
            f"{(low, high)}. Build the denoiser with bounds=card.bounds."
        )
    model_dims = int(card.spatial_dims)
    dims = tuple(denoiser.spatial_dims)
    if model_dims in dims:
        return False
    if model_dims == 3 and 2 in dims:
        return True
    raise ConfigError(
        f"{owner}: the denoiser {getattr(denoiser, 'name', type(denoiser).__name__)!r} filters "
        f"{' or '.join(f'{d}D' for d in dims)} images but the model is {model_dims}D."
    )


class DefendedClassifier(nn.Module):
    """A classifier behind a denoiser: ``logits = classifier(denoiser(x))``.

    It carries the classifier's model card (same bounds, channels and classes), so every
    attack and the audit treat it like any other classifier. ``uses_bpda`` is True when the
    denoiser's gradient is a straight-through approximation; results of gradient-based
    attacks on it must then be labelled "BPDA". A 2D denoiser in front of a 3D classifier
    filters each axial slice (``slicewise``).

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
        #: A 2D denoiser in front of a 3D classifier filters each axial slice.
        self.slicewise = check_pairing(denoiser, card, "defend()")
        self.classifier = classifier
        self.denoiser = denoiser
        self.card = card

    @property
    def uses_bpda(self) -> bool:
        """True when gradients through the denoiser are BPDA (straight-through) approximations."""
        return not self.denoiser.differentiable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the classifier on the denoised images (volumes: slice by slice for a 2D denoiser)."""
        if self.slicewise and x.ndim == 5:
            return self.classifier(denoise_axial_slices(self.denoiser, x))
        return self.classifier(self.denoiser(x))


def defend(classifier: nn.Module, denoiser: Denoiser) -> DefendedClassifier:
    """Put ``denoiser`` in front of ``classifier``; the result has the classifier's card.

    Example:
        >>> defended = defend(load_model("runs/cxr"), load_denoiser("runs/sdae"))  # doctest: +SKIP
        >>> create_attack("pgd", defended, eps=2 / 255)(images, labels)           # doctest: +SKIP
    """
    return DefendedClassifier(classifier, denoiser)
