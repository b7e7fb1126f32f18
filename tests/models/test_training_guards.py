"""Training refuses what cannot train: one class, non-finite hyper-parameters, diverging losses."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from medrobust.cli.main import main
from medrobust.errors import ConfigError, DataError
from medrobust.models.training import (
    TrainClassifierConfig,
    TrainingDivergedError,
    _check_finite_outputs,
    check_training_labels,
    train_classifier,
)

from .conftest import BlobDataset, blob_train_data


def _config(tmp_path, **kw) -> TrainClassifierConfig:
    base = {
        "arch": "small_cnn",
        "arch_kwargs": {"width": 4, "depth": 2},
        "epochs": 1,
        "batch_size": 16,
        "out": str(tmp_path / "run"),
        "progress": False,
        "device": "cpu",
    }
    return TrainClassifierConfig.from_dict({**base, **kw})


class _OneClass(BlobDataset):
    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, seed)
        self.labels = torch.zeros(n, dtype=torch.long)


def test_check_training_labels():
    check_training_labels(np.array([0, 1, 1]), ["a", "b"], "d.npz")
    with pytest.raises(DataError, match=r"d\.npz: found 1 class \['a'\] in the training data, need ≥ 2"):
        check_training_labels(np.array([0, 0, 0]), ["a", "b"], "d.npz")
    with pytest.raises(DataError, match=r"found 1 class \['only'\]"):
        check_training_labels(np.array([0, 0]), ["only"], "folder/")
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.1 .*found labels \[0, 1, 7\]"):
        check_training_labels(np.array([0, 1, 7]), ["a", "b"], "d.csv")


def test_one_class_training_data_is_refused_before_training(tmp_path):
    data = blob_train_data(_OneClass(32, seed=1), 8, source="one-class blobs", positive_class=None)
    with pytest.raises(DataError, match=r"one-class blobs: found 1 class \['normal'\].*need ≥ 2"):
        train_classifier(_config(tmp_path), data=data)
    assert not (tmp_path / "run").exists()


def test_one_class_npz_via_cli(tmp_path, capsys):
    path = tmp_path / "one.npz"
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.zeros((n, 1), dtype=np.int64)
    np.savez(path, **arrays)
    argv = [
        "train",
        "classifier",
        "--data",
        str(path),
        "--modality",
        "chest_xray",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*argv, "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "one.npz" in err and "1 class" in err and "need ≥ 2" in err


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"lr": float("inf")}, r"'lr' parameter .*\(--lr\) must be finite\. Got inf"),
        ({"lr": float("nan")}, r"'lr' parameter .*must be finite\. Got nan"),
        ({"lr": 0}, r"'lr' parameter .*must be a float in \(0, inf\]\. Got 0"),
        ({"lr": -0.1}, r"'lr' parameter .*Got -0\.1"),
        ({"lr": "fast"}, r"'lr' parameter .*must be a number"),
        ({"weight_decay": float("inf")}, r"'weight_decay' parameter .*must be finite"),
        ({"weight_decay": -1}, r"'weight_decay' parameter"),
        ({"val_split": float("nan")}, r"'val_split' parameter .*must be finite"),
        ({"seed": 2**40}, r"seed \(--seed\): .*less than or equal to 4294967295"),
        ({"num_workers": 10**6}, r"num_workers \(--workers\)"),
        ({"epochs": 10**9}, r"epochs \(--epochs\)"),
        (
            {"spatial_size": [100000, 100000]},
            r"'spatial_size' parameter \(--size\) asks for 10000000000 pixels",
        ),
        ({"spatial_size": [-4, 4]}, r"'spatial_size' parameter \(--size\) must have 2 or 3 positive"),
        ({"arch_kwargs": [4, 2]}, r"arch_kwargs: Input should be a valid dictionary"),
        ({"arch_kwargs": {"widht": 4}}, r"no parameter 'widht'\. Did you mean 'width'"),
        (
            {"arch_kwargs": {"width": 200000}},
            r"gives classifier .small_cnn. at least 3\.6e\+12 parameters; at most 2e\+09",
        ),
        ({"learning_rate": 0.1}, r"learning_rate: unknown field"),
    ],
)
def test_hyper_parameters_are_validated(tmp_path, values, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        _config(tmp_path, **values)
    assert "\n" not in str(info.value)


def test_cli_lr_inf_names_the_option(tmp_path, capsys):
    argv = ["train", "classifier", "--data", "x", "--modality", "chest_xray", "--out", str(tmp_path / "o")]
    assert main([*argv, "--lr", "inf"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--lr" in err and "Got inf" in err


def test_divergence_stops_with_one_error(tmp_path, blob_data):
    with pytest.raises(TrainingDivergedError) as info:
        train_classifier(_config(tmp_path, lr=1e30, epochs=2), data=blob_data)
    msg = str(info.value)
    assert re.match(r"training diverged at epoch 1(, batch \d+: loss is (nan|inf|-inf))?", msg), msg
    assert "lower --lr (now 1e+30)" in msg
    assert "Input contains NaN" not in msg
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_nan_images_are_refused_before_training(tmp_path, blob_data):
    train = BlobDataset(32, seed=1)
    train.images[3, 0, 0, 0] = float("nan")
    data = blob_train_data(train, 8, source="nan blobs", positive_class=None)
    with pytest.raises(DataError, match=r"nan blobs: the training images hold NaN or infinite values"):
        train_classifier(_config(tmp_path), data=data)


def test_non_finite_outputs_never_reach_the_metrics():
    _check_finite_outputs(torch.zeros(4, 2), 1, 1e-3)
    bad = torch.zeros(4, 2)
    bad[1, 0] = float("nan")
    bad[2, 1] = float("inf")
    with pytest.raises(
        TrainingDivergedError, match=r"epoch 3: the model's outputs on 2 of 4 validation images"
    ):
        _check_finite_outputs(bad, 3, 0.5)


def test_positive_class_not_in_the_data_is_refused(tmp_path, blob_data):
    with pytest.raises(
        ConfigError, match=r"'positive_class' parameter .*Got 'lesoin'\. Did you mean 'lesion'"
    ):
        train_classifier(_config(tmp_path, positive_class="lesoin"), data=blob_data)
