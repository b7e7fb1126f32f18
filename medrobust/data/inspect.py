"""``inspect_source``: what is in a data source, and which files could not be read.

Reports counts per split and class, image shapes, stored dtypes, intensity ranges
(exact min/max; 1st/99th percentiles estimated from up to ``pixels_per_image`` pixels
sampled per image with a seeded generator) and unreadable files with the reason.
The report holds only relative paths and whitelisted values (no DICOM identifying value).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from medrobust.data.base import Source
from medrobust.data.opening import open_source
from medrobust.errors import DataError
from medrobust.utils.seed import numpy_rng
from medrobust.validation import check_int


def _shape_key(shape: Any) -> str:
    return "x".join(str(int(s)) for s in shape)


def _range(samples: list[np.ndarray], lo: float, hi: float) -> dict[str, float] | None:
    if not samples:
        return None
    pooled = np.concatenate(samples)
    p1, p99 = np.percentile(pooled, [1, 99])
    return {"min": float(lo), "max": float(hi), "p1": float(p1), "p99": float(p99)}


def inspect_source(
    source: Source | str | os.PathLike[str],
    limit: int | None = None,
    modality: str | None = None,
    pixels_per_image: int = 4096,
    seed: int = 0,
    preset_options: Mapping[str, Any] | None = None,
    **source_options: Any,
) -> dict[str, Any]:
    """Describe a source as a JSON-safe dict.

    Args:
        source: An open :class:`Source` or a path for :func:`open_source`.
        limit: Read at most this many samples (all by default); counts always cover all records.
        modality: Optional preset name; adds the preset's channels, size and bounds, and the
            range of the first few images after the preset.
        pixels_per_image: Pixels sampled per image for the percentile estimates.
        seed: Seed of the pixel sampler.
        preset_options: Options of the preset (``channels``, ``scaling``, ...; see
            :func:`~medrobust.data.presets.get_preset`).
        **source_options: Passed to :func:`open_source` for a path (``on_error`` is ``"skip"``).
    """
    if not isinstance(source, Source):
        source_options.setdefault("on_error", "skip")
    src = open_source(source, **source_options)
    if limit is not None:
        limit = check_int(limit, "limit", "inspect_source", low=1)
    pixels_per_image = check_int(pixels_per_image, "pixels_per_image", "inspect_source", low=16)
    rng = numpy_rng(seed)
    records = src.records()
    counts: dict[str, dict[str, int]] = {}
    for split in src.splits():
        c = Counter(src.class_names[r.label] for r in src.records(split))
        counts[split] = {name: int(c.get(name, 0)) for name in src.class_names}

    shapes: Counter[str] = Counter()
    dtypes: Counter[str] = Counter()
    channels: Counter[int] = Counter()
    per_split: dict[str, list[np.ndarray]] = defaultdict(list)
    per_split_lohi: dict[str, list[float]] = {}
    unreadable = [{"path": src.relpath(p) or str(p), "reason": r} for p, r in src.skipped]
    to_read = records if limit is None else records[:limit]
    for r in to_read:
        try:
            sample = src.load(r)
        except DataError as exc:
            unreadable.append({"path": _rel(src, exc.path), "reason": exc.reason})
            continue
        img = sample["image"]
        shapes[_shape_key(img.shape)] += 1
        dtypes[str(sample["meta"].get("dtype", "float32"))] += 1
        channels[int(img.shape[0])] += 1
        flat = img.reshape(-1)
        if flat.size > pixels_per_image:
            pick = flat[rng.choice(flat.size, pixels_per_image, replace=False)]
        else:
            pick = flat
        split = r.split or ""
        per_split[split].append(pick)
        lo, hi = float(flat.min()), float(flat.max())
        prev = per_split_lohi.get(split)
        per_split_lohi[split] = [lo, hi] if prev is None else [min(prev[0], lo), max(prev[1], hi)]

    intensity: dict[str, Any] = {}
    all_samples: list[np.ndarray] = []
    order = src.splits()
    for split in sorted(per_split, key=lambda s: order.index(s) if s in order else len(order)):
        samples = per_split[split]
        lo, hi = per_split_lohi[split]
        intensity[split] = _range(samples, lo, hi)
        all_samples.extend(samples)
    if all_samples:
        lo = min(v[0] for v in per_split_lohi.values())
        hi = max(v[1] for v in per_split_lohi.values())
        intensity["all"] = _range(all_samples, lo, hi)

    report: dict[str, Any] = {
        "source": src.describe(),
        "counts": counts,
        "n_records": len(records),
        "n_read": int(sum(shapes.values())),
        "shapes": dict(sorted(shapes.items())),
        "dtypes": dict(sorted(dtypes.items())),
        "channels": {str(k): v for k, v in sorted(channels.items())},
        "intensity": intensity,
        "unreadable": unreadable,
    }
    if channels and len(channels) > 1:
        report["warnings"] = [f"images have different channel counts: {dict(channels)}"]
    if modality is not None:
        report["preset"] = _preset_report(src, modality, to_read, preset_options=preset_options)
    return report


def _rel(src: Source, path: str) -> str:
    """Relative path for a file error location (keeps ``[...]`` suffixes of npz locations)."""
    if "[" in path:
        head, _, tail = path.partition("[")
        return f"{src.relpath(head)}[{tail}"
    return src.relpath(path) or path


def _preset_report(
    src: Source,
    modality: str,
    records: list[Any],
    n_check: int = 8,
    preset_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The preset's declared output, and the range of up to ``n_check`` images after it."""
    from medrobust.data.presets import get_preset

    preset = get_preset(modality, **dict(preset_options or {}))
    info: dict[str, Any] = {
        "name": preset.name,
        "modality": getattr(preset, "modality", preset.name),
        "channels": int(preset.channels),
        "spatial_size": [int(s) for s in preset.spatial_size],
        "bounds": [float(b) for b in preset.bounds],
        "options": preset.options,
    }
    from medrobust.data.dataset import medrobust_cause

    transform = preset.transform()
    lows, highs, shape = [], [], None
    failed: list[dict[str, str]] = []
    for r in records:
        if len(lows) >= n_check:
            break
        try:
            sample = src.load(r)
        except DataError:
            continue  # already listed as unreadable
        try:
            out = transform(sample)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            cause = medrobust_cause(exc)
            reason = cause.reason if isinstance(cause, DataError) else str(cause or exc)
            failed.append({"path": _rel(src, src.describe_location(r)), "reason": " ".join(reason.split())})
            continue
        img = out["image"]
        arr = np.asarray(img.as_tensor() if hasattr(img, "as_tensor") else img)
        lows.append(float(arr.min()))
        highs.append(float(arr.max()))
        shape = list(arr.shape)
    info["after_preset"] = (
        {"n": len(lows), "shape": shape, "min": min(lows), "max": max(highs)} if lows else None
    )
    info["failed"] = failed
    return info
