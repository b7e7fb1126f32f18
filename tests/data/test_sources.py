"""npz, class folders, CSV manifests, splits and kind detection."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.data import assign_splits, list_sources, open_source
from medrobust.errors import ConfigError, DataError


def test_registered_sources():
    assert set(list_sources()) >= {"npz", "folder", "csv", "dicom", "nifti"}


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("rgb", [False, True])
def test_npz_medmnist(medmnist_npz, size, rgb):
    path, arrays = medmnist_npz(size=size, rgb=rgb)
    src = open_source(path)
    assert src.kind == "npz" and src.split_info == {"kind": "own"}
    assert src.splits() == ["train", "val", "test"]
    assert [len(src.records(s)) for s in src.splits()] == [6, 2, 3]
    assert src.class_names == ["0", "1", "2"]
    rec = src.records("test")[2]
    sample = src.load(rec)
    expected = arrays["test_images"][2]
    expected = np.moveaxis(expected, -1, 0) if rgb else expected[None]
    np.testing.assert_array_equal(sample["image"], expected.astype(np.float32))
    assert sample["label"] == int(arrays["test_labels"][2, 0])
    assert sample["meta"]["dtype"] == "uint8" and sample["meta"]["id"] == "test/2"


def test_npz_is_lazy_and_labels_flat(medmnist_npz):
    path, _ = medmnist_npz(label_shape="N")
    src = open_source(path)
    assert not any(k.endswith("_images") for k in src._cache)  # images untouched until read
    src.load(src.records("val")[0])
    assert "val_images" in src._cache and "train_images" not in src._cache


def test_npz_multilabel_needs_column(tmp_path):
    path = tmp_path / "chest.npz"
    y = np.array([[0, 1, 0], [1, 0, 1], [0, 0, 1]], np.uint8)
    np.savez(path, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=y)
    with pytest.raises(DataError, match="label_column"):
        open_source(path)
    src = open_source(path, label_column=2)
    assert [r.label for r in src.records()] == [0, 1, 1]


def test_folder_with_split_folders(image_tree):
    root, written = image_tree(splits=("Training", "Testing"), classes=("glioma", "meningioma", "notumor"))
    src = open_source(root)
    assert src.kind == "folder" and src.splits() == ["train", "test"]
    assert src.class_names == ["glioma", "meningioma", "notumor"]
    rec = next(r for r in src.records("test") if r.id == "Testing/meningioma/img1.png")
    sample = src.load(rec)
    assert sample["label"] == 1
    np.testing.assert_array_equal(sample["image"][0], written[rec.id].astype(np.float32))
    assert sample["image"].shape == (1, 16, 20)  # (C, H, W): rows first, not PIL's (W, H)


def test_folder_without_split_is_stratified_and_seeded(image_tree):
    root, _ = image_tree(splits=None, n=20)
    a = open_source(root, split_seed=3)
    b = open_source(root, split_seed=3)
    c = open_source(root, split_seed=4)
    assert a.split_info == {"kind": "stratified", "seed": 3, "fractions": [0.7, 0.15, 0.15]}
    assert [r.split for r in a.records()] == [r.split for r in b.records()]
    assert [r.split for r in a.records()] != [r.split for r in c.records()]
    for split, n in (("train", 14), ("val", 3), ("test", 3)):
        labels = [r.label for r in a.records(split)]
        assert labels.count(0) == labels.count(1) == n


def test_folder_rgb_jpeg_and_wrapper_folder(image_tree):
    root, _ = image_tree(rgb=True, ext=".jpeg", name="chest_xray/chest_xray")
    src = open_source(root.parent)  # a single wrapper folder is descended into
    sample = src.load(src.records("train")[0])
    assert sample["image"].shape == (3, 16, 20) and sample["meta"]["format"] == "jpeg"


def test_csv_manifest_names_ints_columns(tmp_path, write_image):
    for i in range(6):
        write_image(tmp_path / "imgs" / f"{i}.png", np.full((8, 8), i * 10, np.uint8))
    (tmp_path / "m.csv").write_text(
        "file,diagnosis\n" + "".join(f"imgs/{i}.png,{'benign' if i % 2 else 'malignant'}\n" for i in range(6))
    )
    src = open_source(tmp_path / "m.csv", path_column="file", label_column="diagnosis", split_seed=1)
    assert src.kind == "csv" and src.class_names == ["benign", "malignant"]
    rec = next(r for r in src.records() if r.id == "imgs/3.png")
    assert rec.label == 0 and src.load(rec)["image"].max() == 30
    (tmp_path / "ints.csv").write_text(
        "path,label,split\n"
        + "".join(f"imgs/{i}.png,{i % 3},{'train' if i < 4 else 'test'}\n" for i in range(6))
    )
    src = open_source(tmp_path / "ints.csv")
    assert src.class_names == ["0", "1", "2"] and src.split_info["kind"] == "own"
    assert [r.label for r in src.records("test")] == [1, 2]
    with pytest.raises(DataError, match="no 'path' column"):
        open_source(tmp_path / "m.csv")


def test_csv_patient_grouping(tmp_path, write_image):
    lines = ["path,label,patient"]
    for p in range(12):
        for k in range(3):
            write_image(tmp_path / f"p{p}_{k}.png", np.zeros((4, 4), np.uint8))
            lines.append(f"p{p}_{k}.png,{p % 2},MRN{p:04d}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    src = open_source(tmp_path)  # a folder with one CSV manifest
    assert src.kind == "csv" and src.split_info["kind"] == "grouped-stratified"
    by_patient = {}
    for r in src.records():
        by_patient.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in by_patient.values())
    assert set(src.splits()) == {"train", "val", "test"}
    # A given split that puts one patient in two splits is refused without printing the patient.
    lines = ["path,label,split,patient", "p0_0.png,0,train,MRN0000", "p0_1.png,0,test,MRN0000"]
    (tmp_path / "leak.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="another split") as info:
        open_source(tmp_path / "leak.csv")
    assert "MRN0000" not in str(info.value)


def test_assign_splits_properties():
    labels = [0] * 50 + [1] * 10
    splits, info = assign_splits(labels, seed=0)
    assert info["kind"] == "stratified"
    minority = [s for s, y in zip(splits, labels, strict=True) if y == 1]
    assert (minority.count("train"), minority.count("val"), minority.count("test")) == (7, 2, 1)
    assert splits == assign_splits(labels, seed=0)[0]
    groups = [f"g{i // 4}" for i in range(60)]
    gsplits, ginfo = assign_splits(labels, groups=groups, fractions=(0.6, 0.2, 0.2), seed=5)
    assert ginfo == {"kind": "grouped-stratified", "seed": 5, "fractions": [0.6, 0.2, 0.2]}
    for g in set(groups):
        assert len({s for s, gg in zip(gsplits, groups, strict=True) if gg == g}) == 1
    assert 30 <= gsplits.count("train") <= 42


def test_bad_options_are_config_errors(image_tree):
    root, _ = image_tree()
    with pytest.raises(ConfigError, match="split_fractions"):
        open_source(root, split_fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ConfigError, match="'window'"):
        open_source(root, window="lung")
    with pytest.raises(ConfigError, match="'frame'"):
        open_source(root, frame=-1)
    with pytest.raises(ConfigError, match="Did you mean 'folder'"):
        open_source(root, kind="foldr")
    with pytest.raises(ConfigError, match="does not accept"):
        open_source(root, colour=True)
