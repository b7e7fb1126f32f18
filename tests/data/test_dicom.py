"""DICOM pixel handling on files pydicom ships: HU, compression, colour, frames, MONOCHROME1."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medrobust.data import open_source


def _load(path, **options):
    src = open_source(path, **options)
    return src.load(src.records()[0])


def test_ct_rescale_gives_hounsfield_units(dicom_testdata):
    path = dicom_testdata("CT_small.dcm")
    ds = pydicom.dcmread(path)
    sample = _load(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert sample["image"].shape == (1, 128, 128)
    assert sample["image"].dtype == np.float32
    np.testing.assert_array_equal(sample["image"][0], expected.astype(np.float32))
    assert float(ds.RescaleIntercept) == -1024.0
    assert sample["image"].min() < 0  # air/fat below 0 HU: the rescale was applied
    meta = sample["meta"]
    assert meta["modality"] == "CT" and meta["rescale_applied"] is True
    assert meta["rescale_intercept"] == -1024.0 and meta["window_applied"] is False


def test_mr_raw_values_and_window_option(dicom_testdata):
    path = dicom_testdata("MR_small.dcm")
    ds = pydicom.dcmread(path)
    raw = _load(path)
    np.testing.assert_array_equal(raw["image"][0], ds.pixel_array.astype(np.float32))
    assert raw["meta"]["modality"] == "MR"
    windowed = _load(path, window="auto")
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    assert windowed["meta"]["window_applied"] is True
    # Pixels above the window ceiling are clipped to one output value; inside it the order is kept.
    img = windowed["image"][0]
    above = ds.pixel_array > center + width / 2
    assert above.any() and np.unique(img[above]).size == 1
    assert img[above][0] == img.max() and not np.array_equal(img, raw["image"][0])
    inside = (ds.pixel_array > center - width / 2 + 1) & (ds.pixel_array < center + width / 2 - 1)
    order = np.argsort(ds.pixel_array[inside], kind="stable")
    assert np.all(np.diff(img[inside][order]) >= 0)


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
)
def test_lossless_compressed_equal_uncompressed(dicom_testdata, name):
    reference = _load(dicom_testdata("MR_small.dcm"))["image"]
    sample = _load(dicom_testdata(name))
    np.testing.assert_array_equal(sample["image"], reference)
    assert sample["meta"]["transfer_syntax"] != "Explicit VR Little Endian"


def test_jpeg_baseline_ybr_is_converted_to_rgb(dicom_testdata):
    ref = _load(dicom_testdata("SC_rgb_rle.dcm"))["image"]  # RGB, lossless
    jpeg = _load(dicom_testdata("SC_rgb_jpeg_dcmtk.dcm"))
    assert jpeg["meta"]["photometric_interpretation"] == "YBR_FULL"
    assert jpeg["image"].shape == ref.shape == (3, 100, 100)
    # Lossy: close to the RGB reference; an unconverted YCbCr image would be far off.
    assert np.abs(jpeg["image"] - ref).mean() < 3.0
    lossless = _load(dicom_testdata("SC_rgb_jpeg_gdcm.dcm"))  # JPEG lossless process 14
    np.testing.assert_array_equal(lossless["image"], ref)


def test_jpeg2000_and_jpeg_extended_decode(dicom_testdata):
    for name in ("JPEG2000.dcm", "JPGExtended.dcm"):
        sample = _load(dicom_testdata(name))
        assert sample["image"].shape == (1, 1024, 256)
        assert np.isfinite(sample["image"]).all() and sample["image"].max() > sample["image"].min()
    # A JPEG 2000 CT keeps its rescale: HU below zero.
    ct = _load(dicom_testdata("693_J2KI.dcm"))
    assert ct["meta"]["rescale_applied"] and ct["image"].min() < 0


def test_palette_colour_becomes_rgb(dicom_testdata):
    sample = _load(dicom_testdata("examples_palette.dcm"))
    assert sample["image"].shape == (3, 350, 800)
    assert sample["meta"]["photometric_interpretation"] == "PALETTE COLOR"


def test_multiframe_frames_as_samples_volume_or_one(dicom_testdata):
    path = dicom_testdata("rtdose.dcm")  # 15 frames of 10x10
    stack = pydicom.dcmread(path).pixel_array.astype(np.float32)
    volume = _load(path, frame="volume")
    assert volume["image"].shape == (1, 15, 10, 10)
    np.testing.assert_array_equal(volume["image"][0], stack)
    middle = _load(path)
    np.testing.assert_array_equal(middle["image"][0], stack[7])
    assert middle["meta"]["frame_index"] == 7 and middle["meta"]["n_frames"] == 15
    src = open_source(path, frame="all")
    assert len(src) == 15
    rec = next(r for r in src.records() if r.index == 4)
    np.testing.assert_array_equal(src.load(rec)["image"][0], stack[4])
    third = _load(path, frame=3)
    np.testing.assert_array_equal(third["image"][0], stack[3])


def test_multiframe_rgb(dicom_testdata):
    src = open_source(dicom_testdata("SC_rgb_rle_2frame.dcm"), frame="all")
    frames = [src.load(r)["image"] for r in sorted(src.records(), key=lambda r: r.index)]
    assert [f.shape for f in frames] == [(3, 100, 100)] * 2
    assert not np.array_equal(frames[0], frames[1])


def test_monochrome1_is_inverted(dicom_copy, dicom_testdata):
    original = pydicom.dcmread(dicom_testdata("MR_small.dcm"))
    path = dicom_copy("MR_small.dcm", "mono1.dcm", PhotometricInterpretation="MONOCHROME1")
    sample = _load(path)
    x = original.pixel_array.astype(np.float64)
    # Signed 16-bit stored range [-32768, 32767]: inverted value = lo + hi - x.
    assert original.PixelRepresentation == 1 and original.BitsStored == 16
    np.testing.assert_array_equal(sample["image"][0], (-32768 + 32767 - x).astype(np.float32))
    assert sample["meta"]["inverted"] is True
    # Ordering is reversed: the brightest stored pixel becomes the darkest.
    flat = sample["image"][0].ravel()
    assert np.argmax(flat) == np.argmin(x.ravel()) and np.argmin(flat) == np.argmax(x.ravel())
    assert np.corrcoef(flat, x.ravel())[0, 1] == pytest.approx(-1.0)


def test_monochrome1_with_rescale_and_unsigned(dicom_copy, dicom_testdata):
    # A 12-bit unsigned CR-like file: inverted = 4095 - x after the identity rescale.
    ds = pydicom.dcmread(dicom_testdata("MR_small.dcm"))
    arr = np.clip(ds.pixel_array, 0, 4095).astype(np.uint16)
    path = dicom_copy(
        "MR_small.dcm",
        "cr.dcm",
        PhotometricInterpretation="MONOCHROME1",
        PixelRepresentation=0,
        BitsStored=12,
        HighBit=11,
        PixelData=arr.tobytes(),
        RescaleSlope=1,
        RescaleIntercept=0,
    )
    sample = _load(path)
    np.testing.assert_array_equal(sample["image"][0], (4095 - arr.astype(np.float64)).astype(np.float32))


def test_dicom_series_as_volume(dicom_copy, dicom_testdata, tmp_path):
    # Three slices written out of order, each offset by 100 * z; the volume is sorted along the normal.
    base = pydicom.dcmread(dicom_testdata("CT_small.dcm")).pixel_array
    for i, z in enumerate([2, 0, 1]):
        dicom_copy(
            "CT_small.dcm",
            f"series/s{i}.dcm",
            ImagePositionPatient=[0.0, 0.0, float(z)],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            InstanceNumber=i + 1,
            PixelData=(base + 100 * z).astype(base.dtype).tobytes(),
        )
    src = open_source(tmp_path / "series", kind="dicom", series="volume")
    assert len(src) == 1
    vol = src.load(src.records()[0])["image"]
    assert vol.shape == (1, 3, 128, 128)
    offsets = [float((vol[0, k] - vol[0, 0]).mean()) for k in range(3)]
    assert offsets == pytest.approx([0.0, 100.0, 200.0])
    assert len(open_source(tmp_path / "series", kind="dicom")) == 3  # default: one sample per file
