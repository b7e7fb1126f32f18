"""Hybrid classical + deep denoiser: modes, gradient routing, validation."""

from __future__ import annotations

import pytest
import torch

from medrobust.defenses.denoisers import create_denoiser
from medrobust.defenses.denoisers.hybrid import HybridDenoiser
from medrobust.errors import ConfigError


def _pair(bounds=(0.0, 1.0)):
    torch.manual_seed(0)
    classical = create_denoiser("median", bounds=bounds, kernel_size=3)
    deep = create_denoiser("dae", bounds=bounds, width=4, depth=1).eval()
    return classical, deep


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1000.0, 400.0)])
def test_modes_compose_children(bounds) -> None:
    classical, deep = _pair(bounds)
    x = torch.rand(2, 1, 10, 10) * (bounds[1] - bounds[0]) + bounds[0]
    with torch.no_grad():
        cd = HybridDenoiser(bounds=bounds, classical=classical, deep=deep, mode="classical_then_deep")(x)
        dc = HybridDenoiser(bounds=bounds, classical=classical, deep=deep, mode="deep_then_classical")(x)
        bl = HybridDenoiser(bounds=bounds, classical=classical, deep=deep, mode="blend", alpha=0.25)(x)
        torch.testing.assert_close(cd, deep(classical(x)))
        torch.testing.assert_close(dc, classical(deep(x)))
        torch.testing.assert_close(bl, 0.25 * classical(x) + 0.75 * deep(x))
    assert not torch.allclose(cd, dc)


def test_bpda_gradient_only_replaces_classical_part() -> None:
    classical, deep = _pair()
    hyb = HybridDenoiser(classical=classical, deep=deep, mode="classical_then_deep")
    assert not hyb.differentiable
    x = torch.rand(1, 1, 10, 10, requires_grad=True)
    hyb(x).sum().backward()
    # Expected: identity through the median, exact Jacobian of the DAE at median(x).
    m = classical(x.detach()).requires_grad_(True)
    deep(m).sum().backward()
    torch.testing.assert_close(x.grad, m.grad)


def test_blend_gradient_mixes_identity_and_deep_jacobian() -> None:
    classical, deep = _pair()
    hyb = HybridDenoiser(classical=classical, deep=deep, mode="blend", alpha=0.4)
    x = torch.rand(1, 1, 10, 10, requires_grad=True)
    hyb(x).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    deep(x2).sum().backward()
    expected = 0.4 * torch.ones_like(x) + 0.6 * x2.grad
    torch.testing.assert_close(x.grad, expected)


def test_differentiable_when_both_children_are() -> None:
    hyb = create_denoiser("hybrid", classical="gaussian", deep="dncnn", deep_params={"depth": 3, "width": 4})
    assert hyb.differentiable
    hyb2 = create_denoiser("hybrid", classical="nlm", deep="dae", deep_params={"width": 4, "depth": 1})
    assert not hyb2.differentiable


def test_validation_messages() -> None:
    with pytest.raises(ConfigError, match="'mode' parameter of HybridDenoiser"):
        create_denoiser("hybrid", mode="sideways")
    with pytest.raises(ConfigError, match="must be a classical denoiser"):
        create_denoiser("hybrid", classical="dae", deep="dncnn")
    with pytest.raises(ConfigError, match="must be a deep denoiser"):
        create_denoiser("hybrid", classical="median", deep="tv")
    with pytest.raises(ConfigError, match="'alpha' parameter"):
        create_denoiser("hybrid", mode="blend", alpha=1.5)
    classical = create_denoiser("median", bounds=(0, 255))
    with pytest.raises(ConfigError, match="bounds"):
        HybridDenoiser(bounds=(0, 1), classical=classical)
