"""Shared machinery of the file-based sources (folder, CSV, DICOM, NIfTI)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.data.base import Record, Source
from medrobust.data.suffixes import DICOM_SUFFIXES, NIFTI_SUFFIXES, file_suffix
from medrobust.errors import ConfigError, DataError
from medrobust.validation import check_choice, check_int


def _item_choice(value: Any, name: str, owner: str) -> str | int:
    if isinstance(value, str) and value in ("middle", "volume", "all"):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(
        f"The {name!r} parameter of {owner} must be 'middle', 'all', 'volume' or an index >= 0. "
        f"Got {value!r}."
    )


class FileSource(Source):
    """A source whose samples are image files read through :class:`ImageFileLoader`.

    Args:
        root: File or folder.
        window: DICOM VOI handling: ``"none"`` (native units, default) or ``"auto"``.
        frame: DICOM multi-frame files: ``"middle"`` (default), ``"all"`` (each frame a
            sample), ``"volume"`` (all frames as depth) or a frame index.
        axis: NIfTI slicing axis of the RAS-reoriented volume (0 sagittal, 1 coronal, 2 axial;
            default 2).
        slice: NIfTI: ``"middle"`` (default), ``"all"`` (each slice a sample),
            ``"volume"`` (3D) or a slice index.
        volume: NIfTI 4D files: which volume to read (default 0).
        **kwargs: See :class:`Source`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        window: str = "none",
        frame: str | int = "middle",
        axis: int = 2,
        slice: str | int = "middle",
        volume: int = 0,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        self.frame_choice = _item_choice(frame, "frame", owner)
        self.slice_choice = _item_choice(slice, "slice", owner)
        # Validated now; the loader (which imports MONAI and torch) is built on first use, so
        # listing a source, and refusing a bad manifest, stays light.
        self._loader_options: dict[str, Any] = {
            "window": check_choice(window, "window", ("none", "auto"), owner),
            "frame": "middle" if self.frame_choice == "all" else self.frame_choice,
            "axis": check_int(axis, "axis", owner, low=0, high=2),
            "slice": "middle" if self.slice_choice == "all" else self.slice_choice,
            "volume": check_int(volume, "volume", owner, low=0),
        }
        self._loader: Any = None
        super().__init__(root, **kwargs)

    @property
    def loader(self) -> Any:
        """The :class:`~medrobust.data.readers.ImageFileLoader` reading this source's files."""
        if self._loader is None:
            from medrobust.data.readers import ImageFileLoader

            self._loader = ImageFileLoader(**self._loader_options)
        return self._loader

    def expand(self, records: list[Record]) -> list[Record]:
        """Turn each file into one record per frame/slice when ``frame``/``slice`` is ``"all"``."""
        out: list[Record] = []
        for r in records:
            suffix = file_suffix(r.path) if r.path is not None else ""
            many = (suffix in DICOM_SUFFIXES and self.frame_choice == "all") or (
                suffix in NIFTI_SUFFIXES and self.slice_choice == "all"
            )
            if not many or r.files:
                out.append(r)
                continue
            try:
                n = self.loader.count_items(r.path)  # type: ignore[arg-type]
            except DataError as exc:
                self._skip_or_raise(exc.path, exc.reason)
                continue
            out.extend(replace(r, id=f"{r.id}#{k}", index=k) for k in range(n))
        return out

    def _read(self, record: Record) -> tuple[np.ndarray, dict[str, Any]]:
        target: Any = list(record.files) if record.files else record.path
        return self.loader.load(target, index=record.index)


def list_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under ``folder`` (recursively) with one of ``suffixes``, hidden ones excluded, sorted."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel) or not p.is_file():
            continue
        if file_suffix(p) in suffixes:
            out.append(p)
    return out
