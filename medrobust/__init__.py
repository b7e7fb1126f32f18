"""medrobust: adversarial robustness audits and denoising defenses for medical imaging models.

``import medrobust`` stays light: torch, MONAI and friends are imported by the
sub-packages that need them, and the public helpers below are resolved lazily.
"""

from __future__ import annotations

from medrobust.utils.lazy import lazy_attributes

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

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
