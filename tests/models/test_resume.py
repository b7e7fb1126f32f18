"""The one training loop under classifier training: checkpoint every epoch, resume, time estimate, lock."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch
import yaml

from medrobust.cli.main import main
from medrobust.errors import CheckpointError, ConfigError
from medrobust.models import load_model
from medrobust.models.training import TrainClassifierConfig, train_classifier
from medrobust.run.loop import CHECKPOINT_SCHEMA, checkpoint_path, read_checkpoint

from .conftest import BlobDataset, blob_train_data


class KilledError(RuntimeError):
    """Stands in for a killed process."""


def _kill_after(epoch: int):
    def callback(end) -> None:
        if end.epoch == epoch:
            assert end.checkpoint is not None and end.checkpoint.is_file()
            raise KilledError(f"killed after epoch {epoch}")

    return callback


def _config(tmp_path, name: str, **kw) -> TrainClassifierConfig:
    base = {
        "arch": "small_cnn",
        "arch_kwargs": {"width": 4, "depth": 2},
        "epochs": 4,
        "batch_size": 32,
        "lr": 3e-3,
        "patience": 0,
        "out": str(tmp_path / name),
        "progress": False,
        "device": "cpu",
        "seed": 5,
    }
    return TrainClassifierConfig.from_dict({**base, **kw})


def _weights(run) -> dict[str, torch.Tensor]:
    return load_model(run).state_dict()


def _rows(run) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def small_blobs():
    return blob_train_data(96, 32, (11, 12))


def test_killed_after_epoch_2_resumes_to_the_same_weights(tmp_path, small_blobs):
    straight = train_classifier(_config(tmp_path, "straight"), data=small_blobs)
    cfg = _config(tmp_path, "killed")
    with pytest.raises(KilledError):
        train_classifier(cfg, data=small_blobs, callbacks=[_kill_after(2)])
    killed = tmp_path / "killed"
    assert not (killed / "model.safetensors").exists() and not (killed / "medrobust.lock").exists()
    state = torch.load(checkpoint_path(killed), map_location="cpu", weights_only=True)
    assert state["schema"] == CHECKPOINT_SCHEMA and state["epoch"] == 2 and len(state["rows"]) == 2
    assert {"model", "optimizer", "scheduler", "scaler", "early_stopping", "best", "config"} <= set(state)

    resumed = train_classifier(cfg, data=small_blobs, resume=True)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _rows(straight) == _rows(resumed)
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["resumed_after_epoch"] == 2 and summary["epochs_run"] == 4
    assert not (resumed / "checkpoint").exists()  # removed when training ends


def test_resume_refuses_a_changed_config(tmp_path, small_blobs):
    cfg = _config(tmp_path, "run")
    with pytest.raises(KilledError):
        train_classifier(cfg, data=small_blobs, callbacks=[_kill_after(1)])
    changed = _config(tmp_path, "run", lr=1e-2, arch_kwargs={"width": 8, "depth": 2})
    with pytest.raises(ConfigError, match=r"--resume: the config differs") as info:
        train_classifier(changed, data=small_blobs, resume=True)
    msg = str(info.value)
    assert "lr: 0.003 -> 0.01" in msg and "arch_kwargs.width: 4 -> 8" in msg and "\n" not in msg
    # progress, out and overwrite may differ
    train_classifier(cfg.model_copy(update={"progress": True}), data=small_blobs, resume=True)


def test_unfinished_run_needs_resume_or_overwrite(tmp_path, small_blobs):
    cfg = _config(tmp_path, "run", epochs=2)
    with pytest.raises(ConfigError, match=r"no unfinished run to resume"):
        train_classifier(cfg, data=small_blobs, resume=True)
    with pytest.raises(KilledError):
        train_classifier(cfg, data=small_blobs, callbacks=[_kill_after(1)])
    with pytest.raises(ConfigError, match=r"holds an unfinished classifier training run .*--resume"):
        train_classifier(cfg, data=small_blobs)
    run = train_classifier(cfg.model_copy(update={"overwrite": True}), data=small_blobs)
    assert json.loads((run / "summary.json").read_text())["resumed_after_epoch"] == 0


def test_corrupt_checkpoint_is_one_error_naming_it(tmp_path, small_blobs):
    path = checkpoint_path(tmp_path / "run")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(CheckpointError, match=r"last\.pt: not a readable training checkpoint"):
        train_classifier(_config(tmp_path, "run"), data=small_blobs, resume=True)
    torch.save({"schema": "something/else"}, path)
    with pytest.raises(CheckpointError, match=r"expected a training checkpoint with schema"):
        read_checkpoint(path)


def test_time_estimate_lock_and_epoch_log(tmp_path, small_blobs, caplog):
    seen = []

    def lock_held(end) -> None:
        seen.append((tmp_path / "run" / "medrobust.lock").is_file())

    with caplog.at_level(logging.INFO, logger="medrobust"):
        run = train_classifier(_config(tmp_path, "run", epochs=2), data=small_blobs, callbacks=[lock_held])
    text = caplog.text
    assert "time estimate after 3 batch(es)" in text and "for 2 epoch(s)" in text
    assert "train epoch 1/2: train_loss=" in text and "left)" in text
    assert seen == [True, True] and not (run / "medrobust.lock").exists()


def test_cli_resume(tmp_path, phantom_png):
    cfg_path = tmp_path / "train.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "data": str(phantom_png),
                "modality": "chest_xray",
                "epochs": 2,
                "spatial_size": [32, 32],
                "batch_size": 8,
                "arch_kwargs": {"width": 4, "depth": 2},
                "out": str(tmp_path / "run"),
                "progress": False,
                "device": "cpu",
            }
        )
    )
    with pytest.raises(KilledError):
        train_classifier(TrainClassifierConfig.from_yaml(cfg_path), callbacks=[_kill_after(1)])
    assert main(["train", "classifier", "--config", str(cfg_path)]) == 2  # unfinished: needs --resume
    assert main(["train", "classifier", "--config", str(cfg_path), "--lr", "0.5", "--resume"]) == 2
    assert main(["train", "classifier", "--config", str(cfg_path), "--resume"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["resumed_after_epoch"] == 1 and summary["epochs_run"] == 2


class _Flat(BlobDataset):
    """Every image the same grey: no model can tell the classes apart."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, seed)
        self.images = torch.full_like(self.images, 0.5)


def test_chance_warning_for_a_constant_model(tmp_path, caplog):
    data = blob_train_data(_Flat(48, seed=1), _Flat(24, seed=2), source="flat images", positive_class=None)
    with caplog.at_level(logging.WARNING, logger="medrobust"):
        run = train_classifier(_config(tmp_path, "flat", epochs=1), data=data)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("predicts one class" in r.getMessage() for r in warnings), caplog.text
    chance = json.loads((run / "summary.json").read_text())["chance"]
    assert chance["constant"] is True and chance["warning"]


def test_no_chance_warning_for_a_trained_model(trained_run):
    chance = json.loads((trained_run / "summary.json").read_text())["chance"]
    assert chance["constant"] is False and chance["at_chance"] is False and chance["warning"] is None
    assert chance["balanced_accuracy"] > 0.7
