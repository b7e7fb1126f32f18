"""Canonical orientation: NIfTI volumes come out RAS whatever the file stores; photos upright per EXIF."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image, ImageOps

from medrobust.data import open_source
from medrobust.data.readers import ImageFileLoader

# --- NIfTI ------------------------------------------------------------------------------------


def _volume() -> np.ndarray:
    """A (R, A, S) = (7, 9, 5) volume whose every voxel differs (any flip or transpose shows)."""
    return np.arange(7 * 9 * 5, dtype=np.float32).reshape(7, 9, 5)


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


@pytest.fixture
def same_volume(tmp_path):
    """One volume saved as RAS, as LPS (x and y reversed) and with permuted axes (A, S, L)."""
    vol = _volume()
    ras = np.diag([1.5, 2.0, 3.0, 1.0])
    lps = np.diag([-1.5, -2.0, 3.0, 1.0])
    asl = np.zeros((4, 4))  # file axes: 0 -> A, 1 -> S, 2 -> L (R reversed)
    asl[1, 0], asl[2, 1], asl[0, 2], asl[3, 3] = 2.0, 3.0, -1.5, 1.0
    return {
        "RAS": _save(tmp_path / "ras.nii.gz", vol, ras),
        "LPS": _save(tmp_path / "lps.nii.gz", vol[::-1, ::-1, :], lps),
        "ASL": _save(tmp_path / "asl.nii", np.transpose(vol[::-1], (1, 2, 0)), asl),
    }


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("choice", ["middle", 1, "volume"])
def test_ras_and_lps_give_identical_slices(same_volume, axis, choice):
    vol = _volume()
    images = {}
    for codes, path in same_volume.items():
        src = open_source(path, axis=axis, slice=choice)
        sample = src.load(src.records()[0])
        assert sample["meta"]["orientation"] == codes  # the file's own orientation is recorded
        images[codes] = sample["image"]
    if choice == "volume":
        expected = vol
    else:
        k = vol.shape[axis] // 2 if choice == "middle" else choice
        expected = np.take(vol, k, axis=axis)
    for codes, image in images.items():
        np.testing.assert_array_equal(image[0], expected, err_msg=codes)


def test_every_slice_and_voxel_size_in_canonical_order(same_volume):
    vol = _volume()
    for codes, path in same_volume.items():
        src = open_source(path, axis=0, slice="all")
        assert len(src) == vol.shape[0], codes  # counted along R, whichever file axis holds it
        rec = next(r for r in src.records() if r.index == 2)
        sample = src.load(rec)
        np.testing.assert_array_equal(sample["image"][0], vol[2], err_msg=codes)
        assert sample["meta"]["voxel_size"] == [1.5, 2.0, 3.0], codes


def test_matches_nibabel_closest_canonical_for_an_oblique_affine(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((6, 8, 4)).astype(np.float32)
    theta = np.deg2rad(20)  # a 20° tilt still maps onto the closest axes, without resampling
    affine = np.eye(4)
    affine[:3, :3] = np.array(
        [[0, 0, -1.0], [np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0]]
    ) @ np.diag([1.0, 1.2, 2.0])
    path = _save(tmp_path / "oblique.nii.gz", data, affine)
    canonical = np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj, dtype=np.float32)
    src = open_source(path, slice="volume")
    np.testing.assert_array_equal(src.load(src.records()[0])["image"][0], canonical)
    mid = open_source(path)
    k = canonical.shape[2] // 2
    np.testing.assert_array_equal(mid.load(mid.records()[0])["image"][0], canonical[:, :, k])


def test_file_without_orientation_is_read_as_stored(tmp_path):
    data = _volume()
    img = nib.Nifti1Image(data, None)  # no qform, no sform: nothing to reorient by
    assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 0
    nib.save(img, str(tmp_path / "plain.nii.gz"))
    src = open_source(tmp_path / "plain.nii.gz")
    sample = src.load(src.records()[0])
    np.testing.assert_array_equal(sample["image"][0], data[:, :, 2])
    assert sample["meta"]["orientation"] == "unknown"


def test_two_dimensional_nifti_is_reoriented(tmp_path):
    plane = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = _save(tmp_path / "plane.nii", plane[::-1, ::-1, None], np.diag([-1.0, -1.0, 1.0, 1.0]))
    sample = open_source(path).load(open_source(path).records()[0])
    np.testing.assert_array_equal(sample["image"][0], plane)


# --- EXIF -------------------------------------------------------------------------------------


def _upright() -> np.ndarray:
    """A landscape 40 x 60 RGB photo with a bright block in its top-left corner."""
    img = np.zeros((40, 60, 3), np.uint8)
    img[:10, :20] = (250, 200, 150)
    return img


def _jpeg_with_orientation(path, stored: np.ndarray, orientation: int):
    pil = Image.fromarray(stored)
    exif = pil.getexif()
    exif[0x0112] = orientation
    pil.save(path, format="JPEG", quality=100, exif=exif.tobytes())
    return path


def test_jpeg_with_exif_orientation_6_loads_upright(tmp_path):
    upright = _upright()
    # A phone held upright stores the sensor's landscape frame rotated and tags it 6
    # ("rotate 90° clockwise to view"): the stored pixels are 60 x 40.
    stored = np.rot90(upright, k=1)
    path = _jpeg_with_orientation(tmp_path / "phone.jpg", stored, 6)
    assert Image.open(path).size == (40, 60)  # (width, height) as stored: portrait
    image, meta = ImageFileLoader().load(path)
    assert image.shape == (3, 40, 60)  # height and width as seen
    assert meta["exif_orientation"] == 6
    as_pillow = np.asarray(ImageOps.exif_transpose(Image.open(path)), dtype=np.float32)
    np.testing.assert_array_equal(np.moveaxis(image, 0, -1), as_pillow)
    assert image[:, :10, :20].mean() > 150 and image[:, 30:, 40:].max() < 30  # block top-left


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 7, 8])
def test_every_exif_orientation_matches_pillow(tmp_path, orientation):
    path = _jpeg_with_orientation(tmp_path / f"o{orientation}.jpg", _upright(), orientation)
    image, meta = ImageFileLoader().load(path)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)), dtype=np.float32)
    np.testing.assert_array_equal(np.moveaxis(image, 0, -1), expected)
    assert meta["exif_orientation"] == orientation


def test_exif_orientation_reaches_source_meta(tmp_path):
    for cls in ("benign", "malignant"):
        for i in range(2):
            (tmp_path / cls).mkdir(exist_ok=True)
            _jpeg_with_orientation(tmp_path / cls / f"{i}.jpg", np.rot90(_upright(), k=1), 6)
    Image.fromarray(_upright()).save(tmp_path / "benign" / "plain.jpg", quality=100)
    src = open_source(tmp_path)
    for record in src.records():
        sample = src.load(record)
        assert sample["image"].shape == (3, 40, 60), record.id
        assert sample["meta"].get("exif_orientation") == (None if "plain" in record.id else 6)


def test_out_of_range_exif_orientation_is_ignored_and_logged(tmp_path, caplog):
    path = _jpeg_with_orientation(tmp_path / "odd.jpg", _upright(), 42)
    with caplog.at_level("WARNING", logger="medrobust"):
        image, meta = ImageFileLoader().load(path)
    assert image.shape == (3, 40, 60) and meta.get("exif_orientation") is None
    assert "odd.jpg" in caplog.text and "42" in caplog.text


def test_corrupt_exif_block_is_logged_not_warned(tmp_path, caplog):
    import warnings

    path = tmp_path / "corrupt.jpg"
    Image.fromarray(_upright()).save(path, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff\x12\x01")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "Corrupt EXIF data" must not escape
        with caplog.at_level("WARNING", logger="medrobust"):
            image, meta = ImageFileLoader().load(path)
    assert image.shape == (3, 40, 60) and meta.get("exif_orientation") is None
    assert "corrupt.jpg" in caplog.text and "EXIF" in caplog.text
