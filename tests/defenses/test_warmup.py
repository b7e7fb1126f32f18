"""The adaptive adversary's warm start and classification-weight ramp: config rules, schedule, records."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medrobust.defenses.adversarial import ball_noise, ramp_scale
from medrobust.defenses.training import DEFAULT_ADAPTIVE_WARMUP, DEFAULT_CLS_RAMP, TrainDefenseConfig
from medrobust.errors import ConfigError


def _cfg(**kw):
    return TrainDefenseConfig.from_dict({"classifier": "runs/clf", **kw})


def test_warmup_defaults_and_refusals() -> None:
    assert _cfg(epochs=15).resolved_warmup() == DEFAULT_ADAPTIVE_WARMUP == 3  # siamese-dae: adaptive
    assert _cfg(epochs=3).resolved_warmup() == 2  # at least one adaptive epoch
    assert _cfg(epochs=1).resolved_warmup() == 0
    assert _cfg(epochs=15, adaptive_warmup_epochs=0).resolved_warmup() == 0
    assert _cfg(epochs=15, adversary="graybox").resolved_warmup() == 0  # gray-box training unchanged
    assert _cfg(kind="dae").resolved_warmup() == 0
    assert _cfg(kind="hgd", adversary="adaptive").resolved_warmup() == 0  # nothing but cls to warm up
    assert _cfg(epochs=15).resolved_cls_ramp() == DEFAULT_CLS_RAMP == 3
    assert _cfg(epochs=4).resolved_cls_ramp() == 1  # what is left after the warm start
    assert _cfg(epochs=15, ablate=["cls"]).resolved_cls_ramp() == 0
    assert _cfg(epochs=15, adversary="graybox").resolved_cls_ramp() == 0
    with pytest.raises(ConfigError, match="'adaptive_warmup_epochs' parameter must be smaller than epochs"):
        _cfg(epochs=4, adaptive_warmup_epochs=4)
    with pytest.raises(ConfigError, match=r"apply to the adaptive adversary only.*'graybox'"):
        _cfg(adversary="graybox", adaptive_warmup_epochs=2)
    with pytest.raises(ConfigError, match="apply to the adaptive adversary only"):
        _cfg(kind="magnet", adaptive_cls_ramp_epochs=2)  # magnet is gray-box by default
    with pytest.raises(ConfigError, match="warm start trains the reconstruction"):
        _cfg(kind="hgd", adversary="adaptive", adaptive_warmup_epochs=1, epochs=3)
    with pytest.raises(ConfigError, match="adaptive_warmup_epochs"):
        _cfg(adaptive_warmup_epochs=-1)


def test_ball_noise_and_ramp() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g)
    noisy = ball_noise(x, 0.05, (0.0, 1.0), torch.Generator().manual_seed(1))
    assert (noisy - x).abs().max() <= 0.05 + 1e-6 and (noisy - x).abs().max() > 0.04
    assert noisy.min() >= 0 and noisy.max() <= 1
    torch.testing.assert_close(noisy, ball_noise(x, 0.05, (0.0, 1.0), torch.Generator().manual_seed(1)))
    assert [ramp_scale(e, 4) for e in (-1, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert ramp_scale(1, 0) == 1.0


def test_warm_start_crafts_no_attack_before_epoch_w_and_is_recorded(tmp_path, monkeypatch) -> None:
    from medrobust.defenses import training
    from medrobust.defenses.objectives.siamese import SiameseDAE
    from medrobust.defenses.training import fit_denoiser
    from medrobust.models import ModelCard, build_classifier

    torch.manual_seed(0)
    card = ModelCard(in_channels=1, class_names=["a", "b"], spatial_size=(16, 16), modality="chest_xray")
    clf = build_classifier("small_cnn", card, width=4, depth=2).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 1, 16, 16, generator=g), torch.arange(24) % 2

    crafted: list[int] = []  # the epoch of every adaptive batch
    cls_weights: list[tuple[int, float]] = []  # (epoch, classification weight) of every adaptive batch
    epoch = {"now": 1}
    real_craft, real_total = training.craft_adaptive, SiameseDAE.total

    def spy(*args):
        crafted.append(epoch["now"])
        return real_craft(*args)

    def total(self, terms):
        if "cls" in terms:
            cls_weights.append((epoch["now"], self.weights["cls"]))
        return real_total(self, terms)

    def next_epoch(end) -> None:
        epoch["now"] = end.epoch + 1

    monkeypatch.setattr(training, "craft_adaptive", spy)
    monkeypatch.setattr(SiameseDAE, "total", total)
    cfg = {
        "classifier": "in-memory",
        "kind": "siamese-dae",
        "adaptive_warmup_epochs": 2,
        "adaptive_cls_ramp_epochs": 1,
        "arch_params": {"width": 4, "depth": 1},
        "epochs": 4,
        "batch_size": 8,
        "adaptive_val_every": 0,
        "out": str(tmp_path / "d"),
        "progress": False,
        "device": "cpu",
    }
    res = fit_denoiser(cfg, clf, x[:16], y[:16], x[16:], y[16:], callbacks=[next_epoch])
    assert crafted == [3, 3, 4, 4]  # 2 batches per epoch, no adaptive twin before epoch W + 1 = 3
    # The classification weight (default 0.1) ramps up batch by batch over 1 epoch, then stays.
    assert [e for e, _ in cls_weights] == [3, 3, 4, 4]
    assert [w for _, w in cls_weights] == pytest.approx([0.05, 0.1, 0.1, 0.1])
    assert ["cls" in row for row in res.metrics] == [False, False, True, True]  # cls off in the warm start
    assert all(np.isfinite(float(row["rec"])) for row in res.metrics)
    record = json.loads((res.out / "summary.json").read_text())["adversary"]
    assert (record["warmup_epochs"], record["cls_ramp_epochs"]) == (2, 1)
    notes = json.loads((res.out / "card.json").read_text())["notes"]
    assert any(
        "first 2 epoch(s) were a reconstruction warm start" in n and "over 1 epoch" in n for n in notes
    )
    assert json.loads((res.out / "denoiser.json").read_text())["training"]["adversary"]["warmup_epochs"] == 2


def test_cli_passes_the_warmup_to_the_config(tmp_path, capsys) -> None:
    from medrobust.cli.main import main

    argv = ["train", "defense", "--classifier", str(tmp_path / "clf"), "--out", str(tmp_path / "d")]
    assert main([*argv, "--epochs", "2", "--adaptive-warmup-epochs", "2"]) == 2  # refused before loading
    assert "must be smaller than epochs (2)" in capsys.readouterr().err
    assert main([*argv, "--adversary", "graybox", "--adaptive-warmup-epochs", "1"]) == 2
    assert "adaptive adversary only" in capsys.readouterr().err
