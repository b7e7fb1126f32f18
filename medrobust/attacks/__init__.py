"""Classifier attacks: one file per attack, found through the registry.

>>> from medrobust.attacks import create_attack, list_attacks
>>> atk = create_attack("pgd", model, eps=2 / 255)   # doctest: +SKIP
>>> result = atk(images, labels)                      # doctest: +SKIP
"""

from medrobust.attacks.base import (
    ATTACKS,
    Attack,
    AttackResult,
    create_attack,
    list_attacks,
    register_attack,
)
from medrobust.registry import import_submodules

import_submodules(__name__)

__all__ = ["ATTACKS", "Attack", "AttackResult", "create_attack", "list_attacks", "register_attack"]
