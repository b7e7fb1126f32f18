"""Classifiers: registry, model card, wrapper with normalisation, checkpoints, import, training.

>>> from medrobust.models import ModelCard, build_classifier, load_model
>>> card = ModelCard(in_channels=1, class_names=["normal", "pneumonia"], positive_class="pneumonia")
>>> model = build_classifier("small_cnn", card)          # doctest: +SKIP
>>> model = load_model("runs/cxr")                        # doctest: +SKIP
"""

from __future__ import annotations

from medrobust.models.card import ModelCard
from medrobust.models.checkpoint import load_model, save_checkpoint
from medrobust.models.classifier import MedicalClassifier, Normalize, build_classifier, wrap_imported
from medrobust.models.registry import (
    CLASSIFIERS,
    ClassifierArch,
    create_classifier,
    get_classifier_arch,
    list_classifiers,
    register_classifier,
)
from medrobust.registry import import_submodules
from medrobust.utils.lazy import lazy_attributes

import_submodules("medrobust.models.archs")

# Training pulls in the data layer; resolve it on first use (PEP 562).
_LAZY = {
    "TrainClassifierConfig": "medrobust.models.training",
    "TrainData": "medrobust.models.training",
    "train_classifier": "medrobust.models.training",
    "prepare_data": "medrobust.models.training",
}


__all__ = [
    "CLASSIFIERS",
    "ClassifierArch",
    "MedicalClassifier",
    "ModelCard",
    "Normalize",
    "TrainClassifierConfig",
    "TrainData",
    "build_classifier",
    "create_classifier",
    "get_classifier_arch",
    "list_classifiers",
    "load_model",
    "prepare_data",
    "register_classifier",
    "save_checkpoint",
    "train_classifier",
    "wrap_imported",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
