import math

import numpy as np
import pytest

from medrobust.metrics import (
    accuracy,
    auroc,
    balanced_accuracy,
    classification_metrics,
    sensitivity_specificity,
)


def test_binary_metrics_known_values():
    labels = np.array([0, 0, 0, 0, 1, 1])
    preds = np.array([0, 0, 0, 1, 1, 0])
    assert accuracy(labels, preds) == pytest.approx(4 / 6)
    assert balanced_accuracy(labels, preds, 2) == pytest.approx((3 / 4 + 1 / 2) / 2)
    sens, spec = sensitivity_specificity(labels, preds, 2, positive=1)
    assert (sens, spec) == (pytest.approx(0.5), pytest.approx(0.75))
    # the positive class may be class 0: roles swap
    sens0, spec0 = sensitivity_specificity(labels, preds, 2, positive=0)
    assert (sens0, spec0) == (pytest.approx(0.75), pytest.approx(0.5))


def test_auroc_binary_and_multiclass():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert auroc(labels, probs) == pytest.approx(0.75)
    assert auroc(labels, probs, positive=0) == pytest.approx(0.75)  # p0 = 1 - p1
    assert auroc(1 - labels, probs[:, ::-1]) == pytest.approx(0.75)
    y3 = np.array([0, 1, 2, 0, 1, 2])
    perfect = np.eye(3)[y3] * 0.8 + 0.2 / 3
    assert auroc(y3, perfect) == pytest.approx(1.0)
    assert math.isnan(auroc(np.array([1, 1]), np.array([[0.2, 0.8], [0.1, 0.9]])))


def test_multiclass_macro_sensitivity_specificity():
    labels = np.array([0, 1, 2, 2])
    preds = np.array([0, 2, 2, 2])
    sens, spec = sensitivity_specificity(labels, preds, 3)
    # per-class recall: 1, 0, 1; per-class specificity: 1, 1, 1/2
    assert sens == pytest.approx(2 / 3)
    assert spec == pytest.approx((1 + 1 + 0.5) / 3)


def test_classification_metrics_from_logits():
    labels = np.array([0, 1, 1, 0])
    logits = np.array([[2.0, -1.0], [0.0, 3.0], [1.0, 0.5], [0.1, 0.0]])
    m = classification_metrics(labels, logits, positive=1)
    assert m["n"] == 4
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == pytest.approx(1.0)
    assert 0.0 <= m["auroc"] <= 1.0
