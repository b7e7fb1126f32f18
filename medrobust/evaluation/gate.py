"""Pass/fail gates over audit cells (``--gate "pgd@2/255>=0.60"``), parsed by a regex, never eval.

Grammar::

    GATE      := ATTACK "@" EPS (":" QUALIFIER)* OP VALUE [":" BOUND]
    ATTACK    := an attack label from the config, "*" (every attack) or "worst" (the
                 per-sample worst case over all attacks of the budget's norm)
    EPS       := a budget as the config writes it ("2/255" = 2/255 of the card's intensity
                 range on every card, "0.5" in image units, "inf" for minimal attacks'
                 unbounded cell) or "*"
    QUALIFIER := METRIC | "metric=" METRIC | "target=" NAME | "threat=" NAME | BOUND
    BOUND     := "lower" | "upper" (test that end of the metric's 95 % interval)
    OP        := ">=" | "<=" | ">" | "<" | "=="
    VALUE     := a number, a fraction ("3/5") or a percentage ("60%")

The metric defaults to ``robust_accuracy``; without ``target=``/``threat=`` the gate
applies to every matching cell (all targets and threat models), and *every* matching
cell must satisfy it. ``worst`` cells exist per target, threat and budget, plus
``threat=all`` (the worst case over every threat model). Examples::

    pgd@2/255>=0.60                           robust accuracy >= 0.60 in every PGD 2/255 cell
    pgd@2/255>=0.60:lower                     ... its 95 % interval's lower bound >= 0.60
    worst@8/255:target=siamese:threat=all>=0.4   no attack and no threat model fools > 60 %
    pgd@2/255:balanced_accuracy>=0.5          on balanced accuracy
    pgd@8/255:target=siamese:threat=adaptive>=40%
    cw@inf:median_l2>=0.2                     CW's median L2 of successful perturbations
    *@8/255:target=bare>=0.10                 every attack at 8/255 on the bare classifier

A gate on a target with an error-level flag (constant predictions, chance-level accuracy)
fails, whatever its value: such numbers are not evidence of robustness. A flag that names a
threat (``smoothed-constant-predictions``: ``certified``) fails the gates on that threat's
cells only. Gates on metrics that untargeted attacks do not aim at are refused (AUROC under
attack always; specificity under attack for more than two classes): they are descriptive only.

A gate that does not parse, names an unknown or descriptive metric, or matches no cell is
a :class:`~medrobust.errors.ConfigError` (the CLI exits 2).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medrobust.errors import ConfigError
from medrobust.evaluation.budgets import same_budget
from medrobust.evaluation.results import Cell, Flag, GateFailure, GateOutcome, WorstCase, as_cells
from medrobust.validation import parse_number

#: Metrics a gate may name (numeric per-cell metrics in results.json ``cells[].metrics``).
GATE_METRICS = (
    "robust_accuracy",
    "clean_accuracy",
    "balanced_accuracy",
    "clean_balanced_accuracy",
    "auroc",
    "clean_auroc",
    "sensitivity",
    "clean_sensitivity",
    "specificity",
    "clean_specificity",
    "success_rate",
    "median_linf",
    "median_l2",
    "median_queries",
    "seconds",
)

#: Metrics with a 95 % interval (``:lower`` / ``:upper`` gates).
INTERVAL_METRICS = (
    "robust_accuracy",
    "clean_accuracy",
    "balanced_accuracy",
    "clean_balanced_accuracy",
    "clean_auroc",
    "sensitivity",
    "clean_sensitivity",
    "specificity",
    "clean_specificity",
    "success_rate",
)
#: Metrics a ``worst`` gate may name (the per-sample worst case is an accuracy).
WORST_METRICS = ("robust_accuracy", "clean_accuracy")
#: Attack name of the per-sample worst-case cells.
WORST = "worst"
#: Threat name of the worst case over every threat model of a target.
ALL_THREATS = "all"
BOUNDS = ("value", "lower", "upper")
_DESCRIPTIVE_WHY = (
    "untargeted attacks stop at the first misclassification and never push the score ranking "
    "(a stronger attack can show a higher AUROC), so AUROC under attack is descriptive only"
)

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_NUM = r"[0-9][0-9.eE+-]*(?:/[0-9.]+)?"
_GATE_RE = re.compile(
    r"^\s*(?P<attack>\*|[A-Za-z0-9][A-Za-z0-9_.+-]*)"
    rf"@(?P<eps>\*|inf|{_NUM})"
    r"(?P<quals>(?::[A-Za-z0-9_.+=-]+)*)"
    r"\s*(?P<op>>=|<=|==|>|<)\s*"
    rf"(?P<value>{_NUM}%?)"
    r"\s*(?::\s*(?P<bound>[A-Za-z]+))?\s*$"
)
_SYNTAX = (
    'ATTACK@EPS[:METRIC][:target=NAME][:threat=NAME] OP VALUE[:lower|:upper], e.g. "pgd@2/255>=0.60" '
    'or "pgd@2/255>=0.60:lower"'
)


@dataclass(frozen=True)
class Gate:
    """One parsed gate (``bound``: compare the value, or the lower/upper end of its 95 % interval)."""

    text: str
    attack: str | None
    eps: float | None
    metric: str
    op: str
    value: float
    target: str | None = None
    threat: str | None = None
    bound: str = "value"

    def matches(self, cell: Cell | WorstCase | Mapping[str, Any]) -> bool:
        """Whether ``cell`` (a cell or worst case, or its dict) falls under this gate.

        ``worst`` cells (per-sample worst case) match only gates naming ``worst``, and
        ``worst`` gates match only them.
        """
        (cell,) = as_cells([cell])
        is_worst = str(cell.attack).lower() == WORST
        if (self.attack is not None and self.attack.lower() == WORST) != is_worst:
            return False
        if self.attack is not None and str(cell.attack).lower() != self.attack.lower():
            return False
        if self.target is not None and cell.target != self.target:
            return False
        if self.threat is not None and cell.threat != self.threat:
            return False
        if self.eps is not None:
            # the budget as written: "2/255" names the 2/255 cells on every card (32.1 HU on CT)
            return same_budget(cell.eps_label, cell.eps, self.eps)
        return True

    def value_of(self, cell: Cell | WorstCase) -> float | None:
        """The number this gate tests in ``cell``: the metric, or an end of its interval."""
        if self.bound == "value":
            return cell.metrics.get(self.metric)
        entry = cell.interval(self.metric)
        if entry is None or not entry.ci:
            return None
        return entry.low if self.bound == "lower" else entry.high

    def passes(self, value: float | None) -> bool:
        """Whether a metric value satisfies the gate (missing/NaN values fail)."""
        return compare(self.op, value, self.value)

    @property
    def tested(self) -> str:
        """What is compared: ``robust_accuracy`` or ``robust_accuracy (lower 95% bound)``."""
        return self.metric if self.bound == "value" else f"{self.metric} ({self.bound} 95% bound)"


@dataclass
class GateResult:
    """Outcome of one gate over the cells it matched.

    ``failures`` holds ``(cell key, value)`` pairs; ``reasons`` says, per failing cell, why a
    cell failed other than by its value (an error-level flag on its target, no interval).
    """

    gate: Gate
    checked: list[str] = field(default_factory=list)
    failures: list[tuple[str, float | None]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every matched cell satisfies the gate."""
        return not self.failures

    def outcome(self) -> GateOutcome:
        """The record stored in results.json ``gates``."""
        return GateOutcome(
            gate=self.gate.text,
            metric=self.gate.metric,
            bound=self.gate.bound,
            passed=self.passed,
            checked=list(self.checked),
            failures=[GateFailure(cell=k, value=v, reason=self.reasons.get(k)) for k, v in self.failures],
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored in results.json ``gates``."""
        return self.outcome().to_dict()


def gate_threshold(raw: str, text: str) -> float:
    """A gate's threshold: a number, a fraction ("3/5") or a percentage ("70%" is 0.7)."""
    if raw.endswith("%"):
        return parse_number(raw[:-1], "value", f"gate {text!r}") / 100.0
    return parse_number(raw, "value", f"gate {text!r}")


def compare(op: str, value: float | None, threshold: float) -> bool:
    """Whether ``value OP threshold`` holds; a missing or NaN value fails."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(_OPS[op](float(value), threshold))


def parse_gate(text: str) -> Gate:
    """Parse one gate expression.

    Raises:
        ConfigError: when ``text`` does not follow the grammar, names an unknown metric, a
            descriptive one (AUROC under attack), or a bound on a metric without an interval.
    """
    if not isinstance(text, str):
        raise ConfigError(f"A gate must be a string like {_SYNTAX}. Got {text!r}.")
    m = _GATE_RE.match(text)
    if not m:
        raise ConfigError(f"Cannot parse gate {text!r}. Expected {_SYNTAX}.")
    attack = None if m["attack"] == "*" else m["attack"]
    eps_text = m["eps"]
    if eps_text == "*":
        eps = None
    elif eps_text == "inf":
        eps = math.inf
    else:
        eps = parse_number(eps_text, "eps", f"gate {text!r}")
    metric, target, threat = "robust_accuracy", None, None
    bounds = [m["bound"]] if m["bound"] else []
    for qual in filter(None, m["quals"].split(":")):
        key, sep, val = qual.partition("=")
        if not sep and qual in BOUNDS[1:]:
            bounds.append(qual)
            continue
        if not sep:
            key, val = "metric", qual
        if not val:
            raise ConfigError(f"Gate {text!r}: empty value for {key!r}. Expected {_SYNTAX}.")
        if key == "metric":
            if val not in GATE_METRICS:
                from medrobust.registry import did_you_mean

                raise ConfigError(
                    f"Gate {text!r}: unknown metric {val!r}.{did_you_mean(val, list(GATE_METRICS))} "
                    f"Valid metrics: {', '.join(GATE_METRICS)}."
                )
            metric = val
        elif key == "target":
            target = val
        elif key == "threat":
            threat = val
        else:
            raise ConfigError(
                f"Gate {text!r}: unknown qualifier {key!r} (use a metric name, target=, threat=, "
                "lower or upper)."
            )
    if len(bounds) > 1 or any(b not in BOUNDS[1:] for b in bounds):
        raise ConfigError(
            f"Gate {text!r}: the bound after the value must be 'lower' or 'upper' (once). Got {bounds}."
        )
    bound = bounds[0] if bounds else "value"
    if metric == "auroc":
        raise ConfigError(
            f"Gate {text!r}: 'auroc' under attack cannot be gated: {_DESCRIPTIVE_WHY}. Gate on "
            "robust_accuracy, balanced_accuracy or sensitivity, or on clean_auroc."
        )
    if bound != "value" and metric not in INTERVAL_METRICS:
        raise ConfigError(
            f"Gate {text!r}: {metric!r} has no 95% interval, so ':{bound}' does not apply. Metrics with "
            f"intervals: {', '.join(INTERVAL_METRICS)}."
        )
    if attack is not None and attack.lower() == WORST and metric not in WORST_METRICS:
        raise ConfigError(
            f"Gate {text!r}: a 'worst' gate tests the per-sample worst-case robust accuracy; metric "
            f"{metric!r} is not defined for it. Use one of {', '.join(WORST_METRICS)}."
        )
    return Gate(
        text.strip(), attack, eps, metric, m["op"], gate_threshold(m["value"], text), target, threat, bound
    )


def check_gate_metrics(gates: Iterable[Gate], num_classes: int) -> None:
    """Refuse gates on metrics that are descriptive for this task (before any attack runs).

    Specificity under attack is descriptive for more than two classes: an untargeted attack on
    a sample of class j moves it to *any* wrong class, not towards a false alarm of the class
    whose specificity is measured.

    Raises:
        ConfigError: naming the gate, the metric and why.
    """
    for gate in gates:
        if gate.metric == "specificity" and num_classes > 2:
            raise ConfigError(
                f"Gate {gate.text!r}: 'specificity' under attack is descriptive for a {num_classes}-class "
                "model (untargeted attacks move a sample to any wrong class, not towards a false alarm of "
                "the class whose specificity is measured); gate on robust_accuracy, balanced_accuracy, "
                "sensitivity or clean_specificity instead."
            )


def cell_key(cell: Cell | WorstCase | Mapping[str, Any]) -> str:
    """``target/threat/attack@eps`` label used in gate messages."""
    return as_cells([cell])[0].ident


def check_gates_match(gates: Iterable[Gate], cells: Iterable[Cell | WorstCase | Mapping[str, Any]]) -> None:
    """Raise :class:`ConfigError` for a gate that matches none of ``cells`` (planned or finished).

    ``worst`` gates match the per-sample worst-case cells derived from ``cells``.
    """
    records = as_cells(cells)
    records = records + worst_case_stubs(records)
    for gate in gates:
        if not any(gate.matches(c) for c in records):
            real = [c for c in records if str(c.attack).lower() != WORST]
            available = sorted({f"{c.attack}@{c.eps_label or c.eps}" for c in real})
            raise ConfigError(
                f"Gate {gate.text!r} matches no audit cell. Cells have attack@eps in: {', '.join(available)}"
                " (and worst@EPS for the per-sample worst case)"
                + ("" if gate.target is None else f"; targets: {sorted({c.target for c in records})}")
                + ("" if gate.threat is None else f"; threats: {sorted({c.threat for c in records})}")
                + "."
            )


def evaluate_gates(
    gates: Iterable[Gate],
    cells: Iterable[Cell | Mapping[str, Any]],
    flags: Iterable[Flag | Mapping[str, Any]] | None = None,
    worst: Iterable[WorstCase | Mapping[str, Any]] | None = None,
) -> list[GateResult]:
    """Check every gate on the finished ``cells``.

    Args:
        gates: Parsed gates.
        cells: Finished cells (with ``metrics``, and ``intervals`` for bound gates).
        flags: The audit's flags: a cell whose target has an error-level flag fails (a flag that
            names a threat fails the target's cells of that threat only).
        worst: The per-sample worst-case records (``worst`` gates).
    """
    from medrobust.evaluation.flags import error_targets

    records = as_cells(cells) + [WorstCase.from_dict(w) for w in worst or []]
    gates = list(gates)
    check_gates_match(gates, records)
    flagged = error_targets(list(flags or []))
    out = []
    for gate in gates:
        res = GateResult(gate)
        for cell in records:
            if not gate.matches(cell):
                continue
            key = cell.ident
            res.checked.append(key)
            value = gate.value_of(cell)
            found = [*flagged.get((cell.target, None), []), *flagged.get((cell.target, cell.threat), [])]
            ids = ", ".join(found)
            if ids:
                res.failures.append((key, value))
                res.reasons[key] = (
                    f"target {cell.target!r} has error-level flag(s) {ids}: "
                    "its numbers are not evidence of robustness"
                )
            elif not gate.passes(value):
                res.failures.append((key, value))
                if value is None and gate.bound != "value":
                    res.reasons[key] = f"no 95% interval for {gate.metric}"
        out.append(res)
    return out


def _worst_groups(cells: Sequence[Cell | WorstCase]) -> dict[tuple, list[Cell]]:
    """Cells grouped by (target, threat, norm, eps_label), plus (target, "all", norm, eps_label)."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        if str(c.attack).lower() == WORST or not isinstance(c, Cell):
            continue
        for threat in (c.threat, ALL_THREATS):
            label = c.eps_label or str(c.eps)
            groups.setdefault((c.target, threat, c.norm, label), []).append(c)
    return groups


def worst_case_stubs(cells: Sequence[Cell | WorstCase]) -> list[WorstCase]:
    """The worst-case cells ``cells`` give rise to (identity fields only; gate matching)."""
    out = []
    for (target, threat, norm, label), group in _worst_groups(cells).items():
        eps = group[0].eps
        out.append(
            WorstCase(
                target=target,
                threat=threat,
                attack=WORST,
                norm=norm,
                eps=None if eps is None or math.isinf(eps) else eps,
                eps_label=label,
            )
        )
    return out
