"""Bad input: every case gets a DataError naming the file (or is skipped and listed)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from medrobust.data import load_arrays, make_dataset, open_source
from medrobust.errors import DataError


def _load_all(src):
    return [src.load(r) for r in src.records()]


def test_non_dicom_dcm(tmp_path):
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"this is not a DICOM file at all" * 10)
    with pytest.raises(DataError, match="not a DICOM file") as info:
        _load_all(open_source(bad))
    assert str(bad) in str(info.value)


def test_truncated_dicom(tmp_path, dicom_testdata):
    from pathlib import Path

    data = Path(dicom_testdata("CT_small.dcm")).read_bytes()
    bad = tmp_path / "trunc.dcm"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        _load_all(open_source(bad))
    assert str(bad) in str(info.value)
    shipped = dicom_testdata("MR_truncated.dcm")
    with pytest.raises(DataError) as info:
        _load_all(open_source(shipped))
    assert "MR_truncated.dcm" in str(info.value)


def test_unreadable_nifti(tmp_path, nifti_file):
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"\x1f\x8b" + b"nonsense" * 20)
    with pytest.raises(DataError, match="NIfTI") as info:
        _load_all(open_source(garbage))
    assert str(garbage) in str(info.value)
    # A valid header whose data block is cut short.
    good = nifti_file(np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4), "good.nii.gz")
    raw = gzip.decompress(good.read_bytes())
    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw[: len(raw) - 200])
    with pytest.raises(DataError) as info:
        _load_all(open_source(cut))
    assert str(cut) in str(info.value)


def test_zero_byte_png(image_tree):
    root, _ = image_tree()
    empty = root / "train" / "NORMAL" / "empty.png"
    empty.write_bytes(b"")
    src = open_source(root)
    rec = next(r for r in src.records() if r.path == empty)
    with pytest.raises(DataError, match="empty") as info:
        src.load(rec)
    assert str(empty) in str(info.value)
    # Skipped and listed with on_error="skip"; the other files still load.
    ds = make_dataset(root, split="train", on_error="skip")
    assert [p for p, _ in ds.skipped] == [str(empty)]
    assert len(ds) == 6
    x, _ = load_arrays(ds)
    assert x.shape == (6, 1, 16, 20)


def test_corrupt_png(image_tree):
    root, _ = image_tree()
    bad = root / "test" / "PNEUMONIA" / "img0.png"
    bad.write_bytes(bad.read_bytes()[:60])
    src = open_source(root)
    rec = next(r for r in src.records() if r.path == bad)
    with pytest.raises(DataError) as info:
        src.load(rec)
    assert str(bad) in str(info.value)


def test_npz_with_object_arrays(tmp_path):
    path = tmp_path / "evil.npz"
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = {"a": 1}, [1, 2]
    np.savez(path, train_images=obj, train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(DataError, match="allow_pickle=False") as info:
        open_source(path)
    assert str(path) in str(info.value)
    # Object labels beside valid images are refused too, without unpickling anything.
    path2 = tmp_path / "evil2.npz"
    np.savez(path2, train_images=np.zeros((2, 8, 8), np.uint8), train_labels=obj)
    with pytest.raises(DataError, match=r"evil2\.npz"):
        open_source(path2)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_inf_pixels(tmp_path, nifti_file, bad_value):
    vol = np.ones((8, 8, 3), np.float32)
    vol[2, 3, 1] = bad_value
    path = nifti_file(vol, "nan.nii.gz")
    with pytest.raises(DataError, match="non-finite") as info:
        _load_all(open_source(path))
    assert str(path) in str(info.value)
    # In an npz, the message names the file, the array and the row.
    arr = np.zeros((3, 8, 8), np.float32)
    arr[1, 0, 0] = bad_value
    npz = tmp_path / "nan.npz"
    np.savez(npz, train_images=arr, train_labels=np.array([[0], [1], [0]], np.uint8))
    src = open_source(npz)
    with pytest.raises(DataError) as info:
        src.load(src.records("train")[1])
    assert f"{npz}[train_images][1]" in str(info.value)
    ds = make_dataset(npz, split="train", on_error="skip")
    assert len(ds) == 2 and ds.skipped[0][0] == f"{npz}[train_images][1]"


def test_csv_naming_missing_file(tmp_path, write_image):
    write_image(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.png,0\nmissing/b.png,1\n")
    with pytest.raises(DataError, match="does not exist") as info:
        open_source(csv)
    assert str(tmp_path / "missing" / "b.png") in str(info.value)
    assert "labels.csv line 3" in str(info.value)
    src = open_source(csv, on_error="skip")
    assert len(src) == 1 and src.skipped[0][0] == str(tmp_path / "missing" / "b.png")


def test_mismatched_channels(image_tree, write_image):
    root, _ = image_tree()
    rgb = root / "train" / "NORMAL" / "zcolour.png"  # sorts after img*.png
    write_image(rgb, np.zeros((16, 20, 3), np.uint8))
    # Declared 1-channel source: the RGB file is named.
    src = open_source(root, channels=1)
    rec = next(r for r in src.records() if r.path == rgb)
    with pytest.raises(DataError, match="3 channel") as info:
        src.load(rec)
    assert str(rgb) in str(info.value)
    # Undeclared: the first file sets the channel count; the odd one is named when read.
    ds = make_dataset(root, split="train")
    with pytest.raises(DataError, match="has 3 channel") as info:
        load_arrays(ds)
    assert str(info.value).startswith(str(rgb)) and "img0.png" in str(info.value)
    skipped = make_dataset(root, split="train", on_error="skip")
    assert [p for p, _ in skipped.skipped] == [str(rgb)]
    assert load_arrays(skipped)[0].shape[1] == 1


def test_missing_path_and_unknown_kind(tmp_path):
    with pytest.raises(DataError, match="no such file") as info:
        open_source(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    odd = tmp_path / "notes.txt"
    odd.write_text("hello")
    with pytest.raises(DataError, match="kind") as info:
        open_source(odd)
    assert "notes.txt" in str(info.value)
