"""Per-cell metrics from per-sample records (reuses :mod:`medrobust.metrics`).

Conventions (documented in results.json and the report):

* ``adv_pred`` is the *effective* prediction under attack: the worst case of the clean
  input and the adversarial example that fits the cell's budget. A sample the target
  already misclassifies stays misclassified; an adversarial example counts only if
  its norm is within the budget (minimal-norm attacks are run once, unbounded).
* ``robust_accuracy`` = mean(adv_pred == label); ``success_rate`` = fooled / initially
  correct; median norms are over successful (fooled) samples; ``median_queries`` over
  attacked samples.
* Undefined values (AUROC with one class present, medians of nothing) are ``None``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medrobust import metrics as M

#: Relative tolerance when comparing a perturbation norm with a budget.
NORM_RTOL = 1e-5


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def within_budget(norms: np.ndarray, eps: float) -> np.ndarray:
    """``norm <= eps`` with a small relative tolerance (float32 norms vs float budgets)."""
    norms = np.asarray(norms, dtype=np.float64)
    if math.isinf(eps):
        return np.ones(norms.shape, dtype=bool)
    return norms <= eps * (1.0 + NORM_RTOL) + 1e-12


def effective_predictions(
    labels: np.ndarray,
    clean_pred: np.ndarray,
    clean_probs: np.ndarray,
    raw_pred: np.ndarray,
    raw_probs: np.ndarray,
    attacked: np.ndarray,
    norm: np.ndarray,
    eps: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Worst case of clean input and in-budget adversarial example per sample.

    Returns:
        ``(adv_pred, adv_probs, used_adv)``: effective prediction and probabilities,
        and whether the adversarial example (rather than the clean input) was used.
    """
    labels = np.asarray(labels)
    usable = np.asarray(attacked, dtype=bool) & within_budget(norm, eps)
    clean_wrong = clean_pred != labels
    adv_wrong = raw_pred != labels
    # correct clean: use the adversarial example whenever it is admissible;
    # wrong clean: keep it wrong (use the adversarial example only if it is also wrong).
    used = usable & (~clean_wrong | adv_wrong)
    adv_pred = np.where(used, raw_pred, clean_pred)
    adv_probs = np.where(used[:, None], raw_probs, clean_probs)
    return adv_pred, adv_probs, used


def _median(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values)) if values.size else None


def prediction_metrics(
    labels: np.ndarray, preds: np.ndarray, probs: np.ndarray, num_classes: int, positive: int | None
) -> dict[str, float | None]:
    """Accuracy, balanced accuracy, AUROC, sensitivity and specificity."""
    sens, spec = M.sensitivity_specificity(labels, preds, num_classes, positive)
    return {
        "accuracy": _clean(M.accuracy(labels, preds)),
        "balanced_accuracy": _clean(M.balanced_accuracy(labels, preds, num_classes)),
        "auroc": _clean(M.auroc(labels, probs, positive)),
        "sensitivity": _clean(sens),
        "specificity": _clean(spec),
    }


def cell_metrics(
    labels: np.ndarray,
    clean_pred: np.ndarray,
    clean_probs: np.ndarray,
    adv_pred: np.ndarray,
    adv_probs: np.ndarray,
    linf: np.ndarray,
    l2: np.ndarray,
    queries: np.ndarray,
    attacked: np.ndarray,
    num_classes: int,
    positive: int | None,
) -> dict[str, Any]:
    """All per-cell metrics from per-sample arrays (see the module docstring)."""
    labels = np.asarray(labels)
    clean = prediction_metrics(labels, clean_pred, clean_probs, num_classes, positive)
    adv = prediction_metrics(labels, adv_pred, adv_probs, num_classes, positive)
    correct = clean_pred == labels
    fooled = correct & (adv_pred != labels)
    attacked = np.asarray(attacked, dtype=bool)
    return {
        "n": int(labels.size),
        "n_clean_correct": int(correct.sum()),
        "n_attacked": int(attacked.sum()),
        "n_fooled": int(fooled.sum()),
        "clean_accuracy": clean["accuracy"],
        "robust_accuracy": adv["accuracy"],
        "clean_balanced_accuracy": clean["balanced_accuracy"],
        "balanced_accuracy": adv["balanced_accuracy"],
        "clean_auroc": clean["auroc"],
        "auroc": adv["auroc"],
        "clean_sensitivity": clean["sensitivity"],
        "sensitivity": adv["sensitivity"],
        "clean_specificity": clean["specificity"],
        "specificity": adv["specificity"],
        "success_rate": float(fooled.sum() / correct.sum()) if correct.any() else None,
        "median_linf": _median(np.asarray(linf)[fooled]),
        "median_l2": _median(np.asarray(l2)[fooled]),
        "median_queries": _median(np.asarray(queries)[attacked]),
    }
