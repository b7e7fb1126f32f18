"""make_dataset / load_arrays: plain tensors, presets applied, resizing, DataLoader collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.data import collate_samples, load_arrays, make_dataset, open_source
from medrobust.errors import ConfigError, DataError


def test_items_are_plain_tensors_in_native_units(image_tree):
    root, written = image_tree()
    ds = make_dataset(root, split="test")
    item = ds[0]
    assert type(item["image"]) is torch.Tensor and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
    rec = ds.records[0]
    np.testing.assert_array_equal(item["image"][0].numpy(), written[rec.id].astype(np.float32))
    x, y = load_arrays(ds)
    assert x.shape == (6, 1, 16, 20) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert load_arrays(ds, limit=2)[0].shape[0] == 2


def test_preset_is_applied(image_tree):
    pytest.importorskip("medrobust.data.presets")
    from medrobust.data import get_preset

    root, _ = image_tree(rgb=True)
    preset = get_preset("chest_xray")
    ds = make_dataset(root, split="train", preset="chest_xray", spatial_size=(24, 24))
    x, _ = load_arrays(ds)
    lo, hi = preset.bounds
    assert x.shape == (6, preset.channels, 24, 24) and type(x) is torch.Tensor
    assert x.min() >= lo and x.max() <= hi and x.std() > 0
    assert ds.preset is not None and ds.preset.name == "chest_xray"


def test_resize_without_preset_and_shape_mismatch(tmp_path, write_image):
    write_image(tmp_path / "a" / "1.png", np.full((10, 10), 100, np.uint8))
    write_image(tmp_path / "b" / "2.png", np.full((20, 30), 200, np.uint8))
    with pytest.raises(DataError, match="spatial_size"):
        load_arrays(make_dataset(tmp_path, split=None))
    x, _ = load_arrays(make_dataset(tmp_path, split=None, spatial_size=(8, 8)))
    assert x.shape == (2, 1, 8, 8)
    assert sorted(x.flatten(1).mean(1).round().tolist()) == [100.0, 200.0]  # native units kept


def test_dataloader_with_collate(medmnist_npz):
    path, arrays = medmnist_npz()
    ds = make_dataset(open_source(path), split="train")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_samples)))
    assert batch["image"].shape == (4, 1, 28, 28) and batch["label"].tolist() == [0, 1, 2, 0]
    assert [m["id"] for m in batch["meta"]] == ["train/0", "train/1", "train/2", "train/3"]
    np.testing.assert_array_equal(batch["image"][1, 0].numpy(), arrays["train_images"][1])


def test_make_dataset_errors(medmnist_npz):
    path, _ = medmnist_npz()
    with pytest.raises(ConfigError, match="on_error"):
        make_dataset(path, on_error="ignore")
    with pytest.raises(ConfigError, match="augment"):
        make_dataset(path, augment=True)
    with pytest.raises(ConfigError, match="already open"):
        make_dataset(open_source(path), split_seed=2)
    with pytest.raises(DataError, match="unknown split"):
        make_dataset(path, split="holdout")
