import json

import pytest
import torch

from medrobust.defenses.checkpoint import load_denoiser
from medrobust.defenses.denoisers import create_denoiser, list_denoisers
from medrobust.denoising.data import DenoisingData, load_clean_images
from medrobust.denoising.training import TrainDenoiserConfig, parse_sigma_range, train_denoiser
from medrobust.errors import ConfigError
from medrobust.run.config import validate_config


def test_ffdnet_noise_level_map_and_shapes():
    assert "ffdnet" in list_denoisers()
    den = create_denoiser("ffdnet", in_channels=1, bounds=(-1.0, 1.0), sigma="15/255", depth=3, width=4)
    assert den.sigma == pytest.approx(15 / 255)
    x = torch.rand(2, 1, 15, 17) * 2 - 1  # odd sizes are padded internally
    with torch.no_grad():
        for p in den.parameters():
            p.add_(0.1)
        out_default = den(x)
        out_low = den(x, sigma=torch.tensor([0.0, 0.0]))
    assert out_default.shape == x.shape
    assert out_default.min() >= -1 and out_default.max() <= 1
    assert not torch.allclose(out_default, out_low)  # the noise-level map is an input
    assert torch.allclose(den(x, sigma=15 / 255), out_default)
    with pytest.raises(ConfigError, match="'sigma' parameter of FFDNet"):
        create_denoiser("ffdnet", sigma=2.0)
    with pytest.raises(ConfigError, match="expects 2D images"):
        den(torch.rand(1, 3, 8, 8))


def test_sigma_parsing():
    assert parse_sigma_range("0,55/255") == pytest.approx((0.0, 55 / 255))
    assert parse_sigma_range([0, "25/255"]) == pytest.approx((0.0, 25 / 255))
    with pytest.raises(ConfigError, match="low < high"):
        parse_sigma_range("0.2,0.1")
    with pytest.raises(ConfigError, match="sigma"):
        validate_config(TrainDenoiserConfig, {"arch": "dncnn", "sigma": "2"})
    with pytest.raises(ConfigError, match="sigma_range"):
        validate_config(TrainDenoiserConfig, {"arch": "dncnn", "blind": True})
    with pytest.raises(ConfigError, match="trainable"):
        validate_config(TrainDenoiserConfig, {"arch": "median"})
    with pytest.raises(ConfigError, match="Did you mean 'dncnn'"):
        validate_config(TrainDenoiserConfig, {"arch": "dncn"})


@pytest.mark.parametrize(
    ("arch", "extra"),
    [("dncnn", {}), ("ffdnet", {"blind": True, "sigma_range": "0,40/255"})],
)
def test_train_denoiser_improves_and_roundtrips(tmp_path, arch, extra):
    data = DenoisingData(kind="synthetic", n=24, size=24, seed=1)
    images = load_clean_images(data)
    cfg = TrainDenoiserConfig(
        arch=arch,
        params={"depth": 3, "width": 8},
        sigma="25/255",
        data=data,
        epochs=12,
        batch_size=8,
        lr=1e-2,
        device="cpu",
        out=tmp_path / arch,
        **extra,
    )
    run = train_denoiser(cfg, images=images)
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["train_loss"]) == 12
    # a fresh DnCNN/FFDNet is the identity, so beating the noisy PSNR means it learned something
    assert metrics["val_psnr_denoised"] > metrics["val_psnr_noisy_clipped"] + 0.3
    spec = json.loads((run / "denoiser.json").read_text())
    assert spec["name"] == arch
    loaded = load_denoiser(run)
    x = images.test[:2]
    assert loaded(x).shape == x.shape
    if arch == "ffdnet":
        assert loaded.sigma == pytest.approx(25 / 255)  # inference σ = the fixed σ, trained over a range
    with pytest.raises(ConfigError, match="already holds"):
        train_denoiser(cfg, images=images)


def test_cli_train_denoiser(tmp_path):
    from medrobust.cli.main import main

    out = tmp_path / "run"
    args = ["train", "denoiser", "--arch", "dncnn", "--sigma", "15/255", "--data", "phantom:brain_mri"]
    args += ["--samples", "24", "--size", "32", "--epochs", "1", "--param", "depth=3", "--param", "width=4"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    spec = json.loads((out / "denoiser.json").read_text())
    assert spec["params"]["depth"] == 3 and spec["training"] == "gaussian-non-blind"
    assert main([*args, "--out", str(out), "--no-progress"]) == 2  # refuses to overwrite
    assert main(["train", "denoiser", "--arch", "median", "--out", str(tmp_path / "x")]) == 2


class _KilledError(RuntimeError):
    """Stands in for a killed process."""


def test_denoiser_training_killed_after_epoch_2_resumes_to_the_same_weights(tmp_path):
    from medrobust.run.loop import checkpoint_path

    data = DenoisingData(kind="synthetic", n=16, size=16, seed=1)
    images = load_clean_images(data)
    base = {"arch": "dncnn", "params": {"depth": 3, "width": 4}, "sigma": "25/255", "data": data}
    base |= {"epochs": 4, "batch_size": 8, "lr": 1e-2, "device": "cpu", "patch_size": 8}

    def kill(end):
        if end.epoch == 2:
            raise _KilledError

    straight = train_denoiser(TrainDenoiserConfig(**base, out=tmp_path / "a"), images=images)
    cfg = TrainDenoiserConfig(**base, out=tmp_path / "b")
    with pytest.raises(_KilledError):
        train_denoiser(cfg, images=images, callbacks=[kill])
    assert torch.load(checkpoint_path(tmp_path / "b"), weights_only=True)["epoch"] == 2
    with pytest.raises(ConfigError, match=r"the config differs .*lr: 0\.01 -> 0\.02"):
        train_denoiser(cfg.model_copy(update={"lr": 2e-2}), images=images, resume=True)
    resumed = train_denoiser(cfg, images=images, resume=True)
    a, b = load_denoiser(straight).state_dict(), load_denoiser(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [json.loads((run / "metrics.json").read_text())["train_loss"] for run in (straight, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 4
    assert not (resumed / "checkpoint").exists()
