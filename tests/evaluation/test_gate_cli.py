"""Gate exit codes through the CLI: 0 pass, 1 a gate fails, 2 a bad gate or config."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from medrobust.cli.main import main


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A copy of the finished tiny run: the CLI resumes it (no cell recomputed)."""
    _, _, run_dir, cfg_path = tiny_run
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return cfg_path, out


def _computed(out):
    return (out / "state" / "computed.log").read_text().splitlines()


def test_gate_fails_with_exit_1_in_a_real_process(run_copy):
    cfg, out = run_copy
    before = _computed(out)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "medrobust",
            "audit",
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--no-progress",
            "--gate",
            "pgd@8/255:target=bare>=0.99",
            "--gate",
            "deepfool@inf:target=bare:median_l2>=0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "GATE FAILED: pgd@8/255:target=bare>=0.99" in proc.stderr
    assert "bare/whitebox/pgd@8/255: robust_accuracy = " in proc.stderr
    assert "deepfool@inf" not in proc.stderr  # the passing gate is not reported as failed
    assert _computed(out) == before  # resumed: nothing recomputed
    gates = json.loads((out / "results.json").read_text())["gates"]
    assert [g["passed"] for g in gates] == [False, True]
    assert gates[0]["checked"] == ["bare/whitebox/pgd@8/255"]


def test_gate_passes_with_exit_0(run_copy, capsys):
    cfg, out = run_copy
    code = main(
        [
            "audit",
            "--config",
            str(cfg),
            "--out",
            str(out),
            "--no-progress",
            "--gate",
            "pgd@2/255>=0",
            "--gate",
            "*@*:clean_accuracy>=0.5",
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    assert "GATE FAILED" not in printed.err and "report.html" in printed.out
    gates = json.loads((out / "results.json").read_text())["gates"]
    assert all(g["passed"] for g in gates) and len(gates[1]["checked"]) == 15


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ("pgd@2/255>>0.5", "Cannot parse gate"),
        ("fgsm@2/255>=0.5", "matches no audit cell"),
        ("pgd@2/255:acuracy>=0.5", "unknown metric"),
        ("pgd@2/255:target=siamese>=0.5", "matches no audit cell"),
    ],
)
def test_bad_gate_exits_2_before_any_work(run_copy, capsys, gate, message):
    cfg, out = run_copy
    (out / "results.json").unlink()
    code = main(["audit", "--config", str(cfg), "--out", str(out), "--no-progress", "--gate", gate])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (out / "results.json").exists()


def test_bad_config_exits_2(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: {path: /nonexistent}\n")
    assert main(["audit", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "model.path: model not found" in err and "attacks: required field is missing" in err


def test_audit_through_flags_only(easy_npz, tiny_model, tmp_path, capsys):
    out = tmp_path / "flags"
    code = main(
        [
            "audit",
            "--model",
            str(tiny_model),
            "--data",
            str(easy_npz),
            "--modality",
            "chest_xray",
            "--attacks",
            "fgsm",
            "--eps",
            "8/255",
            "--defense",
            "median",
            "--threat",
            "adaptive",
            "--samples",
            "8",
            "--seed",
            "5",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert [c["key"] for c in results["cells"]] == ["bare/whitebox/fgsm@8/255", "median/adaptive/fgsm@8/255"]
    assert results["config"]["defenses"] == [
        {"name": "median", "path": None, "denoiser": "median", "params": {}}
    ]
    assert results["data"]["n"] == 8 and results["seed"] == 5
    assert (out / "report.html").exists() and (out / "config.resolved.yaml").exists()


def test_flags_replace_config_paths_that_do_not_exist(easy_npz, tiny_model, tmp_path, audit_dict, capsys):
    """--model/--data/--defense replace the YAML's entries before validation, so a shipped
    config whose paths point elsewhere works with the user's own run folders."""
    import yaml

    cfg = audit_dict(tmp_path / "nowhere.npz", tmp_path / "no-model", n_samples=4)
    cfg["defenses"] = [{"name": "dae", "path": str(tmp_path / "no-defense")}]
    cfg["attacks"] = ["fgsm"]
    cfg["budgets"] = {"linf": ["8/255"]}
    path = tmp_path / "shipped.yaml"
    path.write_text(yaml.safe_dump(cfg))

    # without the flags, every missing path is named, once, with where it was looked for
    assert main(["audit", "--config", str(path), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert f"model.path: model not found: '{tmp_path / 'no-model'}'" in err
    assert "Got '" not in err  # the path is not repeated
    assert "defenses.0.path: denoiser run folder not found" in err

    out = tmp_path / "b"
    argv = ["audit", "--config", str(path), "--model", str(tiny_model), "--data", str(easy_npz)]
    argv += ["--defense", "median", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["model"]["path"] == str(tiny_model.resolve())
    assert [d["name"] for d in results["config"]["defenses"]] == ["median"]
    assert results["config"]["data"]["source"] == str(easy_npz.resolve())


def test_data_size_other_than_the_cards_is_warned(easy_npz, tiny_model, audit_dict, caplog):
    from medrobust.evaluation.config import config_from_dict
    from medrobust.evaluation.targets import open_audit_data
    from medrobust.models import load_model

    card = load_model(tiny_model).card
    size = list(card.spatial_size)
    for data_size, warned in ((size, False), (None, False), ([s * 2 for s in size], True)):
        cfg = audit_dict(easy_npz, tiny_model)
        cfg["data"]["size"] = data_size
        caplog.clear()
        with caplog.at_level("WARNING", logger="medrobust"):
            open_audit_data(config_from_dict(cfg), card)
        assert any("differs from the model card" in r.getMessage() for r in caplog.records) == warned
