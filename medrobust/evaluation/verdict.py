"""The audit's headline and verdict: per-sample worst case, gates, flag counts, threat model.

**Per-sample worst case.** For a target, a threat model and a budget, a sample counts as
robust only if *no* attack of that norm fooled it at that budget (its effective adversarial
prediction is right under every attack). This is at most the lowest robust accuracy of any
single attack, and it is the headline: a defense that resists PGD on some images and
AutoAttack on others is not robust on either set. ``threat="all"`` combines every threat
model of the target (whitebox for the bare classifier; graybox and adaptive for a defended
one), so a sample counts only if it survived every attack under every threat model.

:func:`complete_results` is what the runner calls on the assembled
:class:`~medrobust.evaluation.results.AuditDocument`: intervals, audit flags, worst cases,
gates and the verdict, in that order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medrobust.evaluation.gate import ALL_THREATS, WORST, _worst_groups, worst_case_stubs  # noqa: F401
from medrobust.evaluation.results import (
    AuditDocument,
    BudgetStatement,
    Flag,
    FlagCounts,
    GateCounts,
    Headline,
    Interval,
    ThreatModel,
    Verdict,
    WorstCase,
    WorstMetrics,
    as_document,
    as_flags,
)

#: Attacker knowledge per threat model (the report's threat-model statement).
THREAT_KNOWLEDGE = {
    "whitebox": "full knowledge of the classifier (architecture, weights, gradients); no defense",
    "graybox": (
        "full knowledge of the classifier, none of the defense: examples crafted on the bare "
        "classifier are passed through the defense (optimistic for every defense)"
    ),
    "adaptive": (
        "full knowledge of classifier and defense: attacks crafted end to end through denoiser + "
        "classifier (BPDA, an identity gradient, through non-differentiable denoisers; Expectation over "
        "Transformation, gradients averaged over many draws, through randomised defenses, whose success "
        "is decided by one seeded draw per sample)"
    ),
    "certified": (
        "any attacker within the L2 radius: the target smoothed by Gaussian noise (randomized smoothing; "
        "denoised smoothing behind a defense's denoiser) is certified by CERTIFY (Cohen et al. 2019) "
        "with probability at least 1 - alpha per sample; a statement about the smoothed classifier, "
        "not about the target as attacked in the other cells"
    ),
}


def _eps_sort(eps: float | None) -> float:
    return math.inf if eps is None else float(eps)


def worst_cases(results: AuditDocument | Mapping[str, Any]) -> list[WorstCase]:
    """Per-sample worst case per (target, threat or ``all``, norm, budget), with its interval.

    Each record looks like a cell (``key``, ``target``, ``threat``, ``attack="worst"``,
    ``norm``, ``eps``, ``eps_label``, ``metrics``, ``intervals``) plus ``attacks`` (the
    attacks combined), ``threats`` and ``weakest_single`` (the lowest single-attack robust
    accuracy, for comparison). Gates address them as ``worst@EPS``.
    """
    from medrobust.evaluation.statistics import proportion_interval, resampler_for

    doc = as_document(results)
    labels = np.asarray(doc.data.labels, dtype=np.int64)
    n = int(labels.size)
    rs = resampler_for(doc)
    names = doc.target_names
    out = []
    groups = _worst_groups(doc.cells)
    order = sorted(
        groups,
        key=lambda k: (
            names.index(k[0]) if k[0] in names else 99,
            k[1] == ALL_THREATS,
            k[1],
            0 if k[2] == "linf" else 1,
            _eps_sort(groups[k][0].eps),
        ),
    )
    for key in order:
        target, threat, norm, label = key
        group = groups[key]
        robust = np.ones(n, dtype=bool)
        for c in group:
            robust &= np.asarray(c.samples.adv_pred, dtype=np.int64) == labels
        clean = group[0].metrics.clean_accuracy
        value = float(robust.mean()) if n else None
        singles = [c.metrics.robust_accuracy for c in group if c.metrics.robust_accuracy is not None]
        clean_iv = group[0].interval("clean_accuracy")
        intervals = {
            "robust_accuracy": Interval.from_dict(
                proportion_interval(robust, np.ones(n, dtype=bool), value, rs)
            ),
            **({"clean_accuracy": clean_iv} if clean_iv else {}),
        }
        out.append(
            WorstCase(
                key=f"{target}/{threat}/{WORST}@{label}",
                target=target,
                threat=threat,
                attack=WORST,
                norm=norm,
                eps=group[0].eps,
                eps_label=label,
                attacks=list(dict.fromkeys(c.attack for c in group)),
                threats=list(dict.fromkeys(c.threat for c in group)),
                weakest_single=min(singles) if singles else None,
                metrics=WorstMetrics(
                    n=n, n_robust=int(robust.sum()), robust_accuracy=value, clean_accuracy=clean
                ),
                intervals=intervals,
            )
        )
    return out


def headline(results: AuditDocument | Mapping[str, Any]) -> list[WorstCase]:
    """The verdict's rows: per target, its overall worst case (``threat="all"``) at each bounded budget."""
    return [
        w
        for w in as_document(results).worst_cases or []
        if w.threat == ALL_THREATS and w.eps is not None and not _is_inf(w.eps)
    ]


def _is_inf(eps: Any) -> bool:
    try:
        return math.isinf(float(eps))
    except (TypeError, ValueError):
        return str(eps) == "inf"


def eps_in_grey_levels(eps: float, norm: str, bounds: Sequence[float], unit: str = "") -> str:
    """A budget in the units a reader knows: image units and 8-bit grey levels of the card's range.

    ``linf`` 2/255 on bounds [0, 1] is "2 of 255 grey levels per pixel"; on a CT card it is
    "32.12 HU per pixel = 2 of 255 grey levels of the range [-1024, 3071] HU"
    (:func:`medrobust.evaluation.budgets.describe_budget`).
    """
    from medrobust.evaluation.budgets import describe_budget

    return describe_budget(eps, norm, bounds, unit)


