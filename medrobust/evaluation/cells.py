"""Former name of :mod:`medrobust.evaluation.planning`, kept for existing imports.

New code imports :mod:`medrobust.evaluation.planning` (plans, keys, resume) and
:func:`medrobust.run.seeds.derive_seed` (seeds).
"""

from __future__ import annotations

from medrobust.evaluation.planning import (
    WHITEBOX,
    AuditPlan,
    Budget,
    CellSpec,
    Craft,
    plan_audit,
    resolve_budgets,
    safe_id,
)
from medrobust.run.seeds import derive_seed

__all__ = [
    "WHITEBOX",
    "AuditPlan",
    "Budget",
    "CellSpec",
    "Craft",
    "derive_seed",
    "plan_audit",
    "resolve_budgets",
    "safe_id",
]
