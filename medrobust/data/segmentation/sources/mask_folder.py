"""A folder with ``images/`` and ``masks/`` (PNG, JPEG, TIFF, DICOM or NIfTI) matched by file stem."""

from __future__ import annotations

from medrobust.data.segmentation.base import PairRecord, SegmentationSource, register_segmentation_source
from medrobust.data.segmentation.sources._pairs import match_pairs
from medrobust.data.suffixes import ALL_IMAGE_SUFFIXES, file_suffix
from medrobust.utils.logging import get_logger

log = get_logger("data.segmentation")


@register_segmentation_source("mask-folder", "png-masks", "masks")
class MaskFolderSource(SegmentationSource):
    """``images/x.png`` with ``masks/x.png`` (or ``x_mask``, ``x_segmentation``, ``x_seg``).

    Mask pixel values are the label indices (a binary mask stored as 0/255 is read as 0/1, see
    ``binary_255``). JPEG masks are read but logged: lossy compression changes label values
    along edges, which the label check then refuses.
    """

    def _index(self) -> list[PairRecord]:
        pairs = match_pairs(self.root / "images", self.root / "masks", ALL_IMAGE_SUFFIXES)
        lossy = [m for _, _, m in pairs if file_suffix(m) in (".jpg", ".jpeg")]
        if lossy:
            log.warning("%s: %d mask(s) are JPEG (lossy), e.g. %s", self.root, len(lossy), lossy[0].name)
        return [PairRecord(id=s, image=img, label=mask) for s, img, mask in pairs]
