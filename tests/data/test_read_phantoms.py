"""Phantoms written in every format read back through open_source: counts, labels, splits, pixels."""

from __future__ import annotations

import re

import numpy as np
import pytest

phantoms = pytest.importorskip("medrobust.data.phantoms")

from medrobust.data import open_source  # noqa: E402

N, SIZE = 16, 32


def _index(record) -> int:
    return int(re.search(r"_(\d{5})\.", record.path.name).group(1))


@pytest.mark.parametrize(
    ("modality", "fmt"),
    [
        ("chest_xray", "png"),
        ("chest_xray", "jpeg"),
        ("chest_xray", "dicom"),
        ("brain_mri", "nifti"),
        ("chest_xray", "npz"),
        ("skin", "png"),
        ("skin", "dicom"),
    ],
)
def test_phantom_round_trip(tmp_path, modality, fmt):
    ps = phantoms.make_phantom(modality, N, size=SIZE, seed=0)
    path = phantoms.write_phantom(modality, N, SIZE, fmt, tmp_path / fmt, seed=0)
    src = open_source(path)
    assert len(src) == N
    channels = ps.images.shape[1]
    if fmt == "npz":
        assert src.kind == "npz"
        for split in ("train", "val", "test"):
            images, labels = ps.subset(split)
            recs = src.records(split)
            assert [r.label for r in recs] == labels.tolist()
            for rec, expected in zip(recs, images, strict=True):
                np.testing.assert_array_equal(src.load(rec)["image"], expected.astype(np.float32))
        return
    for rec in src.records():
        i = _index(rec)
        assert src.class_names[rec.label] == ps.class_names[int(ps.labels[i])]
        assert rec.split == str(ps.splits[i])
        img = src.load(rec)["image"]
        expected = ps.images[i].astype(np.float64)
        if fmt == "nifti":
            assert img.shape == (1, SIZE, SIZE)
        else:
            assert img.shape == (channels, SIZE, SIZE)
        if fmt == "png":
            np.testing.assert_array_equal(img, expected.astype(np.float32))
        elif fmt == "jpeg":
            assert np.abs(img - expected).mean() < 8
        else:
            # DICOM/NIfTI may store rescaled values; they must be an increasing function of the phantom
            # (an inverted or transposed read would fail this).
            r = np.corrcoef(img.ravel(), expected.ravel())[0, 1]
            assert r > 0.98, r
