"""Pass/fail gates over segmentation cells (``--gate "pgd@2/255:dice>=0.70"``), parsed by a regex, never eval.

The syntax is the classifier gates' (:mod:`medrobust.evaluation.gate`) with segmentation metrics::

    GATE      := ATTACK "@" EPS (":" QUALIFIER)* OP VALUE [":" BOUND]
    ATTACK    := an attack label from the config, or "*" (every attack)
    EPS       := a budget as the config writes it ("2/255", "0.5") or "*"
    QUALIFIER := METRIC [":" LABEL] | "metric=" METRIC | "label=" LABEL | "target=" NAME
                 | "threat=" NAME | BOUND
    METRIC    := dice | hd95 | detection | changed | clean_dice | clean_hd95 | clean_detection
    BOUND     := "lower" | "upper" (test that end of the metric's 95 % interval)
    OP        := ">=" | "<=" | ">" | "<" | "=="
    VALUE     := a number, a fraction ("3/5") or a percentage ("70%")

``dice`` without a label is the mean foreground Dice; ``dice:nodule`` the Dice of one label;
``hd95`` without a label is the largest mean HD95 over the foreground labels (in voxels);
``detection`` the lesion detection rate; ``changed`` the fraction of images whose prediction
changed. Every matching cell must pass. Examples::

    pgd@2/255:dice>=0.70
    segpgd@8/255:dice:nodule>=0.5
    erase@8/255:detection>=0.8
    pgd@8/255:target=median:threat=adaptive:dice>=0.5:lower
    *@8/255:hd95:nodule<=12

A gate that does not parse, names an unknown metric or label, or matches no cell is a
:class:`~medrobust.errors.ConfigError` (the CLI exits 2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medrobust.errors import ConfigError
from medrobust.evaluation.budgets import same_budget
from medrobust.evaluation.gate import _NUM, BOUNDS, compare, gate_threshold
from medrobust.validation import parse_number

#: Metrics a segmentation gate may name.
SEGMENTATION_GATE_METRICS = (
    "dice",
    "hd95",
    "detection",
    "changed",
    "clean_dice",
    "clean_hd95",
    "clean_detection",
)
#: Metrics that take a label (``dice:nodule``).
LABELLED_METRICS = ("dice", "hd95", "clean_dice", "clean_hd95")
_GATE_RE = re.compile(
    r"^\s*(?P<attack>\*|[A-Za-z0-9][A-Za-z0-9_.+-]*)"
    rf"@(?P<eps>\*|{_NUM})"
    r"(?P<quals>(?::[A-Za-z0-9_.+=-]+)*)"
    r"\s*(?P<op>>=|<=|==|>|<)\s*"
    rf"(?P<value>{_NUM}%?)"
    r"\s*(?::\s*(?P<bound>[A-Za-z]+))?\s*$"
)
_SYNTAX = (
    "ATTACK@EPS[:METRIC[:LABEL]][:target=NAME][:threat=NAME] OP VALUE[:lower|:upper], e.g. "
    '"pgd@2/255:dice>=0.70" or "segpgd@8/255:dice:nodule>=0.5"'
)


@dataclass(frozen=True)
class SegmentationGate:
    """One parsed gate."""

    text: str
    attack: str | None
    eps: float | None
    metric: str
    op: str
    value: float
    label: str | None = None
    target: str | None = None
    threat: str | None = None
    bound: str = "value"

    def matches(self, cell: Any) -> bool:
        """Whether ``cell`` (with attack, target, threat, eps_label, eps) falls under it."""
        if self.attack is not None and str(cell.attack).lower() != self.attack.lower():
            return False
        if self.target is not None and cell.target != self.target:
            return False
        if self.threat is not None and cell.threat != self.threat:
            return False
        if self.eps is not None:
            return same_budget(cell.eps_label, cell.eps, self.eps)
        return True

    def interval_of(self, cell: Any) -> dict[str, Any] | None:
        """The interval record ``{"value", "ci", ...}`` this gate tests in ``cell`` (None when absent)."""
        clean = self.metric.startswith("clean_")
        metrics = cell.clean if clean else cell.metrics
        base = self.metric.removeprefix("clean_")
        if base == "dice":
            return metrics["dice"].get(self.label) if self.label else metrics.get("mean_dice")
        if base == "hd95":
            if self.label:
                return metrics["hd95"].get(self.label)
            values = [iv for iv in metrics["hd95"].values() if iv.get("value") is not None]
            return max(values, key=lambda iv: iv["value"]) if values else None
        if base == "detection":
            return metrics.get("detection")
        return metrics.get("changed")

    def value_of(self, cell: Any) -> float | None:
        """The number tested: the metric, or an end of its 95 % interval."""
        iv = self.interval_of(cell)
        if iv is None:
            return None
        if self.bound == "value":
            return iv.get("value")
        ci = iv.get("ci")
        if not ci:
            return None
        return ci[0] if self.bound == "lower" else ci[1]

    def passes(self, value: float | None) -> bool:
        """Whether ``value`` satisfies the gate (missing or NaN values fail)."""
        return compare(self.op, value, self.value)

    @property
    def tested(self) -> str:
        """What is compared, e.g. ``dice:nodule (lower 95% bound)``."""
        name = self.metric + (f":{self.label}" if self.label else "")
        return name if self.bound == "value" else f"{name} ({self.bound} 95% bound)"


@dataclass
class SegmentationGateResult:
    """Outcome of one gate: the cells it checked and the failing ones with their values."""

    gate: SegmentationGate
    checked: list[str] = field(default_factory=list)
    failures: list[tuple[str, float | None]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every matched cell passes."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """The record stored in results.json ``gates``."""
        return {
            "gate": self.gate.text,
            "metric": self.gate.tested,
            "bound": self.gate.bound,
            "passed": self.passed,
            "checked": list(self.checked),
            "failures": [{"cell": k, "value": v} for k, v in self.failures],
        }


def parse_segmentation_gate(text: Any) -> SegmentationGate:
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
    eps = None if m["eps"] == "*" else parse_number(m["eps"], "eps", f"gate {text!r}")
    metric: str | None = None
    label = target = threat = None
    bounds = [m["bound"]] if m["bound"] else []
    for qual in filter(None, m["quals"].split(":")):
        key, sep, val = qual.partition("=")
        if not sep and qual in BOUNDS[1:]:
            bounds.append(qual)
            continue
        if not sep:
            key, val = ("label", qual) if metric in LABELLED_METRICS and label is None else ("metric", qual)
        if not val:
            raise ConfigError(f"Gate {text!r}: empty value for {key!r}. Expected {_SYNTAX}.")
        if key == "metric":
            if val not in SEGMENTATION_GATE_METRICS or metric is not None:
                from medrobust.registry import did_you_mean

                hint = did_you_mean(val, list(SEGMENTATION_GATE_METRICS))
                raise ConfigError(
                    f"Gate {text!r}: unknown or repeated metric {val!r}.{hint} Valid metrics: "
                    f"{', '.join(SEGMENTATION_GATE_METRICS)} (a label follows dice or hd95: dice:nodule)."
                )
            metric = val
        elif key == "label":
            label = val
        elif key == "target":
            target = val
        elif key == "threat":
            threat = val
        else:
            raise ConfigError(
                f"Gate {text!r}: unknown qualifier {key!r} (use a metric name, label=, target=, threat=, "
                "lower or upper)."
            )
    metric = metric or "dice"
    if label is not None and metric not in LABELLED_METRICS:
        raise ConfigError(
            f"Gate {text!r}: metric {metric!r} takes no label (labels go with "
            f"{', '.join(LABELLED_METRICS)}). Got label {label!r}."
        )
    if len(bounds) > 1 or any(b not in BOUNDS[1:] for b in bounds):
        raise ConfigError(
            f"Gate {text!r}: the bound after the value must be 'lower' or 'upper' (once). Got {bounds}."
        )
    return SegmentationGate(
        text.strip(),
        attack,
        eps,
        metric,
        m["op"],
        gate_threshold(m["value"], text),
        label,
        target,
        threat,
        bounds[0] if bounds else "value",
    )


def check_segmentation_gates(
    gates: Iterable[SegmentationGate], cells: Sequence[Any], label_names: Sequence[str]
) -> None:
    """Refuse a gate naming an unknown label or matching no cell (planned or finished).

    Raises:
        ConfigError: naming the gate and what is available.
    """
    names = [str(n) for n in label_names]
    for gate in gates:
        if gate.label is not None and gate.label not in names[1:]:
            raise ConfigError(
                f"Gate {gate.text!r}: unknown label {gate.label!r}. The model card's foreground labels: "
                f"{', '.join(names[1:])}."
            )
        if not any(gate.matches(c) for c in cells):
            available = sorted({f"{c.attack}@{c.eps_label}" for c in cells})
            raise ConfigError(
                f"Gate {gate.text!r} matches no audit cell. Cells have attack@eps in: {', '.join(available)}"
                + ("" if gate.target is None else f"; targets: {sorted({c.target for c in cells})}")
                + ("" if gate.threat is None else f"; threats: {sorted({c.threat for c in cells})}")
                + "."
            )


def evaluate_segmentation_gates(
    gates: Iterable[SegmentationGate], cells: Sequence[Any]
) -> list[SegmentationGateResult]:
    """Check every gate on the finished ``cells`` (each has ``metrics``, ``clean`` and ``ident``)."""
    out = []
    for gate in gates:
        res = SegmentationGateResult(gate)
        for cell in cells:
            if not gate.matches(cell):
                continue
            res.checked.append(cell.ident)
            value = gate.value_of(cell)
            if not gate.passes(value):
                res.failures.append((cell.ident, value))
        out.append(res)
    return out
