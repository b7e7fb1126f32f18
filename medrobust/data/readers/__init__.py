"""MONAI ``ImageReader`` s used by the sources, and :class:`ImageFileLoader`, which picks one per file.

Readers are always named explicitly (never MONAI's automatic choice, which prefers ITK
when it is installed): PNG/JPEG/BMP/TIFF -> :class:`ImageFileReader` (Pillow),
DICOM -> :class:`DicomReader` (pydicom), NIfTI -> :class:`NiftiReader` (nibabel).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.data.readers.dicom import WINDOW_CHOICES, DicomReader, check_frame
from medrobust.data.readers.nifti import NiftiReader, check_slice
from medrobust.data.readers.pil import ImageFileReader
from medrobust.data.suffixes import DICOM_SUFFIXES, IMAGE_SUFFIXES, NIFTI_SUFFIXES, file_suffix
from medrobust.errors import DataError
from medrobust.validation import check_choice, check_int

__all__ = ["MAX_ITEMS_PER_FILE", "DicomReader", "ImageFileLoader", "ImageFileReader", "NiftiReader"]

#: Most samples (frames or slices) one file may become with ``frame="all"``/``slice="all"``;
#: a header is a few bytes, and ``NumberOfFrames`` of 10**9 would otherwise list 10**9 records.
MAX_ITEMS_PER_FILE = 100_000


def explicit_load_image() -> Any:
    """A MONAI ``LoadImage`` (channel first, float32, image only) with no automatic reader choice.

    ``LoadImage.__init__`` instantiates every reader MONAI supports, including GPU ones that
    log warnings when their codecs are missing; readers here are always passed per call, so
    this subclass registers none and refuses calls without an explicit reader.
    """
    from monai.transforms import LoadImage

    class _ExplicitLoadImage(LoadImage):
        def __init__(self) -> None:  # deliberately not calling LoadImage.__init__ (see above)
            self.auto_select = False
            self.image_only = True
            self.dtype = np.float32
            self.ensure_channel_first = True
            self.simple_keys = False
            self.pattern = None
            self.sep = "."
            self.expanduser = True
            self.readers = []

        def __call__(self, filename: Any, reader: Any = None) -> Any:
            if reader is None:
                raise ValueError("a reader must be given explicitly")
            return super().__call__(filename, reader=reader)

    return _ExplicitLoadImage()


class ImageFileLoader:
    """Load one image file (or DICOM series) through MONAI ``LoadImage`` with an explicit reader.

    Args:
        window: DICOM VOI handling, ``"none"`` (native units) or ``"auto"``.
        frame: DICOM multi-frame choice: ``"middle"``, ``"volume"`` or an index.
        axis: NIfTI slicing axis (0, 1, 2) of the canonical RAS volume.
        slice: NIfTI slice choice: ``"middle"``, ``"volume"`` or an index.
        volume: NIfTI 4D volume index.
    """

    def __init__(
        self,
        window: str = "none",
        frame: str | int = "middle",
        axis: int = 2,
        slice: str | int = "middle",
        volume: int = 0,
    ) -> None:
        self.window = check_choice(window, "window", WINDOW_CHOICES, "ImageFileLoader")
        self.frame = check_frame(frame, "ImageFileLoader")
        self.axis = check_int(axis, "axis", "ImageFileLoader", low=0, high=2)
        self.slice = check_slice(slice, "ImageFileLoader")
        self.volume = check_int(volume, "volume", "ImageFileLoader", low=0)
        self._load: Any = None

    def _loader(self) -> Any:
        if self._load is None:
            self._load = explicit_load_image()
        return self._load

    def reader_for(self, path: str | os.PathLike[str], index: int | None = None) -> Any:
        """The reader for ``path``; ``index`` overrides the frame/slice choice."""
        suffix = file_suffix(path)
        if suffix in IMAGE_SUFFIXES:
            return ImageFileReader()
        if suffix in NIFTI_SUFFIXES:
            choice = self.slice if index is None else index
            return NiftiReader(axis=self.axis, slice=choice, volume=self.volume)
        if suffix in DICOM_SUFFIXES or suffix == "":
            return DicomReader(window=self.window, frame=self.frame if index is None else index)
        raise DataError(path, f"unsupported file type {suffix!r}")

    def load(
        self, path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], index: int | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Return ``(image (C, ...) float32, reader meta)`` for a file or a DICOM series.

        Raises:
            DataError: naming the file when it is missing, empty or unreadable.
        """
        paths = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
        for p in paths:
            if not p.is_file():
                raise DataError(p, "file does not exist")
            if p.stat().st_size == 0:
                raise DataError(p, "file is empty (0 bytes)")
        reader = self.reader_for(paths[0], index)
        target = [str(p) for p in paths] if len(paths) > 1 else str(paths[0])
        try:
            img = self._loader()(target, reader=reader)
        except DataError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise DataError(paths[0], f"could not be loaded ({type(exc).__name__}: {exc})") from None
        meta = {k: v for k, v in getattr(img, "meta", {}).items() if isinstance(k, str)}
        as_tensor = getattr(img, "as_tensor", None)
        array = (as_tensor() if callable(as_tensor) else img).numpy()
        return np.ascontiguousarray(array, dtype=np.float32), meta

    def count_items(self, path: str | os.PathLike[str]) -> int:
        """Frames (DICOM) or slices along ``axis`` (NIfTI) in ``path``; 1 for 2D images.

        Raises:
            DataError: naming the file when its header cannot be read.
        """
        suffix = file_suffix(path)
        what, n = "", 1
        try:
            if suffix in NIFTI_SUFFIXES:
                import nibabel as nib

                from medrobust.data.orientation import nifti_orientation

                img = nib.load(str(path))
                shape = nifti_orientation(img).canonical_shape(img.shape)  # axes as the reader sees them
                what, n = f"slices along axis {self.axis}", 1 if len(shape) < 3 else int(shape[self.axis])
            elif suffix in DICOM_SUFFIXES or suffix == "":
                import pydicom

                from medrobust.data.readers.dicom import decoder_output

                with decoder_output():
                    ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["NumberOfFrames"])
                what, n = "frames (NumberOfFrames)", int(ds.get("NumberOfFrames", 1) or 1)
        except Exception as exc:  # header parsers raise many types; report the file, never a traceback
            raise DataError(path, f"unreadable header ({type(exc).__name__}: {exc})") from None
        if n < 1:
            raise DataError(path, f"header gives {n} {what}; expected at least 1")
        if n > MAX_ITEMS_PER_FILE:
            raise DataError(
                path, f"header gives {n} {what}, more than the {MAX_ITEMS_PER_FILE} samples one file may hold"
            )
        return n
