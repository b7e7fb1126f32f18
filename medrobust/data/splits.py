"""Seeded, stratified train/val/test splits; grouped by patient when a patient column is given.

The split is a pure function of the labels, the groups, the fractions and the seed
(a NumPy ``Generator``; no global RNG state), so it can be recorded and reproduced.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from medrobust.utils.seed import numpy_rng

_NAMES = ("train", "val", "test")


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items into counts proportional to ``fractions`` (largest remainder, train first)."""
    raw = [n * f for f in fractions]
    counts = [int(np.floor(x)) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    if n > 0 and counts[0] == 0:  # never leave a class without a training sample
        donor = max(range(1, len(counts)), key=lambda i: counts[i])
        counts[donor] -= 1
        counts[0] += 1
    return counts


def assign_splits(
    labels: Sequence[int],
    groups: Sequence[Any] | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> tuple[list[str], dict[str, Any]]:
    """Assign ``"train"``/``"val"``/``"test"`` to each sample.

    Without ``groups`` the split is stratified by label. With ``groups`` (e.g. patient IDs)
    whole groups are assigned, stratified by each group's most frequent label, so no group
    is in two splits. Samples whose group is ``None`` count as groups of one.

    Args:
        labels: Class index per sample.
        groups: Optional group key per sample.
        fractions: (train, val, test) fractions summing to 1.
        seed: Seed of the NumPy generator.

    Returns:
        The split name per sample and a JSON-safe description
        (``kind``, ``seed``, ``fractions``) to record with results.
    """
    rng = numpy_rng(seed)
    n = len(labels)
    out: list[str] = [""] * n
    if groups is None:
        by_class: dict[int, list[int]] = defaultdict(list)
        for i, y in enumerate(labels):
            by_class[int(y)].append(i)
        for y in sorted(by_class):
            idx = np.asarray(by_class[y])
            idx = idx[rng.permutation(len(idx))]
            counts = _allocate(len(idx), fractions)
            start = 0
            for name, c in zip(_NAMES, counts, strict=False):
                for i in idx[start : start + c]:
                    out[int(i)] = name
                start += c
        kind = "stratified"
    else:
        members: dict[Any, list[int]] = defaultdict(list)
        for i, g in enumerate(groups):
            members[("__single__", i) if g is None else ("g", str(g))].append(i)
        group_label: dict[Any, int] = {}
        for key, idx in members.items():
            values, freq = np.unique([int(labels[i]) for i in idx], return_counts=True)
            group_label[key] = int(values[np.argmax(freq)])
        by_class_g: dict[int, list[Any]] = defaultdict(list)
        for key in sorted(members, key=str):
            by_class_g[group_label[key]].append(key)
        for y in sorted(by_class_g):
            keys = by_class_g[y]
            keys = [keys[i] for i in rng.permutation(len(keys))]
            total = sum(len(members[k]) for k in keys)
            targets = np.cumsum(_allocate(total, fractions))
            done = 0
            for k in keys:
                # Put the group in the first split whose cumulative target is not yet reached.
                split_i = int(np.searchsorted(targets, done, side="right"))
                split_i = min(split_i, len(_NAMES) - 1)
                for i in members[k]:
                    out[i] = _NAMES[split_i]
                done += len(members[k])
        kind = "grouped-stratified"
    info = {"kind": kind, "seed": int(seed), "fractions": [float(f) for f in fractions]}
    return out, info
