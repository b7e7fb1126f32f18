"""Classification metrics on NumPy arrays (scikit-learn underneath).

Shared by training (per-epoch validation) and audits (clean vs adversarial). All
functions take integer ``labels`` ``(N,)``, integer ``preds`` ``(N,)`` and, where
needed, class ``probs`` ``(N, K)``; undefined values (e.g. AUROC with one class
present) are ``nan`` rather than an exception.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


def _as_int(a: object) -> np.ndarray:
    return np.asarray(a).astype(np.int64).reshape(-1)


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Fraction of correct predictions (``nan`` for empty input)."""
    y, p = _as_int(labels), _as_int(preds)
    return float((y == p).mean()) if y.size else math.nan


def per_class_recall(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Recall of each class (``nan`` for a class absent from ``labels``)."""
    y, p = _as_int(labels), _as_int(preds)
    out = np.full(num_classes, np.nan)
    for k in range(num_classes):
        mask = y == k
        if mask.any():
            out[k] = float((p[mask] == k).mean())
    return out


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray, num_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``labels``."""
    y = _as_int(labels)
    if not y.size:
        return math.nan
    k = int(num_classes if num_classes is not None else max(y.max(), _as_int(preds).max()) + 1)
    rec = per_class_recall(y, preds, k)
    return float(np.nanmean(rec))


def auroc(labels: np.ndarray, probs: np.ndarray, positive: int | None = None) -> float:
    """Area under the ROC curve.

    Binary: the score is the positive class's probability (``positive`` or class 1).
    Multiclass: macro one-vs-rest over the classes present (``positive`` is not
    used). ``nan`` when undefined
    (fewer than two classes present).
    """
    from sklearn.metrics import roc_auc_score

    y = _as_int(labels)
    pr = np.asarray(probs, dtype=np.float64)
    if pr.ndim != 2 or pr.shape[0] != y.size:
        raise ValueError(f"probs must have shape (N, K) with N={y.size}. Got {pr.shape}.")
    present = np.unique(y)
    if present.size < 2:
        return math.nan
    k = pr.shape[1]
    if k == 2:
        pos = 1 if positive is None else int(positive)
        return float(roc_auc_score((y == pos).astype(int), pr[:, pos]))
    scores = []
    for c in present:
        scores.append(roc_auc_score((y == c).astype(int), pr[:, c]))
    return float(np.mean(scores))


def sensitivity_specificity(
    labels: np.ndarray, preds: np.ndarray, num_classes: int, positive: int | None = None
) -> tuple[float, float]:
    """Sensitivity (recall of the positive class) and specificity (recall of the rest).

    With ``positive=None``: binary tasks use class 1 as positive; multiclass tasks get
    macro averages (mean one-vs-rest sensitivity and specificity over present classes).
    """
    y, p = _as_int(labels), _as_int(preds)
    if not y.size:
        return math.nan, math.nan
    if positive is None and num_classes == 2:
        positive = 1

    def one(pos: int) -> tuple[float, float]:
        pos_mask = y == pos
        neg_mask = ~pos_mask
        sens = float((p[pos_mask] == pos).mean()) if pos_mask.any() else math.nan
        spec = float((p[neg_mask] != pos).mean()) if neg_mask.any() else math.nan
        return sens, spec

    if positive is not None:
        return one(int(positive))
    pairs = [one(c) for c in range(num_classes) if (y == c).any()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sens = float(np.nanmean([s for s, _ in pairs]))
        spec = float(np.nanmean([s for _, s in pairs]))
    return sens, spec


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def classification_metrics(
    labels: np.ndarray, logits: np.ndarray, positive: int | None = None
) -> dict[str, float]:
    """All per-epoch/audit metrics from labels and logits ``(N, K)``.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``auroc``, ``sensitivity``, ``specificity``
        and ``n`` (number of samples).
    """
    lg = np.asarray(logits, dtype=np.float64)
    y = _as_int(labels)
    k = lg.shape[1]
    preds = lg.argmax(axis=1)
    probs = softmax(lg)
    sens, spec = sensitivity_specificity(y, preds, k, positive)
    return {
        "n": int(y.size),
        "accuracy": accuracy(y, preds),
        "balanced_accuracy": balanced_accuracy(y, preds, k),
        "auroc": auroc(y, probs, positive),
        "sensitivity": sens,
        "specificity": spec,
    }
