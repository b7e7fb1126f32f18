"""Segmentation phantoms: seeded synthetic images with label masks, 2D and 3D.

>>> from medrobust.data.segmentation.phantoms import make_segmentation_phantom
>>> ps = make_segmentation_phantom("chest_xray", n=8, size=64)                       # doctest: +SKIP
>>> write_segmentation_phantom("brain_mri", 10, 32, "decathlon", "data/brain3d")     # doctest: +SKIP
"""

from medrobust.data.segmentation.phantoms.base import (
    SEGMENTATION_PHANTOMS,
    SegmentationPhantom,
    SegmentationPhantomSet,
    get_segmentation_phantom,
    list_segmentation_phantoms,
    make_segmentation_phantom,
    register_segmentation_phantom,
)
from medrobust.data.segmentation.phantoms.writers import SEGMENTATION_FORMATS, write_segmentation_phantom
from medrobust.registry import import_submodules

import_submodules(__name__)

__all__ = [
    "SEGMENTATION_FORMATS",
    "SEGMENTATION_PHANTOMS",
    "SegmentationPhantom",
    "SegmentationPhantomSet",
    "get_segmentation_phantom",
    "list_segmentation_phantoms",
    "make_segmentation_phantom",
    "register_segmentation_phantom",
    "write_segmentation_phantom",
]
