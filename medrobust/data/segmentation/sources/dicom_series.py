"""DICOM series with their masks: a CSV manifest ``image,label[,split]`` whose images are series folders.

``image`` is a folder holding one DICOM series (the files directly or in sub-folders, hidden ones
skipped; ``.dcm``/``.dicom`` or files with the ``DICM`` preamble) or a single DICOM file. ``label``
is one of:

* a NIfTI label volume (``.nii``/``.nii.gz``) on the series' voxel grid, as dcm2niix, ITK-SNAP or
  3D Slicer write it (series of two or more slices);
* a folder of 2D mask images (PNG, TIFF, ...), one per slice in the DICOM pixel layout (rows,
  columns): the k-th mask by file name labels the slice with the k-th InstanceNumber;
* one 2D mask image for a single-slice series.

Orientation: the slices are sorted along their normal as the DICOM reader stacks them
(:class:`~medrobust.data.readers.dicom.DicomReader`), the series' affine is built from
ImagePositionPatient, ImageOrientationPatient and PixelSpacing, and the volume is turned into RAS
voxel order, the order NIfTI files are read in (:mod:`medrobust.data.orientation`: axis
permutations and flips only, never resampling). A NIfTI label is read in RAS order too and must
lie on the series' grid: every voxel within half a voxel of the image voxel it labels, else the
pair is refused naming the label file. Mask images are stacked in the series' order and turned
with it. A series without position or orientation tags stays in the reader's (slice, row,
column) order, ``meta["orientation"]`` ``"unknown"``, and only mask images can label it.

Privacy: headers are read for geometry only; errors name files and never quote a header value,
series identifiers are compared and never copied, and ``meta`` keeps whitelisted keys only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from medrobust.data.orientation import UNKNOWN, VolumeOrientation
from medrobust.data.segmentation.base import register_segmentation_source
from medrobust.data.segmentation.sources.csv_pairs import CsvPairSource
from medrobust.data.suffixes import IMAGE_SUFFIXES, NIFTI_SUFFIXES, file_suffix, is_dicom_file
from medrobust.errors import DataError
from medrobust.validation import check_choice

#: Header elements read for the geometry (pixels are read by the DICOM reader).
GEOMETRY_TAGS: tuple[str, ...] = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "Rows",
    "Columns",
    "InstanceNumber",
    "SeriesInstanceUID",
)


@dataclass(frozen=True)
class SeriesGeometry:
    """Where a series' voxels lie.

    Attributes:
        files: The series' files, sorted by name.
        stacked: Indices into ``files`` in the order the DICOM reader stacks the slices.
        by_instance: Indices into ``files`` in InstanceNumber order (masks pair with it).
        orientation: Axis mapping of the stacked ``(slice, row, column)`` volume onto RAS.
        shape: Canonical (RAS) shape of the volume (the stacked ``(slice, row, column)`` shape when unknown).
        affine: RAS affine of the volume in canonical (RAS) voxel order; None when unknown.
    """

    files: tuple[Path, ...]
    stacked: tuple[int, ...]
    by_instance: tuple[int, ...]
    orientation: VolumeOrientation
    shape: tuple[int, ...]
    affine: np.ndarray | None


def _dicom_files(folder: Path) -> list[Path]:
    """The DICOM files of a series folder (recursively, hidden ones skipped), sorted."""
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        if is_dicom_file(p)
    ]


def _mask_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_file() and file_suffix(p) in IMAGE_SUFFIXES]


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


def series_geometry(image: Path) -> SeriesGeometry:
    """Read the geometry of the series ``image`` (a folder, or one DICOM file) from its headers.

    Raises:
        DataError: naming the folder when it holds no DICOM file, several series, or two slices at
            one position; naming a file whose header cannot be read.
    """
    import pydicom

    from medrobust.data.readers.dicom import decoder_output, slice_position

    files = [image] if image.is_file() else _dicom_files(image)
    if not files:
        raise DataError(image, "holds no DICOM files (.dcm/.dicom or files with a DICM preamble)")
    headers = []
    for path in files:
        with decoder_output():
            try:
                headers.append(
                    pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=GEOMETRY_TAGS)
                )
            except Exception as exc:  # header parsers raise many types; name the file, quote nothing
                raise DataError(path, f"unreadable DICOM header ({type(exc).__name__})") from None
    if len({str(h.get("SeriesInstanceUID", "")) for h in headers}) > 1:
        raise DataError(image, "holds files of several DICOM series; expected one series per folder")
    names = [str(p) for p in files]
    stacked = sorted(range(len(files)), key=lambda i: (slice_position(headers[i]), names[i]))
    numbers = [_floats([h.get("InstanceNumber", 0) or 0], 1) for h in headers]
    by_instance = sorted(range(len(files)), key=lambda i: (0.0 if numbers[i] is None else numbers[i][0], i))
    geometry = [
        (_floats(h.get("ImagePositionPatient", ()), 3), _floats(h.get("ImageOrientationPatient", ()), 6))
        for h in (headers[i] for i in stacked)
    ]
    spacing = _floats(headers[stacked[0]].get("PixelSpacing", ()), 2)
    stacked_shape = (len(files), int(headers[0].get("Rows", 0) or 0), int(headers[0].get("Columns", 0) or 0))
    if spacing is None or any(p is None or o is None for p, o in geometry):
        unknown = VolumeOrientation(UNKNOWN)
        return SeriesGeometry(tuple(files), tuple(stacked), tuple(by_instance), unknown, stacked_shape, None)
    first, orient = geometry[0]
    row_cos, col_cos = orient[:3], orient[3:]  # type: ignore[index]
    if len(files) > 1:
        step = (geometry[-1][0] - first) / (len(files) - 1)  # type: ignore[operator]
        gaps = np.linalg.norm(np.diff([p for p, _ in geometry], axis=0), axis=1)
        if gaps.min() < 1e-6 * max(float(spacing.min()), 1e-6):
            raise DataError(image, "two slices lie at the same position; expected one slice per position")
    else:
        thickness = _floats([headers[0].get("SliceThickness", 1.0) or 1.0], 1)
        step = np.cross(row_cos, col_cos) * (1.0 if thickness is None else float(thickness[0]))
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = step, col_cos * spacing[0], row_cos * spacing[1], first
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    orientation, canonical = _to_canonical(ras, stacked_shape)
    shape = orientation.canonical_shape(stacked_shape)
    return SeriesGeometry(tuple(files), tuple(stacked), tuple(by_instance), orientation, shape, canonical)


def _to_canonical(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[VolumeOrientation, np.ndarray | None]:
    """The axis mapping of ``affine`` onto RAS and the affine of the reoriented volume of ``shape``."""
    from nibabel.orientations import aff2axcodes, inv_ornt_aff, io_orientation

    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        return VolumeOrientation(UNKNOWN), None
    ornt = io_orientation(affine)
    mapping = tuple((int(ornt[i, 0]), bool(ornt[i, 1] < 0)) for i in range(3))
    orientation = VolumeOrientation("".join(str(c) for c in aff2axcodes(affine)), mapping)
    return orientation, affine @ inv_ornt_aff(ornt, shape)


@register_segmentation_source("dicom-series", "dicom")
class DicomSeriesSource(CsvPairSource):
    """DICOM series paired with NIfTI label volumes or mask images through a CSV manifest.

    See the module docstring for the layouts and the orientation rule. Open it with
    ``open_segmentation_source("manifest.csv", kind="dicom-series", label_names=[...])`` (or
    ``source_kind: dicom-series`` in a training or audit config).

    Args:
        root: The CSV file, or a folder holding exactly one CSV.
        window: DICOM VOI handling, ``"none"`` (native units, default) or ``"auto"``.
        image_column, label_column, split_column, allow_outside: See :class:`CsvPairSource`.
        **kwargs: See :class:`~medrobust.data.segmentation.base.SegmentationSource` (``slice`` and
            ``axis`` act on the RAS volume, for image and mask alike).
    """

    def __init__(self, root: str | os.PathLike[str], *, window: str = "none", **kwargs: Any) -> None:
        from medrobust.data.readers.dicom import WINDOW_CHOICES

        self.window = check_choice(window, "window", WINDOW_CHOICES, type(self).__name__)
        self._image_of: dict[Path, Path] = {}
        self._geometry: dict[Path, SeriesGeometry] = {}
        super().__init__(root, **kwargs)

    # -- listing ----------------------------------------------------------------------------------
    def _cell(self, row: dict[str, str], col: str, base: Path, where: str) -> Path:
        path = self._resolve(row, col, base, where)
        if not path.exists():
            raise DataError(where, f"{col} {row[col].strip()!r} does not exist")
        return path

    def _check_pair(self, row: dict[str, str], image: Path, label: Path, where: str) -> None:
        image_col, label_col, _ = self.columns
        if image.is_file() and not is_dicom_file(image):
            raise DataError(where, f"image {row[image_col]!r} is neither a series folder nor a DICOM file")
        if image.is_dir() and not _dicom_files(image):
            raise DataError(where, f"series folder {row[image_col]!r} holds no DICOM files")
        if label.is_file() and file_suffix(label) not in (*NIFTI_SUFFIXES, *IMAGE_SUFFIXES):
            raise DataError(
                where,
                f"label {row[label_col]!r} is neither NIfTI, a mask image nor a folder of mask images",
            )
        if label in self._image_of and self._image_of[label] != image:
            raise DataError(where, f"label {row[label_col]!r} already labels another series")

    def _pair_listed(self, image: Path, label: Path) -> None:
        self._image_of[label] = image

    # -- loading (SegmentationSource.load calls these through _loader) -----------------------------
    def _loader(self, which: str) -> Any:
        return SimpleNamespace(load=self._read_image if which == "image" else self._read_label)

    def _series(self, image: Path) -> SeriesGeometry:
        if image not in self._geometry:
            self._geometry[image] = series_geometry(image)
        return self._geometry[image]

    def _read_image(self, image: Path) -> tuple[np.ndarray, dict[str, Any]]:
        from medrobust.data.readers import ImageFileLoader

        geo = self._series(image)
        pixels, meta = ImageFileLoader(window=self.window).load(list(geo.files))
        meta = dict(meta)
        meta["orientation"] = geo.orientation.codes
        if len(geo.files) == 1:
            return pixels, meta
        if pixels.ndim != 4 or pixels.shape[0] != 1:
            raise DataError(
                image, f"the series reads as shape {pixels.shape}; expected grey slices (1, D, H, W)"
            )
        if geo.orientation.known:
            pixels = geo.orientation.volume_to_canonical(pixels[0])[None]
        return self._take(pixels, image), meta

    def _read_label(self, label: Path) -> tuple[np.ndarray, dict[str, Any]]:
        from medrobust.data.readers import ImageFileLoader

        image = self._image_of[label]
        geo = self._series(image)
        n = len(geo.files)
        if file_suffix(label) in NIFTI_SUFFIXES:
            if n < 2 or geo.affine is None:
                why = "has one slice" if n < 2 else "has no position/orientation tags"
                raise DataError(
                    label,
                    f"a NIfTI label needs a series in known orientation, but {self.relpath(image)} {why}; "
                    "label it with mask images instead",
                )
            mask, _ = ImageFileLoader(slice="volume").load(label)
            self._check_grid(label, image, mask.shape[1:], geo)
            return self._take(mask, label), {}
        if label.is_file():
            if n != 1:
                raise DataError(
                    label,
                    f"is one mask image, but {self.relpath(image)} has {n} slices; give a "
                    "folder of mask images (one per slice) or a NIfTI label volume",
                )
            return ImageFileLoader().load(label)
        masks = _mask_files(label)
        if len(masks) != n:
            raise DataError(
                label,
                f"holds {len(masks)} mask images but the series {self.relpath(image)} has {n} slices; "
                "expected one mask per slice",
            )
        loader = ImageFileLoader()
        rank = {file_index: k for k, file_index in enumerate(geo.by_instance)}
        stack = np.stack([loader.load(masks[rank[i]])[0] for i in geo.stacked], axis=1)  # (C, D, H, W)
        if geo.orientation.known:
            stack = np.stack([geo.orientation.volume_to_canonical(c) for c in stack])
        return self._take(stack, label), {}

    def _check_grid(self, label: Path, image: Path, shape: tuple[int, ...], geo: SeriesGeometry) -> None:
        """Refuse a NIfTI label whose voxels lie more than half a voxel from the series' voxels."""
        import nibabel as nib
        from nibabel.orientations import inv_ornt_aff, io_orientation

        from medrobust.data.orientation import nifti_orientation

        img = nib.load(str(label))
        if not nifti_orientation(img).known:
            raise DataError(
                label, "has no orientation (qform and sform codes 0); cannot align it with its series"
            )
        if tuple(shape) != tuple(geo.shape) or geo.affine is None:
            return  # check_mask names the shape mismatch
        ours = np.asarray(img.affine, dtype=np.float64)
        ours = ours @ inv_ornt_aff(io_orientation(ours), img.shape[:3])
        theirs = geo.affine
        corners = np.array([[*c, 1.0] for c in product(*[(0, s - 1) for s in shape])]).T
        gap = float(np.abs((ours - theirs) @ corners)[:3].max())
        voxel = float(np.linalg.norm(theirs[:3, :3], axis=0).min())
        if gap > 0.5 * voxel:
            raise DataError(
                label,
                f"lies on another voxel grid than its DICOM series {self.relpath(image)} (voxels up to "
                f"{gap:.3g} mm apart, more than half a voxel); expected the series' grid, as dcm2niix writes",
            )

    def _take(self, volume: np.ndarray, where: Path) -> np.ndarray:
        """Apply the ``slice``/``axis`` options to a ``(C, X, Y, Z)`` volume (image and mask alike)."""
        if self.slice == "volume" or volume.ndim != 4:
            return volume
        n = volume.shape[1 + self.axis]
        index = n // 2 if self.slice == "middle" else int(self.slice)
        if index >= n:
            raise DataError(where, f"slice {index} asked for, but axis {self.axis} has {n}")
        return np.ascontiguousarray(np.take(volume, index, axis=1 + self.axis))
