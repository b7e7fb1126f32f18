import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medrobust.denoising.metrics import normality, perturbation_stats, psnr, quality, ssim, summarize


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 3.0)])
def test_psnr_ssim_match_scikit_image(bounds):
    gen = torch.Generator().manual_seed(0)
    low, high = bounds
    x = low + (high - low) * torch.rand((3, 1, 32, 32), generator=gen)
    pred = (x + 0.05 * (high - low) * torch.randn(x.shape, generator=gen)).clamp(low, high)
    dr = high - low
    p, s = psnr(pred, x, dr), ssim(pred, x, dr)
    for i in range(3):
        a, b = x[i, 0].double().numpy(), pred[i, 0].double().numpy()
        assert p[i].item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=dr), abs=1e-3)
        ref = structural_similarity(
            a, b, data_range=dr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert s[i].item() == pytest.approx(ref, abs=2e-3)


def test_quality_reports_drops():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((2, 1, 24, 24), generator=gen)
    y = x + 0.05 * torch.randn(x.shape, generator=gen)
    ident = torch.nn.Identity()
    q = quality(ident, x, y, y + 0.05, (0.0, 1.0))
    assert np.allclose(np.array(q["psnr_clean"]) - np.array(q["psnr_adv"]), q["psnr_drop"])
    assert all(d > 0 for d in q["psnr_drop"])
    stats = perturbation_stats(torch.full((2, 1, 4, 4), 0.5), scale=2.0)
    assert stats["linf_rel"] == [0.25, 0.25] and stats["l2"] == pytest.approx([2.0, 2.0])


def test_normality_flags_non_gaussian_residuals():
    gen = torch.Generator().manual_seed(2)
    sigma = 0.05
    gauss = torch.randn((2, 1, 48, 48), generator=gen) * sigma
    signs = (torch.randint(0, 2, (2, 1, 48, 48), generator=gen) * 2 - 1).float() * sigma
    g, s = normality(gauss, sigma), normality(signs, sigma)
    assert all(r["ks_p"] > 0.01 and r["normaltest_p"] > 0.01 for r in g)
    assert all(r["ks_p"] < 1e-6 and r["normaltest_p"] < 1e-6 for r in s)
    shifted = normality(gauss + 0.5 * sigma, sigma)  # a mean shift is caught by KS against N(0, σ²)
    assert all(r["ks_p"] < 1e-3 for r in shifted)


def test_summarize_ignores_non_finite():
    out = summarize([1.0, 3.0, float("nan")])
    assert out["mean"] == 2.0 and out["n"] == 2
    assert np.isnan(summarize([])["mean"])
