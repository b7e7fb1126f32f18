"""Audit planning: which crafts and cells exist, their keys, and what a resumed run reuses.

A *craft* is one attack run on one model (the bare classifier for ``whitebox`` and
``graybox`` cells, the defended model for ``adaptive`` ones). A craft feeds one or
more *cells*: the bare classifier's whitebox cell and every defense's graybox cell
share the bare craft; a minimal-norm attack (CW, DeepFool) is crafted once and
derives one cell per budget of its norm plus an unbounded (``inf``) cell.

Planning is a pure function of the config (and of the card's bounds, which turn the
budgets into image units), so the cell list, its order and every seed are known before
anything runs (resume and sharding rely on that). Each craft's hash covers what its pieces
depend on (run fingerprint, attack and its full parameters, budget); each cell's key adds
target, threat and budget label: a resumed run reuses exactly the finished pieces and cells
whose hash and key are unchanged (:func:`plan_keys`, :func:`pending_crafts`).

**Randomised targets and the defense protocol.** A craft's attack runs with its *effective*
parameters (:func:`craft_params`): the config's, except that ``eot: auto`` turns EOT on for
crafts on a stochastic target (``autoattack`` → ``version: rand``, ``apgd-*`` → ``eot_iter``)
and ``protocol: defense`` scales SPSA's directions per step and Square's queries (also inside
standard AutoAttack) by ``max(1, sqrt(H*W / 64²))`` (the shipped numbers hold at 64×64; a
224×224 image gets 3.5× as many). ``protocol: defense`` also adds adaptive crafts
(:func:`protocol_attacks`): standard AutoAttack on every defended target when the config has
no standard AutoAttack, and Square with 5000 queries beside every BPDA (non-differentiable)
target when it has no Square of at least 5000 queries. Which targets are stochastic (and use
BPDA) is known once they are built, so the runner plans again with them; craft hashes cover
the effective parameters where they differ from the config's.

**Certified cells** (threat ``certified``, attack label ``certified``): one per target and
``budgets.l2`` radius (:func:`certified_cells`); they are not crafts (CERTIFY under randomized
smoothing, :mod:`medrobust.evaluation.certified`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medrobust.errors import ConfigError
from medrobust.evaluation.budgets import budget_label
from medrobust.evaluation.config import BARE, CERTIFIED, AttackConfig, AuditConfig
from medrobust.run.seeds import derive_seed
from medrobust.utils.hashing import sha256_json
from medrobust.validation import budget_to_image_units

#: Threat name of the bare classifier's cells.
WHITEBOX = "whitebox"
#: Norms of the audit's budgets, in table order.
NORMS = ("linf", "l2")
#: Image side at which the configured SPSA/Square budgets hold unchanged (``protocol: defense``).
REFERENCE_SIDE = 64
#: Square's queries beside a BPDA cell under ``protocol: defense``.
PROTOCOL_SQUARE_QUERIES = 5000
_APGD = ("apgd-ce", "apgd-dlr", "apgd-t")


def safe_id(key: str) -> str:
    """A filesystem-safe, unique id for a key (readable part + short hash)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")[:80]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Budget:
    """One budget of the audit: as written, and in image units of the card's bounds.

    Attributes:
        norm: "linf" or "l2".
        given: The budget as the config writes it (``"2/255"``, ``0.5``; ``math.inf`` for a
            minimal attack's unbounded cell).
        value: In image units (:func:`~medrobust.validation.budget_to_image_units` with the
            card's bounds), ``None`` while the bounds are not known.
    """

    norm: str
    given: str | float
    value: float | None = None

    @property
    def label(self) -> str:
        """Label as written (``"2/255"`` on every card; ``"inf"`` unbounded)."""
        return budget_label(self.given)


def unbounded(norm: str) -> Budget:
    """The unbounded budget of a minimal attack (its ``inf`` cell)."""
    return Budget(norm, math.inf, math.inf)


