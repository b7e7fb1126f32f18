"""The .npy image cache (data.cache_dir): same items, decoded once, safe against stale or bad files."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from medrobust.data import make_dataset
from medrobust.data.item_cache import CachedImages
from medrobust.data.phantoms import write_phantom
from medrobust.errors import DataError


@pytest.fixture
def dicom_dataset(tmp_path):
    root = write_phantom("chest_xray", 12, 32, "dicom", tmp_path / "dcm", seed=0)
    return make_dataset(str(root), split=None, preset="chest_xray", spatial_size=(32, 32))


def test_cached_items_equal_the_pipeline_and_are_decoded_once(dicom_dataset, tmp_path):
    cached = CachedImages(dicom_dataset, tmp_path / "cache", {"preset": "chest_xray", "size": [32, 32]})
    n = len(dicom_dataset)
    assert len(cached) == n == 12
    first = [cached[i] for i in range(n)]
    assert (cached.hits, cached.misses) == (0, n)
    second = [cached[i] for i in range(n)]
    assert (cached.hits, cached.misses) == (n, n)
    for i in range(n):
        ref = dicom_dataset[i]
        img = ref["image"].as_tensor() if hasattr(ref["image"], "as_tensor") else ref["image"]
        assert torch.equal(second[i]["image"], img.float()) and torch.equal(first[i]["image"], ref["image"])
        assert int(second[i]["label"]) == int(ref["label"])
        assert second[i]["meta"]["id"] == dicom_dataset.data[i].id
    files = sorted(cached.dir.glob("*.npy"))
    assert len(files) == n and not list(cached.dir.glob("*.tmp*"))
    for f in files:  # plain arrays, readable without pickles
        assert np.load(f, allow_pickle=False).dtype == np.float32


def test_an_edited_file_is_read_afresh(dicom_dataset, tmp_path):
    cached = CachedImages(dicom_dataset, tmp_path / "cache")
    cached[0]
    before = cached.path(0)
    src = dicom_dataset.data[0].path
    st = os.stat(src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cached.path(0) != before
    cached[0]
    assert (cached.hits, cached.misses) == (0, 2)


def test_a_corrupt_cache_file_is_recomputed(dicom_dataset, tmp_path, caplog):
    cached = CachedImages(dicom_dataset, tmp_path / "cache")
    good = cached[3]["image"]
    cached.path(3).write_bytes(b"not an npy file")
    with caplog.at_level(logging.WARNING, logger="medrobust"):
        again = cached[3]["image"]
    assert torch.equal(again, good) and cached.misses == 2
    assert any("unreadable cache file" in r.getMessage() for r in caplog.records)
    assert np.load(cached.path(3), allow_pickle=False).shape == tuple(good.shape)


def test_settings_and_split_separate_namespaces(dicom_dataset, tmp_path):
    a = CachedImages(dicom_dataset, tmp_path / "cache", {"size": [32, 32]})
    b = CachedImages(dicom_dataset, tmp_path / "cache", {"size": [64, 64]})
    assert a.dir != b.dir and a.dir.parent == b.dir.parent


def test_cache_dir_that_is_a_file_is_refused(dicom_dataset, tmp_path):
    f = tmp_path / "cache"
    f.write_text("x")
    with pytest.raises(DataError, match="cache") as err:
        CachedImages(dicom_dataset, f)
    assert str(f) in str(err.value)


def test_preset_options_get_their_own_cache_entries(tmp_path):
    root = write_phantom("brain_mri", 6, 32, "png", tmp_path / "png", seed=0)
    grey = make_dataset(str(root), split=None, preset="brain_mri", spatial_size=(32, 32))
    rgb = make_dataset(
        str(root), split=None, preset="brain_mri", spatial_size=(32, 32), preset_options={"channels": 3}
    )
    settings = {"preset": "brain_mri", "size": [32, 32]}  # what a caller that knows no options passes
    a = CachedImages(grey, tmp_path / "cache", settings)
    b = CachedImages(rgb, tmp_path / "cache", settings)
    assert a.dir != b.dir
    assert a[0]["image"].shape == (1, 32, 32) and b[0]["image"].shape == (3, 32, 32)
