"""FAB-T: the box-constrained hyperplane projection, K = 2, 3, 10, budgets, trained models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from medrobust.attacks import create_attack
from medrobust.attacks.fab import project_on_hyperplane


def _instances(n: int, dim: int, bounds: tuple[float, float], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    low, high = bounds
    t = low + (high - low) * torch.rand(n, dim, generator=gen, dtype=torch.float64)
    w = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    w[::4, :2] = 0.0  # some coordinates the plane ignores
    inside = low + (high - low) * torch.rand(n, dim, generator=gen, dtype=torch.float64)
    return t, w, (w * inside).sum(1)  # planes through a box point: always reachable


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 2.0)])
def test_projection_lands_on_plane_inside_box(norm, bounds) -> None:
    t, w, b = _instances(64, 12, bounds)
    d = project_on_hyperplane(t, w, b, norm, bounds)
    z = t + d
    assert torch.allclose((w * z).sum(1), b, atol=1e-9)
    assert z.min() >= bounds[0] - 1e-12 and z.max() <= bounds[1] + 1e-12


def test_linf_projection_is_minimal() -> None:
    bounds = (-1.0, 2.0)
    t, w, b = _instances(24, 6, bounds, seed=3)
    d = project_on_hyperplane(t, w, b, "linf", bounds)
    for i in range(t.shape[0]):
        tn, wn, dim = t[i].numpy(), w[i].numpy(), t.shape[1]
        rows = [np.r_[np.eye(dim)[j], -1.0] for j in range(dim)] + [
            np.r_[-np.eye(dim)[j], -1.0] for j in range(dim)
        ]
        lp = linprog(
            np.r_[np.zeros(dim), 1.0],
            A_ub=rows,
            b_ub=np.zeros(2 * dim),
            A_eq=[np.r_[wn, 0.0]],
            b_eq=[float(b[i]) - wn @ tn],
            bounds=[(bounds[0] - tn[j], bounds[1] - tn[j]) for j in range(dim)] + [(0, None)],
        )
        assert lp.success
        assert d[i].abs().max().item() <= lp.fun + 1e-7


def test_l2_projection_is_minimal_without_box() -> None:
    # Far from the box faces the answer is the plain orthogonal projection.
    t = torch.full((3, 5), 0.5, dtype=torch.float64)
    w = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = (w * t).sum(1) + 1e-3
    d = project_on_hyperplane(t, w, b, "l2", (-10.0, 10.0))
    expected = w * ((b - (w * t).sum(1)) / (w * w).sum(1))[:, None]
    assert torch.allclose(d, expected, atol=1e-12)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(("classes", "bounds"), [(2, (0.0, 1.0)), (3, (-1.0, 2.0)), (10, (-1024.0, 3071.0))])
def test_runs_within_budget(norm, classes, bounds, make_model, make_images) -> None:
    model = make_model(1, classes, bounds)
    images, labels = make_images(model, n=4, size=16)
    width = bounds[1] - bounds[0]
    eps = 0.1 * width if norm == "linf" else 1.0 * width
    res = create_attack("fab", model, eps=eps, norm=norm, steps=6, n_target_classes=3)(images, labels)
    tol = 1e-6 * max(1.0, abs(bounds[0]), abs(bounds[1]))
    assert res.adv.min() >= bounds[0] and res.adv.max() <= bounds[1]
    assert (res.linf if norm == "linf" else res.l2).max() <= eps + 16 * tol
    assert res.info["n_target_classes"] == min(3, classes - 1)
    assert len(res.info["min_norm"]) == 4
    with torch.no_grad():
        assert torch.equal(res.success, model(res.adv).argmax(1) != labels)
    # Fooled samples carry their minimal norm; unfooled ones are returned unchanged.
    for i, found in enumerate(res.info["min_norm"]):
        if res.success[i]:
            assert found is not None and found <= eps + 16 * tol
        else:
            assert res.linf[i] == 0


@pytest.mark.parametrize("fixture", ["trained_binary", "trained_4class"])
def test_fab_fools_trained_models_with_small_perturbations(fixture, request) -> None:
    tr = request.getfixturevalue(fixture)
    res = create_attack("fab", tr.model, eps=0.1, steps=30)(tr.images, tr.labels)
    assert res.success.float().mean() >= 0.75
    # Minimal-norm attack: found perturbations are well inside the budget on average.
    found = [v for v in res.info["min_norm"] if v is not None]
    assert len(found) >= 12 and float(np.median(found)) < 0.1
    with torch.no_grad():
        assert not res.success.any() or torch.equal(res.success, tr.model(res.adv).argmax(1) != tr.labels)


def test_small_eps_reports_norms_beyond_budget(trained_binary) -> None:
    tr = trained_binary
    res = create_attack("fab", tr.model, eps=0.001, steps=20)(tr.images, tr.labels)
    assert not res.success.any()
    found = [v for v in res.info["min_norm"] if v is not None]
    assert found and min(found) > 0.001 and all(math.isfinite(v) for v in found)
    assert torch.equal(res.adv, tr.images)


def test_deterministic(make_model, make_images) -> None:
    model = make_model(1, 3, (0.0, 1.0))
    images, labels = make_images(model, n=3)
    a = create_attack("fab", model, eps=0.2, steps=4, restarts=2, seed=3)(images, labels)
    b = create_attack("fab", model, eps=0.2, steps=4, restarts=2, seed=3)(images, labels)
    assert torch.equal(a.adv, b.adv) and a.info["min_norm"] == b.info["min_norm"]
