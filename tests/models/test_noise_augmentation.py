"""Gaussian-noise augmentation (``--noise-sigma``): the base classifier of randomized smoothing."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from medrobust.errors import ConfigError
from medrobust.models.training import NOISE_METRIC_COLUMNS, NoiseAugmentation, TrainClassifierConfig

from .conftest import BlobDataset, blob_train_data

SIGMA = "64/255"


@pytest.fixture(scope="module")
def blobs():
    """Synthetic blobs (tests/models/conftest.py): 160 train, 64 validation; 200 held out."""
    test = BlobDataset(200, seed=3)
    return blob_train_data(160, 64, (1, 2)), test.images, test.labels


def _train(data, out, noise_sigma):
    from medrobust.models import load_model
    from medrobust.models.training import train_classifier

    cfg = TrainClassifierConfig(
        arch_kwargs={"width": 8, "depth": 3},
        epochs=4,
        batch_size=16,
        out=str(out),
        progress=False,
        device="cpu",
        patience=0,
        amp=False,
        noise_sigma=noise_sigma,
        seed=0,
    )
    run = train_classifier(cfg, data=data)
    return run, load_model(run).eval()


def _noisy_accuracy(model, x, y, sigma: float, draws: int = 4) -> float:
    """Accuracy on ``clip(x + sigma N(0, I))``, averaged over a few seeded draws."""
    g = torch.Generator().manual_seed(123)
    hits = 0.0
    with torch.no_grad():
        for _ in range(draws):
            noisy = (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)
            hits += float((model(noisy).argmax(1) == y).float().mean())
    return hits / draws


def test_noise_training_records_the_recipe_and_holds_up_under_noise(blobs, tmp_path):
    data, x_test, y_test = blobs
    run_plain, plain = _train(data, tmp_path / "plain", None)
    run_noise, noisy = _train(data, tmp_path / "noise", SIGMA)

    summary = json.loads((run_noise / "summary.json").read_text())
    recipe = summary["noise_augmentation"]
    assert recipe["sigma"] == SIGMA and recipe["sigma_image_units"] == pytest.approx(64 / 255)
    assert recipe["clipped_to_bounds"] == [0.0, 1.0]
    assert "noisy" in summary["best_val"]
    assert json.loads((run_plain / "summary.json").read_text())["noise_augmentation"] is None
    card = json.loads((run_noise / "card.json").read_text())
    assert any("Gaussian-noise augmentation" in note and SIGMA in note for note in card["notes"])
    with open(run_noise / "metrics.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(NOISE_METRIC_COLUMNS) and len(rows) == 4
    assert all(0.0 <= float(r["val_noisy_accuracy"]) <= 1.0 for r in rows)

    sigma = 64 / 255
    acc_plain, acc_noise = (
        _noisy_accuracy(plain, x_test, y_test, sigma),
        _noisy_accuracy(noisy, x_test, y_test, sigma),
    )
    # Measured: 0.53 (standard training) vs 0.95 on noisy held-out blobs at sigma 64/255.
    assert acc_noise > acc_plain + 0.2, (acc_plain, acc_noise)


def test_sigma_is_in_the_one_unit_of_eps():
    assert NoiseAugmentation.resolve("64/255", (0.0, 1.0)).sigma == pytest.approx(64 / 255)
    assert NoiseAugmentation.resolve("64/255", (0.0, 255.0)).sigma == pytest.approx(64.0)
    assert NoiseAugmentation.resolve(100.0, (-1024.0, 3071.0)).sigma == 100.0  # HU as written
    with pytest.raises(ConfigError, match=r"'noise_sigma' parameter of Gaussian-noise augmentation.*0.1 %"):
        NoiseAugmentation.resolve(0.25, (-1024.0, 3071.0))  # reads like the old fraction of the range
    with pytest.raises(ConfigError, match=r"'noise_sigma'.*\(0, 1\]. Got 2"):
        NoiseAugmentation.resolve(2.0, (0.0, 1.0))


def test_noise_is_seeded_and_stays_in_bounds():
    aug = NoiseAugmentation.resolve(0.5, (0.0, 1.0))
    x = torch.full((4, 1, 8, 8), 0.5)
    a = aug.apply(x, torch.Generator().manual_seed(0))
    b = aug.apply(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert float(a.min()) == 0.0 and float(a.max()) == 1.0  # σ = 0.5 around 0.5 reaches both bounds


def test_refusals_are_one_line(capsys):
    from medrobust.cli.main import main

    with pytest.raises(ConfigError, match=r"noise_sigma.*cannot be combined with adversarial training"):
        TrainClassifierConfig.from_dict({"data": "x", "noise_sigma": 0.25, "adversarial": "pgd"})
    with pytest.raises(ConfigError, match=r"'noise_sigma' parameter \(--noise-sigma\).*> 0.*Got -0.1"):
        TrainClassifierConfig.from_dict({"data": "x", "noise_sigma": -0.1})
    assert main(["train", "classifier", "--data", "x", "--noise-sigma", "big"]) == 2
    err = capsys.readouterr().err
    assert "noise_sigma" in err and "'big'" in err and len(err.strip().splitlines()) == 1
    assert (
        main(["train", "classifier", "--data", "x", "--noise-sigma", "0.25", "--adversarial", "trades"]) == 2
    )
    err = capsys.readouterr().err
    assert "--noise-sigma" in err and "--adversarial" in err and len(err.strip().splitlines()) == 1
