"""Defense training objectives (``siamese-dae``, ``dae``, ``magnet``, ``hgd``), one file each."""

from medrobust.defenses.objectives.base import (
    DEFENSE_KINDS,
    WEIGHT_FIELDS,
    Batch,
    DefenseObjective,
    register_defense_kind,
)
from medrobust.registry import import_submodules

import_submodules(__name__)


def list_defense_kinds() -> list[str]:
    """Names of the registered defense kinds."""
    return DEFENSE_KINDS.names()


__all__ = [
    "DEFENSE_KINDS",
    "WEIGHT_FIELDS",
    "Batch",
    "DefenseObjective",
    "list_defense_kinds",
    "register_defense_kind",
]
