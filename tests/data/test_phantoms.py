import csv
import json

import numpy as np
import pytest

from medrobust.data.phantoms import (
    FORMATS,
    get_phantom,
    list_phantoms,
    make_phantom,
    write_phantom,
)
from medrobust.errors import ConfigError

MODALITIES = ["brain_mri", "chest_xray", "retina_fundus", "retina_oct", "skin"]
CHANNELS = {"brain_mri": 1, "chest_xray": 1, "retina_fundus": 3, "retina_oct": 1, "skin": 3}


def test_registry():
    assert list_phantoms() == MODALITIES
    with pytest.raises(ConfigError, match="Did you mean 'brain_mri'"):
        make_phantom("brain_mr", 4)


@pytest.mark.parametrize("modality", MODALITIES)
def test_make_phantom_contract_and_determinism(modality):
    a = make_phantom(modality, 12, size=32, seed=3)
    b = make_phantom(modality, 12, size=32, seed=3)
    c = make_phantom(modality, 12, size=32, seed=4)
    assert a.images.dtype == np.uint8 and a.images.shape == (12, CHANNELS[modality], 32, 32)
    assert a.labels.dtype == np.int64 and a.labels.shape == (12,)
    assert set(a.splits) <= {"train", "val", "test"}
    assert a.modality == modality and len(a.class_names) >= 2
    assert a.positive_class is None or a.positive_class in a.class_names
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.splits, b.splits)
    assert not np.array_equal(a.images, c.images)
    assert a.images.std() > 10  # actual content, not a blank image


def test_single_image_regenerates_without_the_set():
    full = make_phantom("chest_xray", 30, size=40, seed=5)
    gen = get_phantom("chest_xray", size=40, seed=5)
    img, label, split = gen.sample(27)
    assert np.array_equal(img, full.images[27])
    assert label == full.labels[27] and split == full.splits[27]
    # The assignment of index i does not depend on how many images are made.
    assert np.array_equal(make_phantom("chest_xray", 8, size=40, seed=5).images, full.images[:8])


@pytest.mark.parametrize("size", [28, 45, 96])
def test_any_size(size):
    ps = make_phantom("retina_fundus", 2, size=size)
    assert ps.images.shape == (2, 3, size, size)


@pytest.mark.parametrize("modality", MODALITIES)
def test_balanced_labels_and_exact_splits(modality):
    gen = get_phantom(modality, size=32)
    k = len(gen.class_names)
    n = 20 * k  # one block
    assigned = [gen.assignment(i) for i in range(n)]
    labels = np.array([a[0] for a in assigned])
    splits = np.array([a[1] for a in assigned])
    assert np.bincount(labels, minlength=k).tolist() == [20] * k
    for c in range(k):
        s = splits[labels == c]
        assert [(s == x).sum() for x in ("train", "val", "test")] == [14, 3, 3]
    # Small sets are balanced too: every run of K consecutive indices holds each class once.
    assert sorted(labels[:k].tolist()) == list(range(k))


def test_class_weights_imbalance():
    gen = get_phantom("chest_xray", size=32, class_weights=[3, 1])
    labels = np.array([gen.assignment(i)[0] for i in range(400)])
    assert np.bincount(labels).tolist() == [300, 100]
    with pytest.raises(ConfigError, match="'class_weights'"):
        get_phantom("chest_xray", class_weights=[1, 1, 1])


def test_bad_parameters():
    with pytest.raises(ConfigError, match="'size'"):
        make_phantom("skin", 4, size=16)
    with pytest.raises(ConfigError, match="'n'"):
        make_phantom("skin", 0)


