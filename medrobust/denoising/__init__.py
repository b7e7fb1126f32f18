"""Denoiser robustness and similitude (Ning et al., arXiv:2306.16050) for medical images.

* :mod:`~medrobust.denoising.attacks` — denoising-PGD (L∞, zero-mean L2), SPSA, random baseline.
* :mod:`~medrobust.denoising.metrics` — PSNR/SSIM (MONAI), drops, norms, normality tests.
* :mod:`~medrobust.denoising.similitude` — transfer matrix and similitude indices.
* :mod:`~medrobust.denoising.training` — ``train_denoiser`` for the zoo (blind or non-blind).
* :mod:`~medrobust.denoising.study` — the resumable study behind ``medrobust denoisers study``.

Submodules are imported on first use so ``import medrobust.denoising`` stays light.
"""

from __future__ import annotations

from medrobust.utils.lazy import lazy_attributes

_LAZY = {
    "DENOISER_ATTACKS": "medrobust.denoising.attacks",
    "DenoiserAttack": "medrobust.denoising.attacks",
    "DenoiserAttackResult": "medrobust.denoising.attacks",
    "create_denoiser_attack": "medrobust.denoising.attacks",
    "list_denoiser_attacks": "medrobust.denoising.attacks",
    "register_denoiser_attack": "medrobust.denoising.attacks",
    "TrainDenoiserConfig": "medrobust.denoising.training",
    "train_denoiser": "medrobust.denoising.training",
    "DenoiserStudyConfig": "medrobust.denoising.config",
    "DenoisingData": "medrobust.denoising.data",
    "run_study": "medrobust.denoising.study",
    "transfer_tables": "medrobust.denoising.similitude",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
