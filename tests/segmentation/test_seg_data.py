"""Segmentation data: phantoms with masks, the three layouts, paired transforms, bad pairs."""

from __future__ import annotations

import numpy as np
import pytest

from medrobust.data.segmentation import SegmentationDataset, open_segmentation_source, segmentation_transform
from medrobust.data.segmentation.phantoms import (
    get_segmentation_phantom,
    list_segmentation_phantoms,
    make_segmentation_phantom,
    write_segmentation_phantom,
)
from medrobust.data.segmentation.phantoms.writers import write_nifti, write_png
from medrobust.errors import ConfigError, DataError


@pytest.mark.parametrize(
    ("modality", "size"), [("chest_xray", 48), ("skin", 48), ("retina_fundus", 48), ("brain_mri", 20)]
)
def test_phantoms_are_seeded_and_hold_their_lesions(modality, size):
    gen = get_segmentation_phantom(modality, size=size, seed=3)
    ps = make_segmentation_phantom(modality, n=6, size=size, seed=3)
    assert ps.images.shape == (6, gen.channels, *gen.shape) and ps.masks.shape == (6, *gen.shape)
    image, mask, _ = gen.sample(4)  # any sample on its own, whatever n
    np.testing.assert_array_equal(image, ps.images[4])
    np.testing.assert_array_equal(mask, ps.masks[4])
    assert ps.masks.max() == len(ps.label_names) - 1  # the last label occurs
    lesion = ps.label_names.index(ps.lesion_labels[0])
    assert sum(bool((m == lesion).any()) for m in ps.masks) >= 4
    assert not np.array_equal(ps.images[0], make_segmentation_phantom(modality, 1, size, seed=4).images[0])


def test_at_least_the_four_asked_for_phantoms_exist():
    assert {"chest_xray", "skin", "retina_fundus", "brain_mri"} <= set(list_segmentation_phantoms())


@pytest.mark.parametrize(
    ("modality", "size", "fmt"),
    [
        ("chest_xray", 40, "png"),
        ("skin", 40, "csv"),
        ("chest_xray", 40, "decathlon"),
        ("brain_mri", 16, "decathlon"),
        ("brain_mri", 16, "csv"),
    ],
)
def test_written_pairs_load_back_exactly(tmp_path, modality, size, fmt):
    out = write_segmentation_phantom(modality, 5, size, fmt, tmp_path / "d", seed=1, orientation="LPS")
    src = open_segmentation_source(out / "manifest.csv" if fmt == "csv" else out)
    assert src.kind == {"png": "mask-folder", "csv": "csv", "decathlon": "decathlon"}[fmt]
    ps = make_segmentation_phantom(modality, 5, size, seed=1)
    assert src.label_names == ps.label_names and src.lesion_labels == ps.lesion_labels
    for rec in src.records():
        i = int(rec.id.split("_")[-1].split(".")[0])
        item = src.load(rec)
        np.testing.assert_array_equal(item["image"], ps.images[i].astype(np.float32))
        np.testing.assert_array_equal(item["label"][0], ps.masks[i])
        assert rec.split == gen_split(modality, size, i)


def gen_split(modality, size, i):
    return get_segmentation_phantom(modality, size=size, seed=1).sample(i)[2]


