"""Planning a segmentation audit: crafts and cells (attack × budget × target × threat), their keys and seeds.

A *craft* is one attack at one budget crafted on one model; a *cell* is a craft evaluated on one
target under one threat model:

* ``whitebox``: crafted on and evaluated on the bare segmenter;
* ``graybox``: crafted on the bare segmenter, evaluated through a defense (the bare craft is
  shared by the whitebox cell and every gray-box cell of that attack and budget);
* ``adaptive``: crafted end to end through ``denoiser → segmenter`` and evaluated on it.

Each cell's key covers the run fingerprint, the attack's full parameters, the budget as written,
the target and the threat: a resumed run reuses exactly the finished cells whose key is unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from medrobust.evaluation.budgets import budget_label
from medrobust.evaluation.segmentation.targets import BARE
from medrobust.run.seeds import derive_seed
from medrobust.utils.hashing import sha256_json
from medrobust.validation import budget_to_image_units

WHITEBOX = "whitebox"


def safe_id(text: str) -> str:
    """A file-name-safe id of a key (``/`` and other separators become ``-``)."""
    return re.sub(r"[^A-Za-z0-9_.+@=-]+", "-", text).strip("-")


@dataclass
class PlannedCell:
    """One cell: which attack at which budget, on which target under which threat."""

    attack: str
    budget: str | float
    eps_label: str
    norm: str
    target: str
    threat: str
    craft: str
    eps: float | None = None
    key: str = ""

    @property
    def ident(self) -> str:
        """``target/threat/attack@eps`` (messages, gates)."""
        return f"{self.target}/{self.threat}/{self.attack}@{self.eps_label}"

    @property
    def id(self) -> str:
        """The cell's file name in ``state/cells``."""
        return safe_id(f"{self.target}__{self.threat}__{self.attack}@{self.eps_label}")


@dataclass
class Craft:
    """One attack at one budget crafted on one model, evaluated by its cells."""

    key: str
    attack: str
    budget: str | float
    eps_label: str
    craft_on: str
    seed: int
    cells: list[PlannedCell] = field(default_factory=list)
    eps: float | None = None

    @property
    def id(self) -> str:
        """The craft's file-name-safe id."""
        return safe_id(self.key)


def plan_segmentation_audit(config: Any, bounds: tuple[float, float] | None = None) -> list[Craft]:
    """The crafts of ``config`` with their cells, in report order.

    Args:
        config: A :class:`~medrobust.evaluation.segmentation.config.SegmentationAuditConfig`.
        bounds: The model card's bounds; when given, every budget is converted to image units
            (``craft.eps``, ``cell.eps``) by :func:`medrobust.validation.budget_to_image_units`.
    """
    crafts: list[Craft] = []
    defenses = [d.name for d in config.defenses]
    for atk in config.attacks:
        for budget in getattr(config.budgets, atk.norm):
            label = budget_label(budget)
            eps = None if bounds is None else budget_to_image_units(budget, bounds, f"budgets.{atk.norm}")
            on = [
                (BARE, [(BARE, WHITEBOX)] + [(d, "graybox") for d in defenses if "graybox" in config.threats])
            ]
            if "adaptive" in config.threats:
                on += [(d, [(d, "adaptive")]) for d in defenses]
            for craft_on, evaluated in on:
                key = f"{atk.label}@{label}|on={craft_on}"
                craft = Craft(key, atk.label, budget, label, craft_on, derive_seed(config.seed, key), eps=eps)
                craft.cells = [
                    PlannedCell(atk.label, budget, label, atk.norm, target, threat, key, eps)
                    for target, threat in evaluated
                ]
                crafts.append(craft)
    return crafts


def cell_keys(crafts: list[Craft], config: Any, run_fingerprint: str) -> None:
    """Set every cell's key: the run fingerprint, the attack's identity, the budget, target and threat."""
    for craft in crafts:
        identity = config.attack(craft.attack).identity()
        for cell in craft.cells:
            cell.key = sha256_json(
                {
                    "run": run_fingerprint,
                    "attack": identity,
                    "budget": str(cell.budget),
                    "target": cell.target,
                    "threat": cell.threat,
                }
            )


def all_cells(crafts: list[Craft]) -> list[PlannedCell]:
    """Every planned cell, in report order (attack, budget, target, threat)."""
    return [c for craft in crafts for c in craft.cells]


def describe_cells(cells: list[PlannedCell]) -> list[dict[str, Any]]:
    """The planned cells as plain records (for messages and the progress line)."""
    return [{"id": c.id, "ident": c.ident} for c in cells]
