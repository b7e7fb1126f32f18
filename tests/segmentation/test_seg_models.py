"""Segmentation networks: every registered family, card, checkpoint, training on the one loop."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from medrobust.errors import CheckpointError, ConfigError
from medrobust.models.card import ModelCard
from medrobust.models.segmentation import (
    SegmentationCard,
    build_segmenter,
    get_segmenter_arch,
    list_segmenters,
    load_segmenter,
)


def test_the_asked_for_families_are_registered():
    assert {"unet", "segresnet", "unetr", "swin_unetr", "tiny"} <= set(list_segmenters())


@pytest.mark.parametrize("arch", list_segmenters())
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_segmenter_builds_for_2d_and_3d_and_1_and_3_channels(arch, dims, channels):
    family = get_segmenter_arch(arch)
    size = (max(32, family.size_multiple, family.min_size),) * dims
    card = SegmentationCard(
        in_channels=channels, class_names=["bg", "organ", "lesion"], spatial_dims=dims, spatial_size=size
    )
    if family.missing_packages():  # MONAI's transformer blocks need einops
        with pytest.raises(ConfigError, match=r"needs the package\(s\) einops .*pip install einops"):
            build_segmenter(arch, card, **family.test_kwargs)
        assert importlib.util.find_spec("einops") is None
        return
    model = build_segmenter(arch, card, **family.test_kwargs).eval()
    assert model.backbone is not None and model.card.in_channels == channels
    if dims == 3 and family.min_size >= 64 and channels == 3:
        return  # a 64³ SwinUNETR forward takes ~5 s on one thread: the 1-channel case runs it
    with torch.no_grad():
        out = model(torch.rand(1, channels, *size))
    assert out.shape == (1, 3, *size) and torch.isfinite(out).all()


def test_sizes_the_network_cannot_take_and_unknown_kwargs_are_refused():
    card = SegmentationCard(in_channels=1, class_names=["bg", "x"], spatial_size=(36, 36))
    with pytest.raises(
        ConfigError, match=r"'spatial_size' parameter of segmenter 'unet' must be multiples of 8"
    ):
        build_segmenter("unet", card)
    with pytest.raises(ConfigError, match=r"has no parameter 'widht'\. Did you mean 'width'\?"):
        build_segmenter("tiny", card, widht=4)
    with pytest.raises(ConfigError, match=r"Unknown segmenter 'unett'\. Did you mean 'unet'\?"):
        build_segmenter("unett", card)


def test_card_checks_lesions_and_window():
    with pytest.raises(ValueError, match=r"lesion_classes .*'tumor'.* not among class_names"):
        SegmentationCard(in_channels=1, class_names=["bg", "tumour"], lesion_classes=["tumor"])
    with pytest.raises(ValueError, match="must not hold the background"):
        SegmentationCard(in_channels=1, class_names=["bg", "tumour"], lesion_classes=["bg"])
    with pytest.raises(ValueError, match="roi_size must be 3 positive sizes"):
        SegmentationCard(in_channels=1, class_names=["bg", "t"], spatial_dims=3, roi_size=(16, 16))
    card = SegmentationCard(in_channels=1, class_names=["bg", "t"], lesion_classes=["t"])
    assert card.task == "segmentation" and card.lesion_indices == [1]


def test_a_window_smaller_than_the_input_runs_through_the_sliding_window():
    torch.manual_seed(0)
    card = SegmentationCard(in_channels=1, class_names=["bg", "t"], spatial_dims=3, roi_size=(8, 8, 8))
    model = build_segmenter("tiny", card, width=2).eval()
    x = torch.rand(1, 1, 12, 16, 8)
    with torch.no_grad():
        blended = model(x)
        inside = model(x[:, :, :8, :8, :8])  # exactly one window
        whole = model.backbone(model.normalize(x))
    assert blended.shape == (1, 2, 12, 16, 8)
    torch.testing.assert_close(inside, model.backbone(model.normalize(x[:, :, :8, :8, :8])))
    assert (blended - whole).abs().max() < 1.0  # blended windows, not a different function


def test_training_beats_all_background_and_the_checkpoint_round_trips(skin_run):
    summary = json.loads((skin_run / "summary.json").read_text())
    assert summary["best_val"]["dice"]["lesion"] > 0.6  # all-background scores 0 on the lesion
    rows = (skin_run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,val_loss,val_dice") and len(rows) == 6
    model = load_segmenter(skin_run)
    assert model.card.task == "segmentation" and model.card.lesion_classes == ["lesion"]
    assert model.card.bounds == (0.0, 1.0) and model.card.in_channels == 3
    again = load_segmenter(skin_run)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), again(x))
    # A segmenter's card is not a classifier's (and the other way round).
    with pytest.raises(
        CheckpointError, match=r"card\.json: not a valid model card: task: Extra inputs are not permitted"
    ):
        ModelCard.load(skin_run / "card.json")


def test_a_classifier_checkpoint_is_not_loaded_as_a_segmenter(tmp_path):
    from medrobust.models import ModelCard as Card
    from medrobust.models import build_classifier, save_checkpoint

    save_checkpoint(
        build_classifier("small_cnn", Card(in_channels=1, class_names=["a", "b"]), width=2), tmp_path
    )
    with pytest.raises(CheckpointError, match=r"not a segmenter checkpoint .*'medrobust-classifier'"):
        load_segmenter(tmp_path)


def test_training_refuses_a_network_that_cannot_take_the_size(tmp_path):
    from medrobust.data.segmentation.phantoms import write_segmentation_phantom
    from medrobust.models.segmentation import train_segmenter

    data = write_segmentation_phantom("chest_xray", 20, 36, "png", tmp_path / "d")
    with pytest.raises(ConfigError, match=r"must be multiples of 8 for --arch unet.*Got \[36, 36\]"):
        train_segmenter({"data": str(data), "arch": "unet", "epochs": 1, "out": str(tmp_path / "r")})
