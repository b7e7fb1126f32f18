"""Intervals checked against independent computations: scipy's Wilson interval, explicit bootstrap loops.

statsmodels is not in the environment; ``scipy.stats.binomtest(...).proportion_ci(method="wilson")``
is the independent Wilson implementation, and the bootstrap intervals are recomputed here with
plain index resampling (``rng.choice``), not the weight matrices the audit uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from medrobust.evaluation.statistics import (
    CLUSTER_BOOTSTRAP,
    Resampler,
    cluster_ids,
    prediction_intervals,
    proportion_interval,
    samples_for_half_width,
    wilson_half_width,
    wilson_interval,
)


def test_wilson_matches_scipy_on_random_outcomes():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 400))
        outcomes = rng.random(n) < rng.random()
        k = int(outcomes.sum())
        lo, hi = wilson_interval(k, n)
        ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)
    assert wilson_interval(0, 0) is None


def test_sample_sizes_for_half_widths():
    assert samples_for_half_width(0.05) == 385  # ±5 points at p = 0.5
    assert samples_for_half_width(0.10) == 97
    assert wilson_half_width(97) <= 0.10 < wilson_half_width(60)


def test_binary_intervals_use_wilson_on_the_class_subsets():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 120)
    p = np.where(rng.random(120) < 0.8, y, 1 - y)
    probs = np.stack([1 - (0.3 + 0.4 * y), 0.3 + 0.4 * y], 1) + rng.normal(0, 0.2, (120, 2))
    point = {"accuracy": float((p == y).mean())}
    iv = prediction_intervals(y, p, probs, 2, None, point, Resampler(120, seed=0))
    tp, n_pos = int(((p == 1) & (y == 1)).sum()), int((y == 1).sum())
    ref = binomtest(tp, n_pos).proportion_ci(method="wilson")
    assert iv["sensitivity"]["method"] == "wilson" and iv["sensitivity"]["n"] == n_pos
    assert iv["sensitivity"]["ci"] == pytest.approx([ref.low, ref.high])
    tn, n_neg = int(((p == 0) & (y == 0)).sum()), int((y == 0).sum())
    ref = binomtest(tn, n_neg).proportion_ci(method="wilson")
    assert iv["specificity"]["ci"] == pytest.approx([ref.low, ref.high])
    ref = binomtest(int((p == y).sum()), 120).proportion_ci(method="wilson")
    assert iv["accuracy"]["ci"] == pytest.approx([ref.low, ref.high])
    assert iv["balanced_accuracy"]["method"] == "bootstrap" and iv["auroc"]["method"] == "bootstrap"


def test_weighted_auroc_equals_sklearn_on_each_resample():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    scores = np.round(rng.random(60) + 0.4 * y, 1)  # rounded: ties count one half
    rs = Resampler(60, n_boot=200, seed=5)
    est = rs.auroc(y == 1, scores)
    for b in range(0, 200, 37):
        idx = np.repeat(np.arange(60), rs.weights[b].astype(int))
        assert est[b] == pytest.approx(roc_auc_score(y[idx], scores[idx]))


def _loop_percentile(stat, units, rng, n_boot=2000):
    vals = [stat(rng.choice(units, size=len(units), replace=True)) for _ in range(n_boot)]
    vals = np.asarray([v for v in vals if np.isfinite(v)])
    return np.quantile(vals, [0.025, 0.975])


def test_balanced_accuracy_bootstrap_matches_a_stratified_loop():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2], [30, 50, 20])
    p = np.where(rng.random(100) < 0.7, y, rng.integers(0, 3, 100))
    point = {"balanced_accuracy": float(np.mean([(p[y == c] == c).mean() for c in range(3)]))}
    iv = prediction_intervals(y, p, None, 3, None, point, Resampler(100, n_boot=2000, seed=1))

    loop = []
    for _ in range(2000):  # resample within each class (class sizes fixed)
        rec = [
            (p[idx] == c).mean()
            for c in range(3)
            for idx in [rng.choice(np.flatnonzero(y == c), (y == c).sum())]
        ]
        loop.append(np.mean(rec))
    ref = np.quantile(loop, [0.025, 0.975])
    assert iv["balanced_accuracy"]["ci"] == pytest.approx(ref, abs=0.02)
    assert iv["sensitivity"]["average"] == "macro"  # 3 classes, no positive class
    assert iv["specificity"]["value"] is None  # no point estimate given: the interval still is
    lo, hi = iv["specificity"]["ci"]
    assert 0 < lo < hi < 1


def test_constant_predictions_give_a_point_balanced_accuracy():
    y = np.array([0, 1] * 20)
    iv = prediction_intervals(y, np.zeros(40, int), None, 2, None, {}, Resampler(40, seed=0))
    assert iv["balanced_accuracy"]["ci"] == [0.5, 0.5]


def _manifest_with_patients(tmp_path: Path, n_patients: int, per_patient: int) -> Path:
    from PIL import Image

    rows = ["path,label,patient"]
    for pid in range(n_patients):
        for j in range(per_patient):
            name = f"p{pid}_{j}.png"
            Image.fromarray(np.full((8, 8), 40 * (pid % 2) + j, dtype=np.uint8)).save(tmp_path / name)
            rows.append(f"{name},{'a' if pid % 2 else 'b'},P{pid:03d}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "manifest.csv"


def test_cluster_bootstrap_on_a_manifest_with_patients(tmp_path):
    from medrobust.data import open_source
    from medrobust.evaluation.audited import record_groups

    source = open_source(str(_manifest_with_patients(tmp_path, 24, 5)))

    class _DS:  # what record_groups reads: the dataset's records (MONAI Dataset.data)
        data = source.records()

    groups = record_groups(_DS(), range(len(source)))
    clusters = cluster_ids(groups)
    assert clusters is not None and clusters.max() + 1 == 24
    assert all(isinstance(c, int) for c in clusters.tolist())  # anonymous numbers, not patient ids

    # Outcomes shared within each patient: 120 images, but only 24 independent pieces of evidence.
    rng = np.random.default_rng(4)
    per_patient = rng.random(24) < 0.6
    correct = per_patient[clusters]
    value = float(correct.mean())
    ones = np.ones(len(correct), dtype=bool)
    clustered = proportion_interval(
        correct, ones, value, Resampler(len(correct), clusters, n_boot=2000, seed=2)
    )
    independent = proportion_interval(correct, ones, value, Resampler(len(correct), None, seed=2))
    assert clustered["method"] == CLUSTER_BOOTSTRAP and clustered["n_clusters"] == 24
    assert independent["method"] == "wilson"
    width = lambda iv: iv["ci"][1] - iv["ci"][0]  # noqa: E731
    assert width(clustered) > 1.6 * width(independent)

    # An explicit loop over resampled patients gives the same interval.
    members = [np.flatnonzero(clusters == g) for g in range(24)]
    ref = _loop_percentile(
        lambda picked: np.concatenate([correct[members[g]] for g in picked]).mean(), np.arange(24), rng
    )
    assert clustered["ci"] == pytest.approx(ref, abs=0.04)


def test_singleton_groups_are_not_clusters():
    assert cluster_ids(["a", "b", None, "c"]) is None
    assert cluster_ids(None) is None
    assert cluster_ids(["x", "y", "x", None]).tolist() == [0, 1, 0, 2]
