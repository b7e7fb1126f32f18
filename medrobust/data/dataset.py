"""``make_dataset`` (a MONAI-style ``Dataset`` over a source) and ``load_arrays`` (stacked tensors).

Each item is ``{"image": float32 tensor (C, H, W), "label": int64 scalar tensor, "meta": dict}``.
With a preset the image is the preset's output (inside ``preset.bounds``); without one
it stays in native units (optionally resized to ``spatial_size``). MetaTensors are
stripped to plain tensors (attacks run about 10 % faster on them).

Importing this module does not import MONAI (about 5 s per process, paid by every torchrun
rank): the preset pipelines and file readers that need it are imported when a dataset is
built or an image file is read. :class:`SourceDataset` behaves like ``monai.data.Dataset``
(``data``, ``transform``, slicing to a ``Subset``) without subclassing it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from medrobust.data.base import ON_ERROR_CHOICES, Record, Source
from medrobust.data.opening import open_source
from medrobust.errors import ConfigError, DataError, MedrobustError
from medrobust.utils.logging import get_logger
from medrobust.validation import check_choice, check_int

logger = get_logger("data")


def _plain(x: Any) -> torch.Tensor:
    as_tensor = getattr(x, "as_tensor", None)
    if callable(as_tensor):
        return as_tensor()
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def medrobust_cause(exc: BaseException) -> MedrobustError | None:
    """The medrobust error behind ``exc``: itself, or one MONAI wrapped in ``RuntimeError``.

    MONAI's ``Compose``/``apply_transform`` re-raise any error of a transform as
    ``RuntimeError("applying transform ...")`` chained ``from`` the original, once per
    nesting level; this follows ``__cause__`` down to a :class:`MedrobustError`.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, MedrobustError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


def _root_cause(exc: BaseException) -> BaseException:
    seen: set[int] = set()
    while exc.__cause__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__
    return exc


class WorkerDataError(DataError):
    """A :class:`DataError` raised inside a ``DataLoader`` worker process.

    PyTorch re-raises a worker's exception in the main process as ``type(msg)`` with the
    worker's formatted traceback as the only argument, and falls back to a
    ``RuntimeError`` holding that traceback text when the type cannot be built that way
    (``DataError`` needs a path and a reason). This subclass can: given one string, it
    recovers ``path: reason`` from the traceback's last line, so the CLI still prints one
    line naming the file.
    """

    def __init__(self, path: object, reason: str | None = None) -> None:
        if reason is None:
            path, reason = _from_worker_text(str(path))
        super().__init__(path, reason)


def _from_worker_text(text: str) -> tuple[str, str]:
    marker = f"{WorkerDataError.__module__}.{WorkerDataError.__qualname__}: "
    at = text.rfind(marker)
    body = text[at + len(marker) :] if at >= 0 else text
    lines = body.strip().splitlines()
    first = lines[0].strip() if lines else ""
    path, sep, reason = first.partition(": ")
    return (path, reason) if sep else ("<DataLoader worker>", first or "could not load a sample")


class _LoadRecord:
    """MONAI-style transform: ``Record`` -> ``{"image", "label", "meta"}`` with a channel check."""

    def __init__(self, source: Source, channels: int | None, reference: str) -> None:
        self.source = source
        self.channels = channels
        self.reference = reference

    def __call__(self, record: Record) -> dict[str, Any]:
        sample = self.source.load(record)
        c = sample["image"].shape[0]
        if self.channels is not None and c != self.channels:
            where = self.source.describe_location(record)
            raise DataError(where, _mismatch(c, self.channels, self.reference))
        return sample


def _mismatch(c: int, expected: int, reference: str) -> str:
    return f"has {c} channel(s) but {reference} has {expected}; all images of a source must match"


class _Finalize:
    """Plain float32 image tensor, int64 label tensor, meta untouched."""

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        out = dict(data)
        out["image"] = _plain(data["image"]).to(torch.float32)
        out["label"] = torch.as_tensor(int(data["label"]), dtype=torch.int64)
        return out


