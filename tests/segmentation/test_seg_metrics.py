"""Segmentation metrics: Dice and HD95 conventions, lesion detection, changed predictions, intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medrobust.errors import ConfigError
from medrobust.metrics_segmentation import (
    changed_pixels,
    dice_per_class,
    hd95_per_class,
    lesion_detection,
    prediction_changed,
    segmentation_summary,
)


def _square(size, y0, y1, x0, x1, value=1):
    m = np.zeros((size, size), dtype=np.int64)
    m[y0:y1, x0:x1] = value
    return m


def test_dice_conventions():
    truth = np.stack([_square(16, 2, 6, 2, 6), np.zeros((16, 16), np.int64), _square(16, 2, 6, 2, 6)])
    pred = np.stack([_square(16, 2, 6, 2, 6), _square(16, 8, 10, 8, 10), _square(16, 2, 6, 4, 8)])
    d = dice_per_class(pred, truth, 2)
    assert d[0, 1] == pytest.approx(1.0)
    assert d[1, 1] == 0.0  # a hallucinated structure scores 0
    assert d[2, 1] == pytest.approx(0.5)  # 8 of 16 pixels shared
    empty = dice_per_class(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), 2)
    assert math.isnan(empty[0, 1]) and empty[0, 0] == 1.0


def test_hd95_is_zero_on_equal_masks_the_shift_when_shifted_and_the_diagonal_when_missed():
    truth = _square(16, 4, 10, 4, 10)[None]
    assert hd95_per_class(truth, truth, 2)[0, 1] == 0.0
    shifted = _square(16, 4, 10, 6, 12)[None]
    assert hd95_per_class(shifted, truth, 2)[0, 1] == pytest.approx(2.0)
    missed = hd95_per_class(np.zeros_like(truth), truth, 2)[0, 1]
    assert missed == pytest.approx(math.hypot(16, 16))
    assert hd95_per_class(shifted, truth, 2, spacing=(0.5, 0.5))[0, 1] == pytest.approx(1.0)


def test_lesion_detection_counts_each_component():
    truth = _square(32, 2, 8, 2, 8, 2) + _square(32, 20, 26, 20, 26, 2) + _square(32, 12, 16, 2, 30, 1)
    pred = _square(32, 2, 8, 3, 8, 2)  # finds the first lesion only; the organ (1) is not a lesion
    n, hit = lesion_detection(pred[None], truth[None], [2], 3)
    assert n.tolist() == [2] and hit.tolist() == [1]
    n, hit = lesion_detection(pred[None], truth[None], [2], 3, threshold=0.95)
    assert hit.tolist() == [0]  # Dice 10/11 < 0.95
    with pytest.raises(
        ConfigError, match=r"'threshold' parameter of lesion_detection must be a float in \[0, 1\]"
    ):
        lesion_detection(pred[None], truth[None], [2], 3, threshold=2)


def test_changed_predictions():
    a = np.zeros((2, 4, 4), np.int64)
    b = a.copy()
    b[1, 0, :2] = 1
    assert changed_pixels(a, b).tolist() == [0.0, 0.125]
    assert prediction_changed(a, b).tolist() == [False, True]
    assert prediction_changed(a, b, min_changed=0.2).tolist() == [False, False]
    with pytest.raises(ConfigError, match="same shape"):
        changed_pixels(a, b[:, :2])


def test_summary_holds_intervals_and_per_image_outcomes():
    rng = np.random.default_rng(0)
    truth = np.stack([_square(16, 2, 8, 2, 8) for _ in range(12)])
    truth[:6, 12:15, 12:15] = 1  # half the images hold a second lesion
    clean = truth.copy()
    adv = truth.copy()
    adv[rng.permutation(12)[:5]] = 0  # five images lose everything
    s = segmentation_summary(truth, adv, ["background", "lesion"], ["lesion"], clean_pred=clean, seed=1)
    assert s["n"] == 12
    assert s["dice"]["lesion"]["value"] == pytest.approx(7 / 12)
    lo, hi = s["dice"]["lesion"]["ci"]
    assert lo < 7 / 12 < hi and s["dice"]["lesion"]["method"] == "bootstrap"
    assert s["detection"]["method"] == "cluster-bootstrap" and s["detection"]["n"] == 18
    assert s["changed"]["value"] == pytest.approx(5 / 12) and s["changed"]["method"] == "wilson"
    assert len(s["per_image"]["dice"]) == 12 and len(s["per_image"]["changed_pixels"]) == 12
    assert s["hd95"]["lesion"]["value"] > 0
    with pytest.raises(ConfigError, match=r"label values outside 0\.\.1"):
        segmentation_summary(truth, adv + 1, ["background", "lesion"])
