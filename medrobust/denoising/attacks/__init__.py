"""Attacks on denoisers (denoising-PGD L∞/L2, SPSA, random baseline), one file each.

>>> from medrobust.denoising.attacks import create_denoiser_attack
>>> atk = create_denoiser_attack("denoise-pgd", denoiser, eps=4 / 255, steps=20)  # doctest: +SKIP
>>> result = atk(x, y)  # clean x, noisy y = x + n                                  # doctest: +SKIP
"""

from medrobust.denoising.attacks.base import (
    DENOISER_ATTACKS,
    DenoiserAttack,
    DenoiserAttackResult,
    create_denoiser_attack,
    list_denoiser_attacks,
    register_denoiser_attack,
)
from medrobust.registry import import_submodules

import_submodules(__name__)

__all__ = [
    "DENOISER_ATTACKS",
    "DenoiserAttack",
    "DenoiserAttackResult",
    "create_denoiser_attack",
    "list_denoiser_attacks",
    "register_denoiser_attack",
]
