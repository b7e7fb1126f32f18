"""Square Attack: K = 2, 3, 10, L∞ and L2, any bounds, p schedule, queries, trained models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.attacks import create_attack
from medrobust.attacks.square import _eta, p_selection


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(("classes", "bounds"), [(2, (0.0, 1.0)), (3, (-1.0, 2.0)), (10, (-1024.0, 3071.0))])
def test_runs_within_budget(norm, classes, bounds, make_model, make_images) -> None:
    model = make_model(3, classes, bounds)
    images, labels = make_images(model, n=4, size=16)
    width = bounds[1] - bounds[0]
    eps = 0.05 * width if norm == "linf" else 0.5 * width
    res = create_attack("square", model, eps=eps, norm=norm, queries=30)(images, labels)
    tol = 1e-6 * max(1.0, abs(bounds[0]), abs(bounds[1]))
    assert res.adv.min() >= bounds[0] and res.adv.max() <= bounds[1]
    assert (res.linf if norm == "linf" else res.l2).max() <= eps * (1 + 1e-5) + 16 * tol
    with torch.no_grad():
        assert torch.equal(res.success, model(res.adv).argmax(1) != labels)
    # 1 clean + 1 init + at most `queries` updates + 1 final check.
    assert (res.queries <= 33).all() and (res.queries >= 3).all()


def test_p_schedule() -> None:
    assert p_selection(0.8, 0, 5000, False) == 0.8
    assert p_selection(0.8, 11, 5000, False) == 0.4
    assert p_selection(0.8, 4500, 5000, False) == 0.8 / 128
    assert p_selection(0.8, 9000, 10000, False) == 0.8 / 512
    assert p_selection(0.8, 2500, 5000, True) == 0.8 / 128  # rescaled to 10000


def test_eta_pattern_has_unit_norm_and_opposite_halves() -> None:
    for s in (3, 5, 8):
        e = _eta(s)
        assert abs(e.norm().item() - 1.0) < 1e-6
        assert e[: s // 2].sum() > 0 > e[s // 2 :].sum()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_lowers_accuracy_and_stops_early(norm, trained_binary) -> None:
    tr = trained_binary
    eps = 0.12 if norm == "linf" else 3.0
    res = create_attack("square", tr.model, eps=eps, norm=norm, queries=200)(tr.images, tr.labels)
    assert res.success.float().mean() >= 0.75
    fooled = res.queries[res.success]
    assert fooled.float().median() < 100  # fooled samples stop querying


def test_deterministic_and_seeded(make_model, make_images) -> None:
    model = make_model(1, 3, (0.0, 1.0))
    images, labels = make_images(model, n=3)
    runs = [create_attack("square", model, eps=0.3, queries=10, seed=s)(images, labels) for s in (4, 4, 5)]
    assert runs[0].success.any()
    assert torch.equal(runs[0].adv, runs[1].adv)
    assert not torch.equal(runs[0].adv, runs[2].adv)


def test_volumes_fold_depth_into_channels() -> None:
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 8 * 8, 3))
    images = torch.rand(2, 2, 4, 8, 8, generator=gen)
    with torch.no_grad():
        labels = model(images).argmax(1)
    for norm, eps in (("linf", 0.05), ("l2", 0.5)):
        res = create_attack("square", model, eps=eps, norm=norm, queries=15, bounds=(0, 1))(images, labels)
        assert res.adv.shape == images.shape
        assert (res.linf if norm == "linf" else res.l2).max() <= eps * (1 + 1e-5)
