"""A tiny audit end to end: every field of results.json against values recomputed here."""

from __future__ import annotations

import csv
import hashlib
import json
import math

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from medrobust.evaluation.api import load_results
from medrobust.evaluation.planning import plan_audit


def _seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "big") & 0x7FFFFFFF


@pytest.fixture(scope="module")
def models(tiny_run):
    from medrobust.defenses import create_denoiser, defend
    from medrobust.models import load_model

    config, *_ = tiny_run
    clf = load_model(config.model.path).eval()
    med = create_denoiser("median", in_channels=1, bounds=(0, 1), kernel_size=3).eval()
    return {"bare": clf, "med": defend(clf, med).eval()}


@pytest.fixture(scope="module")
def images(tiny_run):
    from medrobust.data import make_dataset

    config, results, *_ = tiny_run
    ds = make_dataset(str(config.data.source), split="test", preset="chest_xray", spatial_size=(32, 32))
    idx = results["data"]["indices"]
    x = torch.stack(
        [ds[i]["image"].as_tensor() if hasattr(ds[i]["image"], "as_tensor") else ds[i]["image"] for i in idx]
    )
    y = [int(ds[i]["label"]) for i in idx]
    return x.float(), y


def _metrics(labels, pred, probs):
    labels, pred, probs = np.asarray(labels), np.asarray(pred), np.asarray(probs)
    return {
        "accuracy": float((labels == pred).mean()),
        "balanced_accuracy": balanced_accuracy_score(labels, pred),
        "auroc": roc_auc_score(labels, probs[:, 1]) if len(set(labels.tolist())) == 2 else None,
        "sensitivity": recall_score(labels, pred, pos_label=1, zero_division=0),
        "specificity": recall_score(labels, pred, pos_label=0, zero_division=0),
    }


def test_top_level_fields(tiny_run, images):
    config, results, run_dir, _ = tiny_run
    assert results["schema"] == "medrobust.audit/1"
    assert results["seed"] == 3 and results["name"] == "tiny audit"
    assert results["fingerprint"] == config.fingerprint()
    assert results["config"] == config.resolved()
    assert results["bounds"] == [0.0, 1.0]
    data = results["data"]
    assert data["n"] == 16 and len(data["indices"]) == 16 and data["indices"] == sorted(set(data["indices"]))
    assert data["n_available"] == 40 and data["split"] == "test" and data["spatial_size"] == [32, 32]
    assert data["labels"] == images[1]
    assert data["class_names"] == ["0", "1"] and data["positive_class"] == "1"
    assert results["model"]["card"]["arch"] == "small_cnn"
    assert results["threats"] == ["whitebox", "graybox", "adaptive"]
    assert [a["label"] for a in results["attacks"]] == ["pgd", "deepfool"]
    assert results["budgets"]["linf"] == pytest.approx([2 / 255, 8 / 255])
    assert results["gates"] == [] and results["notes"] == []
    # the file on disk is what run_audit returned
    assert json.loads((run_dir / "results.json").read_text()) == json.loads(json.dumps(results))
    assert yaml.safe_load((run_dir / "config.resolved.yaml").read_text()) == config.resolved()
    env = json.loads((run_dir / "environment.json").read_text())
    for key in ("python", "torch", "monai", "medrobust", "device", "seed", "torch_threads"):
        assert key in env
    assert env["seed"] == 3 and env["device"] == "cpu"


def test_targets_clean_predictions(tiny_run, images, models):
    _, results, *_ = tiny_run
    x, y = images
    assert [t["name"] for t in results["targets"]] == ["bare", "med"]
    med = results["targets"][1]
    assert med["uses_bpda"] and med["denoiser"]["name"] == "median" and med["denoiser"]["kind"] == "classical"
    for t in results["targets"]:
        with torch.no_grad():
            logits = models[t["name"]](x).double()
        probs = torch.softmax(logits, 1).numpy()
        assert t["clean"]["pred"] == logits.argmax(1).tolist()
        np.testing.assert_allclose(t["clean"]["probs"], probs, atol=1e-5)
        for k, v in _metrics(y, t["clean"]["pred"], t["clean"]["probs"]).items():
            assert t["clean"][k] == pytest.approx(v), (t["name"], k)
    for t in results["targets"]:
        assert t["clean"]["accuracy"] >= 0.75  # the fixture model learned, also behind the median filter


