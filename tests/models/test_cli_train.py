import importlib
import json
import sys
import types

import pytest

from medrobust.cli.main import main
from medrobust.models import load_model


def test_cli_trains_on_phantom_chest_xrays(phantom_png, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "classifier",
            "--data",
            str(phantom_png),
            "--modality",
            "chest_xray",
            "--arch",
            "small_cnn",
            "--epochs",
            "1",
            "--size",
            "32",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "auto",
        ]
    )
    assert rc == 0
    assert f"run folder: {out}" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "card.json",
        "config.yaml",
        "environment.json",
        "metrics.csv",
        "summary.json",
    } <= names
    model = load_model(out)
    card = model.card
    assert card.class_names == ["normal", "pneumonia"] and card.positive_class == "pneumonia"
    assert card.in_channels == 1 and card.spatial_size == (32, 32) and card.bounds == (0.0, 1.0)
    assert card.modality == "chest_xray"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["test"] is not None


def test_cli_config_file_with_overrides(phantom_png, tmp_path):
    import yaml

    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": str(phantom_png),
                "modality": "chest_xray",
                "epochs": 1,
                "spatial_size": [32, 32],
                "batch_size": 8,
                "out": str(tmp_path / "from_yaml"),
                "progress": False,
                "arch_kwargs": {"width": 4},
            }
        )
    )
    assert main(["train", "classifier", "--config", str(cfg), "--seed", "3"]) == 0
    resolved = yaml.safe_load((tmp_path / "from_yaml" / "config.yaml").read_text())
    assert resolved["seed"] == 3 and resolved["arch_kwargs"] == {"width": 4} and resolved["epochs"] == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "classifier", "--modality", "chest_xray", "--out", str(tmp_path / "x")]) == 2
    assert "'data' parameter" in capsys.readouterr().err
    assert main(["train", "classifier", "--data", "x", "--arch", "densenet12"]) == 2
    assert "Did you mean 'densenet121'" in capsys.readouterr().err
    assert main(["train", "classifier", "--data", "x", "--size", "big"]) == 2
    capsys.readouterr()
    assert main(["train", "classifier", "--data", "x", "--adversarial", "fgsm"]) == 2
    err = capsys.readouterr().err
    assert "adversarial (--adversarial)" in err and "'fgsm'" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "classifier", "--data", "x", "--adversarial", "pgd", "--eps", "-2/255"]) == 2
    assert "The 'adv_eps' parameter (--eps) must be a budget > 0" in capsys.readouterr().err


def test_plugin_hook_registers_other_train_commands(monkeypatch):
    import medrobust.cli.train as train_cli

    calls = []
    fake = types.ModuleType("medrobust.cli.train_denoiser")
    fake.register = lambda app: calls.append(app)
    monkeypatch.setitem(sys.modules, "medrobust.cli.train_denoiser", fake)
    try:
        reloaded = importlib.reload(train_cli)
        assert calls == [reloaded.app]
    finally:
        monkeypatch.delitem(sys.modules, "medrobust.cli.train_denoiser")
        importlib.reload(train_cli)


def test_plugin_hook_does_not_hide_broken_plugins(monkeypatch):
    import medrobust.cli.train as train_cli

    broken = types.ModuleType("medrobust.cli.train_defense")

    def register(app):
        import medrobust_missing_dependency  # noqa: F401

    broken.register = register
    monkeypatch.setitem(sys.modules, "medrobust.cli.train_defense", broken)
    try:
        with pytest.raises(ModuleNotFoundError, match="medrobust_missing_dependency"):
            importlib.reload(train_cli)
    finally:
        monkeypatch.delitem(sys.modules, "medrobust.cli.train_defense")
        importlib.reload(train_cli)
