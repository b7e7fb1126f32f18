import csv
import json

import numpy as np
import pytest
import torch

from medrobust.errors import ConfigError
from medrobust.metrics import classification_metrics
from medrobust.models import load_model
from medrobust.models.training import (
    METRIC_COLUMNS,
    EarlyStopping,
    TrainClassifierConfig,
    class_weights,
    stratified_split,
    train_classifier,
)


def test_config_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("data: x.npz\nmodality: chest_xray\narch: resnet18\nepochs: 4\nspatial_size: [64, 64]\n")
    cfg = TrainClassifierConfig.from_yaml(path, epochs=2, lr=None)
    assert (cfg.arch, cfg.epochs, cfg.spatial_size, cfg.lr) == ("resnet18", 2, (64, 64), 3e-3)  # default lr


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("epochs: 2\nlearning_rate: 0.1\n", "learning_rate"),
        ("arch: densenet12\n", "Did you mean 'densenet121'"),
        ("epochs: 0\n", "epochs"),
        ("class_weighting: inverse\n", "class_weighting"),
        ("arch: !!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_config_rejects(tmp_path, text, match):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        TrainClassifierConfig.from_yaml(path)


def test_stratified_split_is_seeded_and_stratified():
    labels = np.array([0] * 80 + [1] * 20)
    keep, held = stratified_split(labels, 0.25, seed=3)
    assert set(keep).isdisjoint(held) and len(keep) + len(held) == 100
    assert np.bincount(labels[held]).tolist() == [20, 5]
    again = stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(stratified_split(labels, 0.25, seed=4)[1], held)


def test_balanced_class_weights():
    w = class_weights(np.array([0, 0, 0, 1]), 2, "balanced")
    assert torch.allclose(w, torch.tensor([4 / 6, 4 / 2]))
    assert class_weights(np.array([0, 1]), 2, "none") is None
    assert class_weights(np.array([0, 0]), 3, "balanced").tolist() == [1.0, 0.0, 0.0]


def test_early_stopping_logic():
    es = EarlyStopping(patience=2)
    assert es.step(0.6, 0.9) == (True, False)
    assert es.step(0.6, 0.8) == (True, False)  # tie broken by lower loss
    assert es.step(0.5, 0.7) == (False, False)
    assert es.step(0.6, 0.9) == (False, True)
    assert EarlyStopping(0).step(float("nan"), 1.0) == (False, False)


def test_metrics_csv_and_best_weights_kept(trained_run, blob_data):
    with open(trained_run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert 1 <= len(rows) <= 3 and tuple(rows[0]) == METRIC_COLUMNS
    summary = json.loads((trained_run / "summary.json").read_text())
    best_row = rows[summary["best_epoch"] - 1]
    assert float(best_row["val_balanced_accuracy"]) == pytest.approx(
        max(float(r["val_balanced_accuracy"]) for r in rows)
    )
    # the saved weights are the best epoch's: re-evaluating them reproduces its validation metrics
    model = load_model(trained_run)
    val = blob_data.val
    with torch.no_grad():
        logits = model(torch.stack([val[i]["image"] for i in range(len(val))]))
    m = classification_metrics(val.labels.numpy(), logits.numpy(), positive=1)
    assert m["balanced_accuracy"] == pytest.approx(float(best_row["val_balanced_accuracy"]), abs=1e-6)
    assert m["auroc"] == pytest.approx(float(best_row["val_auroc"]), abs=1e-5)
    assert summary["test"]["n"] == 64 and summary["test"]["balanced_accuracy"] > 0.8


def test_training_is_seeded(tmp_path, blob_data, images):
    def run(seed, name):
        cfg = TrainClassifierConfig(
            arch_kwargs={"width": 4},
            epochs=1,
            batch_size=32,
            out=str(tmp_path / name),
            progress=False,
            device="cpu",
            seed=seed,
        )
        model = load_model(train_classifier(cfg, data=blob_data))
        with torch.no_grad():
            return model(images)

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_refuses_to_overwrite_a_checkpoint(trained_run, blob_data):
    cfg = TrainClassifierConfig(epochs=1, out=str(trained_run), progress=False)
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        train_classifier(cfg, data=blob_data)
