"""Machine-readable audit outputs for CI: the ``--json`` summary document and ``--junit`` XML.

* :func:`summary_document` is what ``medrobust audit --json`` prints: the verdict, every
  gate, the per-sample worst-case robust accuracy with its 95 % interval per target, threat
  model and budget, the certified accuracy of each certified cell (randomized smoothing) with
  its exact interval per target and L2 radius, and every flag with its level. Its JSON schema is kept in
  ``medrobust/evaluation/schemas/summary.schema.json`` (:data:`SUMMARY_SCHEMA_PATH`).
* :func:`junit_xml` writes one ``<testcase>`` per gate and per error-level flag (a failed
  gate or any error-level flag is a ``<failure>``), for CI systems that read JUnit reports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from medrobust.evaluation.results import AuditDocument, as_document
from medrobust.evaluation.verdict import flag_counts

SUMMARY_SCHEMA = "medrobust.audit-summary/1"
SUMMARY_SCHEMA_PATH = Path(__file__).parent / "schemas" / "summary.schema.json"


def _summary_gates(results: AuditDocument) -> list[dict[str, Any]]:
    return [
        {
            "gate": g.gate,
            "metric": g.metric or "robust_accuracy",
            "bound": g.bound or "value",
            "passed": bool(g.passed),
            "n_checked": len(g.checked or []),
            "failures": [
                {"cell": f.cell, "value": f.value, **({"reason": f.reason} if f.reason else {})}
                for f in g.failures
            ],
        }
        for g in results.gates
    ]


def _summary_certified(results: AuditDocument) -> list[dict[str, Any]]:
    """Certified cells: certified and smoothed clean accuracy with exact intervals, per target and radius."""
    out = []
    for c in results.certified or []:
        iv = c.interval("robust_accuracy")
        clean = c.interval("clean_accuracy")
        out.append(
            {
                "target": c.target,
                "threat": c.threat or "certified",
                "norm": c.norm or "l2",
                "radius": None if c.eps is None else float(c.eps),
                "eps_label": str(c.eps_label if c.eps_label is not None else c.eps),
                "sigma": None if c.sigma is None else float(c.sigma),
                "certified_accuracy": c.metrics.robust_accuracy,
                "ci": None if iv is None else iv.ci,
                "method": (iv.method if iv is not None else None) or "clopper-pearson",
                "n": int(c.metrics.n or 0),
                "clean_accuracy": c.metrics.clean_accuracy,
                "clean_ci": None if clean is None else clean.ci,
                "n_abstained": c.n_abstained,
                "n0": c.n0,
                "n_draws": c.n_draws,
                "alpha": c.alpha,
            }
        )
    return out


def summary_document(
    results: AuditDocument | Mapping[str, Any], run_dir: str | Path | None = None
) -> dict[str, Any]:
    """The ``--json`` summary (schema ``medrobust.audit-summary/1``) of a finished audit's results."""
    doc = as_document(results)
    gates = _summary_gates(doc)
    failed = any(not g["passed"] for g in gates)
    verdict = "no-gates" if not gates else ("fail" if failed else "pass")
    worst = []
    for w in doc.worst_cases or []:
        iv = w.interval("robust_accuracy")
        eps = w.eps
        worst.append(
            {
                "target": w.target,
                "threat": w.threat,
                "norm": w.norm,
                "eps": None if eps is None or isinstance(eps, str) else float(eps),
                "eps_label": str(w.eps_label),
                "robust_accuracy": w.metrics.robust_accuracy,
                "ci": None if iv is None else iv.ci,
                "method": (iv.method if iv is not None else None) or "wilson",
                "n": int(w.metrics.n or 0),
                "clean_accuracy": w.metrics.clean_accuracy,
                "attacks": list(w.attacks or []),
            }
        )
    flags = [
        {
            "id": f.id,
            "level": f.severity or "warning",
            "message": f.message,
            "target": f.target,
            "threat": f.threat,
            "attack": f.attack,
            "eps_label": f.eps_label,
            "doc": f.doc or "",
        }
        for f in doc.flags
    ]
    data = doc.data
    stats = doc.statistics.to_dict() if doc.statistics is not None else {"confidence": 0.95}
    return {
        "schema": SUMMARY_SCHEMA,
        "name": str(doc.name or "audit"),
        "medrobust_version": str(doc.medrobust_version or ""),
        "verdict": verdict,
        "exit_code": 1 if failed else 0,
        "gates": gates,
        "worst_cases": worst,
        "certified": _summary_certified(doc),
        "flags": flags,
        "flag_counts": flag_counts(doc.flags).to_dict(),
        "data": {
            "source": str(data.source or ""),
            "split": data.split,
            "split_reason": str(data.split_reason or "as configured"),
            "n": int(data.n if data.n is not None else len(data.labels)),
            "n_available": data.n_available,
            "class_counts": dict(data.class_counts or {}),
            "n_patients": data.n_patients,
        },
        "statistics": {
            k: stats[k] for k in ("confidence", "proportions", "clustered", "averaging") if k in stats
        },
        "run_dir": None if run_dir is None else str(run_dir),
    }


