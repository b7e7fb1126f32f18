import numpy as np
import pytest
import torch

from medrobust.data.presets import PRESETS, get_preset, list_presets
from medrobust.errors import ConfigError, DataError

NAMES = ["brain_mri", "chest_xray", "retina_fundus", "retina_oct", "skin"]
RANGES = {
    "uint8": (0.0, 255.0),
    "hu": (-1024.0, 3000.0),
    "mr": (0.0, 4321.7),
}


def _image(rng, channels, kind, shape=(50, 70)):
    lo, hi = RANGES[kind]
    img = rng.uniform(lo, hi, (channels, *shape)).astype(np.float32)
    if kind == "uint8":
        img = np.round(img)
    if kind == "mr":
        img[:, :5] = 0.0  # zero background rows
    return img


def test_registry_lists_all_presets():
    assert list_presets() == NAMES
    assert len(PRESETS) == 5
    with pytest.raises(ConfigError, match="Did you mean 'chest_xray'"):
        get_preset("chest_xra")


@pytest.mark.parametrize("name", NAMES)
def test_preset_attributes(name):
    p = get_preset(name)
    assert p.name == name
    assert p.channels in (1, 3)
    assert p.spatial_size == (224, 224)
    assert p.bounds == (0.0, 1.0)
    assert p.describe()["bounds"] == [0.0, 1.0]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", sorted(RANGES))
def test_preset_output_contract(name, channels, kind):
    rng = np.random.default_rng(0)
    p = get_preset(name)
    t = p.transform(spatial_size=(32, 40))
    out = t({"image": _image(rng, channels, kind), "label": 1, "meta": {"id": "x"}})
    img = out["image"]
    assert type(img) is torch.Tensor  # plain tensor, not a MetaTensor
    assert img.dtype == torch.float32
    assert tuple(img.shape) == (p.channels, 32, 40)
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert img.max() > img.min()  # not collapsed to a constant
    assert out["label"] == 1 and out["meta"] == {"id": "x"}


@pytest.mark.parametrize("name", NAMES)
def test_custom_bounds_are_respected(name):
    p = get_preset(name, bounds=(-1.0, 2.0), spatial_size=(24, 24))
    out = p.transform(augment=True, seed=3)({"image": _image(np.random.default_rng(1), 3, "hu")})["image"]
    assert tuple(out.shape[1:]) == (24, 24)
    assert out.min() >= -1.0 and out.max() <= 2.0
    assert out.min() < 0.0  # the low end of the bounds is used


def test_grey_conversion_uses_luminance():
    rgb = np.zeros((3, 8, 8), dtype=np.float32)
    rgb[1, :, :4] = 255.0  # green half; red/blue zero
    out = get_preset("chest_xray").transform((8, 8))({"image": rgb})["image"]
    assert out.shape == (1, 8, 8)
    assert out[0, :, :4].mean() > 0.9 and out[0, :, 4:].max() < 0.1


def test_skin_repeats_grey_to_three_channels():
    grey = np.linspace(0, 255, 64, dtype=np.float32).reshape(1, 8, 8)
    out = get_preset("skin").transform((8, 8))({"image": grey})["image"]
    assert out.shape == (3, 8, 8)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert torch.allclose(out[0], torch.from_numpy(grey[0] / 255.0), atol=1e-6)


def test_chest_percentile_scaling_clips_outliers():
    rng = np.random.default_rng(0)
    img = rng.uniform(1000, 2000, (1, 40, 40)).astype(np.float32)
    img[0, 0, 0] = 60000.0  # a burnt-in marker
    out = get_preset("chest_xray").transform((40, 40))({"image": img})["image"]
    # The marker does not compress the rest: the image still spans the range.
    assert out.mean() == pytest.approx(0.5, abs=0.05)
    assert out[0, 0, 0] == 1.0


def test_chest_keeps_aspect_ratio_with_black_padding():
    img = np.full((1, 40, 20), 200.0, dtype=np.float32)
    img[0, :, :10] = 100.0
    out = get_preset("chest_xray").transform((32, 32))({"image": img})["image"]
    assert out.shape == (1, 32, 32)
    assert out[0, :, :8].abs().max() == 0.0 and out[0, :, 24:].abs().max() == 0.0  # padding
    assert out[0, :, 17:23].min() > 0.9  # the bright half stays inside


def test_brain_mri_foreground_percentiles():
    img = np.zeros((1, 40, 40), dtype=np.float32)
    img[0, 10:30, 10:30] = np.linspace(500.0, 1500.0, 400).reshape(20, 20)
    out = get_preset("brain_mri").transform((40, 40))({"image": img})["image"]
    assert out[0, :10].max() == 0.0  # background stays black
    fg = out[0, 10:30, 10:30]
    # Foreground percentiles (not dragged down by 75% zeros): its median sits mid-range.
    assert fg.median() == pytest.approx(0.5, abs=0.05)


def test_brain_mri_resizes_3d_volumes():
    rng = np.random.default_rng(0)
    vol = rng.uniform(0, 900, (1, 10, 30, 30)).astype(np.float32)
    p = get_preset("brain_mri")
    out = p.transform(spatial_size=(8, 16, 16), augment=True, seed=1)({"image": vol})["image"]
    assert tuple(out.shape) == (1, 8, 16, 16) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    with pytest.raises(ConfigError, match="spatial_size"):
        get_preset("chest_xray").transform(spatial_size=(8, 16, 16))
    with pytest.raises(DataError, match="3-value spatial_size"):
        p.transform(spatial_size=(16, 16))({"image": vol})


