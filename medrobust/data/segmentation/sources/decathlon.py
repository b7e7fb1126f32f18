"""Medical Segmentation Decathlon layout: ``imagesTr/`` + ``labelsTr/`` NIfTI files of the same name."""

from __future__ import annotations

from medrobust.data.segmentation.base import PairRecord, SegmentationSource, register_segmentation_source
from medrobust.data.segmentation.sources._pairs import match_pairs
from medrobust.data.suffixes import NIFTI_SUFFIXES


@register_segmentation_source("decathlon", "msd", "nnunet")
class DecathlonSource(SegmentationSource):
    """A Decathlon task folder: ``imagesTr/case.nii.gz`` with ``labelsTr/case.nii.gz``.

    nnU-Net's ``case_0000.nii.gz`` image names (single modality) match ``case.nii.gz`` labels.
    Label names come from the folder's ``dataset.json`` (``labels``) unless given. Volumes are
    read in RAS order, whole (``slice="volume"``, default) or as one slice along ``axis``.
    ``imagesTs/`` (no labels) is not read.
    """

    def _index(self) -> list[PairRecord]:
        pairs = match_pairs(self.root / "imagesTr", self.root / "labelsTr", NIFTI_SUFFIXES)
        return [PairRecord(id=s, image=img, label=mask) for s, img, mask in pairs]