def resolve_budgets(
    config: AuditConfig, bounds: tuple[float, float] | None = None
) -> dict[str, list[Budget]]:
    """The audit's budgets per norm, each converted once to image units with the card's ``bounds``.

    Budgets with the same label are one budget (``"2/255"`` and ``0.00784313725490196`` on a
    [0, 1] card). With ``bounds`` they are sorted by their value in image units; without
    (before the card is read) by their number as written, and ``value`` is ``None``.

    Raises:
        ConfigError: two budgets read alike (same label) but differ in image units.
    """
    out: dict[str, list[Budget]] = {}
    for norm in NORMS:
        items = []
        for given in getattr(config.budgets, norm):
            value = None
            if bounds is not None:
                value = budget_to_image_units(
                    given, bounds, f"budgets.{norm}", "the audit", legacy_check=False
                )
            items.append(Budget(norm, given, value))
        if bounds is not None:
            items.sort(key=lambda b: float(b.value))  # type: ignore[arg-type]
        seen: dict[str, Budget] = {}
        for b in items:
            prev = seen.setdefault(b.label, b)
            if prev is not b and prev.value is not None and not math.isclose(prev.value, b.value or 0.0):
                low, high = bounds or (0.0, 1.0)
                raise ConfigError(
                    f"The 'budgets.{norm}' values {prev.given!r} and {b.given!r} both read {b.label} but are "
                    f"{prev.value:g} and {b.value:g} in image units of the bounds [{low:g}, {high:g}]; "
                    "keep one of them."
                )
        out[norm] = list(seen.values())
    return out


@dataclass(frozen=True)
class CellSpec:
    """One planned cell."""

    target: str
    threat: str
    attack: str
    attack_name: str
    norm: str
    budget: Budget
    minimal: bool
    craft: str

    @property
    def eps(self) -> float | None:
        """Budget in image units (``inf``: unbounded; ``None`` before the card's bounds are known)."""
        return self.budget.value

    @property
    def eps_label(self) -> str:
        """Budget label as written ("2/255", "0.5", "inf")."""
        return self.budget.label

    @property
    def key(self) -> str:
        """Unique readable key ``target/threat/attack@eps``."""
        return f"{self.target}/{self.threat}/{self.attack}@{self.eps_label}"

    @property
    def id(self) -> str:
        """Filesystem-safe id of the cell."""
        return safe_id(self.key)

    def as_dict(self) -> dict[str, Any]:
        """Plain fields plus key and label (gate matching)."""
        return {
            "target": self.target,
            "threat": self.threat,
            "attack": self.attack,
            "attack_name": self.attack_name,
            "norm": self.norm,
            "eps": self.eps,
            "minimal": self.minimal,
            "craft": self.craft,
            "key": self.key,
            "eps_label": self.eps_label,
        }


@dataclass
class Craft:
    """One attack run on one model, feeding ``cells``.

    ``eps`` is the attack's budget in image units (``None``: a minimal attack, run unbounded).
    """

    key: str
    craft_on: str
    attack: str
    eps: float | None
    seed: int
    cells: list[CellSpec] = field(default_factory=list)
    #: The attack's effective parameters (:func:`craft_params`; ``None``: the config's as written).
    params: dict[str, Any] | None = None

    @property
    def eval_targets(self) -> list[str]:
        """Targets whose predictions are evaluated on this craft's adversarial examples."""
        return list(dict.fromkeys(c.target for c in self.cells))


@dataclass
class AuditPlan:
    """Targets, crafts and cells of an audit, in execution order."""

    targets: list[str]
    crafts: list[Craft]
    budgets: dict[str, list[Budget]] = field(default_factory=dict)
    #: Certified cells (threat ``certified``), one per target and L2 radius.
    certified: list[CellSpec] = field(default_factory=list)
    #: Attacks the ``defense`` protocol added (adaptive only), by label.
    extra_attacks: dict[str, AttackConfig] = field(default_factory=dict)

    @property
    def cells(self) -> list[CellSpec]:
        """All attack cells in deterministic order (craft order, then within a craft)."""
        return [c for craft in self.crafts for c in craft.cells]

    def attacks(self, config: AuditConfig) -> dict[str, AttackConfig]:
        """Every attack of the plan by label: the config's, then the protocol's."""
        return {**{a.label: a for a in config.attacks}, **self.extra_attacks}


def size_factor(image_size: Any) -> float:
    """``max(1, sqrt(H*W / 64²))``: how SPSA/Square budgets grow with the image (``protocol: defense``)."""
    if not image_size:
        return 1.0
    pixels = math.prod(int(s) for s in image_size)
    return max(1.0, math.sqrt(pixels / REFERENCE_SIDE**2))


