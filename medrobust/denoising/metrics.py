"""Image-quality metrics for the denoiser study: PSNR/SSIM (MONAI), drops, norms, normality.

``data_range`` is always ``bounds[1] − bounds[0]`` of the clean images (never an
assumed 1.0). PSNR is ``10 log10(data_range² / MSE)`` per image; SSIM uses MONAI's
Gaussian window (11 pixels, σ = 1.5, k1 = 0.01, k2 = 0.03), which matches
scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust.attacks.base import eval_mode


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """Per-image PSNR in dB (N,), via ``monai.metrics.PSNRMetric``."""
    from monai.metrics import PSNRMetric

    metric = PSNRMetric(max_val=float(data_range), reduction="none")
    return metric(pred.detach().float(), target.detach().float()).reshape(-1).cpu()


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """Per-image SSIM (N,), via ``monai.metrics.SSIMMetric`` (mean over channels)."""
    from monai.metrics import SSIMMetric

    metric = SSIMMetric(spatial_dims=pred.ndim - 2, data_range=float(data_range), reduction="none")
    out = metric(pred.detach().float(), target.detach().float())
    return out.reshape(pred.shape[0], -1).mean(dim=1).cpu()


@torch.no_grad()
def denoise(denoiser: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Apply ``denoiser`` in eval mode, in batches, without gradients."""
    with eval_mode(denoiser):
        parts = [denoiser(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    return torch.cat(parts).detach() if parts else images.clone()


def normality(residual: torch.Tensor, sigma: float, max_samples: int = 5000, seed: int = 0) -> list[dict]:
    """Per-image tests of whether ``residual`` (e.g. ``y + δ − x``) looks like N(0, σ²) noise.

    Two tests per image, on all values or a seeded subsample of ``max_samples``:
    D'Agostino–Pearson ``scipy.stats.normaltest`` (any normal law) and a
    Kolmogorov–Smirnov test against the nominal N(0, σ²) (``sigma`` in intensity units).

    Returns:
        One dict per image: ``normaltest_stat``, ``normaltest_p``, ``ks_stat``, ``ks_p``,
        ``mean``, ``std``.
    """
    from scipy import stats

    rng = np.random.default_rng(seed)
    flat = residual.detach().double().flatten(1).cpu().numpy()
    out = []
    for row in flat:
        sample = row if row.size <= max_samples else rng.choice(row, size=max_samples, replace=False)
        nt = stats.normaltest(sample) if sample.size >= 20 else None
        ks = stats.kstest(sample, "norm", args=(0.0, sigma)) if sigma > 0 else None
        out.append(
            {
                "normaltest_stat": float(nt.statistic) if nt is not None else math.nan,
                "normaltest_p": float(nt.pvalue) if nt is not None else math.nan,
                "ks_stat": float(ks.statistic) if ks is not None else math.nan,
                "ks_p": float(ks.pvalue) if ks is not None else math.nan,
                "mean": float(row.mean()),
                "std": float(row.std()),
            }
        )
    return out


def quality(
    denoiser: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    y_adv: torch.Tensor,
    bounds: tuple[float, float],
    batch_size: int = 32,
    clean_out: torch.Tensor | None = None,
) -> dict[str, list[float]]:
    """PSNR/SSIM of ``D(y)`` and ``D(y_adv)`` against ``x`` and their drops (per image).

    The same function scores white-box and transfer inputs, so a transfer matrix's
    diagonal reproduces the white-box numbers exactly.

    Args:
        denoiser: The denoiser ``D``.
        x: Clean images.
        y: Noisy images.
        y_adv: Perturbed noisy images.
        bounds: Intensity bounds of ``x`` (``data_range = high − low``).
        batch_size: Denoising batch size.
        clean_out: ``D(y)`` when already computed by :func:`denoise` (saves a pass).
    """
    data_range = bounds[1] - bounds[0]
    clean = denoise(denoiser, y, batch_size) if clean_out is None else clean_out
    adv = denoise(denoiser, y_adv, batch_size)
    p0, p1 = psnr(clean, x, data_range), psnr(adv, x, data_range)
    s0, s1 = ssim(clean, x, data_range), ssim(adv, x, data_range)
    return {
        "psnr_clean": p0.tolist(),
        "psnr_adv": p1.tolist(),
        "psnr_drop": (p0 - p1).tolist(),
        "ssim_clean": s0.tolist(),
        "ssim_adv": s1.tolist(),
        "ssim_drop": (s0 - s1).tolist(),
    }


def perturbation_stats(delta: torch.Tensor, scale: float) -> dict[str, list[float]]:
    """Per-image L∞ / L2 norms and mean of ``δ``, in intensity units and range fractions."""
    flat = delta.detach().double().flatten(1).cpu()
    linf, l2 = flat.abs().amax(dim=1), flat.norm(dim=1)
    return {
        "linf": linf.tolist(),
        "l2": l2.tolist(),
        "linf_rel": (linf / scale).tolist(),
        "l2_rel": (l2 / scale).tolist(),
        "mean": flat.mean(dim=1).tolist(),
    }


def summarize(values: list[float] | np.ndarray) -> dict[str, Any]:
    """Mean, standard deviation, median, min and max of finite values (NaN when empty)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {
            "mean": math.nan,
            "std": math.nan,
            "median": math.nan,
            "min": math.nan,
            "max": math.nan,
            "n": 0,
        }
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "median": float(np.median(arr)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n": int(arr.size),
    }
