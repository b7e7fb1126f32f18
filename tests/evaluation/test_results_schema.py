"""The typed results schema: results.json read by attribute, written back byte for byte."""

from __future__ import annotations

import json

import pytest

from medrobust.evaluation.results import SCHEMA, AuditDocument, Cell, Flag, Interval
from medrobust.evaluation.verdict import ensure_evidence


def test_results_json_round_trips_byte_for_byte(tiny_run):
    _, results, run_dir, _ = tiny_run
    text = (run_dir / "results.json").read_text(encoding="utf-8")
    doc = AuditDocument.from_dict(json.loads(text))
    assert json.dumps(doc.to_dict()) == json.dumps(json.loads(text)) == json.dumps(results)
    assert doc.schema == SCHEMA and doc.target_names == ["bare", "med"]
    cell = next(c for c in doc.cells if c.key == "bare/whitebox/pgd@2/255")
    raw = next(c for c in results["cells"] if c["key"] == cell.key)
    assert cell.metrics.robust_accuracy == raw["metrics"]["robust_accuracy"]
    assert cell.interval("robust_accuracy").ci == raw["intervals"]["robust_accuracy"]["ci"]
    assert cell.samples.adv_pred == raw["samples"]["adv_pred"] and cell.eps == pytest.approx(2 / 255)
    assert doc.verdict.threat_model.budgets[0].grey == "2 of 255 grey levels per pixel (range [0, 1])"
    assert doc.statistics.half_width == results["statistics"]["half_width_at_0.5"]
    assert doc.model.import_info == results["model"]["import"] and doc.provenance.data.sha256
    assert all(isinstance(f, Flag) and f.doc.startswith("docs/flags.md#") for f in doc.flags)


def test_older_results_without_evidence_are_completed_on_a_copy(tiny_run):
    _, results, *_ = tiny_run
    old = {k: v for k, v in results.items() if k not in ("worst_cases", "verdict", "statistics")}
    old["cells"] = [
        {k: v for k, v in c.items() if k not in ("intervals", "descriptive")} for c in old["cells"]
    ]
    doc = AuditDocument.from_dict(old)
    assert doc.verdict is None and doc.cells[0].intervals is None
    assert json.dumps(doc.to_dict()) == json.dumps(old)  # nothing invented on writing
    done = ensure_evidence(doc)
    assert done is not doc and doc.verdict is None
    assert done.verdict.status == results["verdict"]["status"]
    assert [w.key for w in done.worst_cases] == [w["key"] for w in results["worst_cases"]]


def test_partial_records_and_unknown_keys():
    cell = Cell.from_dict({"target": "bare", "metrics": {"robust_accuracy": 0.5, "new_metric": 3}, "x": 1})
    assert cell.metrics.get("robust_accuracy") == 0.5 and cell.metrics.get("success_rate") is None
    assert cell.metrics.get("new_metric") == 3 and cell.extra == {"x": 1}
    assert cell.to_dict() == {"target": "bare", "metrics": {"robust_accuracy": 0.5, "new_metric": 3}, "x": 1}
    iv = Interval.from_dict(
        {"value": 0.5, "ci": [0.4, 0.6], "method": "wilson", "n": 10, "descriptive": True}
    )
    assert (iv.low, iv.high, iv.descriptive) == (0.4, 0.6, True)
    assert Flag("f", "error", "m", target="t").to_dict() == {
        "id": "f",
        "severity": "error",
        "message": "m",
        "target": "t",
        "threat": None,
        "attack": None,
        "eps_label": None,
        "doc": "",
    }