def craft_params(
    config: AuditConfig, attack: AttackConfig, stochastic: bool, image_size: Any = None
) -> dict[str, Any]:
    """The parameters ``attack`` runs with on a craft (see the module docstring).

    Args:
        config: The audit config (its ``eot`` and ``protocol``).
        attack: The attack's config.
        stochastic: Whether the craft's model is randomised.
        image_size: Spatial size of the images (``protocol: defense`` budget scaling).
    """
    params = dict(attack.params)
    if config.eot.mode == "auto" and stochastic:
        if attack.name == "autoattack":
            params.update(version="rand", eot_iter=config.eot.n)
            for key in ("queries", "n_target_classes"):
                params.pop(key, None)
        elif attack.name in _APGD and int(params.get("eot_iter", 1)) < config.eot.n:
            params["eot_iter"] = config.eot.n
    if config.protocol == "defense":
        factor = size_factor(image_size)
        if factor > 1.0:
            full = attack.full_params()
            if attack.name == "square":
                params["queries"] = math.ceil(int(full.get("queries", 5000)) * factor)
            elif attack.name == "spsa":
                params["samples"] = math.ceil(int(full.get("samples", 128)) * factor)
            elif attack.name == "autoattack" and params.get("version", "standard") == "standard":
                params["queries"] = math.ceil(int(params.get("queries") or 5000) * factor)
    return params


def _gradient_used(spec: Any) -> str:
    """``"bpda"`` for a registry denoiser without an exact gradient (from the config), else ``"exact"``."""
    if spec.denoiser is None:
        return "exact"  # trained denoisers are differentiable
    from medrobust.defenses.denoisers import DENOISERS

    cls = DENOISERS.get(spec.denoiser)
    gradient = spec.params.get("gradient")
    if gradient is not None:
        return str(gradient)
    return "exact" if getattr(cls, "differentiable", True) else "bpda"


def protocol_attacks(
    config: AuditConfig, bpda: set[str] | None = None
) -> list[tuple[AttackConfig, list[str]]]:
    """Attacks ``protocol: defense`` adds, each with the defended targets it is crafted on (adaptive).

    Args:
        config: The audit config.
        bpda: Defended targets whose adaptive attacks use BPDA (default: read from the config's
            registry denoisers).
    """
    if config.protocol != "defense" or "adaptive" not in config.threats or not config.defenses:
        return []
    labels = {a.label for a in config.attacks}
    defended = [d.name for d in config.defenses]
    if bpda is None:
        bpda = {d.name for d in config.defenses if _gradient_used(d) == "bpda"}
    out: list[tuple[AttackConfig, list[str]]] = []
    has_aa = any(
        a.name == "autoattack" and a.params.get("version", "standard") in ("standard", "rand")
        for a in config.attacks
    )
    if not has_aa and config.budgets.linf:
        label = "autoattack" if "autoattack" not in labels else "autoattack-standard"
        out.append((AttackConfig(name="autoattack", label=label, params={"version": "standard"}), defended))
    has_square = any(
        a.name == "square" and int(a.full_params().get("queries", 0)) >= PROTOCOL_SQUARE_QUERIES
        for a in config.attacks
    )
    on = [d for d in defended if d in bpda]
    if not has_square and on and config.budgets.linf:
        label = "square" if "square" not in labels else f"square-{PROTOCOL_SQUARE_QUERIES}"
        out.append(
            (AttackConfig(name="square", label=label, params={"queries": PROTOCOL_SQUARE_QUERIES}), on)
        )
    return out


def certified_cells(config: AuditConfig, budgets: dict[str, list[Budget]]) -> list[CellSpec]:
    """The certified cells: per target, one per ``budgets.l2`` radius (threat and attack ``certified``)."""
    if CERTIFIED not in config.threats:
        return []
    targets = [BARE] + [d.name for d in config.defenses]
    return [
        CellSpec(t, CERTIFIED, CERTIFIED, "certify", "l2", b, False, f"{t}|{CERTIFIED}")
        for t in targets
        for b in budgets.get("l2", [])
    ]


