"""Denoisers: deep (DAE, U-Net, AutoEncoder, DnCNN), classical (median, NLM, BM3D, ...) and hybrid.

Every denoiser is one file registering a :class:`Denoiser` subclass with
``@register_denoiser``; importing this package fills the registry.

>>> from medrobust.defenses.denoisers import create_denoiser, list_denoisers
>>> d = create_denoiser("dae", in_channels=1, bounds=(0, 1), width=16)   # doctest: +SKIP
"""

from medrobust.defenses.denoisers.base import (
    DENOISERS,
    Denoiser,
    bpda,
    create_denoiser,
    list_denoisers,
    register_denoiser,
)
from medrobust.registry import import_submodules

import_submodules(__name__)

__all__ = ["DENOISERS", "Denoiser", "bpda", "create_denoiser", "list_denoisers", "register_denoiser"]
