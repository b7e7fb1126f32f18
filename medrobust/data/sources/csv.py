"""CSV manifests: ``path,label[,split][,patient]``, paths relative to the CSV.

Column names are configurable. Labels may be class names (sorted to form
``class_names`` unless given) or integers (``class_names`` default to "0".."K-1").
With a patient column, a generated split keeps each patient in one split, and a
given split is checked for patients shared across splits. Patient values are used
for grouping only and never printed. Listing checks that each file exists (one
``stat`` per row) but opens none of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medrobust.data.base import Record, canonical_split, file_suffix, register_source
from medrobust.data.sources._files import FileSource
from medrobust.errors import ConfigError, DataError


@register_source("csv", "manifest")
class CsvSource(FileSource):
    """Images listed in a CSV manifest.

    Args:
        root: The CSV file, or a folder holding exactly one ``.csv``.
        path_column: Column with image paths (relative to the CSV's folder or ``base_dir``).
        label_column: Column with labels (class names or ints).
        split_column: Optional split column (train/val/test and aliases); used when present.
        patient_column: Optional patient/group column; used when present.
        base_dir: Folder the paths are relative to (default: the CSV's folder).
        **kwargs: See :class:`FileSource` and :class:`Source`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        path_column: str = "path",
        label_column: str = "label",
        split_column: str = "split",
        patient_column: str = "patient",
        base_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.path_column = path_column
        self.label_column = label_column
        self.split_column = split_column
        self.patient_column = patient_column
        root = Path(root)
        self.csv_path = self._resolve_csv(root)
        if self.csv_path is not None:
            root = self.csv_path
        self.base_dir = Path(base_dir) if base_dir is not None else root.parent
        super().__init__(root, **kwargs)

    def _resolve_csv(self, root: Path) -> Path | None:
        """The manifest: ``root`` itself or the single ``.csv`` in the folder ``root``."""
        if root.is_dir():
            csvs = sorted(p for p in root.iterdir() if p.is_file() and file_suffix(p) == ".csv")
            if len(csvs) != 1:
                raise DataError(root, f"expected exactly one .csv manifest in the folder, found {len(csvs)}")
            return csvs[0]
        return root

    def _index(self) -> tuple[list[Record], list[str]]:
        import pandas as pd

        assert self.csv_path is not None
        try:
            df = pd.read_csv(self.csv_path, dtype=str, keep_default_na=False, sep=None, engine="python")
        except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(self.csv_path, f"unreadable CSV ({type(exc).__name__}: {exc})") from None
        df.columns = [str(c).strip() for c in df.columns]
        for col, what in ((self.path_column, "path_column"), (self.label_column, "label_column")):
            if col not in df.columns:
                raise DataError(
                    self.csv_path, f"has no {col!r} column ({what}); columns are {list(df.columns)}"
                )
        if df.empty:
            raise DataError(self.csv_path, "lists no images")
        raw_labels = [str(v).strip() for v in df[self.label_column]]
        if any(v == "" for v in raw_labels):
            row = raw_labels.index("") + 2
            raise DataError(self.csv_path, f"row {row} has an empty label")
        class_names = self._class_names(raw_labels)
        index = {n: i for i, n in enumerate(class_names)}
        has_split = self.split_column in df.columns
        has_patient = self.patient_column in df.columns
        records: list[Record] = []
        for row_i, row in enumerate(df.to_dict("records")):
            line = row_i + 2  # header is line 1
            rel = str(row[self.path_column]).strip()
            path = Path(rel) if os.path.isabs(rel) else self.base_dir / rel
            if not path.is_file():
                self._skip_or_raise(path, f"listed in {self.csv_path.name} line {line} but does not exist")
                continue
            label = self._label_index(raw_labels[row_i], index, len(class_names))
            if label is None:
                raise DataError(
                    self.csv_path, f"line {line}: label {raw_labels[row_i]!r} is not in {class_names}"
                )
            split = None
            if has_split and str(row[self.split_column]).strip():
                split = canonical_split(row[self.split_column], f"{self.csv_path} line {line}")
            group = str(row[self.patient_column]).strip() or None if has_patient else None
            records.append(Record(id=rel, label=label, split=split, path=path, group=group))
        if "all" in (self.frame_choice, self.slice_choice):  # only then does a file become many records
            records = self.expand(records)
        return records, class_names

    @staticmethod
    def _label_index(text: str, index: dict[str, int], n_classes: int) -> int | None:
        """Class index of a label given as a class name or an integer."""
        if text in index:
            return index[text]
        try:
            value = float(text)
        except ValueError:
            return None
        if value.is_integer() and 0 <= int(value) < n_classes:
            return int(value)
        return None

    def _class_names(self, raw: list[str]) -> list[str]:
        if self._given_class_names is not None:
            return self._given_class_names
        ints = []
        for v in raw:
            try:
                f = float(v)
            except ValueError:
                return sorted(set(raw))
            if not f.is_integer() or f < 0:
                raise ConfigError(f"{self.csv_path}: integer labels must be >= 0; got {v!r}")
            ints.append(int(f))
        return [str(i) for i in range(max(ints) + 1)]
