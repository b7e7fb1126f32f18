"""Segmentation metrics, clean and under attack: Dice and HD95 per class, lesion detection, changes.

All functions take label maps (``(N, *spatial)`` or ``(N, 1, *spatial)`` integer tensors or arrays:
the argmax of a segmenter's logits, or the ground-truth masks) and work per image, so an audit can
keep per-sample outcomes. Dice and HD95 are MONAI's (``compute_dice``,
``compute_hausdorff_distance``); their empty-mask conventions are made explicit here:

* **Dice** of a class in one image: NaN when neither the truth nor the prediction holds the class
  (nothing to score; left out of means), 0 when exactly one of them does.
* **HD95** (95th percentile symmetric Hausdorff distance, in voxels unless ``spacing`` is given):
  NaN when both are empty; the image diagonal (the largest distance possible) when exactly one is
  empty, so a missed or hallucinated structure counts as the worst boundary error, not as a gap.
* **Lesion detection**: each connected component of a lesion label in the truth (``scipy.ndimage.label``,
  full connectivity) is one lesion; its Dice is computed against the predicted components of the
  same label that touch it. A lesion whose Dice is below ``threshold`` (default 0.1, any real
  overlap) is missed.
* **Changed prediction**: an image whose predicted label map differs from the clean one in at least
  ``min_changed`` of its pixels (default: any pixel).

:func:`segmentation_summary` aggregates these with 95 % intervals from
:mod:`medrobust.evaluation.statistics` (bootstrap over images for mean Dice and HD95, Wilson for
the changed fraction, Wilson or a cluster bootstrap over images for the detection rate).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from medrobust.errors import ConfigError
from medrobust.validation import check_float

#: Default Dice below which a lesion counts as missed.
DETECTION_THRESHOLD = 0.1


def label_map(x: Any) -> Any:
    """``x`` as an int64 torch tensor ``(N, *spatial)`` (a channel axis of size 1 is dropped)."""
    import torch

    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    as_tensor = getattr(t, "as_tensor", None)
    t = (as_tensor() if callable(as_tensor) else t).detach().cpu()
    if t.ndim >= 4 and t.shape[1] == 1:
        t = t[:, 0]
    return t.long()


def _one_hot(labels: Any, num_classes: int) -> Any:
    import torch

    return torch.nn.functional.one_hot(labels.clamp(0, num_classes - 1), num_classes).movedim(-1, 1).float()


def _check_pair(pred: Any, target: Any, num_classes: int) -> tuple[Any, Any]:
    p, t = label_map(pred), label_map(target)
    if p.shape != t.shape:
        raise ConfigError(
            f"prediction and truth must have the same shape. Got {tuple(p.shape)} and {tuple(t.shape)}."
        )
    for name, m in (("prediction", p), ("truth", t)):
        if m.numel() and (int(m.min()) < 0 or int(m.max()) >= num_classes):
            raise ConfigError(
                f"The {name} holds label values outside 0..{num_classes - 1} (num_classes={num_classes}). "
                f"Got values in [{int(m.min())}, {int(m.max())}]."
            )
    return p, t


def dice_per_class(pred: Any, target: Any, num_classes: int) -> np.ndarray:
    """Dice of every class in every image, ``(N, K)`` float64 (NaN where neither holds the class)."""
    from monai.metrics import compute_dice

    p, t = _check_pair(pred, target, num_classes)
    if p.shape[0] == 0:
        return np.zeros((0, num_classes))
    ph, th = _one_hot(p, num_classes), _one_hot(t, num_classes)
    dice = compute_dice(ph, th, include_background=True, ignore_empty=False).double().numpy()
    both_empty = ((ph.flatten(2).sum(2) == 0) & (th.flatten(2).sum(2) == 0)).numpy()
    dice[both_empty] = np.nan
    return dice


def hd95_per_class(
    pred: Any, target: Any, num_classes: int, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """95th-percentile Hausdorff distance per class and image, ``(N, K)`` (see the module docstring)."""
    from monai.metrics import compute_hausdorff_distance

    p, t = _check_pair(pred, target, num_classes)
    if p.shape[0] == 0:
        return np.zeros((0, num_classes))
    ph, th = _one_hot(p, num_classes), _one_hot(t, num_classes)
    with warnings.catch_warnings():  # MONAI warns once per empty class; the NaN is handled below
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(
            ph, th, include_background=True, percentile=95, spacing=None if spacing is None else list(spacing)
        )
    hd = hd.double().numpy()
    p_empty = (ph.flatten(2).sum(2) == 0).numpy()
    t_empty = (th.flatten(2).sum(2) == 0).numpy()
    sizes = np.asarray(p.shape[1:], dtype=np.float64) * (
        1.0 if spacing is None else np.asarray(spacing, float)
    )
    diagonal = float(np.sqrt((sizes**2).sum()))
    hd[p_empty & t_empty] = np.nan
    hd[p_empty ^ t_empty] = diagonal
    return hd


def lesion_dice(
    pred: Any, target: Any, lesion_indices: Sequence[int], num_classes: int
) -> list[list[tuple[int, float]]]:
    """Per image, ``(label, Dice)`` of every lesion (connected component of a lesion label in the truth)."""
    from scipy import ndimage

    p, t = _check_pair(pred, target, num_classes)
    p_np, t_np = p.numpy(), t.numpy()
    out: list[list[tuple[int, float]]] = []
    for pi, ti in zip(p_np, t_np, strict=True):
        structure = np.ones((3,) * ti.ndim, dtype=bool)
        found: list[tuple[int, float]] = []
        for k in lesion_indices:
            truth, n_truth = ndimage.label(ti == k, structure=structure)
            if n_truth == 0:
                continue
            predicted, _ = ndimage.label(pi == k, structure=structure)
            for c in range(1, n_truth + 1):
                comp = truth == c
                touching = np.unique(predicted[comp])
                touching = touching[touching > 0]
                mine = np.isin(predicted, touching) if touching.size else np.zeros_like(comp)
                inter = float((comp & mine).sum())
                found.append((int(k), 2.0 * inter / float(comp.sum() + mine.sum())))
        out.append(found)
    return out


def lesion_detection(
    pred: Any,
    target: Any,
    lesion_indices: Sequence[int],
    num_classes: int,
    threshold: float = DETECTION_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Lesions per image and how many were detected (Dice >= ``threshold``): two ``(N,)`` int arrays."""
    threshold = check_float(threshold, "threshold", "lesion_detection", low=0.0, high=1.0, low_inclusive=True)
    per_image = lesion_dice(pred, target, lesion_indices, num_classes)
    n = np.array([len(v) for v in per_image], dtype=np.int64)
    hit = np.array([sum(d >= threshold for _, d in v) for v in per_image], dtype=np.int64)
    return n, hit


