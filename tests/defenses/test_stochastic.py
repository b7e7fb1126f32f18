"""Randomised denoisers: declared stochastic, seeded streams, generator override, transforms, checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.defenses import create_denoiser, defend, load_denoiser, save_denoiser
from medrobust.defenses.denoisers.randomized import generator_override, is_stochastic
from medrobust.errors import ConfigError
from medrobust.models.card import ModelCard

NAMES = ["noise-injection", "random-resize-pad"]


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
        self.card = ModelCard(in_channels=1, class_names=["a", "b"], bounds=(0.0, 1.0), arch="tiny")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def _x(n: int = 4, bounds: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", NAMES)
def test_declared_stochastic_and_detected_through_defend(name) -> None:
    d = create_denoiser(name, in_channels=1, seed=0)
    assert type(d).stochastic is True and is_stochastic(d)
    assert is_stochastic(defend(Tiny(), d))
    assert not is_stochastic(Tiny()) and not is_stochastic(create_denoiser("median", in_channels=1))


@pytest.mark.parametrize("name", NAMES)
def test_seeded_stream_is_reproducible_and_fresh_per_call(name) -> None:
    x = _x()
    a, b = create_denoiser(name, in_channels=1, seed=3), create_denoiser(name, in_channels=1, seed=3)
    first, second = a(x), a(x)
    assert not torch.equal(first, second)  # a new draw at every call
    assert torch.equal(first, b(x)) and torch.equal(second, b(x))  # same seed, same sequence
    assert not torch.equal(first, create_denoiser(name, in_channels=1, seed=4)(x))
    a.reseed(3)
    assert torch.equal(a(x), first)


@pytest.mark.parametrize("name", NAMES)
def test_unseeded_uses_the_global_rng(name) -> None:
    d, x = create_denoiser(name, in_channels=1), _x()
    torch.manual_seed(11)
    first = d(x)
    torch.manual_seed(11)
    assert torch.equal(d(x), first)


@pytest.mark.parametrize("name", NAMES)
def test_generator_override_routes_draws_and_restores(name) -> None:
    d, x = create_denoiser(name, in_channels=1, seed=0), _x()
    model = defend(Tiny(), d)
    with generator_override(model, torch.Generator().manual_seed(5)):
        a = d(x)
    with generator_override(model, torch.Generator().manual_seed(5)):
        b = d(x)
    assert torch.equal(a, b)
    assert torch.equal(d(x), create_denoiser(name, in_channels=1, seed=0)(x))  # own stream untouched


def test_noise_injection_statistics_and_unit_of_sigma() -> None:
    x = torch.full((64, 1, 16, 16), 0.5)
    d = create_denoiser("noise-injection", in_channels=1, sigma=0.05, seed=0)
    noise = d(x) - x
    assert abs(noise.mean().item()) < 0.005 and abs(noise.std().item() - 0.05) < 0.003
    hu = create_denoiser("noise-injection", in_channels=1, bounds=(-1000.0, 400.0), sigma="25/255", seed=0)
    assert hu.sigma == pytest.approx(25 / 255 * 1400)
    y = hu(_x(bounds=(-1000.0, 400.0)))
    assert y.min() >= -1000.0 and y.max() <= 400.0
    with pytest.raises(ConfigError, match="'sigma'"):
        create_denoiser("noise-injection", in_channels=1, sigma=-0.1)
    with pytest.raises(ConfigError, match="'clip'"):
        create_denoiser("noise-injection", in_channels=1, clip="yes")


def test_random_resize_pad_shrinks_pads_and_keeps_identity_at_scale_one() -> None:
    x = 0.2 + 0.8 * _x(8)
    same = create_denoiser("random-resize-pad", in_channels=1, scale_min=1.0, seed=0)
    torch.testing.assert_close(same(x), x, atol=1e-5, rtol=0)
    d = create_denoiser("random-resize-pad", in_channels=1, scale_min=0.5, scale_max=0.5, seed=0)
    y = d(x)
    assert y.shape == x.shape
    # A half-size image leaves at least half of each row and column as low-bound padding.
    assert ((y == 0.0).float().mean(dim=(1, 2, 3)) >= 0.5).all()
    with pytest.raises(ConfigError, match="'scale_max'"):
        create_denoiser("random-resize-pad", in_channels=1, scale_min=0.9, scale_max=0.8)


def test_gradients_flow_through_the_random_transforms() -> None:
    for name in NAMES:
        x = _x().requires_grad_(True)
        create_denoiser(name, in_channels=1, seed=0)(x).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_wrapper_around_a_trained_dae_round_trips_a_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    dae = create_denoiser("dae", in_channels=1, width=4, depth=1)
    d = create_denoiser("noise-injection", in_channels=1, sigma=0.25, inner=dae, seed=7).eval()
    assert d.config()["inner"] == "dae" and d.config()["inner_params"]["width"] == 4
    save_denoiser(d, tmp_path / "ni")
    again = load_denoiser(tmp_path / "ni")
    assert is_stochastic(again) and again.seed == 7
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(again(x), d.reseed(7) or d(x))
    with pytest.raises(ConfigError, match="'inner_params'"):
        create_denoiser("noise-injection", in_channels=1, inner_params={"width": 4})