@pytest.mark.parametrize("modality", MODALITIES)
def test_class_signal_is_local_not_global(modality):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    ps = make_phantom(modality, 40, size=32, seed=1)
    x = ps.images.astype(np.float32) / 255.0
    y = ps.labels
    # Class-conditional means differ somewhere, by more than in a few pixels ...
    normal = x[y == 0].mean(axis=0)
    for c in range(1, len(ps.class_names)):
        diff = np.abs(x[y == c].mean(axis=0) - normal)
        assert diff.max() > 0.03
    # ... but global mean and std per image do not separate the classes.
    feats = np.stack([x.reshape(len(x), -1).mean(1), x.reshape(len(x), -1).std(1)], axis=1)
    acc = cross_val_score(LogisticRegression(), feats, y, cv=4).mean()
    assert acc < 0.9


def _read_png(path):
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    return arr


def _folder_files(root, ext):
    return sorted(root.glob(f"*/*/*{ext}"))


@pytest.mark.parametrize("modality", ["chest_xray", "skin"])
def test_write_png_and_jpeg(tmp_path, modality):
    ps = make_phantom(modality, 12, size=32, seed=2)
    out = write_phantom(modality, 12, 32, "png", tmp_path / "png", seed=2)
    assert out == tmp_path / "png"
    files = _folder_files(out, ".png")
    assert len(files) == 12
    for f in files:
        i = int(f.stem.split("_")[-1])
        split, cls = f.parent.parent.name, f.parent.name
        assert split == ps.splits[i] and cls == ps.class_names[ps.labels[i]]
        arr = _read_png(f)
        want = ps.images[i][0] if ps.images.shape[1] == 1 else np.moveaxis(ps.images[i], 0, -1)
        assert np.array_equal(arr, want)  # lossless
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["modality"] == modality and meta["n"] == 12 and meta["format"] == "png"
    assert sum(sum(v.values()) for v in meta["counts"].values()) == 12
    assert meta["class_names"] == ps.class_names and meta["complete"] is True

    jpg = write_phantom(modality, 12, 32, "jpeg", tmp_path / "jpg", seed=2)
    files = _folder_files(jpg, ".jpg")
    assert len(files) == 12
    i = int(files[0].stem.split("_")[-1])
    arr = _read_png(files[0]).astype(float)
    want = ps.images[i][0] if ps.images.shape[1] == 1 else np.moveaxis(ps.images[i], 0, -1)
    assert np.abs(arr - want).mean() < 6  # lossy but close


@pytest.mark.parametrize("modality", MODALITIES)
def test_write_dicom(tmp_path, modality):
    import pydicom

    ps = make_phantom(modality, 6, size=32, seed=0)
    out = write_phantom(modality, 6, 32, "dicom", tmp_path, seed=0)
    files = _folder_files(out, ".dcm")
    assert len(files) == 6
    for f in files:
        i = int(f.stem.split("_")[-1])
        ds = pydicom.dcmread(f)  # a valid Part-10 file: preamble + file meta
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert str(ds.PatientName) == f"PHANTOM^{i}"
        assert ds.PatientID == f"PH{i:06d}"
        assert ds.InstitutionName == "Phantom General Hospital"
        assert ds.PatientBirthDate and ds.AccessionNumber
        pix = ds.pixel_array
        if ps.images.shape[1] == 3:
            assert ds.PhotometricInterpretation == "RGB"
            assert np.array_equal(pix, np.moveaxis(ps.images[i], 0, -1))
        else:
            assert ds.PhotometricInterpretation == "MONOCHROME2"
            scale = 16 if ds.BitsAllocated == 16 else 1
            assert np.array_equal(pix, ps.images[i][0].astype(np.uint16) * scale)
    expected = {
        "chest_xray": "DX",
        "brain_mri": "MR",
        "retina_fundus": "OP",
        "retina_oct": "OPT",
        "skin": "XC",
    }
    assert ds.Modality == expected[modality]


def test_dicom_rerun_is_identical(tmp_path):
    a = write_phantom("chest_xray", 3, 32, "dicom", tmp_path / "a", seed=1)
    b = write_phantom("chest_xray", 3, 32, "dicom", tmp_path / "b", seed=1)
    fa, fb = _folder_files(a, ".dcm"), _folder_files(b, ".dcm")
    assert [f.relative_to(a) for f in fa] == [f.relative_to(b) for f in fb]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(fa, fb, strict=True))


