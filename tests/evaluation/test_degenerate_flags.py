"""Degenerate-target flags: each one fires on a results dict built to trigger it and stays quiet otherwise."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from medrobust.evaluation.degenerate import chance_level_warning
from medrobust.evaluation.flags import FLAG_CHECKS


def _cell(target, threat, attack, labels, adv_pred, *, clean_pred=None, raw=None, eps=2 / 255, **extra):
    labels = list(labels)
    clean_pred = list(labels if clean_pred is None else clean_pred)
    adv_pred = list(adv_pred)
    fooled = [c == y and a != y for c, a, y in zip(clean_pred, adv_pred, labels, strict=True)]
    n = len(labels)
    return {
        "key": f"{target}/{threat}/{attack}@2/255",
        "target": target,
        "threat": threat,
        "attack": attack,
        "attack_name": extra.pop("attack_name", attack),
        "norm": "linf",
        "eps": eps,
        "eps_label": "2/255",
        "minimal": False,
        "gradient_free": extra.pop("gradient_free", False),
        "metrics": {
            "n": n,
            "n_fooled": sum(fooled),
            "clean_accuracy": sum(c == y for c, y in zip(clean_pred, labels, strict=True)) / n,
            "robust_accuracy": sum(a == y for a, y in zip(adv_pred, labels, strict=True)) / n,
        },
        "samples": {
            "label": labels,
            "clean_pred": clean_pred,
            "adv_pred": adv_pred,
            "adv_raw_pred": list(adv_pred if raw is None else raw),
            "success": fooled,
        },
        **extra,
    }


def _results(
    n=60, classes=("normal", "pneumonia"), bare_pred=None, defended_pred=None, cells=(), checks=None
):
    rng = np.random.default_rng(0)
    k = len(classes)
    labels = [int(v) for v in np.arange(n) % k]
    rng.shuffle(labels)
    targets = [{"name": "bare", "kind": "classifier", "clean": {}}]
    preds = {"bare": labels if bare_pred is None else list(bare_pred)}
    if defended_pred is not None:
        targets.append({"name": "dae", "kind": "defended", "clean": {}})
        preds["dae"] = list(defended_pred)
    for t in targets:
        p = preds[t["name"]]
        t["clean"] = {"pred": p, "accuracy": sum(a == b for a, b in zip(p, labels, strict=True)) / n}
    return {
        "seed": 0,
        "config": {"checks": checks or {}},
        "data": {"labels": labels, "class_names": list(classes), "split": "test", "positive_class": None},
        "targets": targets,
        "cells": list(cells),
    }


def _ids(results, check):
    return [(f.id, f.severity, f.target) for f in FLAG_CHECKS.get(check)().check_audit(results)]


def _flip(labels, share, k=2, seed=1):
    rng = np.random.default_rng(seed)
    out = list(labels)
    for i in rng.choice(len(out), int(share * len(out)), replace=False):
        out[i] = (out[i] + 1) % k
    return out


def test_constant_predictions():
    r = _results(defended_pred=[1] * 60)
    assert _ids(r, "constant-predictions") == [("constant-predictions", "error", "dae")]
    r = _results(defended_pred=_flip(_results()["data"]["labels"], 0.1))
    assert _ids(r, "constant-predictions") == []


def test_chance_level_error_warning_and_quiet():
    labels = _results(n=200)["data"]["labels"]
    rng = np.random.default_rng(5)
    coin = [int(v) for v in rng.integers(0, 2, 200)]  # guessing: balanced accuracy ~0.5
    assert _ids(_results(n=200, bare_pred=coin), "chance-level") == [("chance-level", "error", "bare")]
    few = _results(n=20)
    guess = _flip(few["data"]["labels"], 0.45)  # 55 % on 20 samples: maybe chance, cannot tell
    assert _ids(_results(n=20, bare_pred=guess), "chance-level") == [("chance-level", "warning", "bare")]
    assert _ids(_results(n=200, bare_pred=_flip(labels, 0.1)), "chance-level") == []
    # a wider margin makes a mediocre model chance-level
    mediocre = _flip(labels, 0.35)
    assert _ids(_results(n=200, bare_pred=mediocre), "chance-level") == []
    wide = _results(n=200, bare_pred=mediocre, checks={"chance_margin": 0.3})
    assert _ids(wide, "chance-level")[0][1] == "error"


def test_class_never_recognised():
    r = _results(n=60, classes=("a", "b", "c"))
    labels = r["data"]["labels"]
    never_c = [0 if y == 2 else y for y in labels]
    assert _ids(_results(n=60, classes=("a", "b", "c"), bare_pred=never_c), "class-never-recognised") == [
        ("class-never-recognised", "warning", "bare")
    ]
    assert _ids(_results(n=60, classes=("a", "b", "c")), "class-never-recognised") == []


def test_defense_cost_with_configurable_points():
    labels = _results()["data"]["labels"]
    costly = _flip(labels, 0.10)  # 10 points below the perfect bare model
    assert _ids(_results(defended_pred=costly), "defense-cost") == [("defense-cost", "warning", "dae")]
    assert _ids(_results(defended_pred=_flip(labels, 1 / 30)), "defense-cost") == []  # 3.3 points
    assert _ids(_results(defended_pred=costly, checks={"max_defense_cost": 0.15}), "defense-cost") == []


def test_robust_above_clean():
    labels = _results()["data"]["labels"]
    clean = _flip(labels, 0.4)
    better = _cell("dae", "adaptive", "pgd", labels, clean, clean_pred=clean, raw=labels)
    r = _results(defended_pred=clean, cells=[better])
    assert _ids(r, "robust-above-clean") == [("robust-above-clean", "warning", "dae")]
    worse = _cell("dae", "adaptive", "pgd", labels, clean, clean_pred=clean, raw=clean)
    assert _ids(_results(defended_pred=clean, cells=[worse]), "robust-above-clean") == []


def test_small_sample_and_missing_class():
    assert _ids(_results(n=20), "small-sample") == [("small-sample", "warning", None)]
    assert _ids(_results(n=40), "small-sample") == []
    r = _results(n=40)
    r["data"]["labels"] = [0] * 40
    r["targets"][0]["clean"]["pred"] = [0] * 40
    assert _ids(r, "missing-class") == [("missing-class", "warning", None)]
    assert _ids(_results(n=40), "missing-class") == []


def test_gradient_free_underpowered():
    labels = _results()["data"]["labels"]
    fgsm = _cell("bare", "whitebox", "fgsm", labels, _flip(labels, 0.3))
    weak = _cell("bare", "whitebox", "spsa", labels, _flip(labels, 0.05), gradient_free=True)
    fine = _cell("bare", "whitebox", "spsa", labels, _flip(labels, 0.25, seed=2), gradient_free=True)
    assert _ids(_results(cells=[fgsm, weak]), "gradient-free-underpowered") == [
        ("gradient-free-underpowered", "warning", "bare")
    ]
    assert _ids(_results(cells=[fgsm, fine]), "gradient-free-underpowered") == []


def test_chance_level_warning_for_training():
    y = np.arange(100) % 2
    assert "predicts one class" in chance_level_warning(y, np.zeros(100, int), 2, "siamese-dae validation")
    rng = np.random.default_rng(0)
    assert "chance level" in chance_level_warning(y, rng.integers(0, 2, 100), 2)
    assert chance_level_warning(y, y, 2) is None


def test_every_flag_is_documented():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "flags.md").read_text()
    for name in FLAG_CHECKS.names():
        assert f"\n## {name}\n" in doc, name
        assert FLAG_CHECKS.get(name).advice, name


@pytest.fixture
def constant_defense(tmp_path_factory, easy_npz, easy_card):
    """A DAE whose weights are zero and output bias fixed: it returns one grey image for any input."""
    import torch

    from medrobust.data import open_source
    from medrobust.defenses import create_denoiser
    from medrobust.defenses.checkpoint import save_denoiser

    den = create_denoiser("dae", in_channels=1, bounds=(0.0, 1.0), width=2, depth=1)
    with torch.no_grad():
        for p in den.parameters():
            p.zero_()
        den.decoder[-1].bias.fill_(-1.0)
    out = tmp_path_factory.mktemp("constant") / "const"
    return save_denoiser(den, out, card=easy_card(open_source(str(easy_npz))))


def test_constant_defense_flag_fires_and_its_gate_fails_through_the_cli(
    easy_npz, tiny_model, constant_defense, audit_dict, tmp_path, capsys
):
    import json

    import yaml

    from medrobust.cli.main import main

    cfg = audit_dict(
        easy_npz,
        tiny_model,
        defenses=[{"name": "const", "path": str(constant_defense)}],
        attacks=["fgsm"],
        budgets={"linf": ["2/255"]},
        threats=["adaptive"],
        n_samples=8,
        save_examples=0,
    )
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    junit = tmp_path / "junit.xml"
    argv = ["audit", "-c", str(path), "--out", str(out), "--no-progress"]
    code = main([*argv, "--gate", "fgsm@2/255:target=const>=0", "--junit", str(junit)])
    printed = capsys.readouterr()
    assert code == 1
    assert "error   constant-predictions (const)" in printed.out
    assert "GATE FAILED: fgsm@2/255:target=const>=0" in printed.err
    assert "error-level flag(s) constant-predictions" in printed.err
    results = json.loads((out / "results.json").read_text())
    flags = [(f["id"], f["severity"], f["target"]) for f in results["flags"]]
    assert ("constant-predictions", "error", "const") in flags
    assert not any(f[2] == "bare" and f[1] == "error" for f in flags)  # the bare model is fine
    # the same gate on the healthy bare model passes (the run is resumed, nothing recomputed)
    assert main([*argv, "--gate", "fgsm@2/255:target=bare>=0"]) == 0

    from xml.etree import ElementTree as ET

    suite = ET.parse(junit).getroot()
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases] == ["medrobust.gate", "medrobust.flag"]
    assert all(c.find("failure") is not None for c in cases)
    assert suite.get("tests") == "2" and suite.get("failures") == "2"
    # a copy with the flag removed: the value alone decides again
    r2 = copy.deepcopy(results)
    r2["flags"] = []
    from medrobust.evaluation.machine_output import junit_xml

    assert 'tests="1"' in junit_xml(r2)