def plan_audit(
    config: AuditConfig,
    bounds: tuple[float, float] | None = None,
    *,
    stochastic: set[str] | None = None,
    bpda: set[str] | None = None,
    image_size: Any = None,
) -> AuditPlan:
    """Build the crafts and cells of ``config`` (no model needed).

    Keys, labels and seeds depend on the config only. ``bounds`` (the model card's) convert the
    budgets to image units (:func:`resolve_budgets`); without them the plan serves for names
    only (gate matching before the card is read) and budgets' ``eps`` are ``None``.

    Args:
        config: The audit config.
        bounds: The model card's bounds.
        stochastic: Targets that are randomised (``eot: auto``); default none.
        bpda: Defended targets attacked through BPDA (``protocol: defense``); default from the config.
        image_size: Spatial size of the images (``protocol: defense`` budget scaling).
    """
    budgets = resolve_budgets(config, bounds)
    targets = [BARE] + [d.name for d in config.defenses]
    defended = targets[1:]
    stochastic = stochastic or set()
    crafts: list[Craft] = []
    extras = protocol_attacks(config, bpda)
    only: dict[str, list[str]] = {a.label: on for a, on in extras}

    def params(atk: AttackConfig, target: str) -> dict[str, Any] | None:
        out = craft_params(config, atk, target in stochastic, image_size)
        return None if out == atk.params and atk.label not in only else out

    for atk in [*config.attacks, *(a for a, _ in extras)]:
        norm_budgets = budgets[atk.norm]
        craft_budgets: list[Budget | None] = [None] if atk.minimal else list(norm_budgets)
        for budget in craft_budgets:
            cell_budgets = [*norm_budgets, unbounded(atk.norm)] if budget is None else [budget]
            suffix = "min" if budget is None else budget.label
            eps = None if budget is None else budget.value
            if atk.label not in only:
                # Crafted on the bare classifier: whitebox on bare + graybox on each defense.
                key = f"{BARE}|{atk.label}|{suffix}"
                craft = Craft(
                    key, BARE, atk.label, eps, derive_seed(config.seed, key), params=params(atk, BARE)
                )
                evals = [(BARE, WHITEBOX)]
                if "graybox" in config.threats:
                    evals += [(d, "graybox") for d in defended]
                for target, threat in evals:
                    for b in cell_budgets:
                        craft.cells.append(
                            CellSpec(target, threat, atk.label, atk.name, atk.norm, b, atk.minimal, key)
                        )
                crafts.append(craft)
            if "adaptive" in config.threats:
                for d in only.get(atk.label, defended):
                    key = f"{d}|{atk.label}|{suffix}"
                    craft = Craft(
                        key, d, atk.label, eps, derive_seed(config.seed, key), params=params(atk, d)
                    )
                    for b in cell_budgets:
                        craft.cells.append(
                            CellSpec(d, "adaptive", atk.label, atk.name, atk.norm, b, atk.minimal, key)
                        )
                    crafts.append(craft)
    return AuditPlan(
        targets, crafts, budgets, certified_cells(config, budgets), {a.label: a for a, _ in extras}
    )


# -- keys: what a resumed run may reuse --------------------------------------------------------
def craft_hash(run_fp: str, craft: Craft, attack: AttackConfig) -> str:
    """Hash of what a craft's pieces depend on: run fingerprint, craft, attack's full parameters.

    A stored piece is reused only under the same hash.
    """
    identity = {
        "run": run_fp,
        "craft": craft.key,
        "craft_on": craft.craft_on,
        "seed": craft.seed,
        "eps": craft.eps,
        "attack": attack.identity(),
    }
    if craft.params is not None:  # effective parameters other than the config's (eot: auto, protocol)
        identity["params"] = craft.params
    return sha256_json(identity)


def cell_fingerprint(craft_fp: str, cell: CellSpec) -> str:
    """A cell's key: its craft's hash plus target, threat and budget (stored in the cell record)."""
    return sha256_json(
        {
            "craft": craft_fp,
            "cell": cell.key,
            "target": cell.target,
            "threat": cell.threat,
            "eps": cell.eps_label,
        }
    )


@dataclass
class PlanKeys:
    """The keys of a resolved plan under one run fingerprint.

    Attributes:
        craft_hashes: ``{craft key: craft hash}`` (:func:`craft_hash`; pieces are reused under it).
        cell_keys: ``{cell id: cell fingerprint}`` (:func:`cell_fingerprint`; cells are reused under it).
    """

    craft_hashes: dict[str, str]
    cell_keys: dict[str, str]


def plan_keys(plan: AuditPlan, config: AuditConfig, run_fp: str) -> PlanKeys:
    """The craft hashes and cell keys of ``plan`` (budgets resolved) for the run fingerprint ``run_fp``."""
    attacks = plan.attacks(config)
    hashes = {k.key: craft_hash(run_fp, k, attacks[k.attack]) for k in plan.crafts}
    cells = {c.id: cell_fingerprint(hashes[k.key], c) for k in plan.crafts for c in k.cells}
    return PlanKeys(hashes, cells)


def pending_crafts(plan: AuditPlan, finished: Callable[[str], bool]) -> list[str]:
    """Keys of the crafts with at least one cell not ``finished`` (by cell id), in plan order."""
    return [k.key for k in plan.crafts if any(not finished(c.id) for c in k.cells)]


def cells_done(plan: AuditPlan, pending: set[str], finished: Callable[[str], bool]) -> int:
    """Cells a resumed run reuses: every cell of a finished craft, the finished ones of a pending craft."""
    return sum(
        len(k.cells) if k.key not in pending else sum(finished(c.id) for c in k.cells) for k in plan.crafts
    )