class SourceDataset(Dataset):
    """A dataset of a source's records (see :func:`make_dataset`), with MONAI ``Dataset`` semantics.

    ``dataset[i]`` is one transformed item; ``dataset[a:b]`` and ``dataset[[i, j]]`` are
    ``torch.utils.data.Subset`` views, as with ``monai.data.Dataset``.

    Attributes:
        source: The :class:`~medrobust.data.base.Source`.
        split: The split it covers (``None``: all).
        preset: The preset object or ``None``.
        channels: The channel count every raw image must have.
        skipped: ``(path, reason)`` for every sample left out with ``on_error="skip"``.
    """

    def __init__(
        self,
        records: list[Record],
        transform: Any,
        source: Source,
        split: str | None,
        preset: Any,
        channels: int | None,
        skipped: list[tuple[str, str]],
        reference: str = "the source declaration",
    ) -> None:
        self.data = records
        self.transform = transform
        self.load_record = _LoadRecord(source, channels, reference)
        self.source = source
        self.split = split
        self.preset = preset
        self.channels = channels
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int | slice | Sequence[int]) -> Any:
        """One item, or a ``Subset`` for a slice or a sequence of indices."""
        if isinstance(index, slice):
            return Subset(self, range(*index.indices(len(self))))
        if isinstance(index, Sequence):
            return Subset(self, list(index))
        return self._transform(index)

    def _transform(self, index: int) -> dict[str, Any]:
        # Loading runs outside MONAI's Compose so a DataError reaches the caller unwrapped;
        # errors of the transforms are unwrapped from MONAI's RuntimeError (or, when they
        # are not medrobust's, turned into a DataError naming the file).
        record = self.data[index]
        try:
            try:
                return self.transform(self.load_record(record))
            except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
                cause = medrobust_cause(exc)
                if cause is not None:
                    raise cause from None
                root = _root_cause(exc)
                where = self.source.describe_location(record)
                raise DataError(where, f"preprocessing failed ({type(root).__name__}: {root})") from None
        except DataError as exc:
            from torch.utils.data import get_worker_info

            if get_worker_info() is not None and not isinstance(exc, WorkerDataError):
                raise WorkerDataError(exc.path, exc.reason) from None
            raise

    @property
    def records(self) -> list[Record]:
        """The records, in item order."""
        return list(self.data)

    @property
    def class_names(self) -> list[str]:
        """Class names of the source."""
        return list(self.source.class_names)

    def labels(self) -> np.ndarray:
        """Labels of all items (without loading images)."""
        return np.asarray([r.label for r in self.data], dtype=np.int64)


def make_dataset(
    source: Source | str | os.PathLike[str],
    split: str | None = None,
    preset: Any = None,
    spatial_size: Sequence[int] | None = None,
    augment: bool = False,
    on_error: str = "raise",
    preset_options: Mapping[str, Any] | None = None,
    **source_options: Any,
) -> SourceDataset:
    """Build a dataset over ``source``.

    Args:
        source: An open :class:`Source` or a path for :func:`open_source`.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for all samples.
        preset: A preset name or object; its ``transform(spatial_size, augment)`` is applied.
        spatial_size: Output (H, W); with a preset it is passed to it, without one the image
            is resized in native units (area interpolation: no edge darkening, exact means).
        augment: Passed to the preset (ignored without one).
        on_error: ``"raise"``: a bad file raises :class:`DataError` naming it when its item is
            read. ``"skip"``: every file is read once now; bad ones are left out and listed in
            ``dataset.skipped``.
        preset_options: Options of the preset, e.g. ``{"channels": 3}`` for grey data into a
            3-channel model or ``{"scaling": "range", "value_range": [-1000, 400]}`` (see
            :func:`~medrobust.data.presets.get_preset`); validated before any file is read.
        **source_options: Passed to :func:`open_source` when ``source`` is a path.

    Raises:
        DataError: naming the file (bad file, NaN/Inf pixels, mismatched channel count).
        ConfigError: for invalid parameters.
    """
    on_error = check_choice(on_error, "on_error", ON_ERROR_CHOICES, "make_dataset")
    preset_obj = _resolve_preset(preset, preset_options)
    if not isinstance(source, Source):
        source_options.setdefault("on_error", on_error)
    elif source_options:
        raise ConfigError(
            f"make_dataset got source options {sorted(source_options)} for an already open source; "
            "pass them to open_source instead."
        )
    src = open_source(source, **source_options)
    if spatial_size is not None:
        spatial_size = tuple(check_int(s, "spatial_size", "make_dataset", low=1) for s in spatial_size)
    records = src.records(split)
    if not records:
        raise DataError(src.root, f"has no samples in split {split!r} (splits: {src.splits()})")
    skipped: list[tuple[str, str]] = list(src.skipped)
    channels = src.channels
    reference = f"the source declaration (channels={channels})"
    if on_error == "skip":
        kept = []
        for r in records:
            try:
                sample = src.load(r)
            except DataError as exc:
                logger.warning("skipping %s", exc)
                skipped.append((exc.path, exc.reason))
                continue
            c = sample["image"].shape[0]
            if channels is None:
                channels, reference = c, f"the first image ({src.describe_location(r)})"
            elif c != channels:
                where = src.describe_location(r)
                reason = _mismatch(c, channels, reference)
                logger.warning("skipping %s: %s", where, reason)
                skipped.append((where, reason))
                continue
            kept.append(r)
        records = kept
        if not records:
            raise DataError(src.root, f"no readable samples left in split {split!r} ({len(skipped)} skipped)")
    elif channels is None:
        channels = src.load(records[0])["image"].shape[0]
        reference = f"the first image ({src.describe_location(records[0])})"

    transforms: list[Any] = []
    if preset_obj is not None:
        transforms.append(preset_obj.transform(spatial_size=spatial_size, augment=augment))
    elif spatial_size is not None:
        from monai.transforms import Resized

        transforms.append(Resized(keys="image", spatial_size=spatial_size, mode="area"))
    elif augment:
        raise ConfigError(
            "The 'augment' parameter of make_dataset needs a preset (augmentations are modality specific)."
        )
    transforms.append(_Finalize())

    from medrobust.data.presets._transforms import PresetCompose

    transform = PresetCompose(transforms)  # unwraps medrobust errors from MONAI's RuntimeError
    return SourceDataset(records, transform, src, split, preset_obj, channels, skipped, reference)


