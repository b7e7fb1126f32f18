"""Preset options: the data's channels, size and intensity scaling, validated with one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.data import get_preset, make_dataset
from medrobust.data.presets import PRESETS
from medrobust.errors import ConfigError


def _rgb_brain(seed: int = 0) -> np.ndarray:
    """An RGB (3, 24, 24) 'brain MRI' export whose channels differ (tinted)."""
    rng = np.random.default_rng(seed)
    grey = rng.uniform(10, 240, (24, 24)).astype(np.float32)
    return np.stack([grey, grey * 0.5, grey * 0.25])


def test_brain_mri_told_the_data_are_rgb_keeps_three_channels():
    img = _rgb_brain()
    default = get_preset("brain_mri").transform((16, 16))({"image": img})["image"]
    rgb = get_preset("brain_mri", channels=3)
    out = rgb.transform((16, 16))({"image": img})["image"]
    assert default.shape == (1, 16, 16) and out.shape == (3, 16, 16)
    assert rgb.channels == 3 and PRESETS.get("brain_mri").channels == 1  # the class default is untouched
    # colour relations survive (joint scaling): the tinted channels stay darker than the first
    assert float(out[0].mean()) > float(out[1].mean()) > float(out[2].mean())
    grey = rgb.transform((16, 16))({"image": img[:1]})["image"]  # grey data into a 3-channel model
    assert grey.shape == (3, 16, 16) and torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_channels_one_turns_a_photo_preset_grey():
    out = get_preset("skin", channels=1).transform((8, 8))({"image": _rgb_brain()})["image"]
    assert out.shape == (1, 8, 8)


def test_range_scaling_uses_fixed_native_units():
    preset = get_preset("chest_xray", scaling="range", value_range=[-1000, 400], bounds=(-1.0, 1.0))
    img = np.array([[[-2000.0, -1000.0, -300.0, 400.0, 3000.0]]], dtype=np.float32)
    out = preset.transform((1, 5))({"image": img})["image"]
    np.testing.assert_allclose(out[0, 0].numpy(), [-1.0, -1.0, 0.0, 1.0, 1.0], atol=1e-6)
    # giving value_range alone selects the range scaling
    assert get_preset("chest_xray", value_range=(0, 4095)).scaling == "range"


def test_minmax_and_percentile_scaling():
    img = np.linspace(0.0, 100.0, 101, dtype=np.float32).reshape(1, 1, 101)
    minmax = get_preset("retina_oct", scaling="minmax").transform((1, 101))({"image": img})["image"]
    np.testing.assert_allclose(minmax[0, 0].numpy(), np.linspace(0, 1, 101), atol=1e-6)
    pct = get_preset("skin", percentiles=(10, 90)).transform((1, 101))({"image": img})["image"]
    assert float(pct[0, 0, 10]) == pytest.approx(0.0, abs=1e-6) and float(pct[0, 0, 90]) == pytest.approx(1.0)
    assert float(pct[0, 0, 50]) == pytest.approx(0.5, abs=1e-6)


def test_photo_scaling_on_an_mri_preset():
    img = np.full((1, 4, 4), 51.0, dtype=np.float32)
    out = get_preset("brain_mri", scaling="photo").transform((4, 4))({"image": img})["image"]
    assert torch.allclose(out, torch.full((1, 4, 4), 0.2))


def test_fundus_field_of_view_crop_stays_with_another_scaling():
    preset = get_preset("retina_fundus", scaling="minmax")
    steps = [type(s).__name__ for s in preset.intensity()]
    assert steps == ["MinMaxScaled", "FundusFOVCropd"]


def test_options_are_described():
    d = get_preset("brain_mri", channels=3, scaling="percentile", nonzero=True, spatial_size=64).describe()
    assert d["channels"] == 3 and d["spatial_size"] == [64, 64]
    expected = {"channels": 3, "scaling": "percentile", "percentiles": [1.0, 99.0], "nonzero": True}
    assert d["options"] == expected
    assert any(n.startswith("options: channels=3") for n in d["notes"])
    assert get_preset("brain_mri").describe()["options"] == {}


def test_make_dataset_takes_preset_options(image_tree):
    root, _ = image_tree(n=2)
    options = {"channels": 3}
    ds = make_dataset(root, split="test", preset="brain_mri", spatial_size=(12, 12), preset_options=options)
    assert ds.preset.channels == 3 and ds[0]["image"].shape == (3, 12, 12)
    # an already built preset object gets the options applied too
    chest = get_preset("chest_xray")
    obj = make_dataset(root, split="test", preset=chest, preset_options={"scaling": "minmax"})
    assert obj.preset.scaling == "minmax"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"channels": 2}, r"'channels' option of preset 'brain_mri' must be 1 or 3\. Got 2\."),
        ({"channels": True}, r"must be 1 or 3\. Got True\."),
        ({"chanels": 3}, r"unknown option\(s\) \['chanels'\]\. Did you mean 'channels'\?"),
        ({"scaling": "zscore"}, r"'scaling' parameter of preset 'brain_mri' must be one of"),
        ({"scaling": "range"}, r"'value_range' option .* is required with scaling='range'"),
        ({"percentiles": (90, 10)}, r"'percentiles' option .* low < high\. Got \(90, 10\)"),
        ({"percentiles": (-5, 50)}, r"0 <= low < high <= 100\. Got \(-5, 50\)"),
        ({"value_range": "0-255"}, r"'value_range' option .* must be two numbers"),
        ({"value_range": (0, float("nan"))}, r"'value_range' parameter .* must be finite"),
        ({"scaling": "photo", "value_range": (0, 1)}, r"'value_range' option .* applies to scaling='range'"),
        ({"nonzero": True}, r"'nonzero' option .* applies to scaling='percentile'"),
        ({"scaling": "percentile", "nonzero": "yes"}, r"'nonzero' option .* must be true or false"),
    ],
)
def test_bad_options_are_one_line_config_errors(options, match):
    with pytest.raises(ConfigError, match=match) as info:
        get_preset("brain_mri", **options)
    assert "\n" not in str(info.value)


def test_make_dataset_refuses_options_without_a_preset(image_tree):
    root, _ = image_tree(n=1)
    with pytest.raises(ConfigError, match=r"'preset_options' parameter of make_dataset needs a preset"):
        make_dataset(root, preset_options={"channels": 3})
    with pytest.raises(ConfigError, match=r"must be a mapping"):
        make_dataset(root, preset="skin", preset_options=[("channels", 3)])
