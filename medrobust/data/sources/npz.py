"""MedMNIST ``.npz`` files: ``train_images``/``train_labels``, ``val_*``, ``test_*``.

Images are uint8 (N, H, W) greyscale or (N, H, W, 3) RGB at any size (28, 64, 128,
224); MedMNIST 3D files (N, D, H, W) are read as (1, D, H, W) volumes. Labels are
(N,) or (N, 1); multi-label files (N, K), such as ChestMNIST, need ``label_column``
to pick one binary task. The file is opened with ``allow_pickle=False``: object
arrays are refused. Each split's arrays are loaded on first use and kept (a split of
MedMNIST-224 is a few hundred MB; memory-mapping an uncompressed copy is the route
for larger data, since members of an ``.npz`` cannot be memory-mapped).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.data.base import SPLIT_NAMES, Record, Source, file_suffix, register_source
from medrobust.errors import DataError
from medrobust.validation import check_int


@register_source("npz", "medmnist")
class NpzSource(Source):
    """A MedMNIST-layout ``.npz`` (see the module docstring).

    Args:
        root: The ``.npz`` file, or a folder holding exactly one.
        label_column: For multi-label files, the column used as a binary label.
        **kwargs: See :class:`Source`.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, label_column: int | None = None, **kwargs: Any
    ) -> None:
        root = Path(root)
        if root.is_dir():
            found = sorted(p for p in root.iterdir() if p.is_file() and file_suffix(p) == ".npz")
            if len(found) != 1:
                raise DataError(root, f"expected exactly one .npz file in the folder, found {len(found)}")
            root = found[0]
        if label_column is not None:
            label_column = check_int(label_column, "label_column", "NpzSource", low=0)
        self.label_column = label_column
        self._cache: dict[str, np.ndarray] = {}
        super().__init__(root, **kwargs)

    # -- lazy member access ---------------------------------------------------------------------
    def _member(self, key: str) -> np.ndarray:
        if key not in self._cache:
            try:
                with np.load(self.root, allow_pickle=False) as npz:
                    if key not in npz.files:
                        raise DataError(self.root, f"has no {key!r} array; arrays are {sorted(npz.files)}")
                    arr = npz[key]
            except DataError:
                raise
            except ValueError as exc:
                if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                    raise DataError(
                        self.root, f"array {key!r} holds Python objects; refused (allow_pickle=False)"
                    ) from None
                raise DataError(self.root, f"unreadable .npz ({exc})") from None
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DataError(self.root, f"unreadable .npz ({type(exc).__name__}: {exc})") from None
            if arr.dtype == object or arr.dtype.kind not in "biuf":
                raise DataError(self.root, f"array {key!r} has dtype {arr.dtype}; expected numbers")
            self._cache[key] = arr
        return self._cache[key]

    def _header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of a member, read from its ``.npy`` header without loading the data."""
        try:
            with zipfile.ZipFile(self.root) as zf, zf.open(f"{key}.npy") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(self.root, f"unreadable array {key!r} ({type(exc).__name__}: {exc})") from None
        if dtype.hasobject or dtype.kind not in "biuf":
            raise DataError(
                self.root, f"array {key!r} has dtype {dtype} (Python objects are refused: allow_pickle=False)"
            )
        return tuple(int(s) for s in shape), dtype

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
        if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
            raise DataError(self.root, f"{split}_labels holds non-integer values")
        y = y.astype(np.int64)
        if y.size and y.min() < 0:
            raise DataError(self.root, f"{split}_labels holds negative values")
        return y

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
