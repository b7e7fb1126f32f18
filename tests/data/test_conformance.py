"""Every registered source honours the dict contract (built from a small synthetic fixture each)."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.data import SAFE_META_KEYS, list_sources, open_source
from medrobust.data.readers.dicom import PHI_KEYWORDS


def _npz(tmp_path, **_):
    path = tmp_path / "m.npz"
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1)
    np.savez(path, **arrays)
    return path, {}


def _folder(tmp_path, write_image, **_):
    for split in ("train", "test"):
        for c in ("a", "b"):
            for i in range(2):
                write_image(tmp_path / "f" / split / c / f"{i}.png", np.full((12, 10), 50 * i, np.uint8))
    return tmp_path / "f", {}


def _csv(tmp_path, write_image, **_):
    rows = ["path,label"]
    for i in range(6):
        write_image(tmp_path / f"{i}.jpg", np.full((12, 10, 3), 20 * i, np.uint8))
        rows.append(f"{i}.jpg,{i % 3}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "m.csv", {}


def _dicom(tmp_path, dicom_copy, canaries, **_):
    for i in range(3):
        dicom_copy("CT_small.dcm", f"d/{i}.dcm", **canaries)
    return tmp_path / "d", {}


def _nifti(tmp_path, nifti_file, **_):
    for i in range(3):
        nifti_file(np.full((12, 10, 4), float(i), np.float32), f"n/v{i}.nii")
    return tmp_path / "n", {}


BUILDERS = {"npz": _npz, "folder": _folder, "csv": _csv, "dicom": _dicom, "nifti": _nifti}


def test_every_source_has_a_fixture():
    assert set(list_sources()) == set(BUILDERS)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_source_contract(kind, tmp_path, write_image, dicom_copy, nifti_file, canaries):
    path, options = BUILDERS[kind](
        tmp_path=tmp_path,
        write_image=write_image,
        dicom_copy=dicom_copy,
        nifti_file=nifti_file,
        canaries=canaries,
    )
    src = open_source(path, **options)
    assert src.kind == kind  # detected, not given
    assert src.splits() and set(src.splits()) <= {"train", "val", "test"}
    assert sum(len(src.records(s)) for s in src.splits()) == len(src)
    assert len({r.id for r in src.records()}) == len(src)
    for rec in src.records():
        sample = src.load(rec)
        assert set(sample) == {"image", "label", "meta"}
        img = sample["image"]
        assert isinstance(img, np.ndarray) and img.dtype == np.float32 and img.ndim == 3
        assert img.shape[0] in (1, 3) and np.isfinite(img).all()
        assert isinstance(sample["label"], int) and 0 <= sample["label"] < len(src.class_names)
        meta = sample["meta"]
        assert set(meta) <= SAFE_META_KEYS and not set(meta) & set(PHI_KEYWORDS)
        assert meta["id"] == rec.id and meta["split"] == rec.split and meta["source"] == kind
        assert meta["shape"] == list(img.shape)
        assert all(v not in str(meta) for v in canaries.values())
