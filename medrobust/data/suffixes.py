"""The data layer's file vocabulary: which suffixes are images, DICOM, NIfTI (a leaf module).

Readers, sources and the opening logic all import from here, so nothing below
:mod:`medrobust.data.base` needs the sources and the package's imports have no cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
ALL_IMAGE_SUFFIXES: tuple[str, ...] = IMAGE_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES


def file_suffix(path: str | os.PathLike[str]) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def is_dicom_file(path: Path) -> bool:
    """True for a ``.dcm`` name or a file with the ``DICM`` magic at byte 128."""
    if file_suffix(path) in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False