def _resolve_preset(preset: Any, options: Mapping[str, Any] | None) -> Any:
    """The preset object for ``preset`` (a name or an object) with ``options`` applied."""
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(
            f"The 'preset_options' parameter of make_dataset must be a mapping such as {{'channels': 3}}. "
            f"Got {options!r}."
        )
    if preset is None:
        if options:
            raise ConfigError(
                f"The 'preset_options' parameter of make_dataset needs a preset. Got {dict(options)!r} "
                "without one."
            )
        return None
    if isinstance(preset, str):
        from medrobust.data.presets import get_preset

        return get_preset(preset, **dict(options or {}))
    if options:
        with_options = getattr(preset, "with_options", None)
        if not callable(with_options):
            raise ConfigError(
                f"The 'preset_options' parameter of make_dataset needs a registered preset; "
                f"{type(preset).__name__} takes no options."
            )
        return with_options(**dict(options))
    return preset


def collate_samples(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``DataLoader`` collate: stacked images and labels, ``meta`` kept as a list of dicts."""
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "label": torch.stack([b["label"] for b in batch]),
        "meta": [b["meta"] for b in batch],
    }


def load_arrays(dataset: SourceDataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the first ``limit`` items (all by default) as ``(images (N, C, H, W), labels (N,))``.

    Images are float32, labels int64.

    Raises:
        DataError: when images differ in shape (give a preset or ``spatial_size``).
    """
    n = len(dataset) if limit is None else min(len(dataset), check_int(limit, "limit", "load_arrays", low=0))
    images, labels = [], []
    for i in range(n):
        item = dataset[i]
        img = _plain(item["image"])
        if images and img.shape != images[0].shape:
            if isinstance(dataset, SourceDataset):
                where = dataset.source.describe_location(dataset.data[i])
            else:
                where = item["meta"].get("path") or item["meta"].get("id") or f"item {i}"
            raise DataError(
                where,
                f"image shape {tuple(img.shape)} differs from {tuple(images[0].shape)}; "
                "pass a preset or spatial_size to make_dataset",
            )
        images.append(img)
        labels.append(torch.as_tensor(item["label"], dtype=torch.int64).reshape(()))
    if not images:
        return torch.empty((0,), dtype=torch.float32), torch.empty((0,), dtype=torch.int64)
    return torch.stack(images).contiguous(), torch.stack(labels)