def threat_model(results: AuditDocument | Mapping[str, Any]) -> ThreatModel:
    """The threat-model statement: knowledge per threat, goal, where the perturbation acts, budgets.

    Each budget is given both ways: ``eps`` in image units of the card's bounds, its label as
    the config writes it (``2/255`` = 2/255 of the range) and ``grey``, the text for readers.
    """
    from medrobust.evaluation.budgets import eps_label, intensity_unit

    doc = as_document(results)
    bounds = doc.bounds or [0.0, 1.0]
    preset = doc.data.preset
    unit = intensity_unit(bounds, doc.model.modality)
    labels = {
        (c.norm, float(c.eps)): c.eps_label for c in doc.cells if c.eps is not None and not _is_inf(c.eps)
    }
    budgets = [
        BudgetStatement(
            norm=norm,
            eps=eps,
            eps_label=labels.get((norm, float(eps))) or eps_label(eps),
            grey=eps_in_grey_levels(eps, norm, bounds, unit),
        )
        for norm in ("linf", "l2")
        for eps in getattr(doc.budgets, norm) or []
    ]
    return ThreatModel(
        knowledge={t: THREAT_KNOWLEDGE.get(t, t) for t in doc.threats},
        goal=(
            "evasion: change the predicted class of each correctly classified image (untargeted), "
            "within the budget; attacks stop at the first misclassification"
        ),
        where=(
            f"on the preprocessed image the model receives (after the {preset or 'data'} preset: "
            f"resizing and intensity scaling to [{bounds[0]:g}, {bounds[1]:g}]), before any defense; "
            "not on raw DICOM values or in the acquisition"
        ),
        budgets=budgets,
    )


def flag_counts(flags: Iterable[Flag | Mapping[str, Any]]) -> FlagCounts:
    """Flags per level (``error``, ``warning``, ``info``)."""
    counts = FlagCounts()
    for f in as_flags(flags):
        level = f.severity if f.severity in ("error", "warning", "info") else "warning"
        setattr(counts, level, getattr(counts, level) + 1)
    return counts


def verdict(results: AuditDocument | Mapping[str, Any]) -> Verdict:
    """``results.verdict``: status (pass/fail/no-gates), gate and flag counts, headline, threat model."""
    doc = as_document(results)
    failed = [g for g in doc.gates if not g.passed]
    status = "no-gates" if not doc.gates else ("fail" if failed else "pass")
    return Verdict(
        status=status,
        gates=GateCounts(total=len(doc.gates), passed=len(doc.gates) - len(failed), failed=len(failed)),
        flags=flag_counts(doc.flags),
        headline=[
            Headline(
                target=w.target,
                norm=w.norm,
                eps=w.eps,
                eps_label=w.eps_label,
                robust_accuracy=w.interval("robust_accuracy"),
                clean_accuracy=w.interval("clean_accuracy"),
                attacks=list(w.attacks or []),
                threats=list(w.threats or []),
            )
            for w in headline(doc)
        ],
        threat_model=threat_model(doc),
        certified=None if doc.certified is None else certified_rows(doc),
    )


def certified_rows(results: AuditDocument | Mapping[str, Any]) -> list[Headline]:
    """The verdict's certified rows: per target and L2 radius, certified and smoothed clean accuracy."""
    return [
        Headline(
            target=c.target,
            norm=c.norm,
            eps=c.eps,
            eps_label=c.eps_label,
            robust_accuracy=c.interval("robust_accuracy"),
            clean_accuracy=c.interval("clean_accuracy"),
            attacks=["certified"],
            threats=["certified"],
        )
        for c in as_document(results).certified or []
    ]


def complete_results(results: AuditDocument, gates: Sequence[Any], flags: Sequence[Flag]) -> AuditDocument:
    """Add intervals, audit flags, worst cases, gate results and the verdict to ``results``.

    Args:
        results: The assembled results (data, targets with clean metrics, cells, config).
        gates: Parsed :class:`~medrobust.evaluation.gate.Gate` objects.
        flags: Flags raised so far (model and results checks).

    Returns:
        ``results``, completed in place.
    """
    from medrobust.evaluation.flags import SEVERITIES, run_audit_checks
    from medrobust.evaluation.gate import evaluate_gates
    from medrobust.evaluation.statistics import add_intervals

    add_intervals(results)
    all_flags = [*flags, *run_audit_checks(results)]
    all_flags.sort(key=lambda f: SEVERITIES.index(f.severity) if f.severity in SEVERITIES else 9)
    results.flags = all_flags
    results.worst_cases = worst_cases(results)
    results.gates = [
        g.outcome()
        for g in evaluate_gates(
            gates, [*results.cells, *(results.certified or [])], all_flags, results.worst_cases
        )
    ]
    results.verdict = verdict(results)
    return results


def ensure_evidence(results: AuditDocument | Mapping[str, Any]) -> AuditDocument:
    """``results`` with intervals, worst cases and a verdict.

    An older results.json lacks them: a completed copy is returned (its flags and gates are
    kept as they were).
    """
    doc = as_document(results)
    if doc.verdict is not None and doc.worst_cases is not None:
        return doc
    from medrobust.evaluation.statistics import add_intervals

    # a copy when given a document: the caller's results stay as they were
    out = AuditDocument.from_dict(doc.to_dict()) if doc is results else doc
    add_intervals(out)
    out.worst_cases = worst_cases(out)
    out.verdict = verdict(out)
    return out
