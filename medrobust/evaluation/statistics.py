"""Uncertainty of audit metrics: Wilson intervals, (clustered) bootstrap intervals, sample sizes.

Every rate an audit reports comes with a 95 % interval:

* **Wilson score interval** for a proportion ``k / n`` of independent samples (accuracy,
  robust accuracy, success rate, and the sensitivity/specificity of a binary task, which are
  proportions of the positive/negative samples);
* **percentile bootstrap** for statistics that are not a single proportion (balanced
  accuracy, macro-averaged multi-class sensitivity/specificity, AUROC);
* **cluster bootstrap** for *every* metric when the data has a patient column: whole patients
  are resampled, so several images of one patient count as correlated evidence, not as
  independent samples (the interval widens accordingly).

Bootstrap resamples are drawn as multinomial *weights* over the units (samples or patients)
from an explicit, seeded :class:`numpy.random.Generator`; the same weights serve every metric
and cell of an audit (paired comparisons stay coherent), and the results are reproducible.
Nothing here uses global random state.

>>> wilson_interval(8, 10)  # doctest: +ELLIPSIS
(0.49..., 0.94...)
>>> samples_for_half_width(0.05)
385
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from medrobust.evaluation.results import AuditDocument, Interval, Statistics, as_document

#: Confidence level of every interval the audit reports.
CONFIDENCE = 0.95
#: Bootstrap resamples (fewer for very large audits, see :data:`MAX_BOOT_WEIGHTS`).
N_BOOT = 1000
#: Upper bound on resamples x samples held in memory at once (float32 weights).
MAX_BOOT_WEIGHTS = 10_000_000
#: Fraction of resamples that may leave a statistic undefined before its interval is dropped.
MAX_UNDEFINED = 0.05

WILSON = "wilson"
BOOTSTRAP = "bootstrap"
CLUSTER_BOOTSTRAP = "cluster-bootstrap"


def z_value(confidence: float = CONFIDENCE) -> float:
    """Two-sided standard normal quantile of ``confidence`` (1.95996... for 95 %)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(k: float, n: float, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``k / n`` (``None`` when ``n == 0``).

    Args:
        k: Successes (0 <= k <= n).
        n: Trials.
        confidence: Two-sided confidence level.

    Returns:
        ``(low, high)`` clipped to [0, 1].
    """
    if n <= 0:
        return None
    z = z_value(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_half_width(n: int, p: float = 0.5, confidence: float = CONFIDENCE) -> float:
    """Half-width of the Wilson interval for ``n`` samples at observed proportion ``p``."""
    ci = wilson_interval(p * n, n, confidence)
    return math.nan if ci is None else (ci[1] - ci[0]) / 2.0


def samples_for_half_width(half_width: float, p: float = 0.5, confidence: float = CONFIDENCE) -> int:
    """Independent samples needed for a 95 % interval of ``±half_width`` at proportion ``p``.

    The normal-approximation formula ``z² p (1 - p) / h²`` (rounded up): ±5 points at
    p = 0.5 needs 385 samples, ±10 points 97. With patients contributing several images,
    multiply by the design effect (more images are needed).
    """
    if not 0 < half_width < 1:
        raise ValueError(f"half_width must be in (0, 1). Got {half_width!r}.")
    z = z_value(confidence)
    return math.ceil(z * z * p * (1 - p) / (half_width * half_width) - 1e-9)


def interval(
    value: float | None, ci: tuple[float, float] | None, method: str, n: int, **extra: Any
) -> dict[str, Any]:
    """The results.json form of an interval: ``{"value", "ci": [lo, hi] | None, "method", "n"}``."""
    out: dict[str, Any] = {
        "value": None if value is None or not math.isfinite(value) else float(value),
        "ci": None if ci is None else [float(ci[0]), float(ci[1])],
        "method": method,
        "n": int(n),
    }
    out.update(extra)
    return out


def cluster_ids(groups: Sequence[Any] | None) -> np.ndarray | None:
    """Integer cluster per sample from group keys (``None`` keys are clusters of one).

    Returns ``None`` when there are no groups or every group holds a single sample (the
    cluster bootstrap then equals the ordinary one). Ids follow first appearance, so they
    say which samples share a patient, never who the patient is.
    """
    if groups is None:
        return None
    seen: dict[Any, int] = {}
    out = np.empty(len(groups), dtype=np.int64)
    for i, g in enumerate(groups):
        key = ("single", i) if g is None else ("g", g)
        out[i] = seen.setdefault(key, len(seen))
    if len(seen) == len(groups):
        return None
    return out


class Resampler:
    """Seeded bootstrap weights over the samples (or the clusters) of an audit.

    ``weights`` is a ``(B, n)`` float32 matrix: row ``b`` says how often each sample appears
    in resample ``b`` (a multinomial draw over samples, or over clusters with every sample
    of a cluster carrying its cluster's count). Each statistic is then a ratio of weighted
    sums, so all resamples are evaluated at once.

    Args:
        n: Number of samples.
        clusters: Cluster id per sample (:func:`cluster_ids`) or ``None`` for independent samples.
        n_boot: Resamples (reduced so that ``n_boot * n <= MAX_BOOT_WEIGHTS``; at least 200).
        seed: Seed of the generator.
    """

    def __init__(
        self, n: int, clusters: np.ndarray | None = None, n_boot: int = N_BOOT, seed: int = 0
    ) -> None:
        self.n = int(n)
        self.clusters = None if clusters is None else np.asarray(clusters, dtype=np.int64)
        if self.clusters is not None and len(self.clusters) != self.n:
            raise ValueError(f"clusters must have {self.n} entries. Got {len(self.clusters)}.")
        self.n_boot = max(200, min(int(n_boot), MAX_BOOT_WEIGHTS // max(self.n, 1)))
        self.seed = int(seed)
        self._weights: np.ndarray | None = None
        self._strata: tuple[bytes, np.ndarray] | None = None

    @property
    def clustered(self) -> bool:
        """True when whole clusters (patients) are resampled."""
        return self.clusters is not None

    @property
    def n_clusters(self) -> int:
        """Number of resampled units (patients, or samples without clusters)."""
        return self.n if self.clusters is None else int(self.clusters.max()) + 1

    @property
    def method(self) -> str:
        """``"cluster-bootstrap"`` or ``"bootstrap"``."""
        return CLUSTER_BOOTSTRAP if self.clustered else BOOTSTRAP

    @property
    def weights(self) -> np.ndarray:
        """``(B, n)`` resample weights (drawn once, then reused)."""
        if self._weights is None:
            rng = np.random.default_rng(self.seed)
            units = self.n_clusters
            if units == 0:
                self._weights = np.zeros((self.n_boot, 0), dtype=np.float32)
            else:
                counts = rng.multinomial(units, np.full(units, 1.0 / units), size=self.n_boot)
                if self.clusters is not None:
                    counts = counts[:, self.clusters]
                self._weights = counts.astype(np.float32)
        return self._weights

    def class_weights(self, labels: np.ndarray) -> np.ndarray:
        """``(B, n)`` weights resampling *within* each class (class sizes fixed; iid samples only).

        Per-class recalls, and hence balanced accuracy and macro sensitivity/specificity,
        are conditional on the class sizes; resampling within classes keeps every class in
        every resample. With clusters, whole patients are resampled instead (:attr:`weights`)
        and a resample missing a class leaves the statistic undefined.
        """
        y = np.asarray(labels, dtype=np.int64)
        if self.clustered:
            return self.weights
        key = y.tobytes()
        if self._strata is None or self._strata[0] != key:
            rng = np.random.default_rng([self.seed, 1])
            w = np.zeros((self.n_boot, self.n), dtype=np.float32)
            for c in np.unique(y):
                idx = np.flatnonzero(y == c)
                w[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=self.n_boot)
            self._strata = (key, w)
        return self._strata[1]

    def percentile(self, estimates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
        """Percentile interval of bootstrap ``estimates`` (``None`` when too many are undefined)."""
        est = np.asarray(estimates, dtype=np.float64)
        finite = np.isfinite(est)
        if est.size == 0 or finite.mean() < 1 - MAX_UNDEFINED:
            return None
        alpha = (1 - confidence) / 2
        lo, hi = np.quantile(est[finite], [alpha, 1 - alpha])
        return float(lo), float(hi)

    # -- weighted statistics over all resamples ---------------------------------------------------
    def ratio(
        self, numerator: np.ndarray, denominator: np.ndarray, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """Per resample ``Σ w·numerator / Σ w·denominator`` (NaN where the denominator is 0)."""
        w = self.weights if weights is None else weights
        num = w @ np.asarray(numerator, dtype=np.float32)
        den = w @ np.asarray(denominator, dtype=np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

    def auroc(self, positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Per resample weighted AUROC of ``scores`` for the binary ``positive`` mask (ties count 1/2)."""
        positive = np.asarray(positive, dtype=bool)
        scores = np.asarray(scores, dtype=np.float64)
        order = np.argsort(scores, kind="stable")
        sorted_scores = scores[order]
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        pos_sorted = positive[order]
        out = np.empty(self.n_boot, dtype=np.float64)
        step = max(1, MAX_BOOT_WEIGHTS // max(4 * self.n, 1))
        for b0 in range(0, self.n_boot, step):
            w = self.weights[b0 : b0 + step][:, order].astype(np.float64)
            wp = np.add.reduceat(w * pos_sorted, starts, axis=1) if len(starts) else w[:, :0]
            wn = np.add.reduceat(w * ~pos_sorted, starts, axis=1) if len(starts) else w[:, :0]
            below = np.cumsum(wn, axis=1) - wn
            num = (wp * (below + 0.5 * wn)).sum(axis=1)
            den = wp.sum(axis=1) * wn.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[b0 : b0 + step] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        return out


def _mean_rows(values: list[np.ndarray]) -> np.ndarray:
    """Mean over classes per resample; NaN (undefined) where a class is missing from a resample."""
    return np.vstack(values).mean(axis=0)


def _boot_or_wilson(
    rs: Resampler, k_mask: np.ndarray, n_mask: np.ndarray, value: float | None, confidence: float
) -> dict[str, Any]:
    """A proportion ``Σ k_mask / Σ n_mask``: Wilson for independent samples, cluster bootstrap otherwise."""
    k_mask = np.asarray(k_mask, dtype=bool) & np.asarray(n_mask, dtype=bool)
    n = int(np.asarray(n_mask).sum())
    if rs.clustered:
        ci = rs.percentile(rs.ratio(k_mask, n_mask), confidence) if n else None
        return interval(value, ci, CLUSTER_BOOTSTRAP, n, n_clusters=rs.n_clusters, n_boot=rs.n_boot)
    k = int(k_mask.sum())
    return interval(value, wilson_interval(k, n, confidence), WILSON, n)


def prediction_intervals(
    labels: np.ndarray,
    preds: np.ndarray,
    probs: np.ndarray | None,
    num_classes: int,
    positive: int | None,
    point: dict[str, float | None],
    rs: Resampler,
    confidence: float = CONFIDENCE,
) -> dict[str, dict[str, Any]]:
    """95 % intervals of accuracy, balanced accuracy, sensitivity, specificity and AUROC.

    Conventions match :func:`medrobust.metrics.sensitivity_specificity`: binary tasks (or a
    declared positive class) use one positive class; multi-class tasks without one average
    one-vs-rest sensitivity and specificity over the classes present (macro average).

    Args:
        labels: ``(N,)`` true classes.
        preds: ``(N,)`` predicted classes.
        probs: ``(N, K)`` probabilities (AUROC), or ``None`` to skip AUROC.
        num_classes: K.
        positive: Positive class index (``None``: class 1 of a binary task, else macro).
        point: The point estimates (``accuracy``, ``balanced_accuracy``, ``sensitivity``,
            ``specificity``, ``auroc``) stored as each interval's ``value``.
        rs: The audit's :class:`Resampler`.
        confidence: Confidence level.

    Returns:
        ``{metric: interval dict}`` (see :func:`interval`).
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(preds, dtype=np.int64)
    n = int(y.size)
    boot = {"n_boot": rs.n_boot, **({"n_clusters": rs.n_clusters} if rs.clustered else {})}
    correct = p == y
    ones = np.ones(n, dtype=bool)
    out = {"accuracy": _boot_or_wilson(rs, correct, ones, point.get("accuracy"), confidence)}

    present = [c for c in range(num_classes) if (y == c).any()]
    strata = rs.class_weights(y)
    recalls = [rs.ratio((y == c) & correct, y == c, strata) for c in present]
    ba = _mean_rows(recalls) if recalls else np.full(rs.n_boot, np.nan)
    out["balanced_accuracy"] = interval(
        point.get("balanced_accuracy"), rs.percentile(ba, confidence), rs.method, n, **boot
    )

    pos = 1 if positive is None and num_classes == 2 else positive
    if pos is not None:
        is_pos = y == pos
        out["sensitivity"] = _boot_or_wilson(rs, p == pos, is_pos, point.get("sensitivity"), confidence)
        out["specificity"] = _boot_or_wilson(rs, p != pos, ~is_pos, point.get("specificity"), confidence)
    else:
        sens = _mean_rows([rs.ratio((y == c) & (p == c), y == c, strata) for c in present])
        spec = _mean_rows([rs.ratio((y != c) & (p != c), y != c, strata) for c in present])
        for name, est in (("sensitivity", sens), ("specificity", spec)):
            out[name] = interval(
                point.get(name), rs.percentile(est, confidence), rs.method, n, average="macro", **boot
            )

    if probs is not None:
        pr = np.asarray(probs, dtype=np.float64)
        if len(present) < 2 or pr.ndim != 2 or pr.shape[0] != n:
            est = None
        elif pr.shape[1] == 2:
            c = 1 if positive is None else int(positive)
            est = rs.auroc(y == c, pr[:, c])
        else:
            est = _mean_rows([rs.auroc(y == c, pr[:, c]) for c in present])
        ci = None if est is None else rs.percentile(est, confidence)
        out["auroc"] = interval(point.get("auroc"), ci, rs.method, n, **boot)
    return out


def proportion_interval(
    k_mask: np.ndarray, n_mask: np.ndarray, value: float | None, rs: Resampler, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Interval of the proportion ``Σ k_mask / Σ n_mask`` (Wilson, or cluster bootstrap with patients)."""
    return _boot_or_wilson(
        rs, np.asarray(k_mask, dtype=bool), np.asarray(n_mask, dtype=bool), value, confidence
    )


def fmt_interval(entry: Interval | Mapping[str, Any] | None, digits: int = 2) -> str:
    """``0.56 [0.46, 0.66]`` (``—`` when undefined; the value alone when the interval is)."""
    if not entry:
        return "—"
    entry = Interval.from_dict(entry)
    if entry.value is None:
        return "—"
    text = f"{entry.value:.{digits}f}"
    if entry.ci is not None:
        text += f" [{entry.low:.{digits}f}, {entry.high:.{digits}f}]"
    return text


_RESAMPLERS: dict[tuple, Resampler] = {}


def resampler_for(results: AuditDocument | Mapping[str, Any]) -> Resampler:
    """The audit's resampler: its samples (clustered by ``data.clusters``), seeded from its seed.

    Cached per (n, seed, clusters), so every metric and check of one audit uses the same
    resamples.
    """
    from medrobust.run.seeds import derive_seed

    doc = as_document(results)
    n = len(doc.data.labels)
    clusters = cluster_ids(doc.data.clusters)
    seed = derive_seed(int(doc.seed or 0), "bootstrap")
    key = (n, seed, None if clusters is None else clusters.tobytes())
    rs = _RESAMPLERS.get(key)
    if rs is None:
        if len(_RESAMPLERS) >= 4:
            _RESAMPLERS.clear()
        rs = _RESAMPLERS[key] = Resampler(n, clusters, seed=seed)
    return rs


def positive_index(results: AuditDocument | Mapping[str, Any]) -> int | None:
    """Index of the card's positive class (``None``: class 1 of a binary task, macro otherwise)."""
    return as_document(results).data.positive_index


def descriptive_metrics(num_classes: int) -> list[str]:
    """Metrics under attack that untargeted, early-stopping attacks do not aim at (kept out of gates).

    AUROC always (the attacks stop at the first misclassification and never push the score
    ranking; a stronger attack can show a *higher* AUROC); specificity for more than two
    classes (an attack on a sample of class j moves it to any wrong class, not towards a false
    alarm of the class whose specificity is measured). Sensitivity is per-class recall, which
    the untargeted attack minimises sample by sample, so it stays a worst-case measure.
    """
    return ["auroc"] if num_classes <= 2 else ["auroc", "specificity"]


def add_intervals(results: AuditDocument) -> None:
    """Add 95 % intervals to every target's clean metrics and every cell, and ``statistics``.

    Sets ``targets[].clean.intervals`` and ``cells[].intervals`` (``{metric: Interval}``; the
    point values stay in ``metrics`` as before), each cell's ``descriptive`` list, and
    ``results.statistics`` describing the methods.
    """
    data = results.data
    labels = np.asarray(data.labels, dtype=np.int64)
    k = len(data.class_names)
    pos = data.positive_index
    rs = resampler_for(results)
    clean_iv: dict[str, dict[str, Interval]] = {}
    for t in results.targets:
        clean = t.clean
        point = {
            "accuracy": clean.accuracy,
            "balanced_accuracy": clean.balanced_accuracy,
            "sensitivity": clean.sensitivity,
            "specificity": clean.specificity,
            "auroc": clean.auroc,
        }
        iv = prediction_intervals(labels, clean.pred, clean.probs, k, pos, point, rs)
        clean.intervals = {name: Interval.from_dict(v) for name, v in iv.items()}
        clean_iv[t.name] = clean.intervals
    descriptive = descriptive_metrics(k)
    for c in results.cells:
        m, s = c.metrics, c.samples
        point = {
            "accuracy": m.robust_accuracy,
            "balanced_accuracy": m.balanced_accuracy,
            "sensitivity": m.sensitivity,
            "specificity": m.specificity,
            "auroc": m.auroc,
        }
        adv = prediction_intervals(labels, s.adv_pred, s.adv_probs, k, pos, point, rs)
        civ = clean_iv.get(c.target, {})
        cpred = np.asarray(s.clean_pred, dtype=np.int64)
        correct = cpred == labels
        fooled = np.asarray(s.success, dtype=bool)
        iv = {
            "robust_accuracy": adv["accuracy"],
            "balanced_accuracy": adv["balanced_accuracy"],
            "sensitivity": adv["sensitivity"],
            "specificity": adv["specificity"],
            "success_rate": proportion_interval(fooled, correct, m.success_rate, rs),
        }
        if "auroc" in adv:
            iv["auroc"] = adv["auroc"]
        intervals = {name: Interval.from_dict(v) for name, v in iv.items()}
        for name in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "auroc"):
            if name in civ:
                intervals[f"clean_{name}"] = civ[name]
        for name in descriptive:
            if name in intervals:
                intervals[name] = Interval.from_dict({**intervals[name].to_dict(), "descriptive": True})
        c.intervals = intervals
        c.descriptive = list(descriptive)
    results.statistics = statistics_note(results, rs)


def statistics_note(results: AuditDocument, rs: Resampler) -> Statistics:
    """What ``results.statistics`` says about the intervals (methods, resamples, sample sizes)."""
    n = len(results.data.labels)
    names = results.data.class_names
    k = len(names)
    pos = results.data.positive_index
    if k == 2 or pos is not None:
        positive = names[1 if pos is None else pos]
        averaging = (
            f"sensitivity and specificity are those of the positive class {positive!r} "
            "(one-vs-rest for more than two classes)"
        )
    else:
        averaging = (
            f"sensitivity and specificity are macro averages over the {k} classes, each class "
            "one-vs-rest (unweighted mean over the classes present)"
        )
    return Statistics(
        confidence=CONFIDENCE,
        proportions=CLUSTER_BOOTSTRAP if rs.clustered else WILSON,
        other=rs.method,
        n_boot=rs.n_boot,
        clustered=rs.clustered,
        n_clusters=rs.n_clusters if rs.clustered else None,
        n=n,
        half_width=wilson_half_width(n) if n else None,
        samples_needed={f"{h:g}": samples_for_half_width(h) for h in (0.10, 0.05, 0.03)},
        averaging=averaging,
        descriptive=descriptive_metrics(k),
    )
