"""Denoising defenses: denoiser registry, ``defend()``, checkpoints and defense training.

>>> from medrobust.defenses import create_denoiser, defend
>>> defended = defend(classifier, create_denoiser("median", in_channels=1))   # doctest: +SKIP

Randomized smoothing (``smooth``, ``SmoothedClassifier``, ``certified_accuracy``) and training
(``TrainDefenseConfig``, ``train_defense``, ``fit_denoiser``, ``DEFENSE_KINDS``) are resolved
lazily because they pull in the model, attack and data packages.
"""

from __future__ import annotations

from medrobust.defenses.checkpoint import load_denoiser, save_denoiser
from medrobust.defenses.defended import DefendedClassifier, defend
from medrobust.defenses.denoisers import (
    DENOISERS,
    Denoiser,
    bpda,
    create_denoiser,
    list_denoisers,
    register_denoiser,
)
from medrobust.utils.lazy import lazy_attributes

_LAZY = {
    "TrainDefenseConfig": "medrobust.defenses.training",
    "train_defense": "medrobust.defenses.training",
    "fit_denoiser": "medrobust.defenses.training",
    "FitResult": "medrobust.defenses.training",
    "DEFENSE_KINDS": "medrobust.defenses.objectives",
    "list_defense_kinds": "medrobust.defenses.objectives",
    "smooth": "medrobust.defenses.smoothing",
    "SmoothedClassifier": "medrobust.defenses.smoothing",
    "certified_accuracy": "medrobust.defenses.certify",
}

__all__ = [
    "DENOISERS",
    "DefendedClassifier",
    "Denoiser",
    "bpda",
    "create_denoiser",
    "defend",
    "list_denoisers",
    "load_denoiser",
    "register_denoiser",
    "save_denoiser",
    *sorted(_LAZY),
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
