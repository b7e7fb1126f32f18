"""The OCT layer-segmentation phantom: multi-class masks on the image's bands, seeded, in every layout."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medrobust.data.segmentation import open_segmentation_source
from medrobust.data.segmentation.phantoms import (
    SEGMENTATION_FORMATS,
    get_segmentation_phantom,
    list_segmentation_phantoms,
    make_segmentation_phantom,
    write_segmentation_phantom,
)
from medrobust.data.segmentation.specs import segmentation_data_path

LABELS = ["background", "inner_retina", "outer_retina", "rpe", "choroid", "fluid"]


def test_masks_are_multi_class_seeded_and_hold_fluid_in_some_scans():
    assert "retina_oct" in list_segmentation_phantoms()
    ps = make_segmentation_phantom("oct", n=10, size=64, seed=5)  # the alias names the same phantom
    assert ps.modality == "retina_oct" and ps.label_names == LABELS and ps.lesion_labels == ["fluid"]
    assert ps.images.shape == (10, 1, 64, 64) and ps.masks.dtype == np.uint8
    for mask in ps.masks:
        assert {0, 1, 2, 3, 4} <= set(np.unique(mask).tolist())  # every band in every scan
    with_fluid = sum(bool((m == 5).any()) for m in ps.masks)
    assert 2 <= with_fluid <= 9
    image, mask, split = get_segmentation_phantom("retina_oct", size=64, seed=5).sample(7)
    np.testing.assert_array_equal(image, ps.images[7])
    np.testing.assert_array_equal(mask, ps.masks[7])
    assert split == ps.splits[7]
    other = make_segmentation_phantom("retina_oct", n=1, size=64, seed=6)
    assert not np.array_equal(other.images[0], ps.images[0])
    assert not np.array_equal(other.masks[0], ps.masks[0])


def test_labels_sit_on_the_bands_of_the_image():
    ps = make_segmentation_phantom("retina_oct", n=8, size=128, seed=0)
    hits, columns = 0, 0
    for image, mask in zip(ps.images[:, 0].astype(np.float32), ps.masks, strict=True):
        mean = {k: float(image[mask == k].mean()) for k in range(5)}
        # RPE brightest, inner retina above the outer nuclear layer, vitreous/sclera darkest.
        assert mean[3] > mean[1] > mean[2] > mean[0]
        assert mean[4] > mean[0]
        if (mask == 5).any():
            assert float(image[mask == 5].mean()) < mean[2]  # cysts are dark
        # The brightest row of each (lightly smoothed) column is on the RPE label, give or take a pixel.
        smooth = ndimage.uniform_filter(image, size=(1, 5))
        rows = smooth.argmax(axis=0)
        rpe = ndimage.binary_dilation(mask == 3, structure=np.ones((3, 1), bool))
        hits += int(rpe[rows, np.arange(image.shape[1])].sum())
        columns += image.shape[1]
    assert hits / columns > 0.8
    # The layers bend: the RPE's row changes across the scan (tilt, curvature, pit).
    rpe_rows = [np.flatnonzero(ps.masks[0][:, c] == 3).mean() for c in (10, 64, 118)]
    assert max(rpe_rows) - min(rpe_rows) >= 1.0


@pytest.mark.parametrize("fmt", SEGMENTATION_FORMATS)
def test_every_layout_loads_back_exactly(tmp_path, fmt):
    out = write_segmentation_phantom("retina_oct", 4, 32, fmt, tmp_path / fmt, seed=2)
    src = open_segmentation_source(out / "manifest.csv" if fmt == "csv" else out)
    assert src.label_names == LABELS and src.lesion_labels == ["fluid"]
    ps = make_segmentation_phantom("retina_oct", 4, 32, seed=2)
    for rec in src.records():
        i = int(rec.id.split("_")[-1].split(".")[0])
        item = src.load(rec)
        np.testing.assert_array_equal(item["image"], ps.images[i].astype(np.float32))
        np.testing.assert_array_equal(item["label"][0], ps.masks[i])


def test_the_phantom_spec_opens_for_segmentation(tmp_path):
    path = segmentation_data_path("phantom:retina_oct@32?n=6&seed=1", cache_dir=tmp_path)
    assert path.name.startswith("retina_oct-n6-s32-seed1-g")
    src = open_segmentation_source(path)
    assert src.kind == "decathlon" and len(src) == 6 and src.label_names == LABELS
    item = src.load(src.records()[0])
    assert item["label"].shape == (1, 32, 32) and int(item["label"].max()) >= 4
