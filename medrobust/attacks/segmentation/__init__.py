"""Attacks on segmenters (FGSM, PGD L∞/L2, APGD, SegPGD, SPSA), one file each, in their own registry.

>>> from medrobust.attacks.segmentation import create_segmentation_attack
>>> atk = create_segmentation_attack("segpgd", segmenter, eps="8/255", goal="erase-lesion")  # doctest: +SKIP
>>> result = atk(images, masks)                                                              # doctest: +SKIP
"""

from medrobust.attacks.segmentation.base import (
    SEGMENTATION_ATTACKS,
    SegmentationAttack,
    SegmentationAttackResult,
    create_segmentation_attack,
    list_segmentation_attacks,
    register_segmentation_attack,
)
from medrobust.registry import import_submodules

import_submodules(__name__)

__all__ = [
    "SEGMENTATION_ATTACKS",
    "SegmentationAttack",
    "SegmentationAttackResult",
    "create_segmentation_attack",
    "list_segmentation_attacks",
    "register_segmentation_attack",
]