def changed_pixels(clean_pred: Any, adv_pred: Any) -> np.ndarray:
    """Fraction of pixels whose predicted label changed, per image ``(N,)``."""
    a, b = label_map(clean_pred), label_map(adv_pred)
    if a.shape != b.shape:
        raise ConfigError(
            f"clean and adversarial predictions must have the same shape. Got {tuple(a.shape)} and "
            f"{tuple(b.shape)}."
        )
    if a.shape[0] == 0:
        return np.zeros(0)
    return (a != b).flatten(1).double().mean(1).numpy()


def prediction_changed(clean_pred: Any, adv_pred: Any, min_changed: float = 0.0) -> np.ndarray:
    """Per image, whether more than ``min_changed`` of its pixels changed label (bool ``(N,)``)."""
    min_changed = check_float(
        min_changed, "min_changed", "prediction_changed", low=0.0, high=1.0, low_inclusive=True
    )
    return changed_pixels(clean_pred, adv_pred) > min_changed


def _mean_interval(values: np.ndarray, seed: int) -> dict[str, Any]:
    """Mean over images of ``values`` (NaN left out) with a bootstrap interval over images."""
    from medrobust.evaluation.statistics import Resampler, interval

    values = np.asarray(values, dtype=np.float64)
    defined = np.isfinite(values)
    n = int(defined.sum())
    if n == 0:
        return interval(None, None, "bootstrap", 0)
    rs = Resampler(len(values), seed=seed)
    est = rs.ratio(np.where(defined, values, 0.0), defined.astype(np.float64))
    return interval(float(values[defined].mean()), rs.percentile(est), rs.method, n)


