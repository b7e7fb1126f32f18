"""Synthetic data fixtures for the data-layer tests (everything written into tmp_path)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

#: Canary values planted in DICOM identifying elements by the privacy tests.
CANARIES = {
    "PatientName": "Canaryname^Zqxwv",
    "PatientID": "CANARYID93817",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "ACCCANARY5521",
    "InstitutionName": "Canary Institute Qwzx",
    "ReferringPhysicianName": "Canaryref^Doctorqq",
    "StudyID": "STUDYCAN77",
    "OtherPatientIDs": "OTHERCANARY31",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.86753091",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.86753092",
}


def testdata(name: str) -> str:
    """Path of a DICOM file bundled with pydicom (checked locally first: never a download)."""
    import pydicom.data
    from pydicom.data import get_testdata_file

    local = Path(pydicom.data.__file__).parent / "test_files" / name
    assert local.is_file(), f"{name} is not shipped with pydicom"
    return str(get_testdata_file(name))


@pytest.fixture
def dicom_testdata():
    return testdata


@pytest.fixture
def canaries():
    return dict(CANARIES)


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def write_image():
    return _png


@pytest.fixture
def image_tree(tmp_path):
    """Factory: class-per-folder PNG tree, optional split folders; returns (root, images by relpath)."""

    def make(
        classes=("NORMAL", "PNEUMONIA"),
        splits=("train", "test"),
        n=3,
        size=(16, 20),
        rgb=False,
        ext=".png",
        seed=0,
        name="tree",
    ):
        rng = np.random.default_rng(seed)
        root = tmp_path / name
        written = {}
        for split in splits or (None,):
            for c in classes:
                for i in range(n):
                    shape = (*size, 3) if rgb else size
                    arr = rng.integers(0, 256, shape, dtype=np.uint8)
                    rel = Path(*(p for p in (split, c, f"img{i}{ext}") if p))
                    _png(root / rel, arr)
                    written[rel.as_posix()] = arr
        return root, written

    return make


@pytest.fixture
def medmnist_npz(tmp_path):
    """Factory: MedMNIST-layout npz; grey (N,H,W) or RGB (N,H,W,3)."""

    def make(size=28, rgb=False, n=(6, 2, 3), n_classes=3, seed=0, name="mnist.npz", label_shape="N1"):
        rng = np.random.default_rng(seed)
        arrays = {}
        for split, k in zip(("train", "val", "test"), n, strict=True):
            shape = (k, size, size, 3) if rgb else (k, size, size)
            arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
            y = (np.arange(k) % n_classes).astype(np.uint8)
            arrays[f"{split}_labels"] = y[:, None] if label_shape == "N1" else y
        path = tmp_path / name
        np.savez_compressed(path, **arrays)
        return path, arrays

    return make


@pytest.fixture
def dicom_copy(tmp_path):
    """Factory: copy a pydicom test file into tmp_path with changed elements."""

    def make(name, dest, **elements):
        import pydicom

        ds = pydicom.dcmread(testdata(name))
        for key, value in elements.items():
            setattr(ds, key, value)
        out = tmp_path / dest
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out)
        return out

    return make


@pytest.fixture
def nifti_file(tmp_path):
    """Factory: write a small NIfTI volume."""

    def make(array, name="vol.nii.gz"):
        import nibabel as nib

        out = tmp_path / name
        out.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4)), str(out))
        return out

    return make


@pytest.fixture
def copy_file(tmp_path):
    def make(src, dest):
        out = tmp_path / dest
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, out)
        return out

    return make
