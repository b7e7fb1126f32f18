"""MedMNIST ``.npz`` files: ``train_images``/``train_labels``, ``val_*``, ``test_*``.

Images are uint8 (N, H, W) greyscale or (N, H, W, 3) RGB at any size (28, 64, 128,
224); MedMNIST 3D files (N, D, H, W) are read as (1, D, H, W) volumes. Labels are
(N,) or (N, 1); multi-label files (N, K), such as ChestMNIST, need ``label_column``
to pick one binary task. Nothing is unpickled: each member's ``.npy`` header is read
first and arrays of Python objects (or any non-numeric dtype) are refused.

Memory: an array is read on first use and kept. With ``mmap="auto"`` (the default) a
member larger than :data:`MMAP_AUTO_BYTES` (256 MiB uncompressed, e.g. the images of
a MedMNIST-224 split) is memory-mapped read-only instead of loaded, so only the rows
actually read occupy RAM; smaller members (labels, 28/64-pixel images) are loaded.
``mmap=True`` maps every member, ``mmap=False`` never maps. Mapping an uncompressed
member (``np.savez``) needs no copy; a compressed one (``np.savez_compressed``, as
MedMNIST ships) is streamed once into an uncompressed ``.npy`` cache, under
``cache_dir`` or ``$MEDROBUST_CACHE/npz`` (default ``~/.cache/medrobust/npz``), keyed
by a fingerprint of the file; see :mod:`medrobust.data.cache`. The cache costs disk
space equal to the uncompressed arrays and may be deleted at any time. With
``mmap="auto"``, a cache that cannot be written falls back to loading in memory with
a warning; with ``mmap=True`` it raises :class:`~medrobust.errors.DataError`.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.data.base import SPLIT_NAMES, Record, Source, check_label, register_source
from medrobust.data.cache import CacheWriteError, member_header, open_npz_member
from medrobust.data.suffixes import file_suffix
from medrobust.errors import ConfigError, DataError
from medrobust.validation import check_int

#: With ``mmap="auto"``, members with more uncompressed bytes than this are memory-mapped.
MMAP_AUTO_BYTES = 256 * 2**20


def check_labels(y: np.ndarray, where: str) -> None:
    """Refuse non-integer, non-finite, negative or too large (>= ``MAX_CLASSES``) labels.

    Checked on the stored values, before any cast or anything sized by the largest label.

    Raises:
        DataError: naming ``where`` (file and array), the row and the offending value.
    """
    if y.size == 0:
        return
    if y.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~np.isfinite(y) | (y != np.floor(y)))
        if bad.size:
            check_label(y[bad[0]].item(), f"{where} row {int(bad[0])}")
    for row in (int(np.argmin(y)), int(np.argmax(y))):
        check_label(y[row].item(), f"{where} row {row}")


@register_source("npz", "medmnist")
class NpzSource(Source):
    """A MedMNIST-layout ``.npz`` (see the module docstring).

    Args:
        root: The ``.npz`` file, or a folder holding exactly one.
        label_column: For multi-label files, the column used as a binary label.
        mmap: ``"auto"`` (map members above :data:`MMAP_AUTO_BYTES`), ``True`` (map all)
            or ``False`` (load all in memory).
        cache_dir: Folder for the uncompressed copies of compressed members (default
            ``$MEDROBUST_CACHE/npz`` or ``~/.cache/medrobust/npz``).
        **kwargs: See :class:`Source`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        label_column: int | None = None,
        mmap: bool | str = "auto",
        cache_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        root = Path(root)
        if root.is_dir():
            found = sorted(p for p in root.iterdir() if p.is_file() and file_suffix(p) == ".npz")
            if len(found) != 1:
                raise DataError(root, f"expected exactly one .npz file in the folder, found {len(found)}")
            root = found[0]
        if label_column is not None:
            label_column = check_int(label_column, "label_column", "NpzSource", low=0)
        if not (isinstance(mmap, bool) or mmap == "auto"):
            raise ConfigError(
                f"The 'mmap' parameter of NpzSource must be True, False or 'auto'. Got {mmap!r}."
            )
        self.label_column = label_column
        self.mmap = mmap
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        self._cache: dict[str, np.ndarray] = {}
        super().__init__(root, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle (e.g. to DataLoader workers) without the mapped arrays: they are re-mapped lazily."""
        state = self.__dict__.copy()
        state["_cache"] = {k: v for k, v in self._cache.items() if not isinstance(v, np.memmap)}
        return state

    # -- lazy member access ---------------------------------------------------------------------
    def _member(self, key: str) -> np.ndarray:
        if key not in self._cache:
            _, info = member_header(self.root, key)  # refuses object arrays before any data is read
            mapped = self.mmap is True or (self.mmap == "auto" and info.file_size > MMAP_AUTO_BYTES)
            arr = None
            if mapped:
                try:
                    arr = open_npz_member(self.root, key, self.cache_dir)
                except CacheWriteError as exc:
                    if self.mmap is True:
                        raise
                    warnings.warn(
                        f"{exc}; loading {self.root.name}[{key}] into memory instead",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            if arr is None:
                arr = self._load_in_memory(key)
            if arr.dtype == object or arr.dtype.kind not in "biuf":
                raise DataError(self.root, f"array {key!r} has dtype {arr.dtype}; expected numbers")
            self._cache[key] = arr
        return self._cache[key]

    def _load_in_memory(self, key: str) -> np.ndarray:
        try:
            with np.load(self.root, allow_pickle=False) as npz:
                return npz[key]
        except ValueError as exc:
            if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                raise DataError(
                    self.root, f"array {key!r} holds Python objects; refused (allow_pickle=False)"
                ) from None
            raise DataError(self.root, f"unreadable .npz ({exc})") from None
        except (OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(self.root, f"unreadable .npz ({type(exc).__name__}: {exc})") from None

    def _header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of a member, read from its ``.npy`` header without loading the data."""
        header, _ = member_header(self.root, key)
        return header.shape, header.dtype

    def _keys(self) -> list[str]:
        try:
            with np.load(self.root, allow_pickle=False) as npz:
                return list(npz.files)
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(self.root, f"unreadable .npz ({type(exc).__name__}: {exc})") from None

    def _labels(self, split: str) -> np.ndarray:
        y = self._member(f"{split}_labels")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        elif y.ndim == 2:
            if self.label_column is None:
                raise DataError(
                    self.root,
                    f"{split}_labels is multi-label {y.shape}; pass label_column= to pick one binary task",
                )
            if self.label_column >= y.shape[1]:
                raise DataError(self.root, f"label_column {self.label_column} >= {y.shape[1]} label columns")
            y = y[:, self.label_column]
        elif y.ndim != 1:
            raise DataError(self.root, f"{split}_labels has shape {y.shape}; expected (N,) or (N, 1)")
        check_labels(y, f"{self.root}[{split}_labels]")
        return y.astype(np.int64)

    # -- Source hooks ---------------------------------------------------------------------------
    def _index(self) -> tuple[list[Record], list[str]]:
        keys = set(self._keys())
        splits = [s for s in SPLIT_NAMES if f"{s}_images" in keys]
        if not splits:
            raise DataError(
                self.root, f"has none of train_images/val_images/test_images; arrays are {sorted(keys)}"
            )
        records: list[Record] = []
        n_classes = 0
        for split in splits:
            shape, _ = self._header(f"{split}_images")  # images stay on disk until first read
            y = self._labels(split)
            if shape[0] != len(y):
                raise DataError(self.root, f"{split}_images has {shape[0]} rows but {split}_labels {len(y)}")
            if len(shape) not in (3, 4, 5):
                raise DataError(self.root, f"{split}_images has shape {shape}; expected (N, H, W[, C])")
            n_classes = max(n_classes, int(y.max()) + 1 if y.size else 0)
            records.extend(
                Record(id=f"{split}/{i}", label=int(y[i]), split=split, path=self.root, index=i)
                for i in range(len(y))
            )
        class_names = [str(i) for i in range(max(n_classes, 1))]
        return records, class_names

    def describe_location(self, record: Record) -> str:
        """Errors name the file, the array and the row."""
        return f"{self.root}[{record.split}_images][{record.index}]"

    def relpath(self, path: str | os.PathLike[str] | None) -> str:
        """The ``.npz`` file's name."""
        return self.root.name if path is not None else ""

    def _read(self, record: Record) -> tuple[np.ndarray, dict[str, Any]]:
        images = self._member(f"{record.split}_images")
        x = images[int(record.index or 0)]
        dtype = str(x.dtype)
        if x.ndim == 2:
            out = x[None]
        elif x.ndim == 3 and x.shape[-1] in (1, 3, 4) and x.shape[0] > 4:
            out = np.moveaxis(x, -1, 0)  # (H, W, C) -> (C, H, W)
        elif x.ndim == 3:
            out = x[None]  # MedMNIST 3D: (D, H, W) -> (1, D, H, W)
        else:
            out = np.moveaxis(x, -1, 0)  # (D, H, W, C) -> (C, D, H, W)
        return np.ascontiguousarray(out, dtype=np.float32), {"format": "npz", "dtype": dtype}