def _fundus_disc(shape=(80, 110), centre=(40, 60), radius=30):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 6, (3, *shape)).astype(np.float32)  # dark, slightly noisy border
    img[0][disc], img[1][disc], img[2][disc] = 200.0, 90.0, 40.0
    return img


def test_fundus_fov_crop_removes_dark_border():
    img = _fundus_disc(radius=25)  # a 51-px field of view: upsampled to fill the 64-px frame
    out = get_preset("retina_fundus").transform((64, 64))({"image": img})["image"]
    assert out.shape == (3, 64, 64)
    # The disc fills the frame: middle row and column are bright nearly edge to edge.
    assert out[0, 32, 2:62].min() > 0.7
    assert out[0, 2:62, 32].min() > 0.7
    # Corners (outside the circle) are masked black.
    for r, c in ((0, 0), (0, 63), (63, 0), (63, 63)):
        assert out[:, r, c].max() == 0.0
    # Without the crop, the wide black border would survive a plain resize.
    assert (img[0, 40, :25] < 10).all()


def test_fundus_fov_nearly_the_output_size_is_padded_not_upsampled():
    """A 61-px field of view for a 64-px output keeps its pixels (a 1.05x upsampling would blur them)."""
    img = _fundus_disc(radius=30)
    img[1, 40, 60] = 10.0  # a one-pixel dark finding in the green channel, at the disc's centre
    out = get_preset("retina_fundus").transform((64, 64))({"image": img})["image"]
    assert out.shape == (3, 64, 64)
    green = out[1]
    darkest = green[green > 0].min()
    assert torch.isclose(darkest, torch.tensor(10.0 / 255.0))  # the finding keeps its value: not blurred
    r, c = (green == darkest).nonzero()[0].tolist()
    around = torch.stack([green[r - 1, c], green[r + 1, c], green[r, c - 1], green[r, c + 1]])
    assert torch.allclose(around, torch.tensor(90.0 / 255.0))
    assert out[:, 32, :2].max() == 0.0 and out[:, 32, -2:].max() == 0.0  # a thin black border is kept
    assert out[0, 32, 4:60].min() > 0.7


def test_fundus_phantom_at_the_output_size_is_not_resampled():
    """Issue 16: a 32-px fundus phantom trained at 32 px keeps its pixels (its exudates and haemorrhages).

    Its field of view (28-31 px) used to be upsampled to 32 px, blurring pixel-sized findings.
    """
    from medrobust.data import make_phantom

    to_tensor = get_preset("retina_fundus").transform((32, 32))
    for img in make_phantom("retina_fundus", 4, size=32, seed=0).images:
        out = to_tensor({"image": img.astype(np.float32)})["image"] * 255.0
        assert torch.allclose(out, out.round(), atol=1e-3)  # 8-bit values: nothing interpolated
        assert out.amax(dim=0).gt(0).float().mean() > 0.6  # the field of view fills most of the frame


def test_fundus_without_border_is_unchanged():
    img = np.full((3, 20, 20), 120.0, dtype=np.float32)
    out = get_preset("retina_fundus").transform((20, 20))({"image": img})["image"]
    assert torch.allclose(out, torch.full((3, 20, 20), 120.0 / 255.0))


@pytest.mark.parametrize("name", NAMES)
def test_augment_is_reproducible_for_a_seed(name):
    rng = np.random.default_rng(0)
    data = {"image": _image(rng, 3, "uint8", (40, 40))}
    p = get_preset(name)
    a = [p.transform((32, 32), augment=True, seed=7)(dict(data))["image"] for _ in range(2)]
    t = p.transform((32, 32), augment=True, seed=7)
    seq1 = [t(dict(data))["image"] for _ in range(4)]
    t2 = p.transform((32, 32), augment=True, seed=7)
    seq2 = [t2(dict(data))["image"] for _ in range(4)]
    assert torch.equal(a[0], a[1])
    assert all(torch.equal(x, y) for x, y in zip(seq1, seq2, strict=True))
    plain = p.transform((32, 32))(dict(data))["image"]
    # Random transforms do change images (at least one of four differs from the plain pipeline).
    assert any(not torch.equal(x, plain) for x in seq1)
    assert all(x.min() >= 0.0 and x.max() <= 1.0 for x in seq1)


def test_chest_augmentations_never_flip():
    from monai.transforms import RandFlipd

    steps = get_preset("chest_xray").transform(augment=True).transforms
    assert not any(isinstance(s, RandFlipd) for s in steps)


def test_bad_inputs_name_the_file():
    t = get_preset("retina_oct").transform((16, 16))
    bad = np.ones((1, 8, 8), dtype=np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"scan\.png: image has 1 NaN"):
        t({"image": bad, "meta": {"path": "scan.png"}})
    with pytest.raises(DataError, match=r"scan\.png: .*Got 2 channels"):
        t({"image": np.ones((2, 8, 8)), "meta": {"path": "scan.png"}})


def test_bad_parameters():
    with pytest.raises(ConfigError, match="'bounds'"):
        get_preset("skin", bounds=(1.0, 0.0))
    with pytest.raises(ConfigError, match="'spatial_size'"):
        get_preset("skin").transform(spatial_size=(0, 32))
    # 'channels' is an option now (see test_preset_options.py); a misspelt option is refused
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['chanels'\]\. Did you mean 'channels'"):
        get_preset("skin", chanels=1)
