"""Canonical orientation: NIfTI volumes in RAS order, photographs upright per their EXIF tag.

Pure numpy, nibabel and Pillow (no MONAI, no torch), so header-only work such as counting the
slices of a volume stays light.

NIfTI: :func:`nifti_orientation` reads the file's orientation from its header (nibabel's
``io_orientation`` of the affine, the closest axis-aligned orientation) and the helpers below
map canonical (RAS) axes and slice indices onto the file's, so a single slice can still be
read through nibabel's array proxy without loading the volume. Only axis permutations and
flips are used, never resampling: the result equals ``nibabel.as_closest_canonical``.

Photographs: :func:`exif_orientation` reads the EXIF ``Orientation`` tag (0x0112) that phones
and dermatoscopes write instead of rotating the pixels; :func:`apply_exif_orientation` turns
the image upright as ``PIL.ImageOps.exif_transpose`` does.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medrobust.utils.logging import get_logger

log = get_logger("data")

#: The canonical voxel order of volumes: +x Right, +y Anterior, +z Superior.
CANONICAL = "RAS"
#: ``meta["orientation"]`` of a file whose header gives no usable orientation.
UNKNOWN = "unknown"
#: EXIF ``Orientation`` tag number.
EXIF_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class VolumeOrientation:
    """How a file's three spatial axes map onto the canonical RAS axes.

    Attributes:
        codes: The file's own axis codes (``"LPS"``, ``"RAS"``, ...) or ``"unknown"``.
        to_canonical: For each file axis, ``(canonical axis, flip)``; the identity when unknown.
    """

    codes: str
    to_canonical: tuple[tuple[int, bool], ...] = ((0, False), (1, False), (2, False))

    @property
    def known(self) -> bool:
        """True when the header gives an orientation (then images are reoriented to RAS)."""
        return self.codes != UNKNOWN

    def file_axis(self, canonical_axis: int) -> int:
        """The file axis that becomes ``canonical_axis``."""
        return next(i for i, (c, _) in enumerate(self.to_canonical) if c == canonical_axis)

    def canonical_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The first three dimensions of ``shape`` in canonical order (later ones unchanged)."""
        spatial = tuple(int(s) for s in shape[:3])
        if len(spatial) < 3:
            return spatial + tuple(int(s) for s in shape[3:])
        out = tuple(spatial[self.file_axis(a)] for a in range(3))
        return out + tuple(int(s) for s in shape[3:])

    def file_index(self, canonical_axis: int, index: int, shape: Sequence[int]) -> tuple[int, int]:
        """``(file axis, file index)`` of slice ``index`` along ``canonical_axis``."""
        f = self.file_axis(canonical_axis)
        flip = self.to_canonical[f][1]
        return f, (int(shape[f]) - 1 - index if flip else index)

    def slice_to_canonical(self, data: np.ndarray, sliced_file_axis: int) -> np.ndarray:
        """Reorient a 2D slice taken along ``sliced_file_axis`` (remaining file axes in order)."""
        rest = [i for i in range(3) if i != sliced_file_axis]
        for k, f in enumerate(rest):
            if self.to_canonical[f][1]:
                data = np.flip(data, axis=k)
        if self.to_canonical[rest[0]][0] > self.to_canonical[rest[1]][0]:
            data = data.T
        return np.ascontiguousarray(data)

    def volume_to_canonical(self, data: np.ndarray) -> np.ndarray:
        """Reorient a 3D array (file order) to canonical order."""
        out = data
        for f, (_, flip) in enumerate(self.to_canonical):
            if flip:
                out = np.flip(out, axis=f)
        order = [self.file_axis(a) for a in range(3)]
        return np.ascontiguousarray(np.transpose(out, order))

    def plane_to_canonical(self, data: np.ndarray) -> np.ndarray:
        """Reorient a 2D image (a NIfTI of shape (X, Y)): file axis 2 has length 1."""
        return self.slice_to_canonical(data, 2) if self.to_canonical[2][0] == 2 else np.asarray(data)


def nifti_orientation(img: Any) -> VolumeOrientation:
    """The orientation of a nibabel NIfTI image, from its header only.

    The affine nibabel chooses (sform when its code is set, else qform) gives the closest
    axis-aligned orientation (``nibabel.orientations.io_orientation``). A header with both
    codes 0 carries no orientation (nibabel would fall back to a guessed radiological one),
    and a non-finite or singular affine gives none either: both are ``"unknown"`` and the
    data are read in stored order.
    """
    from nibabel.orientations import aff2axcodes, io_orientation

    header = img.header
    try:
        codes = (int(header["qform_code"]), int(header["sform_code"]))
    except (KeyError, ValueError, TypeError):
        codes = (0, 0)
    if codes == (0, 0):
        return VolumeOrientation(UNKNOWN)
    affine = np.asarray(img.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        return VolumeOrientation(UNKNOWN)
    ornt = io_orientation(affine)
    if ornt.shape[0] < 3 or np.isnan(ornt).any():
        return VolumeOrientation(UNKNOWN)
    mapping = tuple((int(ornt[i, 0]), bool(ornt[i, 1] < 0)) for i in range(3))
    if sorted(c for c, _ in mapping) != [0, 1, 2]:
        return VolumeOrientation(UNKNOWN)
    return VolumeOrientation("".join(str(c) for c in aff2axcodes(affine)), mapping)


def exif_orientation(img: Any, name: object) -> int | None:
    """The EXIF ``Orientation`` value (1..8) of a Pillow image, or ``None`` when it has none.

    A malformed EXIF block is logged (naming the file; Pillow's warnings about it too) and
    treated as absent: the pixels are still readable, only their rotation is unknown.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:  # Pillow warns on corrupt EXIF blocks
            warnings.simplefilter("always")
            value = img.getexif().get(EXIF_ORIENTATION_TAG)
    except (ValueError, TypeError, OSError, SyntaxError, KeyError, IndexError) as exc:
        log.warning("%s: unreadable EXIF block (%s); orientation not applied", name, type(exc).__name__)
        return None
    for w in caught:
        log.warning("%s: EXIF block: %s", name, " ".join(str(w.message).split()))
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        log.warning("%s: EXIF Orientation %r is not a number; not applied", name, value)
        return None
    if not 1 <= number <= 8:
        log.warning("%s: EXIF Orientation %d is outside 1..8; not applied", name, number)
        return None
    return number


def apply_exif_orientation(img: Any, orientation: int | None) -> Any:
    """Turn a Pillow image upright for EXIF ``orientation`` (2..8); 1 or ``None`` returns it as is.

    The same transpositions as ``PIL.ImageOps.exif_transpose`` (6: rotate 270° = 90° clockwise,
    8: 90° counter-clockwise, 3: 180°, 2/4/5/7: the mirrored variants).
    """
    if orientation is None or orientation == 1:
        return img
    from PIL import Image

    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }[orientation]
    return img.transpose(method)
