"""DICOM series with NIfTI or PNG masks: slices sorted by position, one labelled voxel stays on its
voxel through orientation and transforms, grids that disagree are refused, no patient data leaks."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medrobust.data.segmentation import open_segmentation_source, segmentation_transform
from medrobust.data.segmentation.phantoms.writers import write_nifti, write_png
from medrobust.errors import DataError

#: Fake identifying values planted in every header; none may reach a log, an error or meta.
CANARIES = {
    "PatientName": "Canaryname^Zqxwv",
    "PatientID": "CANARYID93817",
    "PatientBirthDate": "19010203",
    "AccessionNumber": "ACCCANARY5521",
    "InstitutionName": "Canary Institute Qwzx",
}
SHAPE = (6, 8, 10)  # RAS (X, Y, Z): asymmetric, so a wrong flip or transpose moves the voxel
SPOT = (1, 6, 7)


def write_series(
    folder, ras: np.ndarray, *, instance_desc: bool = False, series_uid: str = "1.2.3.4"
) -> None:
    """Axial series (LPS header geometry) of a RAS volume, 1 mm voxels centred on 0, files named out of order.

    Slice k of the stack lies at z = k - (Z-1)/2; its pixel (row i, column j) is RAS voxel
    (X-1-j, Y-1-i, k), because DICOM rows run posterior and columns run to the patient's left.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    x, y, z = ras.shape
    for k in range(z):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "MR"
        for key, value in CANARIES.items():
            setattr(ds, key, value)
        ds.InstanceNumber = z - k if instance_desc else k + 1
        ds.ImagePositionPatient = [-(x - 1) / 2, -(y - 1) / 2, k - (z - 1) / 2]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [1, 1]
        ds.SliceThickness = 1
        ds.Rows, ds.Columns = y, x
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(ras[::-1, ::-1, k].T.astype("<u2")).tobytes()
        name = f"{(7 * k + 3) % z:03d}.dcm"  # file names in neither position nor instance order
        ds.save_as(str(folder / name), enforce_file_format=True)


def pixel_layout(ras: np.ndarray, k: int) -> np.ndarray:
    """Slice k of a RAS volume as the DICOM pixel array (rows, columns) of :func:`write_series`."""
    return np.ascontiguousarray(ras[::-1, ::-1, k].T)


@pytest.fixture
def volumes():
    image = np.full(SHAPE, 10, dtype=np.uint8)
    label = np.zeros(SHAPE, dtype=np.uint8)
    image[SPOT] = 250
    label[SPOT] = 1
    return image, label


def _manifest(tmp_path, rows: str) -> object:
    (tmp_path / "m.csv").write_text("image,label\n" + rows, encoding="utf-8")
    return tmp_path / "m.csv"


def test_a_labelled_voxel_of_a_nifti_mask_stays_on_its_voxel(tmp_path, volumes):
    image, label = volumes
    write_series(tmp_path / "case1", image)
    write_nifti(tmp_path / "case1.nii.gz", label, "LPS")  # stored LPS, same grid
    src = open_segmentation_source(
        _manifest(tmp_path, "case1,case1.nii.gz\n"), kind="dicom-series", label_names=["background", "spot"]
    )
    assert src.kind == "dicom-series"
    item = src.load(src.records()[0])
    assert item["image"].shape == (1, *SHAPE) and item["meta"]["orientation"] == "SPL"
    assert np.argwhere(item["label"][0]).tolist() == [list(SPOT)]
    assert np.unravel_index(int(item["image"][0].argmax()), SHAPE) == SPOT
    np.testing.assert_array_equal(item["image"][0], image.astype(np.float32))  # the whole volume, in RAS
    out = segmentation_transform("brain_mri", spatial_size=SHAPE)(item)
    assert np.argwhere(out["label"][0].numpy()).tolist() == [list(SPOT)]
    assert np.unravel_index(int(out["image"][0].argmax()), SHAPE) == SPOT
    axial = open_segmentation_source(
        src.csv_path, kind="dicom", label_names=["background", "spot"], slice=SPOT[2], axis=2
    )
    one = axial.load(axial.records()[0])
    assert one["image"].shape == (1, 6, 8) and np.argwhere(one["label"][0]).tolist() == [list(SPOT[:2])]


