"""Transfer matrix and similitude indices between denoisers.

Notation: ``drop_B(A)`` is the mean (over test images) PSNR drop of denoiser ``B`` on
the adversarial inputs crafted against ``A``: ``PSNR(D_B(y), x) − PSNR(D_B(y + δ_A), x)``.

* Raw transfer matrix: ``R[A][B] = drop_B(A)``; its diagonal is each member's
  white-box drop.
* Relative transfer: ``T[A][B] = drop_B(A) / drop_B(B)`` — how much of B's own
  white-box damage A's perturbation achieves (ratio of means; 1 on the diagonal;
  undefined (None) when B's white-box drop is below ``min_drop`` dB).
* Transfer similitude (the primary index): ``S(A, B) = ½ (clip(T[A][B], 0, 1) +
  clip(T[B][A], 0, 1))`` — symmetric, in [0, 1], 1 when each model's adversarial inputs
  hurt the other as much as its own.
* Worst case per target: ``max_A R[A][B]`` and the source achieving it (a transfer
  beating B's own white-box attack flags a weak white-box attack, e.g. BPDA on a filter).
* Perturbation cosine: ``C(A, B)`` = mean over images of ``cos(δ_A, δ_B)`` — whether the
  attacks found the same direction, independent of their effect.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

#: White-box drops below this (dB) make relative transfer undefined.
MIN_DROP_DB = 0.01


def relative_transfer(raw: np.ndarray, min_drop: float = MIN_DROP_DB) -> np.ndarray:
    """``T[a, b] = raw[a, b] / raw[b, b]``; NaN where ``raw[b, b] < min_drop``."""
    raw = np.asarray(raw, dtype=float)
    diag = np.diag(raw)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = raw / diag[None, :]
    rel[:, ~(diag >= min_drop)] = np.nan
    return rel


def transfer_similitude(rel: np.ndarray) -> np.ndarray:
    """Symmetric index ``S = ½ (clip(T, 0, 1) + clip(Tᵀ, 0, 1))`` (NaN propagates)."""
    c = np.clip(np.asarray(rel, dtype=float), 0.0, 1.0)
    return 0.5 * (c + c.T)


def perturbation_cosine(deltas: dict[str, torch.Tensor], names: list[str]) -> np.ndarray:
    """Mean per-image cosine similarity of the perturbations of each pair."""
    flat = {n: deltas[n].detach().double().flatten(1) for n in names}
    out = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            cos = torch.nn.functional.cosine_similarity(flat[a], flat[b], dim=1, eps=1e-12)
            out[i, j] = float(cos.mean())
    return out


def transfer_tables(
    names: list[str],
    cells: dict[str, dict[str, dict[str, Any]]],
    deltas: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Build the raw / relative / similitude / cosine matrices from transfer cells.

    Args:
        names: Member order (rows = source A, columns = target B).
        cells: ``cells[A][B]`` holds per-image ``psnr_drop`` and ``ssim_drop`` lists.
        deltas: Optional perturbations per member for the cosine matrix.

    Returns:
        A JSON-ready dict with ``members``, ``worst_case_psnr_drop``, ``worst_case_source``,
        ``raw_psnr_drop``, ``raw_ssim_drop``, ``relative``, ``similitude``, ``cosine`` and
        ``min_drop_db`` (NaN as None).
    """
    n = len(names)
    raw = np.zeros((n, n))
    raw_ssim = np.zeros((n, n))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            raw[i, j] = float(np.mean(cells[a][b]["psnr_drop"]))
            raw_ssim[i, j] = float(np.mean(cells[a][b]["ssim_drop"]))
    rel = relative_transfer(raw)
    sim = transfer_similitude(rel)
    cos = perturbation_cosine(deltas, names) if deltas is not None else np.full((n, n), np.nan)

    def clean(m: np.ndarray) -> list[list[float | None]]:
        return [[float(v) if math.isfinite(v) else None for v in row] for row in m]

    worst = raw.argmax(axis=0)
    return {
        "members": list(names),
        "worst_case_psnr_drop": [float(raw[worst[j], j]) for j in range(n)],
        "worst_case_source": [names[int(worst[j])] for j in range(n)],
        "raw_psnr_drop": clean(raw),
        "raw_ssim_drop": clean(raw_ssim),
        "relative": clean(rel),
        "similitude": clean(sim),
        "cosine": clean(cos),
        "min_drop_db": MIN_DROP_DB,
    }
