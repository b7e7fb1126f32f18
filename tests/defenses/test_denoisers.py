"""Conformance of every registered denoiser: shape, bounds, channels, gradients / BPDA, config round trip."""

from __future__ import annotations

import pytest
import torch

from medrobust.defenses.denoisers import DENOISERS, create_denoiser, list_denoisers
from medrobust.errors import ConfigError

BOUNDS = [(0.0, 1.0), (-1000.0, 400.0)]


#: Denoisers with a large fixed cost per image (about 0.3-2 s per call) get a batch of one.
SLOW = {"bm3d"}


def _images(c: int, bounds: tuple[float, float], seed: int = 0, n: int = 2, dims: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low, high = bounds
    size = (12, 14) if dims == 2 else (6, 7, 8)
    return torch.rand(n, c, *size, generator=g) * (high - low) + low


def test_registry_lists_all_required_denoisers() -> None:
    required = {
        "dae",
        "unet",
        "autoencoder",
        "dncnn",
        "median",
        "gaussian",
        "bilateral",
        "nlm",
        "tv",
        "wavelet",
    }
    required |= {"bm3d", "hybrid"}
    assert required <= set(list_denoisers())


@pytest.mark.parametrize("name", list_denoisers())
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("bounds", BOUNDS, ids=["unit", "hu"])
def test_conformance(name: str, channels: int, bounds: tuple[float, float]) -> None:
    cls = DENOISERS.get(name)
    torch.manual_seed(0)
    d = create_denoiser(name, in_channels=channels, bounds=bounds, **cls.fast_params).eval()
    assert d.kind in ("deep", "classical", "hybrid")
    x = _images(channels, bounds, n=1 if name in SLOW else 2, dims=cls.spatial_dims[0]).requires_grad_(True)
    y = d(x)
    assert y.shape == x.shape
    assert y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert y.min() >= bounds[0] and y.max() <= bounds[1]
    w = torch.randn_like(y)
    (y * w).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if d.differentiable:
        assert x.grad.abs().sum() > 0
    else:
        # Declared BPDA: for a purely classical filter the gradient is exactly the identity.
        if d.kind == "classical":
            torch.testing.assert_close(x.grad, w)
        else:
            assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list_denoisers())
def test_config_rebuilds_identical_denoiser(name: str) -> None:
    cls = DENOISERS.get(name)
    torch.manual_seed(0)
    d = create_denoiser(name, in_channels=1, bounds=(-1, 1), **cls.fast_params).eval()
    cfg = d.config()
    again = create_denoiser(name, **cfg).eval()
    again.load_state_dict(d.state_dict())
    x = _images(1, (-1.0, 1.0), seed=3, n=1 if name in SLOW else 2, dims=cls.spatial_dims[0])
    with torch.no_grad():
        torch.testing.assert_close(again(x), d(x))
    assert again.config() == cfg


def test_wrong_channels_rejected() -> None:
    d = create_denoiser("median", in_channels=1)
    with pytest.raises(ConfigError, match="expects 2D images"):
        d(torch.rand(1, 3, 8, 8))


def test_unknown_denoiser_suggests_name() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'median'"):
        create_denoiser("medain")


def test_invalid_parameters_are_named() -> None:
    with pytest.raises(ConfigError, match="'kernel_size' parameter of MedianDenoiser must be odd"):
        create_denoiser("median", kernel_size=4)
    with pytest.raises(ConfigError, match="'depth' parameter of ConvDAE"):
        create_denoiser("dae", depth=0)
    with pytest.raises(ConfigError, match="'gradient' parameter"):
        create_denoiser("nlm", gradient="exact")


def test_classical_filters_reduce_noise_on_smooth_image() -> None:
    # A smooth ramp plus noise: each classical filter must get closer to the ramp.
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(0.2, 0.8, 24).view(1, 1, 1, 24).expand(1, 1, 24, 24).contiguous()
    noisy = (ramp + 0.08 * torch.randn(ramp.shape, generator=g)).clamp(0, 1)
    for name, params in [
        ("median", {"kernel_size": 3}),
        ("gaussian", {"sigma": 1.0}),
        ("bilateral", {"sigma_color": 0.3}),
        ("nlm", {"h": 0.08}),
        ("tv", {"weight": 0.1}),
        ("wavelet", {}),
        ("bm3d", {"sigma": 0.08, "stage": "hard"}),
    ]:
        out = create_denoiser(name, **params)(noisy)
        assert (out - ramp).pow(2).mean() < 0.7 * (noisy - ramp).pow(2).mean(), name


def test_hu_bounds_use_relative_parameters() -> None:
    # Same filter on [0, 1] and on HU-scaled copies gives the same result up to scaling.
    g = torch.Generator().manual_seed(2)
    u = torch.rand(1, 1, 16, 16, generator=g)
    for name in ("tv", "bilateral", "nlm"):
        a = create_denoiser(name, bounds=(0, 1))(u)
        b = create_denoiser(name, bounds=(-1000, 400))(u * 1400 - 1000)
        torch.testing.assert_close((b + 1000) / 1400, a, atol=1e-4, rtol=1e-4)


def test_median_exact_gradient_is_sparse_routing() -> None:
    d = create_denoiser("median", kernel_size=3, gradient="exact")
    assert d.differentiable
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    d(x).sum().backward()
    # Each output routes its unit gradient to one input pixel: the total is the number of outputs.
    assert x.grad.sum().item() == pytest.approx(64.0)
    assert (x.grad == 0).any()


def test_dncnn_starts_as_identity_and_dae_exposes_latent() -> None:
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(create_denoiser("dncnn", depth=3, width=4).eval()(x), x)
    dae = create_denoiser("dae", width=4, depth=2)
    z = dae.encode(x)
    assert z.shape == (2, dae.latent_channels, 4, 4)
    torch.testing.assert_close(dae.decode(z), dae(x))


def test_median3d_equals_scipy_mirror_median_and_refuses_2d_images() -> None:
    import numpy as np
    import scipy.ndimage as ndi

    import medrobust.defenses.denoisers.median3d as module

    d = create_denoiser("median3d", in_channels=2, kernel_size=3, bounds=(-1000.0, 400.0))
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 2, 9, 7, 8, generator=g) * 1400 - 1000
    y = d(x)
    ref = np.stack([[ndi.median_filter(v.numpy(), size=3, mode="mirror") for v in item] for item in x])
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-3)
    # a slab size that splits the first axis gives the same volume
    original, module.SLAB_ELEMENTS = module.SLAB_ELEMENTS, 2000
    try:
        torch.testing.assert_close(d(x), y, rtol=0, atol=0)
    finally:
        module.SLAB_ELEMENTS = original
    # a one-voxel spike on one slice is outvoted by its neighbours across slices
    spike = torch.zeros(1, 1, 5, 5, 5)
    spike[0, 0, 2, 2, 2] = 1.0
    assert float(create_denoiser("median3d")(spike).abs().max()) == 0.0
    with pytest.raises(ConfigError, match=r"expects 3D volumes \(N, 2, X, Y, Z\)"):
        d(torch.rand(1, 2, 8, 8))
    with pytest.raises(ConfigError, match="must name a 2D denoiser"):
        create_denoiser("hybrid", classical="median3d")
