"""Defense protocol of the audit: randomised targets and EOT, certified cells, adaptive AutoAttack/Square.

Tiny audits (8 samples, 32 px, one batch) on the session's easy classifier: a noise-injection
defense is the randomised target, a bit-depth defense the BPDA one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from medrobust.evaluation.config import config_from_dict
from medrobust.evaluation.flags import FLAG_CHECKS
from medrobust.evaluation.planning import craft_params, plan_audit, size_factor
from medrobust.evaluation.results import AuditDocument


def _noisy(audit_dict, easy_npz, tiny_model, **over):
    cfg = audit_dict(
        easy_npz,
        tiny_model,
        defenses=[{"name": "noisy", "denoiser": "noise-injection", "params": {"sigma": "16/255", "seed": 1}}],
        attacks=[{"name": "fgsm"}],
        budgets={"linf": ["4/255"], "l2": [0.25]},
        threats=["adaptive"],
        n_samples=8,
        batch_size=8,
        save_examples=0,
    )
    cfg.update(over)
    return cfg


def _run(cfg, out):
    from medrobust.evaluation.runner import run_audit

    return run_audit(config_from_dict(cfg), out, progress=False)


def _ids(results, flag):
    return [(f["severity"], f.get("target"), f.get("attack")) for f in results["flags"] if f["id"] == flag]


def test_stochastic_target_without_eot_is_an_error_and_reproducible(
    tmp_path, audit_dict, easy_npz, tiny_model
):
    cfg = _noisy(audit_dict, easy_npz, tiny_model, gates=["fgsm@4/255:target=noisy>=0"])
    res = _run(cfg, tmp_path / "a")
    noisy = next(t for t in res["targets"] if t["name"] == "noisy")
    assert noisy["stochastic"] is True
    assert next(t for t in res["targets"] if t["name"] == "bare")["stochastic"] is False
    assert ("error", "noisy", "fgsm") in _ids(res, "stochastic-without-eot")
    assert (
        res["gates"][0]["passed"] is False
        and "stochastic-without-eot" in res["gates"][0]["failures"][0]["reason"]
    )
    again = _run(cfg, tmp_path / "b")  # success decided by seeded draws: the same outcomes
    cell = lambda r: next(c for c in r["cells"] if c["target"] == "noisy")  # noqa: E731
    assert cell(again)["samples"]["adv_raw_pred"] == cell(res)["samples"]["adv_raw_pred"]
    assert (
        noisy["clean"]["pred"] == next(t for t in again["targets"] if t["name"] == "noisy")["clean"]["pred"]
    )


def test_eot_auto_runs_autoattack_rand_on_the_stochastic_target_only(
    tmp_path, audit_dict, easy_npz, tiny_model
):
    cfg = _noisy(
        audit_dict,
        easy_npz,
        tiny_model,
        attacks=[{"name": "autoattack", "params": {"version": "fast", "steps": 2}}],
        threats=["graybox", "adaptive"],
        eot={"mode": "auto", "n": 2},
    )
    config = config_from_dict(cfg)
    plan = plan_audit(config, (0.0, 1.0), stochastic={"noisy"})
    by_on = {k.craft_on: k.params for k in plan.crafts}
    assert by_on["bare"] is None and by_on["noisy"]["version"] == "rand" and by_on["noisy"]["eot_iter"] == 2
    res = _run(cfg, tmp_path / "a")
    adaptive = next(c for c in res["cells"] if c["threat"] == "adaptive")
    assert adaptive["eot"] is True and adaptive["params"]["version"] == "rand"
    assert _ids(res, "stochastic-without-eot") == []


def test_stochastic_without_eot_info_when_another_attack_covers_the_budget():
    cells = [
        {
            "target": "n",
            "threat": "adaptive",
            "attack": a,
            "attack_name": a,
            "craft_on": "n",
            "norm": "linf",
            "eps_label": "2/255",
            "gradient_free": False,
            "eot": a == "eot-pgd",
            "metrics": {},
        }
        for a in ("pgd", "eot-pgd")
    ]
    check = FLAG_CHECKS.get("stochastic-without-eot")()
    targets = [{"name": "n", "stochastic": True}]
    from medrobust.evaluation.results import Cell, TargetInfo

    flags = check.check_results(
        [Cell.from_dict(c) for c in cells], [TargetInfo.from_dict(t) for t in targets]
    )
    assert [(f.severity, f.attack) for f in flags] == [("info", "pgd")]
    quiet = check.check_results([Cell.from_dict(c) for c in cells], [TargetInfo.from_dict({"name": "n"})])
    assert quiet == []


def test_gradient_masking_counts_every_sample():
    from medrobust.evaluation.flags import gradient_summary
    from medrobust.evaluation.results import TargetInfo

    check = FLAG_CHECKS.get("gradient-masking")()
    norms = np.array([1.0] * 37 + [0.0, 1e-13, np.nan])
    summary = gradient_summary(norms)
    assert (summary["n"], summary["n_tiny"], summary["n_nonfinite"]) == (40, 2, 1)
    flags = check.check_results([], [TargetInfo(name="q", gradient_check=summary)])
    assert len(flags) == 1 and "3 of 40" in flags[0].message and "7.5%" in flags[0].message
    assert check.check_results([], [TargetInfo(name="q", gradient_check=gradient_summary(np.ones(40)))]) == []


def test_protocol_defense_adds_autoattack_and_square_beside_bpda(audit_dict, easy_npz, tiny_model):
    cfg = audit_dict(
        easy_npz,
        tiny_model,
        defenses=[
            {"name": "bits", "denoiser": "median", "params": {"kernel_size": 3}},
            {"name": "blur", "denoiser": "gaussian", "params": {}},
        ],
        attacks=[{"name": "pgd", "params": {"steps": 10}}, {"name": "spsa", "params": {"steps": 2}}],
        protocol="defense",
    )
    config = config_from_dict(cfg)
    plan = plan_audit(config, (0.0, 1.0), image_size=[128, 128])
    adaptive = {(k.craft_on, k.attack) for k in plan.crafts if k.craft_on != "bare"}
    assert ("bits", "autoattack") in adaptive and ("blur", "autoattack") in adaptive
    assert ("bits", "square") in adaptive and ("blur", "square") not in adaptive
    assert not any(k.attack in ("autoattack", "square") for k in plan.crafts if k.craft_on == "bare")
    square = next(k for k in plan.crafts if k.attack == "square")
    spsa = next(k for k in plan.crafts if k.attack == "spsa")
    assert size_factor([128, 128]) == 2.0 and size_factor([64, 64]) == size_factor([32, 32]) == 1.0
    assert square.params["queries"] == 10000 and spsa.params["samples"] == 256
    plain = craft_params(config, config.attacks[1], False, [64, 64])
    assert plain == config.attacks[1].params  # the shipped numbers hold at 64x64


def test_certified_cells_gate_and_round_trip(tmp_path, audit_dict, easy_npz, tiny_model):
    from medrobust.evaluation.results import CertifiedCell

    cfg = audit_dict(
        easy_npz,
        tiny_model,
        defenses=[],
        attacks=[{"name": "fgsm"}],
        budgets={"linf": ["2/255"], "l2": [0.01, 0.05]},
        threats=["certified"],
        certify={"sigma": 0.02, "n0": 8, "n": 32, "alpha": 0.01, "batch_size": 64},
        n_samples=8,
        batch_size=8,
        save_examples=0,
        gates=["certified@0.01>=0", "certified@0.05:target=bare>=0.99"],
    )
    res = _run(cfg, tmp_path / "a")
    cells = res["certified"]
    assert [c["key"] for c in cells] == ["bare/certified/certified@0.01", "bare/certified/certified@0.05"]
    first = cells[0]
    assert first["intervals"]["robust_accuracy"]["method"] == "clopper-pearson"
    low, high = first["intervals"]["robust_accuracy"]["ci"]
    assert low <= first["metrics"]["robust_accuracy"] <= high
    assert cells[1]["metrics"]["robust_accuracy"] <= first["metrics"]["robust_accuracy"]
    assert res["gates"][0]["passed"] is True
    assert res["gates"][1]["checked"] == ["bare/certified/certified@0.05"]
    assert [r["eps_label"] for r in res["verdict"]["certified"]] == ["0.01", "0.05"]
    assert not any(w["threat"] == "certified" for w in res["worst_cases"])
    report = (tmp_path / "a" / "report.md").read_text(encoding="utf-8")
    assert "Certified accuracy under randomized smoothing" in report and "/255 per pixel" in report
    text = (tmp_path / "a" / "results.json").read_text(encoding="utf-8")
    doc = AuditDocument.from_dict(json.loads(text))
    assert json.dumps(doc.to_dict()) == json.dumps(json.loads(text))
    assert isinstance(doc.certified[0], CertifiedCell) and doc.certified[0].sigma == pytest.approx(0.02)
    # resumed: certificates reused from state/certify, the same cells
    again = _run(cfg, tmp_path / "a")
    assert again["certified"] == cells


def test_constant_classifier_certified_accuracy_equals_its_accuracy_at_small_radii():
    import torch
    from torch import nn

    from medrobust.evaluation.certified import certified_records, certify_batch, smoothed_target
    from medrobust.models import ModelCard

    card = ModelCard(in_channels=1, class_names=["a", "b"], spatial_size=(16, 16), bounds=(0.0, 1.0))

    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([[3.0, 0.0]]).expand(len(x), 2)

    model = Constant()
    model.card = card
    cfg = config_from_dict(
        {
            "data": {"phantom": {"modality": "chest_xray", "n": 8, "size": 16}},
            "model": {"path": "."},
            "attacks": ["fgsm"],
            "budgets": {"linf": ["2/255"], "l2": [0.01, 0.02, 0.05]},
            "threats": ["certified"],
            "certify": {"sigma": 0.02, "n0": 8, "n": 32, "alpha": 0.01},
        }
    )
    labels = np.array([0, 0, 0, 1, 0, 1, 0, 0])
    smoothed = smoothed_target(cfg, "bare", {"bare": model})
    pred, radius = certify_batch(cfg, "bare", smoothed, torch.rand(8, 1, 16, 16), 0, torch.device("cpu"))
    assert pred == [0] * 8 and min(radius) == pytest.approx(
        0.02 * 1.108, abs=1e-3
    )  # sigma * Phi^-1(0.01^(1/32))
    plan = plan_audit(cfg, (0.0, 1.0))
    cells = certified_records(cfg, plan.certified, labels, {"bare": {"prediction": pred, "radius": radius}})
    assert [c.robust_accuracy for c in cells] == [0.75, 0.75, 0.0]  # its accuracy, then beyond its radius
    assert all(c.metrics.clean_accuracy == 0.75 for c in cells)


def test_a_smoothed_target_stuck_on_one_class_is_flagged_and_fails_only_its_certified_gates():
    from medrobust.defenses.certify import ABSTAIN
    from medrobust.evaluation.certified import certified_records
    from medrobust.evaluation.gate import evaluate_gates, parse_gate
    from medrobust.evaluation.results import Cell

    cfg = config_from_dict(
        {
            "data": {"phantom": {"modality": "chest_xray", "n": 8, "size": 16}},
            "model": {"path": "."},
            "attacks": ["fgsm"],
            "budgets": {"linf": ["2/255"], "l2": [0.01, 0.05]},
            "threats": ["certified"],
            "certify": {"sigma": 0.02, "n0": 8, "n": 32, "alpha": 0.01},
        }
    )
    plan = plan_audit(cfg, (0.0, 1.0))
    labels = np.array([0, 0, 0, 1, 0, 1, 0, 0])
    stuck = {"prediction": [0, 0, ABSTAIN, 0, 0, 0, 0, 0], "radius": [0.03] * 8}
    doc = AuditDocument()
    doc.data.class_names = ["normal", "pneumonia"]
    doc.certified = certified_records(cfg, plan.certified, labels, {"bare": stuck})
    flags = FLAG_CHECKS.get("smoothed-constant-predictions")().check_audit(doc)
    # once per target, not per radius
    assert [(f.severity, f.target, f.threat) for f in flags] == [("error", "bare", "certified")]
    assert "'normal'" in flags[0].message and "does not abstain" in flags[0].message
    attacked = Cell(
        target="bare", threat="whitebox", attack="fgsm", norm="linf", eps=2 / 255, eps_label="2/255"
    )
    attacked.metrics.robust_accuracy = 0.9
    gates = [parse_gate("certified@0.01>=0"), parse_gate("fgsm@2/255>=0.5")]
    certified_gate, attack_gate = evaluate_gates(gates, [attacked, *doc.certified], flags)
    assert not certified_gate.passed
    assert "smoothed-constant-predictions" in next(iter(certified_gate.reasons.values()))
    assert attack_gate.passed  # the classifier as attacked is not what the flag is about
    # two classes predicted: no flag
    mixed = {"prediction": [0, 1, 0, 1, 0, 1, 0, 0], "radius": [0.03] * 8}
    doc.certified = certified_records(cfg, plan.certified, labels, {"bare": mixed})
    assert FLAG_CHECKS.get("smoothed-constant-predictions")().check_audit(doc) == []