def test_a_one_voxel_label_stays_on_its_voxel_through_orientation_and_transforms(tmp_path):
    # An asymmetric LPS-stored volume: a bright voxel and a one-voxel label planted at the same RAS place.
    image = np.full((6, 8, 10), 10, dtype=np.uint8)
    label = np.zeros((6, 8, 10), dtype=np.uint8)
    image[1, 6, 7] = 250
    label[1, 6, 7] = 1
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    write_nifti(tmp_path / "imagesTr" / "case_0000.nii.gz", image, "LPS")  # nnU-Net channel suffix
    write_nifti(tmp_path / "labelsTr" / "case.nii.gz", label, "LPS")
    src = open_segmentation_source(tmp_path, label_names=["background", "spot"])
    item = src.load(src.records()[0])
    assert item["meta"]["orientation"] == "LPS"
    assert np.argwhere(item["label"][0]).tolist() == [[1, 6, 7]]
    out = segmentation_transform("brain_mri", spatial_size=(6, 8, 10))(item)
    assert np.argwhere(out["label"][0].numpy()).tolist() == [[1, 6, 7]]
    assert np.unravel_index(int(out["image"][0].argmax()), (6, 8, 10)) == (1, 6, 7)
    # Upsampled x2: nearest keeps the label's values and puts it where the bright voxel went.
    big = segmentation_transform("brain_mri", spatial_size=(12, 16, 20))(src.load(src.records()[0]))
    spot = np.argwhere(big["label"][0].numpy())
    assert set(np.unique(big["label"].numpy())) == {0, 1} and len(spot) == 8
    assert (spot // 2 == [1, 6, 7]).all()


def test_augmentations_move_image_and_mask_together(tmp_path):
    mask = np.zeros((48, 48), dtype=np.uint8)
    mask[10:30, 14:40] = 1
    image = np.repeat((mask * 255)[None], 3, axis=0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    write_png(tmp_path / "images" / "a.png", image)
    write_png(tmp_path / "masks" / "a_segmentation.png", mask * 255)  # 0/255 binary export
    src = open_segmentation_source(tmp_path)
    ds = SegmentationDataset(src, None, preset="skin", spatial_size=(48, 48), augment=True, seed=0)
    moved = 0
    for seed in range(6):
        ds.transform.set_random_state(seed=seed)
        item = ds[0]
        bright = item["image"][0].numpy() > 0.5
        lab = item["label"][0].numpy() == 1
        assert set(np.unique(item["label"].numpy())) <= {0, 1}
        assert (bright == lab).mean() > 0.97
        moved += int(not np.array_equal(lab, mask == 1))
    assert moved >= 2  # the augmentation did something


def test_bad_pairs_are_refused_naming_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    write_png(tmp_path / "images" / "a.png", np.zeros((1, 16, 16), np.uint8))
    write_png(tmp_path / "images" / "b.png", np.zeros((1, 16, 16), np.uint8))
    write_png(tmp_path / "masks" / "a.png", np.zeros((16, 12), np.uint8))
    with pytest.raises(DataError, match=r"b\.png.*has no mask"):
        open_segmentation_source(tmp_path)
    write_png(tmp_path / "masks" / "b.png", np.full((16, 16), 3, np.uint8))
    src = open_segmentation_source(tmp_path, label_names=["background", "lesion"])
    recs = {r.id: r for r in src.records()}
    with pytest.raises(
        DataError, match=r"masks/a\.png: mask shape \(16, 12\) differs from its image's shape \(16, 16\)"
    ):
        src.load(recs["a"])
    with pytest.raises(
        DataError, match=r"masks/b\.png: .*label value\(s\) \[3\] outside the 2 declared labels"
    ):
        src.load(recs["b"])
    with pytest.raises(ConfigError, match=r"no option 'label_name'\. Did you mean 'label_names'\?"):
        open_segmentation_source(tmp_path, label_name=["a", "b"])


def test_csv_manifest_errors_name_the_line(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((1, 16, 16), np.uint8))
    (tmp_path / "m.csv").write_text("image,label\na.png,missing.png\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"m\.csv:2: mask file 'missing\.png' does not exist"):
        open_segmentation_source(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("img,label\na.png,a.png\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"has no column 'image'"):
        open_segmentation_source(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("image;label\na.png;../x.png\n", encoding="utf-8")
    with pytest.raises(DataError, match="outside the manifest's folder"):
        open_segmentation_source(tmp_path / "m.csv")
    (tmp_path / "series").mkdir()
    (tmp_path / "m.csv").write_text("image,label\nseries,a.png\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"m\.csv:2: image 'series' is a folder; .*kind='dicom-series'"):
        open_segmentation_source(tmp_path / "m.csv")


def test_rgb_phantom_as_nifti_is_refused():
    with pytest.raises(ConfigError, match=r"'fmt' parameter .*'skin' phantoms are RGB"):
        write_segmentation_phantom("skin", 2, 32, "decathlon", "/nonexistent/never-written")


def test_fundus_field_of_view_crop_crops_the_mask_with_the_image():
    """The fundus preset crops the image to its field of view; the mask must be cropped the same way."""
    size = 64
    yy, xx = np.mgrid[0:size, 0:size]
    disc = ((yy - 34.0) ** 2 + (xx - 30.0) ** 2 <= 24.0**2).astype(np.uint8)  # off-centre FOV, dark border
    image = np.stack([disc * 120, disc * 60, disc * 30]).astype(np.uint8)
    r, c = 40, 22
    image[:, r, c] = 255  # a marker pixel inside the field of view ...
    mask = np.zeros((1, size, size), np.int64)
    mask[0, r, c] = 1  # ... labelled in the mask
    out = segmentation_transform("retina_fundus")({"image": image, "label": mask})
    img, lab = out["image"], out["label"]
    assert tuple(img.shape[1:]) == tuple(lab.shape[1:]) and img.shape[-1] < size  # cropped, both
    marker = np.unravel_index(int(img.sum(0).argmax()), tuple(img.shape[1:]))
    (labelled,) = np.argwhere(lab[0].numpy() == 1)
    assert tuple(int(v) for v in labelled) == tuple(int(v) for v in marker)


def test_volumes_flip_left_right_on_their_ras_axis():
    """A 3D brain volume (RAS order) flips on axis 0 (left-right), never inferior-superior."""
    from monai.transforms import RandFlipd

    from medrobust.data.presets import get_preset
    from medrobust.data.segmentation.transforms import augmentations

    flips = [t for t in augmentations(get_preset("brain_mri"), 3) if isinstance(t, RandFlipd)]
    assert [t.flipper.spatial_axis for t in flips] == [0]
