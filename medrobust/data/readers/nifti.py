"""A NIfTI reader (MONAI ``NibabelReader`` subclass) that returns one 2D slice or the whole volume.

Canonical orientation: whatever voxel order a file stores, images come out in RAS order
(array axis 0 runs towards the patient's Right, 1 towards Anterior, 2 towards Superior),
as nibabel's ``as_closest_canonical`` would give, using only axis permutations and flips
(no resampling; an oblique affine is mapped to its closest axes). The same volume saved
as LPS or RAS therefore gives identical slices. ``axis`` and slice indices refer to
these canonical axes; the file's own axis codes (e.g. ``"LPS"``) are recorded in
``meta["orientation"]``. A file with neither a qform nor an sform (both codes 0) or with a
non-finite or singular affine has no orientation to go by: it is read in stored order and
``meta["orientation"]`` is ``"unknown"``.

Slices are read through nibabel's array proxy, so only the slice asked for is loaded
and the header's ``scl_slope``/``scl_inter`` are applied. A slice along ``axis=2`` is
returned as (R, A): the row index grows towards the patient's right, the column index
towards anterior. The size of what would be read (a slice or the volume) is checked from the header
against :data:`~medrobust.limits.MAX_IMAGE_PIXELS` before any data are.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from monai.data.image_reader import NibabelReader
from monai.utils import ensure_tuple

from medrobust.data.orientation import nifti_orientation
from medrobust.data.readers.pil import check_decoded_size
from medrobust.errors import ConfigError, DataError


def check_slice(value: Any, owner: str = "NiftiReader") -> str | int:
    """Validate a slice choice: ``"middle"``, ``"volume"`` or a non-negative int."""
    if isinstance(value, str) and value in ("middle", "volume"):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(
        f"The 'slice' parameter of {owner} must be 'middle', 'volume' or a slice index >= 0. Got {value!r}."
    )


def _decoded_shape(shape: tuple[int, ...], axis: int, choice: str | int) -> tuple[int, ...]:
    """The dimensions reading ``shape`` produces: the volume, or one slice along ``axis``."""
    spatial = shape[:3]
    if len(spatial) < 3 or choice == "volume":
        return spatial
    return tuple(d for i, d in enumerate(spatial) if i != axis)


class NiftiReader(NibabelReader):
    """Read a NIfTI file as a 2D slice (along ``axis``) or a 3D volume, in canonical RAS order.

    Args:
        axis: Canonical axis the slices are taken along (0: sagittal, along R; 1: coronal,
            along A; 2: axial, along S).
        slice: ``"middle"`` (default), a slice index (counted in canonical order, from the
            patient's left, posterior or inferior side), or ``"volume"`` for the whole 3D volume.
        volume: For 4D files, which volume (4th axis index) to read.
    """

    def __init__(self, axis: int = 2, slice: str | int = "middle", volume: int = 0) -> None:
        super().__init__()
        if axis not in (0, 1, 2):
            raise ConfigError(f"The 'axis' parameter of NiftiReader must be 0, 1 or 2. Got {axis!r}.")
        if not isinstance(volume, int) or isinstance(volume, bool) or volume < 0:
            raise ConfigError(f"The 'volume' parameter of NiftiReader must be an int >= 0. Got {volume!r}.")
        self.axis = axis
        self.slice = check_slice(slice)
        self.volume = volume

    def read(self, data: Any, **kwargs: Any) -> Any:
        """Open the header lazily with nibabel; an unreadable file raises :class:`DataError`.

        The header is used as the file states it (not MONAI's ``correct_nifti_header_if_necessary``,
        which may swap sform and qform), so reading and counting slices see the same orientation.
        """
        import nibabel as nib

        names = ensure_tuple(data)
        self.filenames = names
        try:
            images = [nib.load(str(name), **{**self.kwargs, **kwargs}) for name in names]
        except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors, ...
            raise DataError(names[0], f"unreadable NIfTI file ({type(exc).__name__}: {exc})") from None
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Return the slice (or volume) as float32 in canonical (RAS) order and descriptive meta."""
        if isinstance(img, (list, tuple)):
            raise DataError(self.filenames[0], "read NIfTI files one at a time")
        name = str(self.filenames[0])
        try:
            shape = tuple(int(s) for s in img.shape)
            orient = nifti_orientation(img)
            zooms = [float(z) for z in img.header.get_zooms()[:3]]
            if len(zooms) == 3:
                zooms = [zooms[orient.file_axis(a)] for a in range(3)]
            dtype = np.dtype(img.get_data_dtype()).name
            canonical = orient.canonical_shape(shape)
            check_decoded_size(name, _decoded_shape(canonical, self.axis, self.slice))  # before any data
            if name.lower().endswith(".nii"):
                # Uncompressed: a data block shorter than the header says is truncation, even
                # when the slice asked for happens to lie in the part that is present.
                need = int(img.dataobj.offset) + int(np.prod(shape)) * np.dtype(img.get_data_dtype()).itemsize
                have = os.path.getsize(name)
                if have < need:
                    raise DataError(name, f"truncated NIfTI file ({have} bytes; the header needs {need})")
            if len(shape) == 2:
                data = orient.plane_to_canonical(np.asarray(img.dataobj, dtype=np.float32))
                slice_index = None
            else:
                if len(shape) > 4 or (len(shape) == 4 and self.volume >= shape[3]):
                    raise DataError(name, f"cannot read volume {self.volume} of an image of shape {shape}")
                vol = (self.volume,) if len(shape) == 4 else ()
                if self.slice == "volume":
                    data = np.asarray(img.dataobj[(slice(None),) * 3 + vol], dtype=np.float32)
                    data = orient.volume_to_canonical(data)
                    slice_index = None
                else:
                    n = canonical[self.axis]
                    slice_index = n // 2 if self.slice == "middle" else int(self.slice)
                    if slice_index >= n:
                        raise DataError(name, f"slice {slice_index} asked for, but axis {self.axis} has {n}")
                    file_axis, file_index = orient.file_index(self.axis, slice_index, shape)
                    index: list[Any] = [slice(None)] * 3
                    index[file_axis] = file_index
                    data = np.asarray(img.dataobj[tuple(index) + vol], dtype=np.float32)
                    data = orient.slice_to_canonical(data, file_axis)
        except DataError:
            raise
        except Exception as exc:  # truncated or corrupt data blocks surface only here
            raise DataError(name, f"unreadable NIfTI data ({type(exc).__name__}: {exc})") from None
        meta: dict[str, Any] = {
            "format": "nifti",
            "dtype": dtype,
            "axis": self.axis,
            "slice_index": slice_index,
            "volume_index": self.volume if len(shape) == 4 else None,
            "voxel_size": zooms,
            "orientation": orient.codes,
            "spatial_shape": np.asarray(data.shape),
            "original_channel_dim": float("nan"),
        }
        return data, meta
