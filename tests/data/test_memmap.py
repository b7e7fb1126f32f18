"""Memory-mapped MedMNIST arrays through the uncompressed .npy cache (medrobust.data.cache)."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

from medrobust.data import open_source
from medrobust.data.cache import CACHE_ENV, cache_root, extract_member, npz_cache_dir, open_npz_member
from medrobust.errors import ConfigError, DataError


def _arrays(rgb=False):
    rng = np.random.default_rng(3)
    out = {}
    for split, n in (("train", 7), ("val", 3), ("test", 4)):
        shape = (n, 16, 16, 3) if rgb else (n, 16, 16)
        out[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        out[f"{split}_labels"] = (np.arange(n) % 3).astype(np.uint8)[:, None]
    return out


def _all_images(src):
    return {r.id: src.load(r) for r in src.records()}


@pytest.mark.parametrize("rgb", [False, True])
def test_mmap_equals_in_memory_and_reuses_cache(tmp_path, rgb):
    arrays = _arrays(rgb)
    path = tmp_path / "m.npz"
    np.savez_compressed(path, **arrays)
    cache = tmp_path / "cache"
    plain = open_source(path, mmap=False)
    mapped = open_source(path, mmap=True, cache_dir=cache)
    assert [(r.id, r.label, r.split) for r in plain.records()] == [
        (r.id, r.label, r.split) for r in mapped.records()
    ]
    a, b = _all_images(plain), _all_images(mapped)
    assert a.keys() == b.keys() and len(a) == 14
    for k in a:
        assert np.array_equal(a[k]["image"], b[k]["image"]) and a[k]["image"].dtype == b[k]["image"].dtype
        assert a[k]["label"] == b[k]["label"] and a[k]["meta"] == b[k]["meta"]
    # The cache holds one uncompressed .npy per member, inside a per-file fingerprint folder.
    folder = npz_cache_dir(path, cache)
    assert folder.parent == cache
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{k}.npy" for k in arrays)
    for key, value in arrays.items():
        arr = mapped._member(key)
        assert isinstance(arr, np.memmap) and not arr.flags.writeable
        assert np.array_equal(arr, value)
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 1
    # A second open reuses the cache files untouched.
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = open_source(path, mmap=True, cache_dir=cache)
    assert np.array_equal(again.load(again.records("test")[2])["image"], a["test/2"]["image"])
    again._member("train_images")
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes


def test_truncated_or_foreign_cache_is_rebuilt(tmp_path):
    arrays = _arrays()
    path = tmp_path / "m.npz"
    np.savez_compressed(path, **arrays)
    cache = tmp_path / "cache"
    first = open_npz_member(path, "train_images", cache)
    cached = npz_cache_dir(path, cache) / "train_images.npy"
    full = cached.stat().st_size
    del first
    with open(cached, "r+b") as fh:  # a partial copy: right header, missing tail
        fh.truncate(full - 5)
    arr = open_npz_member(path, "train_images", cache)
    assert cached.stat().st_size == full and np.array_equal(arr, arrays["train_images"])
    del arr
    np.save(cached, np.zeros((7, 16, 16), np.float32))  # same shape, wrong dtype and size
    arr = open_npz_member(path, "train_images", cache)
    assert arr.dtype == np.uint8 and np.array_equal(arr, arrays["train_images"])
    del arr
    cached.write_bytes(b"not an npy file")
    assert np.array_equal(open_npz_member(path, "train_images", cache), arrays["train_images"])


def test_changed_file_gets_a_new_cache_folder(tmp_path):
    path = tmp_path / "m.npz"
    np.savez_compressed(path, **_arrays())
    cache = tmp_path / "cache"
    old = npz_cache_dir(path, cache)
    open_npz_member(path, "val_images", cache)
    changed = _arrays()
    changed["val_images"] = changed["val_images"][::-1].copy()
    np.savez_compressed(path, **changed)
    os.utime(path, ns=(1, 1))  # even with an mtime moved back, the head hash differs
    assert npz_cache_dir(path, cache) != old
    assert np.array_equal(open_npz_member(path, "val_images", cache), changed["val_images"])


def test_uncompressed_npz_is_mapped_in_place(tmp_path):
    arrays = _arrays(rgb=True)
    path = tmp_path / "stored.npz"
    np.savez(path, **arrays)
    cache = tmp_path / "cache"
    src = open_source(path, mmap=True, cache_dir=cache)
    arr = src._member("val_images")
    assert isinstance(arr, np.memmap) and os.path.samefile(arr.filename, path) and not arr.flags.writeable
    assert np.array_equal(arr, arrays["val_images"])
    assert not cache.exists()  # no copy needed
    ref = open_source(path, mmap=False)
    rec = src.records("val")[1]
    assert np.array_equal(src.load(rec)["image"], ref.load(rec)["image"])


def test_fortran_order_member(tmp_path):
    images = np.asfortranarray(np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8))
    path = tmp_path / "f.npz"
    np.savez_compressed(path, train_images=images, train_labels=np.zeros(5, np.int64))
    arr = open_npz_member(path, "train_images", tmp_path / "cache")
    assert np.array_equal(arr, images) and arr.flags.f_contiguous


def test_object_arrays_refused_before_any_copy(tmp_path):
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = {"a": 1}, [1, 2]
    path = tmp_path / "evil.npz"
    np.savez_compressed(path, train_images=obj, train_labels=np.zeros((2, 1), np.uint8))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="allow_pickle=False") as info:
        open_source(path, mmap=True, cache_dir=cache)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match="allow_pickle=False"):
        open_npz_member(path, "train_images", cache)
    assert not cache.exists()  # refused from the header: nothing was copied


def test_corrupt_member_names_the_file_and_leaves_no_cache(tmp_path):
    path = tmp_path / "m.npz"
    np.savez_compressed(path, **_arrays())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("train_images.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        size = info.compress_size
    raw = bytearray(path.read_bytes())
    for i in range(start + size // 2, start + size // 2 + 16):  # damage the deflate stream's middle
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    dest = tmp_path / "cache" / "train_images.npy"
    with pytest.raises(DataError) as err:
        extract_member(path, "train_images", dest)
    assert str(path) in str(err.value)
    assert not dest.exists() and not list(dest.parent.glob(".*"))  # the temporary file is gone too


def test_missing_member_and_bad_option(tmp_path):
    path = tmp_path / "m.npz"
    np.savez_compressed(path, **_arrays())
    with pytest.raises(DataError, match="has no 'x_images' array") as info:
        open_npz_member(path, "x_images", tmp_path / "cache")
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="'mmap' parameter of NpzSource"):
        open_source(path, mmap="yes")


def test_auto_mode_threshold_and_pickling(tmp_path, monkeypatch):
    import medrobust.data.sources.npz as npz_mod

    path = tmp_path / "m.npz"
    arrays = _arrays()
    np.savez_compressed(path, **arrays)
    cache = tmp_path / "cache"
    small = open_source(path, cache_dir=cache)  # "auto": all members are far below 256 MiB
    assert not isinstance(small._member("train_images"), np.memmap) and not cache.exists()
    monkeypatch.setattr(npz_mod, "MMAP_AUTO_BYTES", 1000)  # images (>1000 B) mapped, labels not
    src = open_source(path, cache_dir=cache)
    assert isinstance(src._member("train_images"), np.memmap)
    assert not isinstance(src._member("train_labels"), np.memmap)
    # Pickled sources (DataLoader workers) carry no mapped data and re-map on first use.
    clone = pickle.loads(pickle.dumps(src))
    assert "train_images" not in clone._cache and "train_labels" in clone._cache
    rec = src.records("train")[4]
    assert np.array_equal(clone.load(rec)["image"], src.load(rec)["image"])


def test_auto_mode_falls_back_when_cache_unwritable(tmp_path, monkeypatch):
    import medrobust.data.sources.npz as npz_mod

    path = tmp_path / "m.npz"
    np.savez_compressed(path, **_arrays())
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should go")
    monkeypatch.setattr(npz_mod, "MMAP_AUTO_BYTES", 0)
    with pytest.warns(RuntimeWarning, match="into memory instead"):
        src = open_source(path, cache_dir=blocker)
        arr = src._member("val_images")
    assert not isinstance(arr, np.memmap) and arr.shape == (3, 16, 16)
    with pytest.raises(DataError, match="cannot create the array cache"):
        open_source(path, mmap=True, cache_dir=blocker)


def test_default_cache_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mr"))
    assert cache_root() == tmp_path / "mr" / "npz"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "medrobust" / "npz"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    path = tmp_path / "m.npz"
    np.savez_compressed(path, **_arrays())
    src = open_source(path, mmap=True)  # no cache_dir: the environment's root is used
    src._member("test_images")
    assert (npz_cache_dir(path) / "test_images.npy").is_file()
    assert npz_cache_dir(path).is_relative_to(tmp_path / "env" / "npz")