def _rate_interval(k: np.ndarray, n: np.ndarray, seed: int) -> dict[str, Any]:
    """``sum k / sum n`` with Wilson (at most one unit per image) or a cluster bootstrap over images."""
    from medrobust.evaluation.statistics import WILSON, Resampler, interval, wilson_interval

    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    total = float(n.sum())
    if total == 0:
        return interval(None, None, WILSON, 0)
    value = float(k.sum()) / total
    if n.max() <= 1:
        return interval(value, wilson_interval(float(k.sum()), total), WILSON, int(total))
    rs = Resampler(len(n), seed=seed)  # images are the resampled units; their lesions go with them
    return interval(value, rs.percentile(rs.ratio(k, n)), "cluster-bootstrap", int(total), clusters=len(n))


def segmentation_summary(
    target: Any,
    pred: Any,
    label_names: Sequence[str],
    lesion_labels: Sequence[str] = (),
    clean_pred: Any = None,
    threshold: float = DETECTION_THRESHOLD,
    spacing: Sequence[float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of ``pred`` against ``target`` with 95 % intervals (a results.json-ready dict).

    Args:
        target: Ground-truth label maps.
        pred: Predicted label maps (clean or adversarial).
        label_names: Names of the labels, index = value.
        lesion_labels: Labels counted as lesions (detection rate).
        clean_pred: The clean predictions, when ``pred`` is adversarial (adds the changed fraction).
        threshold: Dice below which a lesion is missed.
        spacing: Voxel size for HD95 (default: voxels).
        seed: Seed of the bootstrap.

    Returns:
        ``{"n", "dice": {label: interval}, "mean_dice", "hd95": {label: interval}, "detection",
        "changed", "per_image": {"dice": [[...]], "hd95", "lesions", "detected", "changed_pixels"}}``;
        an interval is ``{"value", "ci", "method", "n"}``. ``mean_dice`` averages the foreground labels.
    """
    names = [str(n) for n in label_names]
    k = len(names)
    unknown = [n for n in lesion_labels if n not in names]
    if unknown:
        raise ConfigError(f"The 'lesion_labels' parameter must be among {names}. Got {unknown}.")
    dice = dice_per_class(pred, target, k)
    hd = hd95_per_class(pred, target, k, spacing)
    lesions, detected = lesion_detection(pred, target, [names.index(n) for n in lesion_labels], k, threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an image with no foreground at all
        fg = np.nanmean(dice[:, 1:], axis=1) if k > 1 and len(dice) else np.zeros(len(dice))
    out: dict[str, Any] = {
        "n": int(dice.shape[0]),
        "dice": {names[c]: _mean_interval(dice[:, c], seed) for c in range(k)},
        "mean_dice": _mean_interval(fg, seed),
        "hd95": {names[c]: _mean_interval(hd[:, c], seed) for c in range(1, k)},
        "detection": {**_rate_interval(detected, lesions, seed), "threshold": threshold},
        "per_image": {
            "dice": [[None if math.isnan(v) else float(v) for v in row] for row in dice],
            "hd95": [[None if math.isnan(v) else float(v) for v in row] for row in hd],
            "lesions": lesions.tolist(),
            "detected": detected.tolist(),
        },
    }
    if clean_pred is not None:
        from medrobust.evaluation.statistics import WILSON, interval, wilson_interval

        frac = changed_pixels(clean_pred, pred)
        changed = frac > 0
        out["changed"] = interval(
            float(changed.mean()) if len(changed) else None,
            wilson_interval(float(changed.sum()), float(len(changed))),
            WILSON,
            len(changed),
        )
        out["per_image"]["changed_pixels"] = frac.tolist()
    return out
