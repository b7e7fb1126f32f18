"""Segmentation data: image + mask sources, paired MONAI transforms, phantoms with masks.

Resolved lazily (PEP 562), so importing the package stays light.

>>> from medrobust.data.segmentation import open_segmentation_source, SegmentationDataset
>>> src = open_segmentation_source("Task01_BrainTumour/")               # doctest: +SKIP
>>> ds = SegmentationDataset(src, "train", preset="brain_mri", spatial_size=(96, 96, 96))  # doctest: +SKIP
"""

from __future__ import annotations

from medrobust.utils.lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "PairRecord": "medrobust.data.segmentation.base",
    "SEGMENTATION_SOURCES": "medrobust.data.segmentation.base",
    "SegmentationSource": "medrobust.data.segmentation.base",
    "check_mask": "medrobust.data.segmentation.base",
    "list_segmentation_sources": "medrobust.data.segmentation.base",
    "open_segmentation_source": "medrobust.data.segmentation.base",
    "register_segmentation_source": "medrobust.data.segmentation.base",
    "segmentation_transform": "medrobust.data.segmentation.transforms",
    "SegmentationDataset": "medrobust.data.segmentation.dataset",
    "collate_pairs": "medrobust.data.segmentation.dataset",
    "make_segmentation_phantom": "medrobust.data.segmentation.phantoms",
    "write_segmentation_phantom": "medrobust.data.segmentation.phantoms",
    "list_segmentation_phantoms": "medrobust.data.segmentation.phantoms",
    "get_segmentation_phantom": "medrobust.data.segmentation.phantoms",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
