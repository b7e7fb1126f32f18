"""run_suite: clean predictions once, only still-robust points go to the next attack."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import create_attack
from medrobust.attacks.suite import run_suite
from medrobust.errors import ConfigError


def test_suite_early_stops_and_tracks_first_attacker(trained_4class) -> None:
    t = trained_4class
    labels = t.labels.clone()
    labels[0] = (labels[0] + 1) % 4  # one clean-misclassified point: never attacked
    weak = create_attack("fgsm", t.model, eps=0.03)
    strong = create_attack("pgd", t.model, eps=0.12, steps=10)
    res = run_suite(t.model, [weak, strong], t.images, labels, batch_size=5)

    assert res.attack_names == ["fgsm", "pgd"]
    assert not res.clean_correct[0] and not res.success[0] and res.fooled_by[0] == -1
    acc = res.robust_accuracy
    assert acc["clean"] >= acc["fgsm"] >= acc["pgd"]
    assert acc["pgd"] < acc["fgsm"]  # the second attack fooled more points
    assert acc["pgd"] == pytest.approx(res.robust.float().mean().item())
    # success means the model is fooled by the stored adversarial
    with torch.no_grad():
        pred = t.model(res.adv).argmax(1)
    assert torch.equal(res.success, res.clean_correct & (pred != labels))
    # the first attack's successes are exactly what FGSM alone does on clean-correct points
    alone = weak(t.images, labels)
    by_fgsm = res.fooled_by == 0
    assert torch.equal(by_fgsm, alone.success & res.clean_correct)
    assert torch.equal(res.adv[by_fgsm], alone.adv[by_fgsm])
    assert (res.linf[res.success] <= 0.12 + 1e-6).all() and (res.l2[~res.success] == 0).all()
    assert (res.queries[~res.clean_correct] == 0).all()


def test_suite_hands_only_robust_points_on(trained_4class, monkeypatch) -> None:
    t = trained_4class
    first = create_attack("pgd", t.model, eps=0.06, steps=5)
    second = create_attack("deepfool", t.model)
    seen: dict[str, list[int]] = {"pgd": [], "deepfool": []}
    original = type(first).__call__

    def spy(self, images, labels):
        seen[self.name].append(images.shape[0])
        return original(self, images, labels)

    monkeypatch.setattr(type(first), "__call__", spy)
    monkeypatch.setattr(type(second), "__call__", spy)
    res = run_suite(t.model, [first, second], t.images, t.labels, batch_size=4)
    n_correct = int(res.clean_correct.sum())
    n_after_first = int((res.clean_correct & (res.fooled_by != 0)).sum())
    assert sum(seen["pgd"]) == n_correct and max(seen["pgd"]) <= 4
    assert sum(seen["deepfool"]) == n_after_first < n_correct
    assert res.robust_accuracy["deepfool"] == 0.0


def test_suite_batch_size_does_not_change_deterministic_results(trained_4class) -> None:
    t = trained_4class
    atk = create_attack("deepfool", t.model)
    a = run_suite(t.model, [atk], t.images, t.labels, batch_size=3)
    b = run_suite(t.model, [atk], t.images, t.labels, batch_size=64)
    assert torch.allclose(a.adv, b.adv, atol=1e-5) and torch.equal(a.success, b.success)


def test_suite_validates(trained_4class, make_model) -> None:
    t = trained_4class
    with pytest.raises(ConfigError, match="at least one"):
        run_suite(t.model, [], t.images, t.labels)
    other = create_attack("fgsm", make_model(1, 4), eps=0.1)
    with pytest.raises(ConfigError, match="different model"):
        run_suite(t.model, [other], t.images, t.labels)
    with pytest.raises(ConfigError, match="'batch_size'"):
        run_suite(t.model, [create_attack("fgsm", t.model, eps=0.1)], t.images, t.labels, batch_size=0)
