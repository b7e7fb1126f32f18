"""Flat tables from results.json: one row per cell, one row per (cell, sample)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medrobust.evaluation.results import AuditDocument, as_document

#: Cell columns before the metrics, in CSV order.
CELL_COLUMNS = (
    "key",
    "target",
    "threat",
    "attack",
    "attack_name",
    "norm",
    "eps",
    "eps_label",
    "minimal",
    "gradient_free",
    "bpda",
    "seed",
    "craft",
    "n_over_budget",
    "seconds",
)
#: Metric columns, in CSV order.
METRIC_COLUMNS = (
    "n",
    "n_clean_correct",
    "n_attacked",
    "n_fooled",
    "clean_accuracy",
    "robust_accuracy",
    "clean_balanced_accuracy",
    "balanced_accuracy",
    "clean_auroc",
    "auroc",
    "clean_sensitivity",
    "sensitivity",
    "clean_specificity",
    "specificity",
    "success_rate",
    "median_linf",
    "median_l2",
    "median_queries",
)
#: Metrics whose 95 % interval ends get their own columns (``<metric>_ci_low`` / ``_ci_high``).
CI_METRICS = ("clean_accuracy", "robust_accuracy", "balanced_accuracy", "sensitivity", "specificity")
#: Interval columns, in CSV order (after the metrics).
CI_COLUMNS = tuple(f"{m}_ci_{end}" for m in CI_METRICS for end in ("low", "high"))
#: Per-sample columns (besides the cell key columns).
SAMPLE_COLUMNS = (
    "position",
    "index",
    "label",
    "clean_pred",
    "adv_pred",
    "adv_raw_pred",
    "success",
    "used_adv",
    "attacked",
    "linf",
    "l2",
    "queries",
)


def cell_rows(results: AuditDocument | Mapping[str, Any], intervals: bool = False) -> list[dict[str, Any]]:
    """One dict per cell: identification columns then metrics (``eps`` None = unbounded).

    With ``intervals`` (results.csv), the 95 % interval ends follow (:data:`CI_COLUMNS`;
    ``None`` for results written before intervals existed).
    """
    rows = []
    for cell in as_document(results).cells:
        row = {k: cell.get(k) for k in CELL_COLUMNS}
        row.update({k: cell.metrics.get(k) for k in METRIC_COLUMNS})
        if intervals:
            for m in CI_METRICS:
                iv = cell.interval(m)
                row[f"{m}_ci_low"], row[f"{m}_ci_high"] = (None, None) if iv is None else (iv.low, iv.high)
        rows.append(row)
    return rows


def sample_rows(results: AuditDocument | Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per (cell, sample) with the cell's key columns."""
    rows = []
    for cell in as_document(results).cells:
        s = cell.samples
        columns = {k: getattr(s, k) for k in SAMPLE_COLUMNS if getattr(s, k) is not None}
        head = {k: cell.get(k) for k in ("key", "target", "threat", "attack", "eps", "eps_label")}
        for i in range(len(s.position or [])):
            row = dict(head)
            row.update({k: v[i] for k, v in columns.items()})
            rows.append(row)
    return rows


def fmt(value: Any, digits: int = 3) -> str:
    """Format a metric for tables (``—`` for undefined)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
