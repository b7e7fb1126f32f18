"""The image + mask source contract: pairs listed as :class:`PairRecord` s, loaded as MONAI-style dicts.

A :class:`SegmentationSource` knows where each image and its mask are, the label names (index =
mask value, 0 the background) and each pair's split. ``load(record)`` returns
``{"image": float32 (C, *spatial) in the file's native units, "label": int64 (1, *spatial),
"meta": {...}}``. Image and mask are read by the same reader with the same options, so NIfTI
volumes both come out in RAS voxel order (:mod:`medrobust.data.readers.nifti`) and the same
slice is taken from both.

Every pair is checked when it is loaded; problems raise :class:`~medrobust.errors.DataError`
naming the file: a mask whose spatial shape differs from its image's, mask values that are not
whole numbers or lie outside the declared labels, a mask with several different channels. A
missing mask is found when the source is listed.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medrobust.data.base import SplitRecords, canonical_split, check_finite, safe_meta
from medrobust.errors import ConfigError, DataError
from medrobust.limits import MAX_CLASSES
from medrobust.registry import Registry
from medrobust.validation import check_choice, check_int

SEGMENTATION_SOURCES: Registry[type[SegmentationSource]] = Registry("segmentation source")

#: ``@register_segmentation_source("name", *aliases)``: registers the class and sets its ``kind``.
register_segmentation_source = SEGMENTATION_SOURCES.decorator("kind")

#: Label names when neither the caller nor a ``dataset.json`` gives them (binary masks).
DEFAULT_LABEL_NAMES: tuple[str, ...] = ("background", "foreground")
#: File beside the data holding Decathlon-style ``labels`` (and medrobust's ``lesion_labels``, ``splits``).
DATASET_JSON = "dataset.json"
#: Largest ``dataset.json`` read (bytes).
MAX_DATASET_JSON_BYTES = 10_000_000
#: Slice choices for NIfTI pairs: the whole volume, the middle slice, or an index.
SLICE_CHOICES: tuple[str, ...] = ("volume", "middle")


@dataclass(frozen=True)
class PairRecord:
    """One image and its mask.

    Attributes:
        id: Stable identifier inside the source (the image's stem or relative path).
        image: The image file.
        label: The mask file.
        split: ``"train"``, ``"val"`` or ``"test"`` (``None`` only before splits are assigned).
    """

    id: str
    image: Path
    label: Path
    split: str | None = None


def check_label_names(names: Any, where: object) -> list[str]:
    """Validate label names: 2..MAX_CLASSES unique non-empty strings, index = mask value.

    Raises:
        ConfigError: naming ``where`` for anything else.
    """
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise ConfigError(
            f"The 'label_names' of {where} must be a list of names, background first (e.g. "
            f"['background', 'lesion']). Got {names!r:.80}."
        )
    out = [str(n).strip() for n in names]
    if not 2 <= len(out) <= MAX_CLASSES or any(not n for n in out) or len(set(out)) != len(out):
        raise ConfigError(
            f"The 'label_names' of {where} must be 2 to {MAX_CLASSES} unique non-empty names, background "
            f"first. Got {out[:10]!r}."
        )
    return out


def read_dataset_json(folder: Path) -> dict[str, Any] | None:
    """The Decathlon-style ``dataset.json`` in ``folder``, or None when there is none.

    Raises:
        DataError: naming the file when it is too large, not UTF-8 JSON or not an object.
    """
    path = folder / DATASET_JSON
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_DATASET_JSON_BYTES:
        raise DataError(path, f"is larger than {MAX_DATASET_JSON_BYTES} bytes; not a dataset description")
    try:
        values = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(path, f"is not valid UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(values, dict):
        raise DataError(path, f"must be a JSON object with 'labels'. Got a JSON {type(values).__name__}")
    return values


def labels_from_dataset_json(values: dict[str, Any], path: Path) -> list[str] | None:
    """Label names from a Decathlon ``labels`` mapping (``{"0": "background", "1": "tumour"}``)."""
    labels = values.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, dict):
        raise DataError(path, f"'labels' must map label values to names. Got {type(labels).__name__}")
    try:
        pairs = sorted((int(k), str(v)) for k, v in labels.items())
    except (TypeError, ValueError):
        raise DataError(
            path, f"'labels' keys must be the integer label values. Got {list(labels)[:5]}"
        ) from None
    if [k for k, _ in pairs] != list(range(len(pairs))):
        raise DataError(
            path, f"'labels' must number the labels 0, 1, 2, ... Got {[k for k, _ in pairs][:10]}"
        )
    return [v for _, v in pairs]


def check_mask(mask: np.ndarray, image_shape: Sequence[int], num_labels: int, where: object) -> np.ndarray:
    """Validate a loaded mask against its image and the declared labels; return int64 ``(1, *spatial)``.

    Args:
        mask: The mask as read, ``(C, *spatial)`` (a PNG may come as 3 equal channels).
        image_shape: The image's shape ``(C, *spatial)``.
        num_labels: Number of declared labels (valid values ``0 .. num_labels - 1``).
        where: The mask file, named in errors.

    Raises:
        DataError: naming ``where`` for a shape mismatch, several different channels,
            non-integer or non-finite values, or values outside the declared labels.
    """
    mask = np.asarray(mask)
    spatial = tuple(int(s) for s in image_shape[1:])
    if mask.ndim == len(spatial):
        mask = mask[None]
    if tuple(mask.shape[1:]) != spatial:
        raise DataError(
            where,
            f"mask shape {tuple(mask.shape[1:])} differs from its image's shape {spatial}; expected equal",
        )
    if mask.shape[0] > 1:
        if not all(np.array_equal(mask[0], mask[c]) for c in range(1, mask.shape[0])):
            raise DataError(
                where, f"mask has {mask.shape[0]} different channels; expected one channel of label values"
            )
        mask = mask[:1]
    check_finite(mask.astype(np.float32, copy=False), where)
    rounded = np.rint(mask)
    if not np.array_equal(rounded, mask):
        raise DataError(where, "mask holds non-integer values; expected label indices 0, 1, 2, ...")
    values = np.unique(rounded)
    bad = values[(values < 0) | (values >= num_labels)]
    if bad.size:
        raise DataError(
            where,
            f"mask holds label value(s) {bad[:5].astype(int).tolist()} outside the {num_labels} declared "
            f"labels 0..{num_labels - 1}; pass label_names (or a dataset.json 'labels') listing every label",
        )
    return rounded.astype(np.int64)


class SegmentationSource(SplitRecords, ABC):
    """Base class of image + mask sources.

    Subclasses implement :meth:`_index` (list the pairs, with their own splits where the data
    has them). The base class reads label names (argument, else ``dataset.json``, else binary),
    assigns missing splits (seeded), loads and checks pairs.

    Args:
        root: The folder (or manifest) the source was opened from.
        label_names: Label names, index = mask value (background first). Default: the
            ``labels`` of a ``dataset.json`` beside the data, else ``["background", "foreground"]``.
        lesion_labels: Names of the lesion labels (default: the ``dataset.json``'s, else every
            non-background label).
        slice: NIfTI pairs: ``"volume"`` (3D, default), ``"middle"`` or a slice index along ``axis``.
        axis: NIfTI slicing axis of the RAS volume (0, 1, 2).
        binary_255: With two labels, read a mask holding only 0 and 255 as 0 and 1 (PNG exports,
            ISIC); any other value outside the labels is still refused.
        split_seed: Seed of the split used when the data has none of its own.
        split_fractions: (train, val, test) fractions of that split.
    """

    kind: ClassVar[str] = "segmentation-source"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        label_names: Sequence[str] | None = None,
        lesion_labels: Sequence[str] | None = None,
        slice: str | int = "volume",
        axis: int = 2,
        binary_255: bool = True,
        split_seed: int = 0,
        split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    ) -> None:
        owner = type(self).__name__
        self.root = Path(root)
        if not self.root.exists():
            raise DataError(self.root, "does not exist")
        if isinstance(slice, str):
            self.slice: str | int = check_choice(slice, "slice", SLICE_CHOICES, owner)
        else:
            self.slice = check_int(slice, "slice", owner, low=0)
        self.axis = check_int(axis, "axis", owner, low=0, high=2)
        if not isinstance(binary_255, bool):
            raise ConfigError(f"The 'binary_255' parameter of {owner} must be a bool. Got {binary_255!r}.")
        self.binary_255 = binary_255
        self.split_seed = check_int(split_seed, "split_seed", owner, low=0)
        self.split_fractions = tuple(float(f) for f in split_fractions)
        folder = self.root if self.root.is_dir() else self.root.parent
        self.dataset_info = read_dataset_json(folder) or {}
        extra = (
            self.dataset_info.get("medrobust") if isinstance(self.dataset_info.get("medrobust"), dict) else {}
        )
        self._own_splits: dict[str, str] = dict(extra.get("splits") or {})
        if label_names is None:
            label_names = (
                labels_from_dataset_json(self.dataset_info, folder / DATASET_JSON) or DEFAULT_LABEL_NAMES
            )
        self.label_names = check_label_names(label_names, owner)
        if lesion_labels is None:
            lesion_labels = extra.get("lesion_labels") or self.label_names[1:]
        unknown = [n for n in lesion_labels if n not in self.label_names]
        if unknown:
            raise ConfigError(
                f"The 'lesion_labels' of {owner} must be among the label names {self.label_names}. "
                f"Got {unknown}."
            )
        self.lesion_labels = [str(n) for n in lesion_labels]
        self._loaders: dict[str, Any] = {}
        self._records = self._assign_splits(self._index())
        if not self._records:
            raise DataError(self.root, "no image + mask pairs found")

    # -- subclass hook ----------------------------------------------------------------------------
    @abstractmethod
    def _index(self) -> list[PairRecord]:
        """Return the pairs (``split`` None where the data has no split of its own).

        Raises:
            DataError: naming the image whose mask is missing, or the folder without pairs.
        """

    # -- splits ----------------------------------------------------------------------------------
    def _assign_splits(self, records: list[PairRecord]) -> list[PairRecord]:
        from medrobust.data.splits import assign_splits

        records = [
            replace(r, split=canonical_split(self._own_splits[r.id], self.root))
            if r.split is None and r.id in self._own_splits
            else r
            for r in records
        ]
        if all(r.split is not None for r in records):
            return records
        splits, _ = assign_splits([0] * len(records), fractions=self.split_fractions, seed=self.split_seed)
        return [
            r if r.split is not None else replace(r, split=s) for r, s in zip(records, splits, strict=True)
        ]

    # -- public API -----------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        """Number of labels (background included)."""
        return len(self.label_names)

    def _loader(self, which: str) -> Any:
        if which not in self._loaders:
            from medrobust.data.readers import ImageFileLoader

            self._loaders[which] = ImageFileLoader(axis=self.axis, slice=self.slice, volume=0)
        return self._loaders[which]

    def load(self, record: PairRecord) -> dict[str, Any]:
        """Load one pair as ``{"image": float32 (C, ...), "label": int64 (1, ...), "meta": dict}``.

        Raises:
            DataError: naming the file for unreadable files, NaN/Inf pixels, a mask that does
                not match its image or holds values outside the declared labels.
        """
        image, meta = self._loader("image").load(record.image)
        check_finite(image, record.image)
        mask, _ = self._loader("label").load(record.label)
        if self.binary_255 and self.num_labels == 2 and mask.size and float(mask.max()) == 255.0:
            values = np.unique(mask)
            if set(values.tolist()) <= {0.0, 255.0}:
                mask = (mask > 0).astype(np.float32)
        label = check_mask(mask, image.shape, self.num_labels, record.label)
        meta = dict(meta)
        meta.update(id=record.id, path=self.relpath(record.image), split=record.split or "", source=self.kind)
        meta["shape"] = list(image.shape)
        return {
            "image": np.ascontiguousarray(image, dtype=np.float32),
            "label": label,
            "meta": safe_meta(meta),
        }

    def relpath(self, path: Path) -> str:
        """``path`` relative to the source's folder (its name when outside)."""
        base = self.root if self.root.is_dir() else self.root.parent
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(base)).as_posix()
        except ValueError:
            return Path(path).name

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary: kind, root, labels, lesion labels, counts per split."""
        counts = Counter(r.split for r in self._records)
        return {
            "kind": self.kind,
            "root": str(self.root),
            "label_names": list(self.label_names),
            "lesion_labels": list(self.lesion_labels),
            "n_records": len(self._records),
            "splits": {s: counts.get(s, 0) for s in self.splits()},
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, n={len(self)}, labels={self.label_names})"


def detect_segmentation_kind(path: Path) -> str:
    """The layout of ``path``: ``decathlon`` (imagesTr/ + labelsTr/), ``csv`` or ``mask-folder``.

    Raises:
        DataError: naming ``path`` when it matches none of them.
    """
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    if path.is_dir():
        if (path / "imagesTr").is_dir() and (path / "labelsTr").is_dir():
            return "decathlon"
        if (path / "images").is_dir() and (path / "masks").is_dir():
            return "mask-folder"
        manifests = sorted(p for p in path.glob("*.csv") if p.is_file())
        if len(manifests) == 1:
            return "csv"
    raise DataError(
        path,
        "is not an image + mask layout: expected a folder with imagesTr/ and labelsTr/ (Decathlon), a folder "
        "with images/ and masks/, or a CSV manifest with columns image,label",
    )


def open_segmentation_source(path: str | os.PathLike[str], kind: str | None = None, **options: Any) -> Any:
    """Open image + mask pairs, detecting the layout unless ``kind`` is given.

    Args:
        path: A Decathlon folder, a folder with ``images/`` and ``masks/``, or a CSV manifest
            (or a folder holding exactly one).
        kind: ``decathlon``, ``csv`` or ``mask-folder`` (default: detected).
        **options: Source options (``label_names``, ``lesion_labels``, ``slice``, ``axis``, ...).

    Raises:
        DataError: naming ``path`` when it does not exist or matches no layout.
        ConfigError: for an unknown ``kind`` or option.
    """
    import inspect

    import medrobust.data.segmentation.sources  # noqa: F401  (fills the registry)
    from medrobust.registry import did_you_mean

    root = Path(path)
    if not root.exists():
        raise DataError(root, "does not exist")
    name = kind if kind is not None else detect_segmentation_kind(root)
    cls = SEGMENTATION_SOURCES.get(name)
    valid = sorted(
        {
            p.name
            for klass in cls.__mro__
            if "__init__" in vars(klass)
            for p in inspect.signature(vars(klass)["__init__"]).parameters.values()
            if p.kind is p.KEYWORD_ONLY
        }
    )
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"segmentation source {cls.kind!r} has no option {key!r}.{did_you_mean(key, valid)} "
                f"Valid options: {', '.join(valid)}."
            )
    return cls(root, **options)


def list_segmentation_sources() -> list[str]:
    """Names of the image + mask layouts."""
    import medrobust.data.segmentation.sources  # noqa: F401  (fills the registry)

    return SEGMENTATION_SOURCES.names()
