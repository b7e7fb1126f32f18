"""medrobust: adversarial robustness audits and denoising defenses for medical imaging models.

``import medrobust`` stays light: torch, MONAI and friends are imported by the
sub-packages that need them, and the public helpers below are resolved lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> "module:attribute"; resolved on first access (PEP 562).
_LAZY: dict[str, str] = {
    "create_attack": "medrobust.attacks:create_attack",
    "list_attacks": "medrobust.attacks:list_attacks",
    "create_classifier": "medrobust.models:create_classifier",
    "list_classifiers": "medrobust.models:list_classifiers",
    "load_model": "medrobust.models:load_model",
    "create_denoiser": "medrobust.defenses:create_denoiser",
    "list_denoisers": "medrobust.defenses:list_denoisers",
    "defend": "medrobust.defenses:defend",
    "open_source": "medrobust.data:open_source",
    "get_preset": "medrobust.data:get_preset",
    "audit": "medrobust.evaluation.api:audit",
    "load_results": "medrobust.evaluation.api:load_results",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'medrobust' has no attribute {name!r}")
    module_name, attr = target.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
