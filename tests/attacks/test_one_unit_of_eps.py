"""One unit of ε: image units within the card's bounds, "k/255" = k/255 of the range, everywhere."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medrobust.attacks import create_attack
from medrobust.denoising.attacks import create_denoiser_attack
from medrobust.errors import ConfigError
from medrobust.validation import budget_to_image_units

CT = (-1024.0, 3071.0)


class _CTClassifier(nn.Module):
    """A tiny classifier on HU images (normalisation inside the model)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 40.0) / 400.0)


class _CTDenoiser(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.bounds = CT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1 * self.conv(x)


@pytest.mark.parametrize("eps", ["2/255", "8/255", 64.0])
def test_same_eps_gives_the_same_norm_for_classifier_and_denoiser_attacks(eps):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=gen) * 1000.0 - 200.0  # HU inside the bounds
    labels = torch.tensor([0, 1, 0, 1])
    expected = budget_to_image_units(eps, CT)
    if isinstance(eps, str):
        assert expected == pytest.approx(float(eps.split("/")[0]) / 255 * 4095.0)
    clf = create_attack("pgd", _CTClassifier(), bounds=CT, eps=eps, steps=3, seed=1)
    den = create_denoiser_attack("denoise-pgd", _CTDenoiser(), eps=eps, steps=3, seed=1)
    assert clf.eps == pytest.approx(expected) and den.eps == pytest.approx(expected)
    res_c = clf(x, labels)
    res_d = den(x, x)
    # random start + sign steps reach the L∞ ball's surface for every image in both
    assert torch.allclose(res_d.linf, torch.full((4,), expected), rtol=1e-4)
    assert torch.all(res_c.linf <= expected * (1 + 1e-5))
    assert torch.allclose(res_c.linf.max(), torch.tensor(expected), rtol=1e-3)


def test_fraction_means_range_fraction_on_unit_bounds_too():
    assert budget_to_image_units("8/255", (0.0, 1.0)) == pytest.approx(8 / 255)
    assert budget_to_image_units(0.03, (0.0, 1.0)) == pytest.approx(0.03)
    assert budget_to_image_units("8/255", (0.0, 255.0)) == pytest.approx(8.0)


def test_old_fraction_meaning_is_refused_with_how_to_convert():
    with pytest.raises(ConfigError, match=r"'eps' parameter .*Write '4/255'.*image units"):
        create_denoiser_attack("denoise-pgd", _CTDenoiser(), eps=4 / 255)
    with pytest.raises(ConfigError, match=r"Write '8/255'"):
        create_attack("pgd", _CTClassifier(), bounds=CT, eps=8 / 255)
