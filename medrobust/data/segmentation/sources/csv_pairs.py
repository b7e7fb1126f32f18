"""A CSV manifest of image + mask pairs: columns ``image,label[,split]``, paths relative to the CSV."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from medrobust.data.base import canonical_split
from medrobust.data.segmentation.base import PairRecord, SegmentationSource, register_segmentation_source
from medrobust.errors import ConfigError, DataError

#: Largest manifest read (bytes).
MAX_MANIFEST_BYTES = 50_000_000


@register_segmentation_source("csv", "manifest")
class CsvPairSource(SegmentationSource):
    """A manifest listing an image and its mask per row (comma, tab or semicolon separated).

    Args:
        root: The CSV file, or a folder holding exactly one CSV.
        image_column: Column of the image paths.
        label_column: Column of the mask paths.
        split_column: Optional column of the splits (train/val/test and aliases).
        allow_outside: Accept paths outside the CSV's folder.
        **kwargs: See :class:`~medrobust.data.segmentation.base.SegmentationSource`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        image_column: str = "image",
        label_column: str = "label",
        split_column: str = "split",
        allow_outside: bool = False,
        **kwargs: Any,
    ) -> None:
        path = Path(root)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.csv") if p.is_file())
            if len(found) != 1:
                raise DataError(path, f"holds {len(found)} CSV files; pass the manifest itself")
            path = found[0]
        self.csv_path = path
        self.columns = (str(image_column), str(label_column), str(split_column))
        self.allow_outside = bool(allow_outside)
        super().__init__(path, **kwargs)

    def _rows(self) -> tuple[list[dict[str, str]], list[str]]:
        path = self.csv_path
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise DataError(path, f"is larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(path, f"is not UTF-8 text (byte {exc.start})") from None
        header = text.splitlines()[0] if text.strip() else ""
        delimiter = max(",\t;", key=header.count)
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        return list(reader), list(reader.fieldnames or [])

    def _index(self) -> list[PairRecord]:
        image_col, label_col, split_col = self.columns
        rows, fields = self._rows()
        for col in (image_col, label_col):
            if col not in fields:
                raise ConfigError(
                    f"{self.csv_path}: the manifest has no column {col!r} (columns: {fields}); name the "
                    "columns with image_column= and label_column="
                )
        base = self.csv_path.parent.resolve()
        out: list[PairRecord] = []
        seen: dict[Path, int] = {}
        for line, row in enumerate(rows, start=2):
            where = f"{self.csv_path}:{line}"
            image, label = (self._cell(row, col, base, where) for col in (image_col, label_col))
            self._check_pair(row, image, label, where)
            if image in seen:
                raise DataError(
                    where, f"image {row[image_col]!r} is listed twice (lines {seen[image]} and {line})"
                )
            seen[image] = line
            self._pair_listed(image, label)
            split = (row.get(split_col) or "").strip() if split_col in fields else ""
            out.append(
                PairRecord(
                    id=self.relpath(image),
                    image=image,
                    label=label,
                    split=canonical_split(split, where) if split else None,
                )
            )
        if out and any(r.split is None for r in out) and any(r.split is not None for r in out):
            raise DataError(
                self.csv_path, "some rows have a split and others do not; give every row a split or none"
            )
        return out

    def _resolve(self, row: dict[str, str], col: str, base: Path, where: str) -> Path:
        """The path in column ``col`` of ``row``, resolved against the manifest's folder."""
        value = (row.get(col) or "").strip()
        if not value:
            raise DataError(where, f"empty {col!r} cell; every row needs an image and its mask")
        path = (base / value).resolve()
        if not self.allow_outside and base not in path.parents:
            raise DataError(where, f"{col} path {value!r} lies outside the manifest's folder {base}")
        return path

    def _cell(self, row: dict[str, str], col: str, base: Path, where: str) -> Path:
        """The checked path in column ``col`` of ``row``: an existing file."""
        path = self._resolve(row, col, base, where)
        value = row[col].strip()
        if path.is_dir() and col == self.columns[0]:
            raise DataError(
                where,
                f"{col} {value!r} is a folder; a manifest of DICOM series opens with kind='dicom-series'",
            )
        if not path.is_file():
            what = "mask" if col == self.columns[1] else "image"
            raise DataError(where, f"{what} file {value!r} does not exist")
        return path

    def _check_pair(self, row: dict[str, str], image: Path, label: Path, where: str) -> None:
        """Check one row's pair beyond existence (plain image files: nothing more to check)."""

    def _pair_listed(self, image: Path, label: Path) -> None:
        """Note an accepted pair (plain image files: nothing to note)."""
