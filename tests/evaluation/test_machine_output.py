"""CI outputs: --json checked against the schema in the repository, --junit parsed as XML, -q, bound gates."""

from __future__ import annotations

import json
import shutil
from xml.etree import ElementTree as ET

import pytest

from medrobust.cli.main import main
from medrobust.evaluation.machine_output import load_summary_schema, summary_document


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A copy of the finished tiny run: the CLI resumes it (no cell recomputed)."""
    _, _, run_dir, cfg_path = tiny_run
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return cfg_path, out


def test_json_summary_validates_against_the_schema(run_copy, capsys):
    jsonschema = pytest.importorskip("jsonschema")
    cfg, out = run_copy
    code = main(
        [
            "audit",
            "-c",
            str(cfg),
            "--out",
            str(out),
            "--json",
            "--gate",
            "pgd@2/255:target=bare>=0.5:lower",
            "--gate",
            "worst@8/255:threat=all>=0.99",
        ]
    )
    printed = capsys.readouterr()
    assert code == 1, printed.err
    doc = json.loads(printed.out)  # stdout holds the JSON document and nothing else
    jsonschema.validate(doc, load_summary_schema())
    assert doc["verdict"] == "fail" and doc["exit_code"] == 1
    assert [g["passed"] for g in doc["gates"]] == [True, False]
    assert doc["gates"][0]["bound"] == "lower"
    results = json.loads((out / "results.json").read_text())
    worst = {(w["target"], w["threat"], w["eps_label"]): w for w in doc["worst_cases"]}
    w = worst[("med", "all", "8/255")]
    assert w["ci"][0] <= w["robust_accuracy"] <= w["ci"][1] and w["method"] == "wilson"
    assert set(w["attacks"]) == {"pgd"}
    singles = [
        c["metrics"]["robust_accuracy"]
        for c in results["cells"]
        if c["target"] == "med" and c["eps_label"] == "8/255" and c["norm"] == "linf"
    ]
    assert w["robust_accuracy"] <= min(singles)  # per-sample worst case over threat models
    assert {f["level"] for f in doc["flags"]} <= {"error", "warning", "info"}
    assert [f["id"] for f in doc["flags"]] == [f["id"] for f in results["flags"]]
    assert sum(doc["data"]["class_counts"].values()) == doc["data"]["n"] == 16
    # a hand-broken document does not validate (the schema is not vacuous)
    bad = {**doc, "verdict": "maybe"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, load_summary_schema())


def test_lower_bound_gate_is_stricter_than_the_value(run_copy, capsys):
    cfg, out = run_copy
    results = json.loads((out / "results.json").read_text())
    cell = next(c for c in results["cells"] if c["key"] == "bare/whitebox/pgd@2/255")
    value, (low, _) = cell["metrics"]["robust_accuracy"], cell["intervals"]["robust_accuracy"]["ci"]
    assert low < value
    threshold = (low + value) / 2
    from medrobust.evaluation.gate import evaluate_gates, parse_gate

    plain, lower, lower_inline = evaluate_gates(
        [
            parse_gate(f"pgd@2/255:target=bare>={threshold:.4f}"),
            parse_gate(f"pgd@2/255:target=bare>={threshold:.4f}:lower"),
            parse_gate(f"pgd@2/255:target=bare:lower>={threshold:.4f}"),
        ],
        results["cells"],
    )
    assert plain.passed and not lower.passed and not lower_inline.passed
    assert lower.failures == [("bare/whitebox/pgd@2/255", pytest.approx(low))]
    argv = ["audit", "-c", str(cfg), "--out", str(out), "-q"]
    assert main([*argv, "--gate", f"pgd@2/255:target=bare>={threshold:.4f}:lower"]) == 1
    printed = capsys.readouterr()
    assert printed.out.startswith("verdict: FAIL (1 of 1 gate(s) failed)")
    assert len(printed.out.splitlines()) == 1 + results["verdict"]["flags"]["error"]  # -q: no table
    assert "(lower 95% bound)" in printed.err


def test_junit_has_one_testcase_per_gate(run_copy, tmp_path, capsys):
    cfg, out = run_copy
    junit = tmp_path / "ci" / "junit.xml"
    argv = ["audit", "-c", str(cfg), "--out", str(out), "-q", "--junit", str(junit)]
    assert main([*argv, "--gate", "pgd@2/255>=0"]) == 2  # the folder does not exist: refused first
    assert "'--junit'" in capsys.readouterr().err
    junit.parent.mkdir()
    assert main([*argv, "--gate", "pgd@2/255>=0", "--gate", "pgd@8/255:target=bare>=0.99"]) == 1
    suite = ET.parse(junit).getroot()
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["pgd@2/255>=0", "pgd@8/255:target=bare>=0.99"]
    assert cases[0].find("failure") is None and cases[1].find("failure") is not None
    assert "bare/whitebox/pgd@8/255" in cases[1].find("failure").text
    assert suite.get("tests") == "2" and suite.get("failures") == "1"


def test_descriptive_metrics_are_refused_in_gates(run_copy, capsys):
    cfg, out = run_copy
    assert main(["audit", "-c", str(cfg), "--out", str(out), "--gate", "pgd@2/255:auroc>=0.5"]) == 2
    err = capsys.readouterr().err
    assert "descriptive" in err and err.count("error:") == 1


def test_summary_of_an_older_results_dict_without_intervals(tiny_run):
    _, results, *_ = tiny_run
    old = {k: v for k, v in results.items() if k not in ("worst_cases", "verdict", "statistics")}
    doc = summary_document(old)
    assert doc["worst_cases"] == [] and doc["verdict"] in ("pass", "fail", "no-gates")
    assert doc["certified"] == []  # no certified threat: an empty list


def test_every_flag_is_printed_with_its_level(run_copy, capsys):
    cfg, out = run_copy
    assert main(["audit", "-c", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert any(f["severity"] == "info" for f in results["flags"])
    for f in results["flags"]:
        assert f"{f['severity']:<7} {f['id']}" in printed
    assert "worst case per sample" in printed and "[" in printed.splitlines()[2]  # intervals in the table


def test_api_intervals_and_worst_cases_frames(tiny_run):
    from medrobust.evaluation.api import load_results

    _, results, run_dir, _ = tiny_run
    res = load_results(run_dir)
    iv = res.intervals
    row = iv[(iv["key"] == "bare/whitebox/pgd@8/255") & (iv["metric"] == "robust_accuracy")].iloc[0]
    cell = next(c for c in results["cells"] if c["key"] == "bare/whitebox/pgd@8/255")
    assert row["value"] == pytest.approx(cell["metrics"]["robust_accuracy"])
    assert [row["ci_low"], row["ci_high"]] == pytest.approx(cell["intervals"]["robust_accuracy"]["ci"])
    assert iv[iv["metric"] == "auroc"]["descriptive"].all()
    worst = res.worst_cases
    assert set(worst["threat"]) == {"whitebox", "graybox", "adaptive", "all"}
    assert (worst["ci_low"] <= worst["robust_accuracy"]).all()


def test_worst_is_a_reserved_attack_label(easy_npz, tiny_model, audit_dict):
    from medrobust.errors import ConfigError
    from medrobust.evaluation.config import config_from_dict

    cfg = audit_dict(easy_npz, tiny_model, attacks=[{"name": "pgd", "label": "worst"}])
    with pytest.raises(ConfigError, match="'worst' is reserved"):
        config_from_dict(cfg)
    with pytest.raises(ConfigError, match="'worst' gate"):
        config_from_dict(audit_dict(easy_npz, tiny_model, gates=["worst@2/255:success_rate>=0.5"]))


def test_json_summary_holds_the_certified_cells(tmp_path, easy_npz, tiny_model, audit_dict, capsys):
    """Certified cells (randomized smoothing) reach --json with exact intervals, per target and radius."""
    import jsonschema
    import yaml

    cfg = audit_dict(
        easy_npz,
        tiny_model,
        attacks=[{"name": "fgsm"}],
        budgets={"linf": ["2/255"], "l2": [0.01, 0.05]},
        threats=["certified"],
        certify={"sigma": 0.02, "n0": 8, "n": 32, "alpha": 0.01, "batch_size": 64},
        n_samples=8,
        batch_size=8,
        save_examples=0,
    )
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    code = main(["audit", "-c", str(path), "--out", str(out), "--json", "--gate", "certified@0.01>=0"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    doc = json.loads(printed.out)
    schema = load_summary_schema()
    jsonschema.validate(doc, schema)
    results = json.loads((out / "results.json").read_text())
    expected = {c["key"]: c for c in results["certified"]}
    got = {f"{c['target']}/certified/certified@{c['eps_label']}": c for c in doc["certified"]}
    assert (
        sorted(got)
        == sorted(expected)
        == [
            "bare/certified/certified@0.01",
            "bare/certified/certified@0.05",
            "med/certified/certified@0.01",
            "med/certified/certified@0.05",
        ]
    )
    for key, c in got.items():
        cell = expected[key]
        assert c["certified_accuracy"] == cell["metrics"]["robust_accuracy"]
        assert c["ci"] == cell["intervals"]["robust_accuracy"]["ci"]
        assert c["ci"][0] <= c["certified_accuracy"] <= c["ci"][1] and c["method"] == "clopper-pearson"
        assert c["clean_accuracy"] == cell["metrics"]["clean_accuracy"]
        assert c["clean_ci"] == cell["intervals"]["clean_accuracy"]["ci"]
        assert c["radius"] == pytest.approx(cell["eps"]) and c["sigma"] == pytest.approx(0.02)
        assert (c["n"], c["n0"], c["n_draws"], c["alpha"]) == (8, 8, 32, 0.01)
        assert c["n_abstained"] == cell["n_abstained"]
    # a larger radius never certifies more samples
    assert (
        got["bare/certified/certified@0.05"]["certified_accuracy"]
        <= (got["bare/certified/certified@0.01"]["certified_accuracy"])
    )
    # the certified entries are checked by the schema, not merely allowed
    broken = {**doc["certified"][0], "method": "wilson"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "certified": [broken]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        too_high = {**doc["certified"][0], "certified_accuracy": 1.5}
        jsonschema.validate({**doc, "certified": [too_high]}, schema)
