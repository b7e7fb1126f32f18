"""The source contract: a :class:`Source` lists :class:`Record` s and loads each as a MONAI-style dict.

A source knows where its files are, which class each belongs to and which split
(the dataset's own split where it has one, otherwise a seeded stratified split).
``Source.load(record)`` returns ``{"image", "label", "meta"}`` with the image as a
float32 ``np.ndarray`` of shape (C, H, W) or (C, D, H, W) in the file's native
intensity units (HU for CT, raw values for MR, 0..255 for 8-bit PNG/JPEG) and a
``meta`` dict holding whitelisted, non-identifying keys only (:data:`SAFE_META_KEYS`).

>>> from medrobust.data import open_source
>>> src = open_source("chest_xray_phantom/")          # doctest: +SKIP
>>> sample = src.load(src.records("test")[0])        # doctest: +SKIP
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medrobust.errors import ConfigError, DataError
from medrobust.limits import MAX_CLASSES
from medrobust.registry import Registry
from medrobust.validation import check_choice, check_float, check_int

SOURCES: Registry[type[Source]] = Registry("source")

#: Canonical split names. Folder/CSV split names are mapped onto these.
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")

SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "tst": "test",
}

#: The only keys a sample's ``meta`` may hold. No DICOM identifying value ever enters it.
#: ``orientation``: a NIfTI file's own axis codes (images are returned in RAS order);
#: ``exif_orientation``: the EXIF Orientation tag (1..8) a photograph was turned upright by.
SAFE_META_KEYS: frozenset[str] = frozenset(
    {
        "id",
        "path",
        "split",
        "index",
        "source",
        "format",
        "dtype",
        "shape",
        "modality",
        "photometric_interpretation",
        "rows",
        "columns",
        "samples_per_pixel",
        "bits_stored",
        "pixel_spacing",
        "slice_thickness",
        "rescale_applied",
        "rescale_slope",
        "rescale_intercept",
        "window_applied",
        "inverted",
        "n_frames",
        "frame_index",
        "n_slices",
        "transfer_syntax",
        "axis",
        "slice_index",
        "volume_index",
        "voxel_size",
        "mode",
        "orientation",
        "exif_orientation",
    }
)

ON_ERROR_CHOICES: tuple[str, ...] = ("raise", "skip")


#: ``@register_source("name", *aliases)``: registers the class and sets its ``kind``.
register_source = SOURCES.decorator("kind")


def canonical_split(name: Any, where: object = "split") -> str:
    """Map a split name ("Training", "valid", "TEST", ...) onto ``train``/``val``/``test``.

    Raises:
        DataError: naming ``where`` for an unknown split name.
    """
    key = str(name).strip().lower()
    if key not in SPLIT_ALIASES:
        raise DataError(where, f"unknown split name {name!r}; expected one of {sorted(set(SPLIT_ALIASES))}")
    return SPLIT_ALIASES[key]


class SplitRecords:
    """Records with a ``split`` each, selected by split name: shared by every kind of source.

    The host sets ``_records`` (objects with a ``split`` attribute) and ``root`` (what errors name).
    """

    _records: list[Any]
    root: Any

    def records(self, split: str | None = None) -> list[Any]:
        """Records of ``split`` (``"train"``, ``"val"``, ``"test"``; aliases accepted) or all of them."""
        if split is None:
            return list(self._records)
        name = canonical_split(split, self.root)
        return [r for r in self._records if r.split == name]

    def splits(self) -> list[str]:
        """Split names present, in train/val/test order."""
        present = {r.split for r in self._records}
        return [s for s in SPLIT_NAMES if s in present]

    def __len__(self) -> int:
        return len(self._records)


def check_label(value: Any, where: object, what: str = "label") -> int:
    """Validate one integer class label: a whole number in ``[0, MAX_CLASSES)``.

    Accepts ints, integral floats and their text (``"3"``, ``"3.0"``); ``"1e9"`` is read as
    a number and refused for its size, before anything sized by it is built.

    Args:
        value: The label as read from the file.
        where: What the error names (the file, with a line or array when known).
        what: How the value is called in the message.

    Raises:
        DataError: naming ``where`` and the value for a negative, non-integer, non-finite
            or too large label.
    """
    text = str(value).strip() if isinstance(value, str) else value
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise DataError(where, f"{what} {value!r} is not an integer class index") from None
    if not np.isfinite(number) or not float(number).is_integer():
        raise DataError(where, f"{what} {value!r} is not an integer class index (0, 1, 2, ...)")
    if number < 0:
        raise DataError(where, f"{what} {value!r} is negative; class indices start at 0")
    if number >= MAX_CLASSES:
        raise DataError(
            where, f"{what} {value!r} is too large: class indices must be below MAX_CLASSES={MAX_CLASSES}"
        )
    return int(number)


def check_class_count(names: Sequence[str], where: object, minimum: int = 2) -> None:
    """Refuse fewer than ``minimum`` or more than ``MAX_CLASSES`` classes, naming ``where``.

    Raises:
        DataError: "found 1 class (NAME), need >= 2" and the like.
    """
    n = len(names)
    if n > MAX_CLASSES:
        raise DataError(where, f"found {n} classes, more than MAX_CLASSES={MAX_CLASSES}")
    if n < minimum:
        shown = ", ".join(str(c) for c in names) or "none"
        noun = "class" if n == 1 else "classes"
        raise DataError(
            where,
            f"found {n} {noun} ({shown}), need \u2265 {minimum}: a classifier needs at least two labels",
        )


@dataclass(frozen=True)
class Record:
    """One sample of a source.

    Attributes:
        id: Stable identifier inside the source (relative path, ``split/row``, ``path#frame``).
        label: Class index into ``Source.class_names``.
        split: ``"train"``, ``"val"``, ``"test"`` (``None`` only before splits are assigned).
        path: The file holding the sample (the ``.npz`` for MedMNIST).
        index: Row (npz), frame (DICOM) or slice (NIfTI) inside the file; ``None`` for the default.
        files: For a DICOM series read as one volume, the slice files in order.
        group: Grouping key for patient-level splits (never copied into ``meta`` or outputs).
    """

    id: str
    label: int
    split: str | None
    path: Path | None
    index: int | None = None
    files: tuple[Path, ...] = field(default=())
    group: str | None = field(default=None, repr=False)


def _check_fractions(fractions: Any) -> tuple[float, float, float]:
    try:
        values = tuple(
            check_float(f, "split_fractions", "open_source", low=0, high=1, low_inclusive=True)
            for f in fractions
        )
    except TypeError:
        raise ConfigError(
            f"The 'split_fractions' parameter of open_source must be three floats (train, val, test). "
            f"Got {fractions!r}."
        ) from None
    if len(values) != 3 or not abs(sum(values) - 1.0) < 1e-6 or values[0] <= 0:
        raise ConfigError(
            "The 'split_fractions' parameter of open_source must be three floats (train, val, test) "
            f"summing to 1 with train > 0. Got {fractions!r}."
        )
    return values  # type: ignore[return-value]


class Source(SplitRecords, ABC):
    """Base class of every data source.

    Subclasses implement :meth:`_index` (list the records, labels and own splits) and
    :meth:`_read` (one record -> image array + safe meta). The base class assigns
    missing splits, validates pixels (finite values, channel count) and filters ``meta``.

    Args:
        root: The file or folder the source was opened from.
        split_seed: Seed of the stratified split used when the data has no split of its own.
        split_fractions: (train, val, test) fractions of that split.
        channels: Declared channel count; a file with another count raises :class:`DataError`.
        class_names: Class names in label order (overrides what the source infers).
        on_error: ``"raise"`` or ``"skip"`` for problems found while indexing (e.g. a CSV
            naming a missing file); skipped entries are listed in :attr:`skipped`.
    """

    kind: ClassVar[str] = "source"
    #: The data spec the source was opened from (``phantom:...``, ``medmnist:...``), else ``None``.
    spec: str | None = None

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split_seed: int = 0,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
        channels: int | None = None,
        class_names: Sequence[str] | None = None,
        on_error: str = "raise",
    ) -> None:
        owner = type(self).__name__
        self.root = Path(root)
        self.split_seed = check_int(split_seed, "split_seed", owner, low=0)
        self.split_fractions = _check_fractions(split_fractions)
        self.channels = None if channels is None else check_int(channels, "channels", owner, low=1, high=4)
        self.on_error = check_choice(on_error, "on_error", ON_ERROR_CHOICES, owner)
        self.skipped: list[tuple[str, str]] = []
        self._given_class_names = None if class_names is None else [str(c) for c in class_names]
        self.class_names: list[str] = []
        self.split_info: dict[str, Any] = {}
        self._records: list[Record] = []
        self._build()

    # -- subclass hooks -------------------------------------------------------------------------
    @property
    def labelled(self) -> bool:
        """True when the data carries class labels (then at least two classes are required).

        Unlabelled kinds (DICOM, NIfTI without a labels CSV) have the single class
        ``"unlabelled"`` and return ``False``.
        """
        return True

    @abstractmethod
    def _index(self) -> tuple[list[Record], list[str]]:
        """Return the records (``split`` may be ``None``) and the class names in label order."""

    @abstractmethod
    def _read(self, record: Record) -> tuple[np.ndarray, dict[str, Any]]:
        """Return the image (C, H, W) or (C, D, H, W) float32 and reader meta for ``record``.

        Raises:
            DataError: naming the file when it cannot be read.
        """

    # -- construction ---------------------------------------------------------------------------
    def _build(self) -> None:
        from medrobust.data.splits import assign_splits

        records, class_names = self._index()
        if self._given_class_names is not None:
            if len(self._given_class_names) < len(class_names):
                raise ConfigError(
                    f"The 'class_names' parameter of {type(self).__name__} lists "
                    f"{len(self._given_class_names)} names, but {self.root} has {len(class_names)} classes."
                )
            class_names = self._given_class_names
        check_class_count(class_names, self.root, minimum=0)  # too many: refused before any use
        self.class_names = list(class_names)
        for r in records:
            if not 0 <= r.label < len(self.class_names):
                n = len(self.class_names)
                raise DataError(r.path or self.root, f"label {r.label} is outside [0, {n})")
        own = [r.split is not None for r in records]
        if records and all(own):
            self.split_info = {"kind": "own"}
        elif any(own):
            first = next(r for r in records if r.split is None)
            raise DataError(
                first.path or self.root,
                "some samples have a split and others do not; give every sample a split or none",
            )
        else:
            splits, info = assign_splits(
                [r.label for r in records],
                groups=[r.group for r in records] if any(r.group is not None for r in records) else None,
                fractions=self.split_fractions,
                seed=self.split_seed,
            )
            records = [_replace_split(r, s) for r, s in zip(records, splits, strict=False)]
            self.split_info = info
        if any(r.group is not None for r in records):
            _check_no_group_leak(records, self.root)
        check_class_count(self.class_names, self.root, minimum=2 if self.labelled else 1)
        self._records = records

    # -- public API -----------------------------------------------------------------------------
    def relpath(self, path: str | os.PathLike[str] | None) -> str:
        """``path`` relative to the source root (a file source's root is its folder)."""
        if path is None:
            return ""
        base = self.root if self.root.is_dir() else self.root.parent
        # Lexical first (a symlink loop cannot make it fail), then with links resolved.
        for norm in (os.path.abspath, os.path.realpath):
            try:
                return Path(norm(path)).relative_to(norm(base)).as_posix()
            except ValueError:
                continue
        return Path(path).name

    def load(self, record: Record) -> dict[str, Any]:
        """Load one record as ``{"image": float32 (C, ...), "label": int, "meta": dict}``.

        Raises:
            DataError: naming the file for unreadable files, NaN/Inf pixels or a channel count
                other than the declared ``channels``.
        """
        image, meta = self._read(record)
        where = self.describe_location(record)
        image = np.asarray(image)
        if image.dtype != np.float32:
            image = image.astype(np.float32)
        if image.ndim not in (3, 4):
            raise DataError(where, f"expected an image of shape (C, H, W) or (C, D, H, W), got {image.shape}")
        check_finite(image, where)
        if self.channels is not None and image.shape[0] != self.channels:
            raise DataError(
                where,
                f"has {image.shape[0]} channel(s) but the source is declared with {self.channels} channel(s)",
            )
        meta = dict(meta)
        meta.update(
            id=record.id,
            path=self.relpath(record.path),
            split=record.split or "",
            source=self.kind,
            shape=list(image.shape),
        )
        if record.index is not None:
            meta["index"] = int(record.index)
        return {"image": image, "label": int(record.label), "meta": safe_meta(meta)}

    def describe_location(self, record: Record) -> str:
        """The file (and position inside it) an error about ``record`` should name."""
        return str(record.path) if record.path is not None else str(self.root)

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary: kind, root, classes, split origin and counts (and the data spec, if any)."""
        counts = Counter(r.split for r in self._records)
        out = {
            "kind": self.kind,
            "root": str(self.root),
            "class_names": list(self.class_names),
            "n_records": len(self._records),
            "splits": {s: counts.get(s, 0) for s in self.splits()},
            "split_info": dict(self.split_info),
        }
        if self.spec is not None:
            out["spec"] = self.spec
        return out

    def _skip_or_raise(self, path: object, reason: str) -> None:
        """Index-time problem: raise, or list it in :attr:`skipped` when ``on_error="skip"``."""
        if self.on_error == "raise":
            raise DataError(path, reason)
        self.skipped.append((str(path), reason))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, n={len(self)}, classes={self.class_names})"


def _replace_split(record: Record, split: str) -> Record:
    from dataclasses import replace

    return replace(record, split=split)


def _check_no_group_leak(records: list[Record], root: Path) -> None:
    seen: dict[str, str] = {}
    leaks = 0
    for r in records:
        if r.group is None:
            continue
        prev = seen.setdefault(r.group, r.split or "")
        if prev != r.split:
            leaks += 1
    if leaks:
        # Group (patient) values are never printed: they may be identifying.
        raise DataError(root, f"{leaks} sample(s) share a patient with a sample in another split")


def check_finite(image: np.ndarray, where: object) -> None:
    """Raise :class:`DataError` naming ``where`` when ``image`` holds NaN or Inf values."""
    finite = np.isfinite(image)
    if not finite.all():
        n_nan = int(np.isnan(image).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise DataError(where, f"contains non-finite pixel values ({n_nan} NaN, {n_inf} Inf)")


def safe_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Keep whitelisted keys with JSON-friendly, non-``None`` values only."""
    out: dict[str, Any] = {}
    for key in sorted(meta):
        if key not in SAFE_META_KEYS:
            continue
        value = meta[key]
        if value is None:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, (np.ndarray, tuple)):
            value = np.asarray(value).tolist()
        out[key] = value
    return out