def test_cells_match_plan_and_seeds(tiny_run):
    config, results, *_ = tiny_run
    plan = plan_audit(config)
    assert [c["key"] for c in results["cells"]] == [c.key for c in plan.cells]
    assert len(results["cells"]) == 15  # pgd: 2 eps x 3; deepfool: (2 budgets + inf) x 3
    for c in results["cells"]:
        assert c["seed"] == _seed(3, c["craft"])
        expected_craft = f"{c['target'] if c['threat'] == 'adaptive' else 'bare'}|{c['attack']}|"
        assert c["craft"].startswith(expected_craft)
        assert c["bpda"] == (c["threat"] == "adaptive")
        assert c["minimal"] == (c["attack"] == "deepfool")
        assert (c["eps"] is None) == (c["eps_label"] == "inf")
        assert c["norm"] == ("linf" if c["attack"] == "pgd" else "l2")
        assert c["seconds"] == pytest.approx(c["craft_seconds"] + c["eval_seconds"])
        assert c["seconds"] > 0 and c["params"]["steps"] == (5 if c["attack"] == "pgd" else 10)
    # cells sharing a craft share its adversarial examples (norms), whitebox vs graybox
    by_key = {c["key"]: c for c in results["cells"]}
    assert (
        by_key["bare/whitebox/pgd@8/255"]["samples"]["linf"]
        == by_key["med/graybox/pgd@8/255"]["samples"]["linf"]
    )


def test_every_cell_recomputed(tiny_run, images, models):
    _, results, run_dir, _ = tiny_run
    x, y = images
    labels = np.asarray(y)
    targets = {t["name"]: t for t in results["targets"]}
    n_fooled_total = 0
    for c in results["cells"]:
        s = c["samples"]
        assert s["position"] == list(range(16)) and s["index"] == results["data"]["indices"]
        assert s["label"] == y
        clean_pred = np.asarray(targets[c["target"]]["clean"]["pred"])
        clean_probs = np.asarray(targets[c["target"]]["clean"]["probs"])
        assert s["clean_pred"] == clean_pred.tolist()
        # adversarial examples saved for all 16 samples: rerun the evaluated target on them
        with np.load(run_dir / c["examples"], allow_pickle=False) as z:
            clean, adv, attacked = z["clean"], z["adv"], z["attacked"]
            if c["target"] == "med":
                assert "denoised_adv" in z.files
        np.testing.assert_allclose(clean, x.numpy(), atol=1e-6)
        assert attacked.tolist() == s["attacked"]
        # only samples some evaluated target got right are attacked
        assert all(
            not a or any(targets[t]["clean"]["pred"][i] == y[i] for t in ("bare", "med"))
            for i, a in enumerate(s["attacked"])
        )
        delta = (adv - clean).reshape(16, -1).astype(np.float64)
        np.testing.assert_allclose(s["linf"], np.abs(delta).max(1), atol=1e-6)
        np.testing.assert_allclose(s["l2"], np.linalg.norm(delta, axis=1), atol=1e-5)
        with torch.no_grad():
            logits = models[c["target"]](torch.from_numpy(adv)).double()
        raw_pred = logits.argmax(1).numpy()
        raw_probs = torch.softmax(logits, 1).numpy()
        att = np.asarray(s["attacked"])
        assert np.array_equal(np.asarray(s["adv_raw_pred"])[att], raw_pred[att])
        # effective prediction: worst case of clean input and in-budget adversarial example
        norm = np.asarray(s[c["norm"]])
        eps = math.inf if c["eps"] is None else c["eps"]
        if not c["minimal"]:
            assert (norm[att] <= eps + 1e-6).all()
        ok = att & (norm <= eps * (1 + 1e-5) + 1e-12)
        used = ok & ((clean_pred == labels) | (raw_pred != labels))
        assert s["used_adv"] == used.tolist()
        adv_pred = np.where(used, raw_pred, clean_pred)
        adv_probs = np.where(used[:, None], raw_probs, clean_probs)
        assert s["adv_pred"] == adv_pred.tolist()
        np.testing.assert_allclose(s["adv_probs"], adv_probs, atol=1e-5)
        fooled = (clean_pred == labels) & (adv_pred != labels)
        assert s["success"] == fooled.tolist()
        n_fooled_total += int(fooled.sum())
        m = c["metrics"]
        want_clean = _metrics(labels, clean_pred, clean_probs)
        want_adv = _metrics(labels, adv_pred, adv_probs)
        for k in ("accuracy", "balanced_accuracy", "auroc", "sensitivity", "specificity"):
            assert m[f"clean_{k}"] == pytest.approx(want_clean[k]), (c["key"], k)
            adv_key = "robust_accuracy" if k == "accuracy" else k
            assert m[adv_key] == pytest.approx(want_adv[k], abs=1e-9), (c["key"], k)
        assert m["n"] == 16 and m["n_attacked"] == int(att.sum()) and m["n_fooled"] == int(fooled.sum())
        assert m["n_clean_correct"] == int((clean_pred == labels).sum())
        assert m["success_rate"] == pytest.approx(fooled.sum() / (clean_pred == labels).sum())
        for key, arr in (("median_linf", s["linf"]), ("median_l2", s["l2"])):
            vals = np.asarray(arr)[fooled]
            assert m[key] == (pytest.approx(float(np.median(vals))) if len(vals) else None)
        assert m["median_queries"] == pytest.approx(float(np.median(np.asarray(s["queries"])[att])))
        assert c["n_over_budget"] == 0
    assert n_fooled_total > 0  # the attacks actually flipped predictions


