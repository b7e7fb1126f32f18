"""Segmentation networks: registry (MONAI UNet, SegResNet, UNETR, SwinUNETR, a tiny test net), card, training.

>>> from medrobust.models.segmentation import SegmentationCard, build_segmenter
>>> card = SegmentationCard(in_channels=1, class_names=["background", "tumour"], spatial_dims=3,
...                         lesion_classes=["tumour"], roi_size=(32, 32, 32))
>>> model = build_segmenter("unet", card)            # doctest: +SKIP
"""

from __future__ import annotations

from medrobust.models.segmentation.card import SegmentationCard
from medrobust.models.segmentation.checkpoint import load_segmenter, save_segmenter
from medrobust.models.segmentation.registry import (
    SEGMENTERS,
    SegmenterArch,
    create_segmenter,
    get_segmenter_arch,
    list_segmenters,
    register_segmenter,
)
from medrobust.models.segmentation.segmenter import MedicalSegmenter, build_segmenter
from medrobust.registry import import_submodules
from medrobust.utils.lazy import lazy_attributes

import_submodules("medrobust.models.segmentation.archs")

_LAZY = {
    "TrainSegmenterConfig": "medrobust.models.segmentation.training",
    "train_segmenter": "medrobust.models.segmentation.training",
}

__all__ = [
    "SEGMENTERS",
    "MedicalSegmenter",
    "SegmentationCard",
    "SegmenterArch",
    "TrainSegmenterConfig",
    "build_segmenter",
    "create_segmenter",
    "get_segmenter_arch",
    "list_segmenters",
    "load_segmenter",
    "register_segmenter",
    "save_segmenter",
    "train_segmenter",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
