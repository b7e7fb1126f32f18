"""Audit progress that tells the truth: work weighted by each attack's cost, honest rates on resume.

A cell of FGSM and a cell of SPSA with 100 steps × 128 samples differ by four orders of
magnitude in cost, so a bar over *cells* is useless for an ETA. The bar counts *model
evaluations* instead: per attacked sample, an attack costs about ``steps × restarts``
gradient passes (a forward + backward pass counted as :data:`GRADIENT_COST` forward passes)
or its number of queries (forward passes) — see :func:`attack_cost`. The bar advances after
every attacked batch (progress inside long cells), its label names the attack, the budget
and the threat model, and work that a resumed run reuses is taken *out of the total*, never
counted as done, so rates and ETAs only reflect work this process does.
"""

from __future__ import annotations

from typing import Any

#: Cost of a forward + backward pass in forward-pass units.
GRADIENT_COST = 3.0


def _int(params: dict[str, Any], key: str, default: int) -> int:
    value = params.get(key)
    return default if value is None else int(value)


def attack_cost(name: str, params: dict[str, Any], num_classes: int = 2) -> float:
    """Estimated model evaluations (forward-pass units) per attacked sample.

    Args:
        name: Registered attack name.
        params: The attack's full parameters (:meth:`AttackConfig.full_params`).
        num_classes: Classes of the model (targeted sub-attacks run per target class).
    """
    g = GRADIENT_COST
    targets = max(1, num_classes - 1)
    steps = _int(params, "steps", 10)
    restarts = _int(params, "restarts", 1)
    if name == "fgsm":
        return g
    if name in ("pgd", "pgd-l2", "apgd-ce"):
        return g * steps * restarts
    if name in ("apgd-t", "fab"):
        return g * steps * restarts * min(_int(params, "n_target_classes", 9), targets)
    if name == "cw":
        return g * steps * _int(params, "binary_steps", 9)
    if name == "deepfool":
        return g * steps * min(_int(params, "candidates", 10), num_classes)
    if name == "spsa":
        return 2.0 * steps * _int(params, "samples", 128)
    if name == "square":
        return float(_int(params, "queries", 5000) * restarts)
    if name == "autoattack":
        from medrobust.attacks.autoattack import VERSIONS

        total = 0.0
        for _, cls, sub in VERSIONS.get(str(params.get("version") or "standard"), []):
            sub = dict(sub)
            if params.get("steps") is not None and "steps" in sub:
                sub["steps"] = params["steps"]
            if params.get("queries") is not None and "queries" in sub:
                sub["queries"] = params["queries"]
            total += attack_cost(getattr(cls, "name", ""), sub, num_classes)
        return total or g
    queries = params.get("queries")
    return float(queries) if queries else g * steps * restarts


def craft_label(craft: Any, threats: list[str]) -> str:
    """``pgd@8/255 · whitebox + graybox (crafted on bare)`` / ``pgd@8/255 · adaptive on siamese-dae``."""
    from medrobust.evaluation.config import BARE

    attack = craft.attack + ("" if craft.eps is None else f"@{craft.key.rsplit('|', 1)[-1]}")
    if craft.craft_on == BARE:
        kinds = ["whitebox"] + (["graybox"] if "graybox" in threats else [])
        return f"{attack} · {' + '.join(kinds)} (crafted on {BARE})"
    return f"{attack} · adaptive on {craft.craft_on}"


class AuditProgress:
    """A tqdm bar over model evaluations, advanced per attacked batch.

    Args:
        total: Work of everything still to compute (forward-pass units).
        n_cells: Cells of the audit (shown in the postfix).
        cells_done: Cells already finished (a resumed run).
        enabled: Show the bar.
    """

    def __init__(self, total: float, n_cells: int, cells_done: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.n_cells = int(n_cells)
        self.cells_done = int(cells_done)
        self.bar = tqdm(
            total=max(float(total), 0.0),
            desc="audit",
            unit=" evals",
            unit_scale=True,
            disable=not enabled,
            leave=False,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
        )
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"cells {self.cells_done}/{self.n_cells}", refresh=False)

    def start(self, label: str) -> None:
        """A craft starts: name it (attack, budget, threat model)."""
        self.bar.set_description_str(label, refresh=True)

    def advance(self, work: float) -> None:
        """Work done in this process (an attacked batch)."""
        self.bar.update(work)

    def reused(self, work: float) -> None:
        """Work a resumed run did not have to do: removed from the total, not counted as done."""
        self.bar.total = max(self.bar.n, (self.bar.total or 0.0) - work)
        self.bar.refresh()

    def cells_finished(self, k: int = 1) -> None:
        """``k`` cells saved."""
        self.cells_done += k
        self._postfix()
        self.bar.refresh()

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()