def test_png_masks_pair_with_the_slices_in_instance_order(tmp_path, volumes):
    image, label = volumes
    write_series(tmp_path / "s", image, instance_desc=True)  # InstanceNumber runs head to feet
    for k in range(SHAPE[2]):
        instance = SHAPE[2] - k  # the slice at position k has this InstanceNumber
        write_png(tmp_path / "masks" / f"mask_{instance:03d}.png", pixel_layout(label, k) * 255)
    src = open_segmentation_source(_manifest(tmp_path, "s,masks\n"), kind="dicom-series")
    item = src.load(src.records()[0])
    assert np.argwhere(item["label"][0]).tolist() == [list(SPOT)]  # 0/255 read as 0/1, on the bright voxel
    assert np.unravel_index(int(item["image"][0].argmax()), SHAPE) == SPOT
    # A single-slice series is a 2D image in its pixel layout, labelled by one mask image.
    write_series(tmp_path / "one", image[:, :, SPOT[2] : SPOT[2] + 1])
    write_png(tmp_path / "one.png", pixel_layout(label, SPOT[2]))
    src = open_segmentation_source(_manifest(tmp_path, "one,one.png\n"), kind="dicom-series")
    item = src.load(src.records()[0])
    pixel = [SHAPE[1] - 1 - SPOT[1], SHAPE[0] - 1 - SPOT[0]]
    assert item["image"].shape == (1, 8, 6) and np.argwhere(item["label"][0]).tolist() == [pixel]
    assert np.unravel_index(int(item["image"][0].argmax()), (8, 6)) == tuple(pixel)


def test_a_mask_off_the_series_grid_or_short_of_slices_is_refused(tmp_path, volumes):
    image, label = volumes
    write_series(tmp_path / "s", image)
    write_nifti(tmp_path / "shifted.nii.gz", label, "RAS", voxel_mm=2.0)  # same shape, other grid
    (tmp_path / "few").mkdir()
    write_png(tmp_path / "few" / "a.png", pixel_layout(label, 0))
    src = open_segmentation_source(
        _manifest(tmp_path, "s,shifted.nii.gz\n"), kind="dicom-series", label_names=["background", "spot"]
    )
    with pytest.raises(
        DataError, match=r"shifted\.nii\.gz: lies on another voxel grid than its DICOM series s "
    ):
        src.load(src.records()[0])
    src = open_segmentation_source(_manifest(tmp_path, "s,few\n"), kind="dicom-series")
    with pytest.raises(DataError, match=r"few: holds 1 mask images but the series s has 10 slices"):
        src.load(src.records()[0])
    with pytest.raises(DataError, match=r"m\.csv:2: series folder 'few' holds no DICOM files"):
        open_segmentation_source(_manifest(tmp_path, "few,s\n"), kind="dicom-series")
    write_series(tmp_path / "s2", image)
    with pytest.raises(DataError, match=r"m\.csv:3: label 'few' already labels another series"):
        open_segmentation_source(_manifest(tmp_path, "s,few\ns2,few\n"), kind="dicom-series")


def test_patient_data_reaches_no_log_error_or_meta(tmp_path, volumes, caplog):
    image, label = volumes
    write_series(tmp_path / "a", image)
    write_series(tmp_path / "b", image)
    write_series(tmp_path / "b" / "other", image[:, :, :2], series_uid="1.2.3.5")  # a second series inside
    write_nifti(tmp_path / "a.nii.gz", label, "LPS")
    write_nifti(tmp_path / "b.nii.gz", label, "LPS")
    caplog.set_level(logging.DEBUG)
    src = open_segmentation_source(
        _manifest(tmp_path, "a,a.nii.gz\nb,b.nii.gz\n"),
        kind="dicom-series",
        label_names=["background", "spot"],
    )
    records = {r.id: r for r in src.records()}
    meta = src.load(records["a"])["meta"]
    with pytest.raises(DataError, match=r"b: holds files of several DICOM series") as err:
        src.load(records["b"])
    text = " ".join([str(meta), str(err.value), caplog.text, repr(src.describe())])
    for value in CANARIES.values():
        assert value not in text and value.replace("^", " ") not in text
    assert "1.2.3.4" not in text and "1.2.3.5" not in text  # series identifiers are compared, never copied
