"""Degenerate-target checks shared by the audit's flags and the training commands.

A *degenerate* target answers without looking at the image: it predicts one class for
everything, or it is no better than chance. Such a target cannot be flipped by any attack,
so its robust accuracy is the share of the class it always predicts, not robustness. The
audit raises error-level flags for it (and fails every gate on it); ``medrobust train
classifier`` / ``train defense`` warn at the end when validation is at chance.

Light to import (NumPy and the standard library only), so the training modules can call
:func:`chance_level_warning` without pulling in the audit.

>>> chance_level_warning([0, 1, 0, 1], [1, 1, 1, 1], 2, "validation")  # doctest: +ELLIPSIS
'validation: the model predicts one class ...'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medrobust.evaluation.statistics import CONFIDENCE, Resampler, wilson_interval

#: Default margin above chance (balanced accuracy 1/K, accuracy = majority-class share).
CHANCE_MARGIN = 0.10


@dataclass(frozen=True)
class ChanceAssessment:
    """How a set of predictions compares with chance.

    Attributes:
        n: Samples.
        classes_present: Classes present among the labels.
        predicted_classes: Distinct predicted classes.
        balanced_accuracy: Point estimate.
        balanced_upper: Upper bound of its 95 % bootstrap interval.
        chance_balanced: ``1 / classes_present``.
        accuracy: Point estimate.
        accuracy_upper: Upper bound of its 95 % Wilson interval.
        chance_accuracy: Share of the most frequent class (what always answering it scores).
        margin: Margin above chance used by :attr:`at_chance` / :attr:`near_chance`.
    """

    n: int
    classes_present: int
    predicted_classes: int
    balanced_accuracy: float
    balanced_upper: float
    chance_balanced: float
    accuracy: float
    accuracy_upper: float
    chance_accuracy: float
    margin: float

    @property
    def constant(self) -> bool:
        """One predicted class for every sample although the labels hold several."""
        return self.n > 1 and self.classes_present > 1 and self.predicted_classes == 1

    @property
    def at_chance(self) -> bool:
        """Confidently near chance: an upper 95 % bound at most ``margin`` above chance."""
        return self.classes_present > 1 and (
            self.balanced_upper <= self.chance_balanced + self.margin + 1e-12
            or self.accuracy_upper <= self.chance_accuracy + self.margin + 1e-12
        )

    @property
    def near_chance(self) -> bool:
        """The point estimate is at most ``margin`` above chance (too few samples to be sure)."""
        return self.classes_present > 1 and (
            self.balanced_accuracy <= self.chance_balanced + self.margin + 1e-12
            or self.accuracy <= self.chance_accuracy + self.margin + 1e-12
        )

    def describe(self) -> str:
        """``balanced accuracy 0.50 (95 % upper bound 0.50; chance 0.50), accuracy ...``."""
        return (
            f"balanced accuracy {self.balanced_accuracy:.3f} (95% upper bound {self.balanced_upper:.3f}; "
            f"chance {self.chance_balanced:.3f}), accuracy {self.accuracy:.3f} (upper bound "
            f"{self.accuracy_upper:.3f}; majority class {self.chance_accuracy:.3f})"
        )


def assess_chance(
    labels: Sequence[int] | np.ndarray,
    preds: Sequence[int] | np.ndarray,
    num_classes: int,
    margin: float = CHANCE_MARGIN,
    resampler: Resampler | None = None,
    seed: int = 0,
) -> ChanceAssessment | None:
    """Compare predictions with chance (``None`` for no samples).

    Args:
        labels: True classes.
        preds: Predicted classes.
        num_classes: Number of classes of the model.
        margin: Margin above chance.
        resampler: Bootstrap weights for the balanced-accuracy interval (default: 1000
            independent resamples seeded with ``seed``).
        seed: Seed of the default resampler.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(preds, dtype=np.int64).reshape(-1)
    n = int(y.size)
    if n == 0:
        return None
    rs = resampler or Resampler(n, seed=seed)
    present = [c for c in range(max(num_classes, int(y.max()) + 1)) if (y == c).any()]
    correct = p == y
    recalls = np.array([correct[y == c].mean() for c in present])
    ba = float(recalls.mean())
    strata = rs.class_weights(y)
    ba_boot = np.vstack([rs.ratio((y == c) & correct, y == c, strata) for c in present]).mean(axis=0)
    ci = rs.percentile(ba_boot)
    acc = float(correct.mean())
    acc_ci = wilson_interval(int(correct.sum()), n, CONFIDENCE)
    majority = float(np.bincount(y).max() / n)
    return ChanceAssessment(
        n=n,
        classes_present=len(present),
        predicted_classes=int(np.unique(p).size),
        balanced_accuracy=ba,
        balanced_upper=ba if ci is None else ci[1],
        chance_balanced=1.0 / max(len(present), 1),
        accuracy=acc,
        accuracy_upper=acc if acc_ci is None else acc_ci[1],
        chance_accuracy=majority,
        margin=float(margin),
    )


def chance_level_warning(
    labels: Sequence[int] | np.ndarray,
    preds: Sequence[int] | np.ndarray,
    num_classes: int,
    what: str = "validation",
    margin: float = CHANCE_MARGIN,
) -> str | None:
    """One-line warning when predictions are constant or at chance, else ``None``.

    For the end of ``medrobust train classifier`` (validation predictions of the final
    model) and ``train defense`` (validation predictions of classifier ∘ denoiser)::

        msg = chance_level_warning(y_val, preds_val, num_classes, "validation")
        if msg:
            log.warning(msg)

    Args:
        labels: Validation labels.
        preds: Predicted classes on them.
        num_classes: Number of classes.
        what: Named at the start of the message (``"validation"``, ``"siamese-dae validation"``).
        margin: Margin above chance (default 10 points).
    """
    a = assess_chance(labels, preds, num_classes, margin)
    if a is None or a.classes_present < 2:
        return None
    if a.constant:
        only = int(np.asarray(preds).reshape(-1)[0])
        return (
            f"{what}: the model predicts one class (index {only}) for all {a.n} images; it is not "
            f"using the image ({a.describe()}). Train longer, lower the learning rate or check the labels."
        )
    if a.at_chance:
        return (
            f"{what}: accuracy is at chance level ({a.describe()}); the model has not learned the task. "
            "Train longer, lower the learning rate or check the labels."
        )
    if a.near_chance:
        return (
            f"{what}: accuracy is within {margin:.0%} of chance ({a.describe()}); with {a.n} images "
            "this may be chance level."
        )
    return None
