"""NIfTI files nibabel ships, slices along an axis, volumes, labels from a CSV.

Images come out in canonical RAS order (``nibabel.as_closest_canonical``), whatever the file
stores: ``example4d.nii.gz`` and ``anatomical.nii`` are LAS, ``standard.nii.gz`` is RAS.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from medrobust.data import open_source


@pytest.mark.parametrize("name", ["example4d.nii.gz", "anatomical.nii", "standard.nii.gz"])
def test_shipped_nifti_middle_slice(name):
    path = os.path.join(data_path, name)
    img = nib.load(path)
    data = np.asarray(nib.as_closest_canonical(img).dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    src = open_source(path)
    sample = src.load(src.records()[0])
    k = data.shape[2] // 2
    np.testing.assert_array_equal(sample["image"][0], data[:, :, k])
    assert sample["meta"]["slice_index"] == k and sample["meta"]["axis"] == 2
    assert sample["meta"]["format"] == "nifti"
    assert sample["meta"]["orientation"] == "".join(nib.aff2axcodes(img.affine))


def test_axis_all_slices_and_volume():
    path = os.path.join(data_path, "anatomical.nii")
    data = np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj, dtype=np.float32)
    src = open_source(path, axis=0, slice="all")
    assert len(src) == data.shape[0]
    rec = next(r for r in src.records() if r.index == 5)
    np.testing.assert_array_equal(src.load(rec)["image"][0], data[5])
    vol = open_source(path, slice="volume")
    assert vol.load(vol.records()[0])["image"].shape == (1, *data.shape)
    fixed = open_source(path, slice=2)
    assert fixed.load(fixed.records()[0])["meta"]["slice_index"] == 2


def test_nifti_labels_from_csv(tmp_path, nifti_file):
    rows = ["path,label,split"]
    for i in range(4):
        nifti_file(np.full((6, 6, 5), float(i), np.float32), f"images/v{i}.nii.gz")
        rows.append(f"images/v{i}.nii.gz,{'tumour' if i % 2 else 'healthy'},{'train' if i < 2 else 'test'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    src = open_source(tmp_path / "images", kind="nifti", labels=tmp_path / "labels.csv")
    assert src.class_names == ["healthy", "tumour"] and src.splits() == ["train", "test"]
    rec = src.records("test")[1]
    sample = src.load(rec)
    assert sample["label"] == 1 and sample["image"].shape == (1, 6, 6) and sample["image"].max() == 3.0
    # Without labels: the files are read as one unlabelled class.
    unl = open_source(tmp_path / "images", kind="nifti")
    assert unl.class_names == ["unlabelled"] and len(unl) == 4