def test_attack_strength_is_plausible(tiny_run):
    _, results, *_ = tiny_run
    by_key = {c["key"]: c["metrics"] for c in results["cells"]}
    bare_clean = by_key["bare/whitebox/pgd@8/255"]["clean_accuracy"]
    assert by_key["bare/whitebox/pgd@8/255"]["robust_accuracy"] < bare_clean
    # minimal attacks: robust accuracy cannot rise with the budget (derived from one run)
    for target, threat in (("bare", "whitebox"), ("med", "graybox"), ("med", "adaptive")):
        ras = [by_key[f"{target}/{threat}/deepfool@{e}"]["robust_accuracy"] for e in ("0.25", "1", "inf")]
        assert ras == sorted(ras, reverse=True)


def test_flags_and_csv_and_reports(tiny_run):
    _, results, run_dir, _ = tiny_run
    ids = [(f["id"], f["target"]) for f in results["flags"]]
    assert ("bpda-used", "med") in ids
    for f in results["flags"]:
        assert f["doc"].startswith("docs/flags.md#") and f["severity"] in ("warning", "info")
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    assert [r["key"] for r in rows] == [c["key"] for c in results["cells"]]
    for r, c in zip(rows, results["cells"], strict=True):
        assert float(r["robust_accuracy"]) == pytest.approx(c["metrics"]["robust_accuracy"])
        assert int(r["seed"]) == c["seed"] and r["threat"] == c["threat"]
    md = (run_dir / "report.md").read_text()
    assert (
        "| bare | whitebox | pgd |" in md
        and "![Robust accuracy vs ε (linf)](plots/robust_accuracy_linf.png)" in md
    )
    for name in (
        "robust_accuracy_linf",
        "robust_accuracy_l2",
        "confusion_bare",
        "confusion_med",
        "gallery_med_adaptive",
    ):
        assert (run_dir / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_results_dataframes(tiny_run):
    _, results, run_dir, _ = tiny_run
    res = load_results(run_dir)
    assert res.raw == json.loads((run_dir / "results.json").read_text())
    cells = res.cells
    assert len(cells) == 15 and list(cells["key"]) == [c["key"] for c in results["cells"]]
    assert cells["robust_accuracy"].tolist() == pytest.approx(
        [c["metrics"]["robust_accuracy"] for c in results["cells"]]
    )
    samples = res.samples
    assert len(samples) == 15 * 16
    first = samples[samples["key"] == results["cells"][0]["key"]]
    assert first["adv_pred"].tolist() == results["cells"][0]["samples"]["adv_pred"]
    assert set(res.flags["id"]) == {f["id"] for f in results["flags"]}