def summary_json(results: AuditDocument | Mapping[str, Any], run_dir: str | Path | None = None) -> str:
    """:func:`summary_document` as indented JSON text."""
    return json.dumps(summary_document(results, run_dir), indent=2, allow_nan=False)


def load_summary_schema() -> dict[str, Any]:
    """The JSON schema of :func:`summary_document` (for validators such as ``jsonschema``)."""
    return json.loads(SUMMARY_SCHEMA_PATH.read_text(encoding="utf-8"))


def check_junit_path(path: Path) -> None:
    """Refuse a ``--junit`` path that cannot be written, before the audit runs."""
    from medrobust.errors import ConfigError

    if path.is_dir():
        raise ConfigError(f"The '--junit' option must name a file to write; {str(path)!r} is a folder.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(
            f"The '--junit' option names {str(path)!r}, but its folder {str(parent)!r} does not exist."
        )


def junit_xml(results: AuditDocument | Mapping[str, Any]) -> str:
    """JUnit XML: one testcase per gate and one per error-level flag (each flag a failure)."""
    doc = as_document(results)
    flags = [
        {"id": f.id, "where": list(f.where), "message": f.message, "doc": f.doc}
        for f in doc.flags
        if f.severity == "error"
    ]
    return gates_junit_xml(f"medrobust audit: {doc.name or 'audit'}", _summary_gates(doc), flags)


def gates_junit_xml(
    suite_name: str, gates: Sequence[Mapping[str, Any]], error_flags: Sequence[Mapping[str, Any]] = ()
) -> str:
    """JUnit XML of gate outcomes (a testcase each) and error-level flags (a failing testcase each).

    Args:
        suite_name: The test suite's name.
        gates: Gate outcomes: ``gate``, ``metric``, ``passed``, ``failures`` (``cell``, ``value``,
            optional ``reason``) and ``n_checked`` or ``checked``.
        error_flags: Flags with ``id``, ``where`` (list), ``message``, ``doc``.
    """
    suite = ET.Element("testsuite", name=suite_name)
    failures = 0
    tests = 0
    for g in gates:
        tests += 1
        case = ET.SubElement(suite, "testcase", classname="medrobust.gate", name=str(g["gate"]))
        if not g["passed"]:
            failures += 1
            lines = [
                f"{f['cell']}: {g['metric']} = {f['value']}"
                + (f" ({f['reason']})" if f.get("reason") else "")
                for f in g["failures"]
            ]
            fail = ET.SubElement(case, "failure", message=f"gate failed on {len(g['failures'])} cell(s)")
            fail.text = "\n".join(lines)
        else:
            checked = g["n_checked"] if "n_checked" in g else len(g.get("checked") or [])
            ET.SubElement(case, "system-out").text = f"passed on {checked} cell(s)"
    for f in error_flags:
        tests += 1
        failures += 1
        where = " · ".join(f.get("where") or [])
        name = f"{f['id']}" + (f" ({where})" if where else "")
        case = ET.SubElement(suite, "testcase", classname="medrobust.flag", name=name)
        fail = ET.SubElement(case, "failure", message=f"error-level flag {f['id']}")
        fail.text = f"{f['message']} See {f.get('doc') or ''}."
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
