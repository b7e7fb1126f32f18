"""DICOM: a single file, or a folder of files/series (read recursively).

Each file is one sample by default (multi-frame: the middle frame; ``frame="all"``
makes each frame a sample; ``frame="volume"`` keeps all frames as depth). With
``series="volume"`` the files of each series are stacked into one 3D sample, slices
sorted along their normal. DICOM has no class labels of its own: every sample gets
label 0 of the single class ``"unlabelled"`` (use a CSV manifest or class folders
for labelled DICOM data). Series identifiers are used for grouping only and never
copied into ids, ``meta`` or any output.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from medrobust.data.base import Record, register_source
from medrobust.data.sources._files import FileSource
from medrobust.data.suffixes import is_dicom_file
from medrobust.errors import DataError
from medrobust.validation import check_choice


@register_source("dicom", "dcm")
class DicomSource(FileSource):
    """DICOM files (see the module docstring).

    Args:
        root: A DICOM file or a folder.
        series: ``"files"`` (each file/frame a sample, default) or ``"volume"`` (each series one 3D sample).
        **kwargs: See :class:`FileSource` (``window``, ``frame``) and :class:`Source`.
    """

    def __init__(self, root: str | os.PathLike[str], *, series: str = "files", **kwargs: Any) -> None:
        self.series = check_choice(series, "series", ("files", "volume"), "DicomSource")
        super().__init__(root, **kwargs)

    @property
    def labelled(self) -> bool:
        """DICOM files carry no class labels: one class, ``"unlabelled"``."""
        return False

    def _files(self) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        files = [
            p
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
            and is_dicom_file(p)
        ]
        if not files:
            raise DataError(self.root, "no DICOM files found (.dcm/.dicom or files with a DICM preamble)")
        return files

    def _index(self) -> tuple[list[Record], list[str]]:
        files = self._files()
        if self.series == "files":
            records = [Record(id=self.relpath(p), label=0, split=None, path=p) for p in files]
            return self.expand(records), ["unlabelled"]
        import pydicom

        groups: dict[str, list[Path]] = defaultdict(list)
        for p in files:
            try:
                ds = pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
                key = str(ds.get("SeriesInstanceUID", "")) or str(p.parent)
            except Exception as exc:  # header parse errors of any type: report the file
                self._skip_or_raise(p, f"unreadable DICOM header ({type(exc).__name__})")
                continue
            groups[key].append(p)
        records = []
        for i, key in enumerate(sorted(groups, key=lambda k: str(groups[k][0]))):
            members = tuple(groups[key])
            first = members[0]
            rid = f"{self.relpath(first.parent) or '.'}#series{i}"
            records.append(Record(id=rid, label=0, split=None, path=first, files=members))
        return records, ["unlabelled"]
