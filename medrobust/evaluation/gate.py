"""Pass/fail gates over audit cells (``--gate "pgd@2/255>=0.60"``), parsed by a regex, never eval.

Grammar::

    GATE      := ATTACK "@" EPS (":" QUALIFIER)* OP VALUE
    ATTACK    := an attack label from the config, or "*" (every attack)
    EPS       := a budget ("2/255", "0.5", "inf" for minimal attacks' unbounded cell) or "*"
    QUALIFIER := METRIC | "metric=" METRIC | "target=" NAME | "threat=" NAME
    OP        := ">=" | "<=" | ">" | "<" | "=="
    VALUE     := a number, a fraction ("3/5") or a percentage ("60%")

The metric defaults to ``robust_accuracy``; without ``target=``/``threat=`` the gate
applies to every matching cell (all targets and threat models), and *every* matching
cell must satisfy it. Examples::

    pgd@2/255>=0.60                           robust accuracy >= 0.60 in every PGD 2/255 cell
    pgd@2/255:balanced_accuracy>=0.5          on balanced accuracy
    pgd@8/255:target=siamese:threat=adaptive>=40%
    cw@inf:median_l2>=0.2                     CW's median L2 of successful perturbations
    *@8/255:target=bare>=0.10                 every attack at 8/255 on the bare classifier

A gate that does not parse, names an unknown metric, or matches no cell is a
:class:`~medrobust.errors.ConfigError` (the CLI exits 2).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from medrobust.errors import ConfigError
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

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_NUM = r"[0-9][0-9.eE+-]*(?:/[0-9.]+)?"
_GATE_RE = re.compile(
    r"^\s*(?P<attack>\*|[A-Za-z0-9][A-Za-z0-9_.+-]*)"
    rf"@(?P<eps>\*|inf|{_NUM})"
    r"(?P<quals>(?::[A-Za-z0-9_.+=-]+)*)"
    r"\s*(?P<op>>=|<=|==|>|<)\s*"
    rf"(?P<value>{_NUM}%?)\s*$"
)
_SYNTAX = 'ATTACK@EPS[:METRIC][:target=NAME][:threat=NAME] OP VALUE, e.g. "pgd@2/255>=0.60"'


@dataclass(frozen=True)
class Gate:
    """One parsed gate."""

    text: str
    attack: str | None
    eps: float | None
    metric: str
    op: str
    value: float
    target: str | None = None
    threat: str | None = None

    def matches(self, cell: Mapping[str, Any]) -> bool:
        """Whether ``cell`` (a dict with attack, eps, target, threat) falls under this gate."""
        if self.attack is not None and str(cell["attack"]).lower() != self.attack.lower():
            return False
        if self.target is not None and cell["target"] != self.target:
            return False
        if self.threat is not None and cell["threat"] != self.threat:
            return False
        if self.eps is not None:
            eps = math.inf if cell["eps"] is None else float(cell["eps"])  # None: unbounded cell
            if math.isinf(self.eps) or math.isinf(eps):
                return math.isinf(self.eps) and math.isinf(eps)
            return math.isclose(eps, self.eps, rel_tol=1e-6, abs_tol=1e-12)
        return True

    def passes(self, value: float | None) -> bool:
        """Whether a metric value satisfies the gate (missing/NaN values fail)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return bool(_OPS[self.op](float(value), self.value))


@dataclass
class GateResult:
    """Outcome of one gate over the cells it matched."""

    gate: Gate
    checked: list[str] = field(default_factory=list)
    failures: list[tuple[str, float | None]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every matched cell satisfies the gate."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored in results.json ``gates``."""
        return {
            "gate": self.gate.text,
            "metric": self.gate.metric,
            "passed": self.passed,
            "checked": list(self.checked),
            "failures": [{"cell": k, "value": v} for k, v in self.failures],
        }


def parse_gate(text: str) -> Gate:
    """Parse one gate expression.

    Raises:
        ConfigError: when ``text`` does not follow the grammar or names an unknown metric.
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
    for qual in filter(None, m["quals"].split(":")):
        key, sep, val = qual.partition("=")
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
                f"Gate {text!r}: unknown qualifier {key!r} (use a metric name, target= or threat=)."
            )
    raw = m["value"]
    value = (
        parse_number(raw[:-1], "value", f"gate {text!r}") / 100.0
        if raw.endswith("%")
        else (parse_number(raw, "value", f"gate {text!r}"))
    )
    return Gate(text.strip(), attack, eps, metric, m["op"], value, target, threat)


def cell_key(cell: Mapping[str, Any]) -> str:
    """``target/threat/attack@eps`` label used in gate messages."""
    return f"{cell['target']}/{cell['threat']}/{cell['attack']}@{cell.get('eps_label', cell['eps'])}"


def check_gates_match(gates: Iterable[Gate], cells: Iterable[Mapping[str, Any]]) -> None:
    """Raise :class:`ConfigError` for a gate that matches none of ``cells`` (planned or finished)."""
    cells = list(cells)
    for gate in gates:
        if not any(gate.matches(c) for c in cells):
            available = sorted({f"{c['attack']}@{c.get('eps_label', c['eps'])}" for c in cells})
            raise ConfigError(
                f"Gate {gate.text!r} matches no audit cell. Cells have attack@eps in: {', '.join(available)}"
                + ("" if gate.target is None else f"; targets: {sorted({c['target'] for c in cells})}")
                + ("" if gate.threat is None else f"; threats: {sorted({c['threat'] for c in cells})}")
                + "."
            )


def evaluate_gates(gates: Iterable[Gate], cells: Iterable[Mapping[str, Any]]) -> list[GateResult]:
    """Check every gate on the finished ``cells`` (each with a ``metrics`` dict)."""
    cells = list(cells)
    gates = list(gates)
    check_gates_match(gates, cells)
    out = []
    for gate in gates:
        res = GateResult(gate)
        for cell in cells:
            if not gate.matches(cell):
                continue
            key = cell_key(cell)
            res.checked.append(key)
            value = cell["metrics"].get(gate.metric)
            if not gate.passes(value):
                res.failures.append((key, value))
        out.append(res)
    return out
