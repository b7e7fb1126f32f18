"""CSV manifests: ``path,label[,split][,patient]``, paths relative to the CSV.

Column names are configurable. Labels may be class names (sorted to form
``class_names`` unless given) or integers (``class_names`` default to "0".."K-1").
With a patient column, a generated split keeps each patient in one split, and a
given split is checked for patients shared across splits. Patient values are used
for grouping only and never printed. Listing checks that each file exists (one
``stat`` per row) but opens none of them.

Reading is strict, because a manifest decides what is trained and tested on:

* the file is read as UTF-8 with an optional byte-order mark (CSVs saved by Excel);
* the delimiter is one of comma, tab or semicolon: the one whose header holds the
  path and label columns (else the one splitting the header into most columns; a
  one-column file is never split on a letter);
* integer labels must lie in ``[0, MAX_CLASSES)`` (``1e9`` is refused before anything
  sized by it is built);
* a file listed twice (even with the same label) is refused with both line numbers:
  duplicates can land in two splits (a train/test leak) or carry two labels;
* paths that leave the manifest's folder (``../../etc/passwd``, absolute paths
  elsewhere) are refused unless the source is opened with ``allow_outside=True``.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from medrobust.data.base import Record, canonical_split, check_label, register_source
from medrobust.data.sources._files import FileSource
from medrobust.data.suffixes import file_suffix
from medrobust.errors import ConfigError, DataError
from medrobust.limits import MAX_CLASSES

#: Delimiters a manifest may use (sniffed among exactly these).
DELIMITERS: tuple[str, ...] = (",", "\t", ";")
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon"}


def choose_delimiter(header: str, wanted: tuple[str, ...]) -> str:
    """The delimiter of a manifest, from its header line.

    The first of :data:`DELIMITERS` whose split of ``header`` holds every name in
    ``wanted``; otherwise the one giving the most columns (at least two); otherwise a
    comma (a one-column file).
    """
    best, best_n = ",", 1
    for delim in DELIMITERS:
        fields = [f.strip() for f in next(csv.reader([header], delimiter=delim), [])]
        if all(w in fields for w in wanted):
            return delim
        if len(fields) > best_n:
            best, best_n = delim, len(fields)
    return best


def read_manifest(path: Path, wanted: tuple[str, ...] = ()) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read a CSV manifest into its header and ``(line number, fields)`` rows.

    Blank rows are skipped; short rows are padded with empty fields; extra non-empty
    fields are an error.

    Args:
        path: The CSV file.
        wanted: Column names the header should hold (they decide the delimiter).

    Raises:
        DataError: naming the file for an empty, binary, non-UTF-8 or malformed manifest.
    """
    try:
        size = path.stat().st_size
        if size == 0:
            raise DataError(path, "is empty (0 bytes); expected a header line such as 'path,label' and rows")
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise DataError(
            path, f"is not UTF-8 text (undecodable byte at offset {exc.start}); save it as UTF-8 CSV"
        ) from None
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if "\x00" in text:
        raise DataError(path, "contains NUL bytes: a binary file, not a CSV manifest")
    header_line = next((line for line in text.splitlines() if line.strip()), None)
    if header_line is None:
        raise DataError(path, "holds only blank lines; expected a header line such as 'path,label' and rows")
    delimiter = choose_delimiter(header_line, wanted)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                continue
            if len(fields) > len(header):
                if any(f.strip() for f in fields[len(header) :]):
                    raise DataError(
                        path,
                        f"line {reader.line_num} has {len(fields)} fields but the header has {len(header)} "
                        f"({_DELIMITER_NAMES[delimiter]}-separated)",
                    )
                fields = fields[: len(header)]
            rows.append((reader.line_num, fields + [""] * (len(header) - len(fields))))
    except csv.Error as exc:
        raise DataError(path, f"line {reader.line_num}: malformed CSV ({exc})") from None
    assert header is not None
    return header, rows