def test_write_nifti(tmp_path):
    import nibabel as nib

    ps = make_phantom("brain_mri", 8, size=32, seed=0)
    csv_path = write_phantom("brain_mri", 8, 32, "nifti", tmp_path, seed=0)
    assert csv_path == tmp_path / "labels.csv"
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == ["path", "label", "split", "patient"]
    assert len(rows) == 8
    for i, row in enumerate(rows):
        vol = np.asarray(nib.load(tmp_path / row["path"]).dataobj)
        assert vol.shape == (32, 32, 8)
        assert np.array_equal(vol[..., 4], ps.images[i][0])
        assert row["label"] == ps.class_names[ps.labels[i]] and row["split"] == ps.splits[i]
        assert row["patient"] == f"PH{i:06d}"
    with pytest.raises(ConfigError, match="RGB"):
        write_phantom("skin", 2, 32, "nifti", tmp_path / "rgb")


@pytest.mark.parametrize("modality", ["retina_oct", "skin"])
def test_write_npz_medmnist_layout(tmp_path, modality):
    ps = make_phantom(modality, 20, size=28, seed=0)
    path = write_phantom(modality, 20, 28, "npz", tmp_path, seed=0)
    assert path == tmp_path / f"{modality}_phantom.npz"
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(
            f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")
        )
        for split in ("train", "val", "test"):
            images, labels = ps.subset(split)
            got = z[f"{split}_images"]
            assert got.dtype == np.uint8
            want = images[:, 0] if images.shape[1] == 1 else np.moveaxis(images, 1, -1)
            assert np.array_equal(got, want)
            assert z[f"{split}_labels"].shape == (len(labels), 1)
            assert np.array_equal(z[f"{split}_labels"][:, 0], labels)


def test_write_refuses_foreign_or_different_folder(tmp_path):
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(ConfigError, match="non-empty"):
        write_phantom("skin", 2, 32, "png", tmp_path)
    out = tmp_path / "set"
    write_phantom("skin", 2, 32, "png", out)
    write_phantom("skin", 2, 32, "png", out)  # same parameters: rewrites in place
    with pytest.raises(ConfigError, match="different phantom set"):
        write_phantom("skin", 3, 32, "png", out)
    with pytest.raises(ConfigError, match="'fmt'"):
        write_phantom("skin", 2, 32, "tiff", tmp_path / "t")
    assert set(FORMATS) == {"png", "jpeg", "dicom", "nifti", "npz"}


def test_cli_phantom(tmp_path):
    import typer
    from typer.testing import CliRunner

    from medrobust.cli.data_phantom import phantom

    app = typer.Typer()
    app.command()(phantom)
    out = tmp_path / "cxr"
    result = CliRunner().invoke(
        app, ["--modality", "chest_xray", "-n", "10", "--size", "32", "--format", "npz", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 10 chest_xray phantoms" in result.output
    assert "train" in result.output and "pneumonia" in result.output
    assert (out / "chest_xray_phantom.npz").is_file()
    bad = CliRunner().invoke(app, ["--modality", "chest", "--samples", "2", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0


@pytest.mark.parametrize("modality", MODALITIES)
def test_phantoms_pass_through_their_preset(modality):
    import torch

    from medrobust.data.presets import get_preset

    ps = make_phantom(modality, 2, size=48, seed=0)
    preset = get_preset(modality)
    t = preset.transform(spatial_size=(32, 32))
    for img in ps.images:
        out = t({"image": img.astype(np.float32)})["image"]
        assert type(out) is torch.Tensor and out.shape == (preset.channels, 32, 32)
        assert out.min() >= 0.0 and out.max() <= 1.0 and out.std() > 0.05
    if modality == "retina_fundus":
        assert out[:, 0, 0].max() == 0.0  # outside the detected field of view
