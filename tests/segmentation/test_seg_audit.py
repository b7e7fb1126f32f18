"""The segmentation audit through ``medrobust audit`` and ``medrobust.audit()`` (task: segmentation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from medrobust.cli.main import main


def _config(skin_run, tmp_path, **extra):
    data = skin_run.parent / "data"
    cfg = {
        "task": "segmentation",
        "data": {"source": str(data), "split": "test"},
        "model": {"path": str(skin_run)},
        "attacks": [{"name": "fgsm"}, {"name": "pgd", "params": {"steps": 2}}],
        "budgets": {"linf": ["8/255"]},
        "n_samples": 6,
        "batch_size": 6,
        "device": "cpu",
        "save_examples": 2,
        **extra,
    }
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def audited(skin_run, tmp_path_factory):
    """A finished CLI audit of the bare skin segmenter (fgsm, pgd at 8/255) and its exit code."""
    tmp = tmp_path_factory.mktemp("seg_audit")
    config = _config(skin_run, tmp)
    out = tmp / "audit"
    code = main(["audit", "--config", str(config), "--out", str(out), "--no-progress"])
    return config, out, code


def test_cli_audit_writes_results_and_reports(audited):
    _, out, code = audited
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "medrobust.segmentation-audit/1" and results["task"] == "segmentation"
    assert [(c["target"], c["threat"], c["attack"], c["eps_label"]) for c in results["cells"]] == [
        ("bare", "whitebox", "fgsm", "8/255"),
        ("bare", "whitebox", "pgd", "8/255"),
    ]
    assert results["provenance"]["model"]["weights"]["sha256"]
    assert (out / "config.resolved.yaml").is_file() and (out / "environment.json").is_file()
    html = (out / "report.html").read_text()
    assert html.index("Verdict") < html.index("<h2>Cells</h2>") < html.index("Worst cases")
    assert "data:image/png;base64," in html
    md = (out / "report.md").read_text()
    assert "](plots/overlay-bare.png)" in md and (out / "plots" / "overlay-bare.png").is_file()


def test_cell_dice_equals_monai_dice_metric_on_saved_predictions(audited):
    import torch
    from monai.metrics import DiceMetric

    _, out, _ = audited
    results = json.loads((out / "results.json").read_text())
    truth = np.load(out / "predictions" / "truth.npz")["labels"].astype(np.int64)
    for cell in results["cells"]:
        pred = np.load(out / cell["predictions"])["labels"].astype(np.int64)
        onehot = [
            torch.nn.functional.one_hot(torch.as_tensor(x), 2).movedim(-1, 1).float() for x in (pred, truth)
        ]
        metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
        per_image = metric(*onehot)[:, 0].numpy()
        both_empty = (pred.reshape(len(pred), -1).max(1) == 0) & (truth.reshape(len(truth), -1).max(1) == 0)
        expected = float(per_image[~both_empty].mean())
        assert cell["metrics"]["dice"]["lesion"]["value"] == pytest.approx(expected, abs=1e-6)
        assert cell["metrics"]["mean_dice"]["value"] == pytest.approx(expected, abs=1e-6)
        low, high = cell["metrics"]["dice"]["lesion"]["ci"]
        assert low <= expected <= high


def test_dice_gates_exit_codes_and_resume_reuses_cells(audited, capsys):
    config, out, _ = audited
    log = out / "state" / "computed.log"
    before = log.read_text().splitlines()
    assert len(before) == 2
    argv = ["audit", "--config", str(config), "--out", str(out), "--no-progress"]
    assert main([*argv, "--gate", "pgd@8/255:dice:lesion>=0.999"]) == 1
    err = capsys.readouterr().err
    assert "GATE FAILED: pgd@8/255:dice:lesion>=0.999" in err and "bare/whitebox/pgd@8/255" in err
    assert main([*argv, "--gate", "pgd@8/255:dice>=0.0", "--gate", "fgsm@8/255:detection>=0"]) == 0
    assert log.read_text().splitlines() == before  # the finished cells were reused, none recomputed
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"]["status"] == "pass" and len(results["gates"]) == 2
    # a new budget adds cells; the old ones stay
    assert main([*argv, "--eps", "8/255,2/255"]) == 0
    assert len(log.read_text().splitlines()) == 4


def test_bad_gate_is_one_error_line(audited, capsys):
    config, out, _ = audited
    argv = ["audit", "--config", str(config), "--out", str(out), "--no-progress"]
    assert main([*argv, "--gate", "pgd@8/255:dice:tumour>=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "unknown label 'tumour'" in err[0]
    assert main([*argv, "--gate", "pgd@8/255:dicee>=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Did you mean 'dice'" in err[0]


def test_denoiser_segmenter_pipeline_adaptive_through_python_api(skin_run, tmp_path):
    import medrobust
    from medrobust.evaluation.segmentation.results import SegmentationAuditResults

    config = yaml.safe_load(_config(skin_run, tmp_path).read_text())
    config.update(
        attacks=[{"name": "pgd", "label": "erase", "params": {"steps": 2, "goal": "erase-lesion"}}],
        defenses=[{"name": "gauss", "denoiser": "gaussian", "params": {"sigma": 0.8}}],
        threats=["adaptive"],
        save_examples=0,
        gates=["erase@8/255:target=gauss:threat=adaptive:detection>=0"],
    )
    res = medrobust.audit(config, out=tmp_path / "a", progress=False)
    assert isinstance(res, SegmentationAuditResults) and res.gates_passed
    cells = {(c.target, c.threat): c for c in res.cell_list}
    assert set(cells) == {("bare", "whitebox"), ("gauss", "adaptive")}
    adaptive = cells["gauss", "adaptive"]
    assert adaptive.goal == "erase-lesion" and adaptive.median_linf <= 8 / 255 + 1e-6
    target = next(t for t in res.raw["targets"] if t["name"] == "gauss")
    assert target["kind"] == "defended" and target["denoiser"]["name"] == "gaussian"
    # the clean Dice of the pipeline is its own, not the bare segmenter's
    assert adaptive.clean == {k: v for k, v in target["clean"].items()}
    assert list(res.cells["threat"]) == ["whitebox", "adaptive"]


def test_wrong_task_and_card_combinations_are_one_error_line(skin_run, tmp_path, capsys):
    # task: segmentation with a classifier's run folder (a card without task)
    clf = tmp_path / "clf"
    clf.mkdir()
    (clf / "card.json").write_text(json.dumps({"in_channels": 3, "class_names": ["a", "b"]}))
    config = _config(skin_run, tmp_path, model={"path": str(clf)})
    assert main(["audit", "--config", str(config), "--out", str(tmp_path / "o1"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith("error: ")
        and "'task'" in err[0]
        and "classification card" in err[0]
    )
    # a classifier-style config (no task) on a segmenter card: dispatched, and the classifier attack is named
    cfg = yaml.safe_load(config.read_text())
    cfg.pop("task")
    cfg.update(model={"path": str(skin_run)}, attacks=["cw"])
    config.write_text(yaml.safe_dump(cfg))
    assert main(["audit", "--config", str(config), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attacks" in err[0] and "'cw'" in err[0]
    # task set to something else
    cfg.update(task="segmentaton", attacks=["fgsm"])
    config.write_text(yaml.safe_dump(cfg))
    assert main(["audit", "--config", str(config), "--out", str(tmp_path / "o3"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task" in err[0]


def test_shipped_segmentation_pipeline_validates(shipped_plan):
    cfg, cells = shipped_plan("segmentation_chest_xray")
    assert {c.threat for c in cells} == {"whitebox", "graybox", "adaptive"}
    assert len(cells) == len(cfg.attacks) * 2 * 3 and cfg.attack("erase").goal == "erase-lesion"
