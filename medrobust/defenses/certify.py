"""Certified robustness from Monte-Carlo counts (Cohen, Rosenfeld & Kolter 2019): the statistics, no torch.

Randomized smoothing turns a base classifier ``f`` into ``g(x) = argmax_c P(f(x + δ) = c)`` with
``δ ~ N(0, σ² I)``; if the top class has probability at least ``p_A > 1/2``, ``g`` is constant
inside the L2 ball of radius ``σ Φ⁻¹(p_A)`` around ``x``. ``p_A`` is only known from samples, so:

* :func:`certify_counts` is CERTIFY: the class guessed from ``n0`` selection counts, a one-sided
  Clopper–Pearson lower bound ``p_A`` at level ``α`` from ``n`` *separate* estimation counts, the
  radius ``σ Φ⁻¹(p_A)``, abstention when ``p_A ≤ 1/2``;
* :func:`predict_counts` is PREDICT: the top class unless a two-sided binomial test of the top two
  counts is not significant at ``α`` (abstain), so ``g``'s prediction is wrong with probability
  at most ``α``;
* :func:`certified_accuracy`: the share of samples predicted correctly *and* certified at
  radius ≥ r (abstentions count as errors), with exact (Clopper–Pearson) intervals.

Sampling (batched noise through the denoiser and the classifier) is in
:mod:`medrobust.defenses.smoothing`; this module only does arithmetic on counts, so it is cheap to
import and to test against an independent computation. scipy is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from medrobust.errors import ConfigError
from medrobust.validation import check_float, check_int

#: The prediction recorded for an abstention.
ABSTAIN = -1


@dataclass(frozen=True)
class Certificate:
    """One sample's CERTIFY outcome.

    Attributes:
        prediction: The smoothed classifier's class, or :data:`ABSTAIN`.
        radius: Certified L2 radius in image units (0.0 when abstaining).
        p_lower: One-sided lower confidence bound of the top class's probability.
        count: Estimation counts of the selected class.
        n: Estimation samples.
    """

    prediction: int
    radius: float
    p_lower: float
    count: int
    n: int

    @property
    def abstained(self) -> bool:
        """True when the smoothed classifier abstains on this sample."""
        return self.prediction == ABSTAIN

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (plus ``abstained``)."""
        return {**asdict(self), "abstained": self.abstained}


def _alpha(alpha: Any, owner: str, high: float = 0.5) -> float:
    # CERTIFY's one-sided bound is the two-sided one at 2 alpha: alpha < 1/2; a test level < 1.
    return check_float(alpha, "alpha", owner, low=0.0, high=high, high_inclusive=False)


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Two-sided exact (Clopper–Pearson) ``1 - alpha`` interval of a binomial proportion ``k / n``."""
    from scipy.stats import binomtest

    if n == 0:
        return (0.0, 1.0)
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=1.0 - alpha, method="exact")
    return (float(ci.low), float(ci.high))


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` lower Clopper–Pearson bound of ``k / n`` (two-sided bound at ``2 alpha``)."""
    return clopper_pearson(k, n, 2.0 * alpha)[0]


def certify_counts(
    counts0: Sequence[int], counts: Sequence[int], sigma: float, alpha: float = 0.001
) -> Certificate:
    """CERTIFY from counts: ``counts0`` (``n0`` selection samples) choose the class, ``counts`` bound it.

    Args:
        counts0: Per-class counts of the base classifier's predictions on the selection noise.
        counts: Per-class counts on ``n`` independent estimation samples.
        sigma: Noise standard deviation (image units).
        alpha: The certificate is wrong with probability at most ``alpha``.

    Returns:
        The :class:`Certificate`: radius ``sigma * Φ⁻¹(p_lower)``, or an abstention when
        ``p_lower ≤ 1/2``.
    """
    from scipy.stats import norm

    owner = "certify"
    alpha = _alpha(alpha, owner)
    sigma = check_float(sigma, "sigma", owner, low=0.0)
    if len(counts0) != len(counts) or len(counts) < 2:
        raise ConfigError(
            f"certify needs selection and estimation counts over the same K >= 2 classes. "
            f"Got {len(counts0)} and {len(counts)} classes."
        )
    top = max(range(len(counts0)), key=lambda c: (counts0[c], -c))  # ties: the lowest class index
    n = int(sum(counts))
    k = int(counts[top])
    p_lower = lower_confidence_bound(k, n, alpha)
    if p_lower <= 0.5:
        return Certificate(ABSTAIN, 0.0, p_lower, k, n)
    return Certificate(int(top), float(sigma * norm.ppf(p_lower)), p_lower, k, n)


def predict_counts(counts: Sequence[int], alpha: float = 0.001) -> int:
    """PREDICT from counts: the top class, or :data:`ABSTAIN` when the top two differ by chance at ``alpha``.

    The two-sided binomial test of ``n_A`` successes in ``n_A + n_B`` trials against p = 1/2
    (Hung et al. 2019, as in Cohen et al.'s PREDICT); tied counts always abstain.
    """
    from scipy.stats import binomtest

    alpha = _alpha(alpha, "predict", high=1.0)
    if len(counts) < 2:
        raise ConfigError(f"predict needs counts over K >= 2 classes. Got {len(counts)}.")
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    n_a, n_b = int(counts[order[0]]), int(counts[order[1]])
    if n_a == n_b or binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
        return ABSTAIN
    return int(order[0])


def certified_accuracy(
    predictions: Sequence[int],
    radii: Sequence[float],
    labels: Sequence[int],
    at: Sequence[float],
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """Certified accuracy at each radius of ``at``, with exact intervals.

    A sample counts at radius ``r`` when its prediction is its label (not an abstention) and its
    certified radius is at least ``r`` (Cohen et al.'s definition; ``r = 0`` is the smoothed
    classifier's clean accuracy with abstentions as errors).

    Returns:
        One row per radius: ``radius``, ``accuracy``, ``ci_low``, ``ci_high``, ``certified``
        (count), ``n``, ``abstained`` (count).
    """
    owner = "certified_accuracy"
    if not (len(predictions) == len(radii) == len(labels)):
        raise ConfigError(
            f"{owner} needs one prediction, radius and label per sample. "
            f"Got {len(predictions)}, {len(radii)} and {len(labels)}."
        )
    confidence = check_float(confidence, "confidence", owner, low=0.0, high=1.0, high_inclusive=False)
    n = len(labels)
    abstained = sum(int(p) == ABSTAIN for p in predictions)
    rows = []
    for r in at:
        r = check_float(r, "radius", owner, low=0.0, low_inclusive=True)
        hits = sum(
            int(p) != ABSTAIN and int(p) == int(y) and float(rad) >= r
            for p, rad, y in zip(predictions, radii, labels, strict=True)
        )
        low, high = clopper_pearson(hits, n, 1.0 - confidence)
        rows.append(
            {
                "radius": r,
                "accuracy": hits / n if n else math.nan,
                "ci_low": low,
                "ci_high": high,
                "certified": hits,
                "n": n,
                "abstained": abstained,
            }
        )
    return rows


def check_counts_settings(n0: Any, n: Any, alpha: Any, owner: str) -> tuple[int, int, float]:
    """Validate CERTIFY's ``n0``, ``n`` and ``alpha`` (messages name the parameter)."""
    from medrobust.limits import MAX_ATTACK_QUERIES

    return (
        check_int(n0, "n0", owner, low=1, high=MAX_ATTACK_QUERIES),
        check_int(n, "n", owner, low=1, high=MAX_ATTACK_QUERIES),
        _alpha(alpha, owner),
    )