def _not_a_file(path: Path) -> str:
    """Why ``path`` is not a regular file: missing, a broken or looping link, a folder or a device."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return "is a broken symbolic link" if os.path.islink(path) else "does not exist"
    except OSError as exc:
        return f"cannot be opened ({exc.strerror or type(exc).__name__})"
    return "is a folder" if path.is_dir() else "is not a regular file (a device, pipe or socket)"


@register_source("csv", "manifest")
class CsvSource(FileSource):
    """Images listed in a CSV manifest (see the module docstring for what is refused).

    Args:
        root: The CSV file, or a folder holding exactly one ``.csv``.
        path_column: Column with image paths (relative to the CSV's folder or ``base_dir``).
        label_column: Column with labels (class names or ints).
        split_column: Optional split column (train/val/test and aliases); used when present.
        patient_column: Optional patient/group column; used when present.
        base_dir: Folder the paths are relative to (default: the CSV's folder).
        allow_outside: Accept paths that point outside ``base_dir`` (``../other/x.png`` or
            absolute paths elsewhere). Default ``False``: such a row is refused, so a
            manifest from elsewhere cannot make medrobust read arbitrary files.
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
        allow_outside: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(allow_outside, bool):
            raise ConfigError(
                f"The 'allow_outside' parameter of {type(self).__name__} must be True or False. "
                f"Got {allow_outside!r}."
            )
        self.path_column = path_column
        self.label_column = label_column
        self.split_column = split_column
        self.patient_column = patient_column
        self.allow_outside = allow_outside
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

    def _resolve_path(self, rel: str, line: int) -> Path:
        """The file a row names; refuses paths outside ``base_dir`` unless ``allow_outside``."""
        assert self.csv_path is not None
        if not rel:
            raise DataError(self.csv_path, f"line {line} has an empty {self.path_column!r}")
        path = Path(rel) if os.path.isabs(rel) else self.base_dir / rel
        if not self.allow_outside:
            base = os.path.abspath(self.base_dir)
            full = os.path.abspath(path)
            if full != base and not full.startswith(base.rstrip(os.sep) + os.sep):
                raise DataError(
                    self.csv_path,
                    f"line {line}: path {rel!r} points outside the manifest's folder {base}; refused "
                    "(open the source with allow_outside=True to read files outside it)",
                )
        return path

    def _index(self) -> tuple[list[Record], list[str]]:
        assert self.csv_path is not None
        header, rows = read_manifest(self.csv_path, (self.path_column, self.label_column))
        for col, what in ((self.path_column, "path_column"), (self.label_column, "label_column")):
            if col not in header:
                raise DataError(self.csv_path, f"has no {col!r} column ({what}); columns are {header}")
            if header.count(col) > 1:
                raise DataError(self.csv_path, f"has the column {col!r} ({what}) more than once")
        if not rows:
            raise DataError(self.csv_path, "lists no images (only a header line)")
        col = {name: i for i, name in reversed(list(enumerate(header)))}
        raw_labels = [fields[col[self.label_column]].strip() for _, fields in rows]
        for (line, _), value in zip(rows, raw_labels, strict=True):
            if value == "":
                raise DataError(self.csv_path, f"line {line} has an empty label")
        class_names = self._class_names(raw_labels, [line for line, _ in rows])
        index = {n: i for i, n in enumerate(class_names)}
        split_i = col.get(self.split_column)
        patient_i = col.get(self.patient_column)
        seen: dict[str, tuple[int, str]] = {}
        records: list[Record] = []
        for (line, fields), label_text in zip(rows, raw_labels, strict=True):
            rel = fields[col[self.path_column]].strip()
            path = self._resolve_path(rel, line)
            key = os.path.normcase(os.path.abspath(path))
            if key in seen:
                first_line, first_label = seen[key]
                if first_label != label_text:
                    raise DataError(
                        self.csv_path,
                        f"lists {rel!r} with two labels: {first_label!r} on line {first_line} and "
                        f"{label_text!r} on line {line}; each file must have exactly one label",
                    )
                raise DataError(
                    self.csv_path,
                    f"lists {rel!r} twice (lines {first_line} and {line}); remove the duplicate row "
                    "(a file listed twice can land in two splits)",
                )
            seen[key] = (line, label_text)
            if not path.is_file():
                self._skip_or_raise(
                    path, f"listed in {self.csv_path.name} line {line} but {_not_a_file(path)}"
                )
                continue
            label = self._label_index(label_text, index, len(class_names))
            if label is None:
                raise DataError(self.csv_path, f"line {line}: label {label_text!r} is not in {class_names}")
            split = None
            if split_i is not None and fields[split_i].strip():
                split = canonical_split(fields[split_i], f"{self.csv_path} line {line}")
            group = (fields[patient_i].strip() or None) if patient_i is not None else None
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

    def _class_names(self, raw: list[str], lines: list[int]) -> list[str]:
        """Class names: the given ones, "0".."K-1" for integer labels, else the sorted names.

        Raises:
            DataError: naming the CSV, the line and the value of a negative, non-integer or
                too large integer label, or when there are more than ``MAX_CLASSES`` names.
        """
        assert self.csv_path is not None
        if self._given_class_names is not None:
            return self._given_class_names
        numeric = True
        for v in raw:
            try:
                float(v)
            except ValueError:
                numeric = False
                break
        if not numeric:
            names = sorted(set(raw))
            if len(names) > MAX_CLASSES:
                raise DataError(
                    self.csv_path, f"has {len(names)} distinct labels, more than MAX_CLASSES={MAX_CLASSES}"
                )
            return names
        top = 0
        for v, line in zip(raw, lines, strict=True):
            top = max(top, check_label(v, f"{self.csv_path} line {line}"))
        return [str(i) for i in range(top + 1)]
