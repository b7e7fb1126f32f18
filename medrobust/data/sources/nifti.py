"""NIfTI volumes (nibabel): 2D slices or 3D volumes, labelled from a CSV.

``open_source("vol.nii.gz")`` or a folder of NIfTI files gives unlabelled samples
(class ``"unlabelled"``); ``labels="labels.csv"`` (``path,label[,split][,patient]``,
paths relative to the CSV) gives labelled ones. ``slice="middle"`` (default) reads
the middle slice along ``axis``; ``slice="all"`` makes each slice a sample;
``slice="volume"`` reads the whole volume as (1, D0, D1, D2).

Volumes are reoriented to RAS whatever the file stores (``meta["orientation"]`` keeps the
file's own axis codes), so ``axis=2`` is always axial and the same volume saved LPS or RAS
gives the same slices; see :mod:`medrobust.data.readers.nifti`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medrobust.data.base import Record, register_source
from medrobust.data.sources._files import list_files
from medrobust.data.sources.csv import CsvSource
from medrobust.data.suffixes import NIFTI_SUFFIXES, file_suffix
from medrobust.errors import DataError


@register_source("nifti", "nii")
class NiftiSource(CsvSource):
    """NIfTI files (see the module docstring).

    Args:
        root: A ``.nii``/``.nii.gz`` file or a folder of them (or the labels CSV itself).
        labels: Optional CSV manifest with labels (column options as for the CSV source).
        **kwargs: See :class:`CsvSource`, :class:`FileSource` (``axis``, ``slice``, ``volume``).
    """

    def __init__(
        self, root: str | os.PathLike[str], *, labels: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> None:
        self.labels_csv = Path(labels) if labels is not None else None
        if self.labels_csv is not None and not self.labels_csv.is_file():
            raise DataError(self.labels_csv, "labels CSV does not exist")
        self.nifti_root = Path(root)
        super().__init__(root, **kwargs)

    @property
    def labelled(self) -> bool:
        """Labelled only through a labels CSV; NIfTI files alone have the class ``"unlabelled"``."""
        return self.csv_path is not None

    def _resolve_csv(self, root: Path) -> Path | None:
        if self.labels_csv is not None:
            return self.labels_csv
        if root.is_file() and file_suffix(root) == ".csv":
            return root
        if root.is_dir():
            # A folder with images/ and one labels CSV (e.g. a written phantom) is labelled.
            csvs = sorted(p for p in root.iterdir() if p.is_file() and file_suffix(p) == ".csv")
            if len(csvs) == 1:
                return csvs[0]
        return None

    def _index(self) -> tuple[list[Record], list[str]]:
        if self.csv_path is not None:
            return super()._index()
        root = self.nifti_root
        files = [root] if root.is_file() else list_files(root, NIFTI_SUFFIXES)
        if not files:
            raise DataError(root, "no NIfTI files (.nii, .nii.gz) found")
        records = [Record(id=self.relpath(p), label=0, split=None, path=p) for p in files]
        return self.expand(records), ["unlabelled"]
