"""The audit's headline and verdict: per-sample worst case, gates, flag counts, threat model.

**Per-sample worst case.** For a target, a threat model and a budget, a sample counts as
robust only if *no* attack of that norm fooled it at that budget (its effective adversarial
prediction is right under every attack). This is at most the lowest robust accuracy of any
single attack, and it is the headline: a defense that resists PGD on some images and
AutoAttack on others is not robust on either set. ``threat="all"`` combines every threat
model of the target (whitebox for the bare classifier; graybox and adaptive for a defended
one), so a sample counts only if it survived every attack under every threat model.

:func:`complete_results` is what the runner calls on the assembled results dict: intervals,
audit flags, worst cases, gates and the verdict, in that order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medrobust.evaluation.gate import ALL_THREATS, WORST, _worst_groups, worst_case_stubs  # noqa: F401

#: Attacker knowledge per threat model (the report's threat-model statement).
THREAT_KNOWLEDGE = {
    "whitebox": "full knowledge of the classifier (architecture, weights, gradients); no defense",
    "graybox": (
        "full knowledge of the classifier, none of the defense: examples crafted on the bare "
        "classifier are passed through the defense (optimistic for every defense)"
    ),
    "adaptive": (
        "full knowledge of classifier and defense: attacks crafted end to end through denoiser + "
        "classifier (BPDA, an identity gradient, through non-differentiable denoisers)"
    ),
}


def _eps_sort(eps: float | None) -> float:
    return math.inf if eps is None else float(eps)


def worst_cases(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-sample worst case per (target, threat or ``all``, norm, budget), with its interval.

    Each record looks like a cell (``key``, ``target``, ``threat``, ``attack="worst"``,
    ``norm``, ``eps``, ``eps_label``, ``metrics``, ``intervals``) plus ``attacks`` (the
    attacks combined), ``threats`` and ``weakest_single`` (the lowest single-attack robust
    accuracy, for comparison). Gates address them as ``worst@EPS``.
    """
    from medrobust.evaluation.statistics import proportion_interval, resampler_for

    labels = np.asarray(results["data"]["labels"], dtype=np.int64)
    n = int(labels.size)
    rs = resampler_for(results)
    out = []
    groups = _worst_groups(results["cells"])
    order = sorted(
        groups,
        key=lambda k: (
            [t["name"] for t in results["targets"]].index(k[0]) if k[0] in _names(results) else 99,
            k[1] == ALL_THREATS,
            k[1],
            0 if k[2] == "linf" else 1,
            _eps_sort(groups[k][0]["eps"]),
        ),
    )
    for key in order:
        target, threat, norm, label = key
        group = groups[key]
        robust = np.ones(n, dtype=bool)
        for c in group:
            robust &= np.asarray(c["samples"]["adv_pred"], dtype=np.int64) == labels
        clean = group[0]["metrics"].get("clean_accuracy")
        value = float(robust.mean()) if n else None
        singles = [c["metrics"].get("robust_accuracy") for c in group]
        singles = [s for s in singles if s is not None]
        clean_iv = (group[0].get("intervals") or {}).get("clean_accuracy")
        out.append(
            {
                "key": f"{target}/{threat}/{WORST}@{label}",
                "target": target,
                "threat": threat,
                "attack": WORST,
                "norm": norm,
                "eps": group[0]["eps"],
                "eps_label": label,
                "attacks": list(dict.fromkeys(c["attack"] for c in group)),
                "threats": list(dict.fromkeys(c["threat"] for c in group)),
                "weakest_single": min(singles) if singles else None,
                "metrics": {
                    "n": n,
                    "n_robust": int(robust.sum()),
                    "robust_accuracy": value,
                    "clean_accuracy": clean,
                },
                "intervals": {
                    "robust_accuracy": proportion_interval(robust, np.ones(n, dtype=bool), value, rs),
                    **({"clean_accuracy": clean_iv} if clean_iv else {}),
                },
            }
        )
    return out


def _names(results: Mapping[str, Any]) -> list[str]:
    return [t["name"] for t in results["targets"]]


