"""Audit planning: targets, crafting jobs and cells (target × threat × attack × ε).

A *craft* is one attack run on one model (the bare classifier for ``whitebox`` and
``graybox`` cells, the defended model for ``adaptive`` ones). A craft feeds one or
more *cells*: the bare classifier's whitebox cell and every defense's graybox cell
share the bare craft; a minimal-norm attack (CW, DeepFool) is crafted once and
derives one cell per budget of its norm plus an unbounded (``inf``) cell.

Planning is a pure function of the config, so the cell list, its order and every
seed are known before anything runs (resume and sharding rely on that).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from medrobust.evaluation.config import BARE, AuditConfig, eps_label
from medrobust.run.seeds import derive_seed

#: Threat name of the bare classifier's cells.
WHITEBOX = "whitebox"


def safe_id(key: str) -> str:
    """A filesystem-safe, unique id for a key (readable part + short hash)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")[:80]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class CellSpec:
    """One planned cell."""

    target: str
    threat: str
    attack: str
    attack_name: str
    norm: str
    eps: float
    minimal: bool
    craft: str

    @property
    def eps_label(self) -> str:
        """Budget label ("2/255", "0.5", "inf")."""
        return eps_label(self.eps)

    @property
    def key(self) -> str:
        """Unique readable key ``target/threat/attack@eps``."""
        return f"{self.target}/{self.threat}/{self.attack}@{self.eps_label}"

    @property
    def id(self) -> str:
        """Filesystem-safe id of the cell."""
        return safe_id(self.key)

    def as_dict(self) -> dict[str, Any]:
        """Plain fields plus key and label (gate matching, results)."""
        d = asdict(self)
        d.update(key=self.key, eps_label=self.eps_label)
        return d


@dataclass
class Craft:
    """One attack run on one model, feeding ``cells``."""

    key: str
    craft_on: str
    attack: str
    eps: float | None
    seed: int
    cells: list[CellSpec] = field(default_factory=list)

    @property
    def eval_targets(self) -> list[str]:
        """Targets whose predictions are evaluated on this craft's adversarial examples."""
        return list(dict.fromkeys(c.target for c in self.cells))


@dataclass
class AuditPlan:
    """Targets, crafts and cells of an audit, in execution order."""

    targets: list[str]
    crafts: list[Craft]

    @property
    def cells(self) -> list[CellSpec]:
        """All cells in deterministic order (craft order, then within a craft)."""
        return [c for craft in self.crafts for c in craft.cells]


def plan_audit(config: AuditConfig) -> AuditPlan:
    """Build the crafts and cells of ``config`` (no model needed)."""
    targets = [BARE] + [d.name for d in config.defenses]
    defended = targets[1:]
    crafts: list[Craft] = []
    for atk in config.attacks:
        budgets = list(getattr(config.budgets, atk.norm))
        eps_list: list[float | None] = [None] if atk.minimal else list(budgets)
        for eps in eps_list:
            cell_eps = [*budgets, math.inf] if eps is None else [eps]
            suffix = "min" if eps is None else eps_label(eps)
            # Crafted on the bare classifier: whitebox on bare + graybox on each defense.
            key = f"{BARE}|{atk.label}|{suffix}"
            craft = Craft(key, BARE, atk.label, eps, derive_seed(config.seed, key))
            evals = [(BARE, WHITEBOX)]
            if "graybox" in config.threats:
                evals += [(d, "graybox") for d in defended]
            for target, threat in evals:
                for e in cell_eps:
                    craft.cells.append(
                        CellSpec(target, threat, atk.label, atk.name, atk.norm, e, atk.minimal, key)
                    )
            crafts.append(craft)
            if "adaptive" in config.threats:
                for d in defended:
                    key = f"{d}|{atk.label}|{suffix}"
                    craft = Craft(key, d, atk.label, eps, derive_seed(config.seed, key))
                    for e in cell_eps:
                        craft.cells.append(
                            CellSpec(d, "adaptive", atk.label, atk.name, atk.norm, e, atk.minimal, key)
                        )
                    crafts.append(craft)
    return AuditPlan(targets, crafts)
