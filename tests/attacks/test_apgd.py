"""APGD-CE and APGD-T: K = 2, 3, 10, L∞ and L2, any bounds, losses, strength on trained models."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import create_attack
from medrobust.attacks._losses import dlr_targeted, margin_targeted, targeted_loss
from medrobust.errors import ConfigError


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize(("classes", "bounds"), [(2, (0.0, 1.0)), (3, (-1.0, 2.0)), (10, (-1024.0, 3071.0))])
def test_runs_and_respects_budget(name, norm, classes, bounds, make_model, make_images) -> None:
    model = make_model(1, classes, bounds)
    images, labels = make_images(model, n=5, size=16)
    width = bounds[1] - bounds[0]
    eps = 0.05 * width if norm == "linf" else 0.5 * width
    res = create_attack(name, model, eps=eps, norm=norm, steps=5)(images, labels)
    assert res.adv.min() >= bounds[0] and res.adv.max() <= bounds[1]
    tol = 1e-6 * max(1.0, abs(bounds[0]), abs(bounds[1]))
    assert (res.linf if norm == "linf" else res.l2).max() <= eps * (1 + 1e-5) + 16 * tol
    with torch.no_grad():
        assert torch.equal(res.success, model(res.adv).argmax(1) != labels)
    # 1 clean + 1 start + <= steps + 1 final per run (+1 target selection per APGD-T target).
    per_run = 5 + 1 + (1 if name == "apgd-t" else 0)
    runs = min(9, classes - 1) if name == "apgd-t" else 1
    assert (res.queries >= 3).all() and (res.queries <= 2 + runs * per_run).all()


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t"])
def test_deterministic_and_seed_dependent(name, make_model, make_images) -> None:
    model = make_model(3, 4, (0.0, 1.0))
    images, labels = make_images(model, n=4, size=16)
    runs = [create_attack(name, model, eps=0.01, steps=4, seed=s)(images, labels).adv for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])  # the random start comes from the seed


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t"])
@pytest.mark.parametrize("fixture", ["trained_binary", "trained_4class"])
def test_lowers_accuracy_of_trained_model(name, fixture, request) -> None:
    tr = request.getfixturevalue(fixture)
    assert tr.clean_accuracy >= 0.9
    res = create_attack(name, tr.model, eps=0.1, steps=20)(tr.images, tr.labels)
    assert 1 - res.success.float().mean().item() < 0.25
    # Fooled samples stop early: far fewer forward passes than the full schedule.
    assert res.queries.float().median() < 20


def test_l2_lowers_accuracy(trained_binary) -> None:
    tr = trained_binary
    res = create_attack("apgd-ce", tr.model, eps=2.0, norm="l2", steps=20)(tr.images, tr.labels)
    assert res.success.float().mean() > 0.75
    assert res.l2.max() <= 2.0 * (1 + 1e-5)


def test_targeted_loss_choice_and_notes(make_model, make_images) -> None:
    assert targeted_loss(3)[0] == "margin-targeted" and targeted_loss(4)[0] == "dlr-targeted"
    for classes, expected in ((3, "margin-targeted"), (4, "dlr-targeted")):
        model = make_model(1, classes, (0.0, 1.0))
        images, labels = make_images(model, n=3)
        res = create_attack("apgd-t", model, eps=0.01, steps=2)(images, labels)
        assert res.info["loss"] == expected
        assert res.info["n_target_classes"] == min(9, classes - 1)
        assert ("notes" in res.info) == (classes < 4)


def test_loss_formulas() -> None:
    logits = torch.tensor([[4.0, 1.0, 3.0, 0.0, -2.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    # sorted: 4, 3, 1, 0 -> scale = 4 - (1 + 0) / 2
    assert torch.allclose(dlr_targeted(logits, y, t), torch.tensor([(3.0 - 4.0) / 3.5]))
    assert torch.allclose(margin_targeted(logits, y, t), torch.tensor([-1.0]))


def test_invalid_parameters(make_model) -> None:
    model = make_model(1, 2, (0.0, 1.0))
    with pytest.raises(ConfigError, match="'norm'"):
        create_attack("apgd-ce", model, norm="l1")
    with pytest.raises(ConfigError, match="'eps'"):
        create_attack("apgd-ce", model, eps=1.5)  # larger than the bounds' width
    with pytest.raises(ConfigError, match="'rho'"):
        create_attack("apgd-ce", model, rho=2.0)
    with pytest.raises(ConfigError, match="'n_target_classes'"):
        create_attack("apgd-t", model, n_target_classes=0)
    with pytest.raises(ConfigError, match="'restarts'"):
        create_attack("apgd-t", model, restarts=0)
