"""EOT-PGD, APGD with EOT and AutoAttack's rand version on randomised targets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.attacks import create_attack
from medrobust.attacks._eot import eot_logits, eot_loss_and_grad
from medrobust.attacks.apgd_dlr import dlr_loss
from medrobust.defenses import create_denoiser, defend
from medrobust.errors import ConfigError
from medrobust.models.card import ModelCard


class Asymmetry(nn.Module):
    """A tiny classifier: "asymmetric" when the left and right halves' mean intensities differ by > tau.

    Behind Gaussian noise the sign of the left-right difference of a near-symmetric image is a
    coin flip per draw, so one draw's gradient points either way; its expectation does not.
    """

    def __init__(self, tau: float) -> None:
        super().__init__()
        self.tau = tau
        self.card = ModelCard(
            in_channels=1, class_names=["symmetric", "asymmetric"], bounds=(0.0, 1.0), arch="t"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1] // 2
        d = x[..., :w].mean(dim=(1, 2, 3)) - x[..., w:].mean(dim=(1, 2, 3))
        z = 20 * (d.abs() - self.tau)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def _symmetric(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.05 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)
    return (x + x.flip(-1)) / 2, torch.zeros(n, dtype=torch.long)


def _noisy_asymmetry(sigma: float = 0.4, seed: int = 0) -> nn.Module:
    # Noise on the left-right difference of an 8x8 image: s = sigma / 4; tau = 2.5 s keeps it accurate.
    noise = create_denoiser("noise-injection", in_channels=1, sigma=sigma, seed=seed)
    return defend(Asymmetry(tau=2.5 * sigma / 4), noise).eval()


def _fooling_rate(model: nn.Module, adv: torch.Tensor, labels: torch.Tensor, draws: int = 64) -> float:
    with torch.no_grad():
        return torch.stack([(model(adv).argmax(1) != labels).float() for _ in range(draws)]).mean().item()


def test_eot_pgd_beats_pgd_on_a_noise_injection_defense() -> None:
    model = _noisy_asymmetry()
    x, y = _symmetric(128)
    assert _fooling_rate(model, x, y) < 0.02  # accurate under its own noise
    pgd = create_attack("pgd", model, eps=0.15, steps=20, seed=0)(x, y)
    eot = create_attack("eot-pgd", model, eps=0.15, steps=20, n_eot=20, seed=0)(x, y)
    assert eot.linf.max() <= 0.15 + 1e-6 and eot.info["n_eot"] == 20 and eot.info["stochastic_target"]
    # 128 images x 64 draws each: measured 0.42 vs 0.29-0.32 (seeds 0, 1).
    assert _fooling_rate(model, eot.adv, y) >= _fooling_rate(model, pgd.adv, y) + 0.05


def test_eot_pgd_is_reproducible_whatever_the_models_own_stream() -> None:
    model = _noisy_asymmetry()
    x, y = _symmetric(8)
    a = create_attack("eot-pgd", model, eps=0.1, steps=3, n_eot=4, seed=2)(x, y)
    model(x)  # advance the defense's own stream: the attack draws from its generator instead
    b = create_attack("eot-pgd", model, eps=0.1, steps=3, n_eot=4, seed=2)(x, y)
    assert torch.equal(a.adv, b.adv)
    assert (a.queries == 1 + 4 * (3 + 1)).all()


def test_eot_pgd_l2_and_deterministic_model(make_model, make_images) -> None:
    model = make_model(1, 3, (0.0, 1.0))
    x, y = make_images(model, n=4, size=16)
    res = create_attack("eot-pgd", model, eps=0.5, norm="l2", steps=3, n_eot=2)(x, y)
    assert res.l2.max() <= 0.5 * (1 + 1e-5) and res.info["stochastic_target"] is False
    with pytest.raises(ConfigError, match="'n_eot'"):
        create_attack("eot-pgd", model, n_eot=0)


def test_eot_mean_equals_single_draw_on_a_deterministic_model_and_batches(make_model, make_images) -> None:
    model = make_model(1, 2, (0.0, 1.0))
    x, y = make_images(model, n=3, size=16)

    def loss(z: torch.Tensor, lab: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        return nn.functional.cross_entropy(z, lab, reduction="none")

    one = eot_loss_and_grad(model, x, y, None, loss, 1)
    many = eot_loss_and_grad(model, x, y, None, loss, 5, max_batch=6)  # 2 replicas per pass, 3 passes
    for a, b in zip(one, many, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(eot_logits(model, x, 4, max_batch=3), one[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t", "apgd-dlr"])
def test_apgd_with_eot_runs_on_a_stochastic_model(name) -> None:
    model = _noisy_asymmetry()
    x, y = _symmetric(6)
    res = create_attack(name, model, eps=0.15, steps=4, eot_iter=3, seed=0)(x, y)
    assert res.info["eot_iter"] == 3 and res.linf.max() <= 0.15 + 1e-6
    # 3 draws for the clean check, 3 per iterate (start + <= 4 steps), 1 success forward (+1 target choice).
    assert (res.queries >= 7).all() and (res.queries <= 3 + 3 * 5 + 2).all()
    again = create_attack(name, model, eps=0.15, steps=4, eot_iter=3, seed=0)(x, y)
    assert torch.equal(res.adv, again.adv)


def test_apgd_dlr_loss_and_binary_substitute(make_model, make_images) -> None:
    logits = torch.tensor([[4.0, 1.0, 3.0, 0.0]])
    # -(z_y - max_other) / (z_pi1 - z_pi3) with y = 0: -(4 - 3) / (4 - 1)
    assert torch.allclose(dlr_loss(logits, torch.tensor([0])), torch.tensor([-1.0 / 3.0]))
    model = make_model(1, 2, (0.0, 1.0))
    x, y = make_images(model, n=3)
    res = create_attack("apgd-dlr", model, eps=0.01, steps=2)(x, y)
    assert res.info["loss"] == "margin" and "notes" in res.info


def test_autoattack_rand_version_selects_apgd_with_eot(make_model) -> None:
    model = make_model(1, 3, (0.0, 1.0))
    aa = create_attack("autoattack", model, version="rand")
    assert [(label, atk.eot_iter) for label, atk in aa.components] == [("apgd-ce", 20), ("apgd-dlr", 20)]
    assert aa.uses_eot and not create_attack("autoattack", model).uses_eot
    fewer = create_attack("autoattack", model, version="rand", eot_iter=2, steps=3)
    assert [atk.eot_iter for _, atk in fewer.components] == [2, 2]
    with pytest.raises(ConfigError, match="'eot_iter'"):
        create_attack("autoattack", model, version="standard", eot_iter=2)


def test_autoattack_notes_a_stochastic_target_without_eot() -> None:
    model = _noisy_asymmetry()
    x, y = _symmetric(4)
    res = create_attack("autoattack", model, eps=0.05, version="fast", steps=2)(x, y)
    assert any("without EOT" in note for note in res.info["notes"])
    rand = create_attack("autoattack", model, eps=0.05, version="rand", steps=2, eot_iter=2)(x, y)
    assert not any("without EOT" in note for note in rand.info.get("notes", []))


def test_every_attack_draws_a_randomised_target_from_its_own_seed():
    """Plain PGD on a stochastic model: same seed, same result (its noise comes from the attack's seed)."""
    from medrobust.models import build_classifier

    card = ModelCard(in_channels=1, class_names=["a", "b"], spatial_size=(16, 16))
    torch.manual_seed(0)
    clf = build_classifier("small_cnn", card, width=4, depth=2).eval()
    target = defend(clf, create_denoiser("noise-injection", in_channels=1, sigma=0.2)).eval()
    x = torch.rand(6, 1, 16, 16)
    y = torch.randint(0, 2, (6,))
    runs = []
    for _ in range(2):
        torch.manual_seed(123 + len(runs))  # the global stream differs between the runs
        res = create_attack("pgd", target, eps=8 / 255, steps=3, seed=7)(x, y)
        runs.append(res.adv)
        assert res.info["query_model"] == "model as given (randomised)"
    assert torch.equal(runs[0], runs[1])