def headline(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The verdict's rows: per target, its overall worst case (``threat="all"``) at each bounded budget."""
    return [
        w
        for w in results.get("worst_cases", [])
        if w["threat"] == ALL_THREATS and w["eps"] is not None and not _is_inf(w["eps"])
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


def threat_model(results: Mapping[str, Any]) -> dict[str, Any]:
    """The threat-model statement: knowledge per threat, goal, where the perturbation acts, budgets.

    Each budget is given both ways: ``eps`` in image units of the card's bounds, its label as
    the config writes it (``2/255`` = 2/255 of the range) and ``grey``, the text for readers.
    """
    from medrobust.evaluation.budgets import eps_label, intensity_unit

    bounds = results.get("bounds") or [0.0, 1.0]
    preset = results["data"].get("preset")
    modality = (((results.get("model") or {}).get("card")) or {}).get("modality")
    unit = intensity_unit(bounds, modality)
    labels = {
        (c["norm"], float(c["eps"])): c.get("eps_label")
        for c in results.get("cells", [])
        if c.get("eps") is not None and not _is_inf(c["eps"])
    }
    budgets = []
    for norm in ("linf", "l2"):
        for eps in (results.get("budgets") or {}).get(norm) or []:
            budgets.append(
                {
                    "norm": norm,
                    "eps": eps,
                    "eps_label": labels.get((norm, float(eps))) or eps_label(eps),
                    "grey": eps_in_grey_levels(eps, norm, bounds, unit),
                }
            )
    return {
        "knowledge": {t: THREAT_KNOWLEDGE.get(t, t) for t in results.get("threats", [])},
        "goal": (
            "evasion: change the predicted class of each correctly classified image (untargeted), "
            "within the budget; attacks stop at the first misclassification"
        ),
        "where": (
            f"on the preprocessed image the model receives (after the {preset or 'data'} preset: "
            f"resizing and intensity scaling to [{bounds[0]:g}, {bounds[1]:g}]), before any defense; "
            "not on raw DICOM values or in the acquisition"
        ),
        "budgets": budgets,
    }


def flag_counts(flags: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``{"error": n, "warning": n, "info": n}``."""
    counts = {"error": 0, "warning": 0, "info": 0}
    for f in flags:
        counts[f.get("severity", "warning")] = counts.get(f.get("severity", "warning"), 0) + 1
    return counts


def verdict(results: Mapping[str, Any]) -> dict[str, Any]:
    """``results["verdict"]``: status (pass/fail/no-gates), gate and flag counts, headline, threat model."""
    gates = results.get("gates", [])
    failed = [g for g in gates if not g["passed"]]
    status = "no-gates" if not gates else ("fail" if failed else "pass")
    return {
        "status": status,
        "gates": {"total": len(gates), "passed": len(gates) - len(failed), "failed": len(failed)},
        "flags": flag_counts(results.get("flags", [])),
        "headline": [
            {
                "target": w["target"],
                "norm": w["norm"],
                "eps": w["eps"],
                "eps_label": w["eps_label"],
                "robust_accuracy": w["intervals"]["robust_accuracy"],
                "clean_accuracy": (w.get("intervals") or {}).get("clean_accuracy"),
                "attacks": w["attacks"],
                "threats": w["threats"],
            }
            for w in headline(results)
        ],
        "threat_model": threat_model(results),
    }


def complete_results(results: dict[str, Any], gates: Sequence[Any], flags: Sequence[Any]) -> dict[str, Any]:
    """Add intervals, audit flags, worst cases, gate results and the verdict to ``results``.

    Args:
        results: The assembled results dict (data, targets with clean metrics, cells, config).
        gates: Parsed :class:`~medrobust.evaluation.gate.Gate` objects.
        flags: :class:`~medrobust.evaluation.flags.Flag` objects raised so far (model and
            results checks).

    Returns:
        ``results``, completed in place.
    """
    from medrobust.evaluation.flags import SEVERITIES, run_audit_checks
    from medrobust.evaluation.gate import evaluate_gates
    from medrobust.evaluation.statistics import add_intervals

    add_intervals(results)
    all_flags = [f.to_dict() for f in [*flags, *run_audit_checks(results)]]
    all_flags.sort(key=lambda f: SEVERITIES.index(f["severity"]) if f["severity"] in SEVERITIES else 9)
    results["flags"] = all_flags
    results["worst_cases"] = worst_cases(results)
    results["gates"] = [
        g.to_dict() for g in evaluate_gates(gates, results["cells"], all_flags, results["worst_cases"])
    ]
    results["verdict"] = verdict(results)
    return results


def ensure_evidence(results: Mapping[str, Any]) -> Mapping[str, Any]:
    """``results`` with intervals, worst cases and a verdict.

    An older results.json lacks them: a completed copy is returned (its flags and gates are
    kept as they were).
    """
    if "verdict" in results and "worst_cases" in results:
        return results
    import copy

    from medrobust.evaluation.statistics import add_intervals

    out = copy.deepcopy(dict(results))
    add_intervals(out)
    out["worst_cases"] = worst_cases(out)
    out["verdict"] = verdict(out)
    return out
