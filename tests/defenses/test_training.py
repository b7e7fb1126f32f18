"""Defense training: a tiny Siamese-DAE on phantom chest X-rays, baselines, CLI, objectives."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from medrobust.defenses import load_denoiser
from medrobust.defenses.denoisers import create_denoiser
from medrobust.defenses.objectives import DEFENSE_KINDS, Batch
from medrobust.defenses.objectives.base import forward_with_latent
from medrobust.defenses.training import fit_denoiser, train_defense
from medrobust.errors import ConfigError


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    """64 phantom chest X-rays (32x32, npz) and an (untrained) small_cnn run folder naming them."""
    from medrobust.data import write_phantom
    from medrobust.models import ModelCard, build_classifier, save_checkpoint

    root = tmp_path_factory.mktemp("cxr")
    data = write_phantom("chest_xray", 64, 32, "npz", root / "data", seed=0)
    torch.manual_seed(0)
    card = ModelCard(
        in_channels=1, class_names=["normal", "pneumonia"], spatial_size=(32, 32), modality="chest_xray"
    )
    clf = build_classifier("small_cnn", card, width=4, depth=2)
    cfg = {
        "data": str(data),
        "modality": "chest_xray",
        "spatial_size": [32, 32],
        "val_split": 0.25,
        "seed": 0,
    }
    run = save_checkpoint(clf, root / "clf", config=cfg)
    return run, data


def _phantom_tensors(n=48, size=32):
    from medrobust.data.phantoms import make_phantom

    ps = make_phantom("chest_xray", n=n, size=size, seed=1)
    return torch.from_numpy(ps.images).float() / 255.0, torch.from_numpy(ps.labels).long()


def _rows(path):
    return list(csv.DictReader((path / "metrics.csv").read_text().splitlines()))


def test_siamese_dae_training_lowers_loss_and_round_trips(tmp_path, phantom_run) -> None:
    from medrobust.models import load_model

    run, _ = phantom_run
    clf = load_model(run)
    x, y = _phantom_tensors(64)
    cfg = {
        "classifier": str(run),
        "kind": "siamese-dae",
        "arch_params": {"width": 4, "depth": 2},
        "epochs": 2,
        "batch_size": 16,
        "lr": 3e-3,
        "out": str(tmp_path / "sdae"),
        "progress": False,
        "attacks": [
            {"name": "fgsm", "eps": ["2/255", "8/255"]},
            {"name": "pgd", "eps": ["2/255", "8/255"], "steps": 2},
        ],
    }
    res = fit_denoiser(cfg, clf, x[:48], y[:48], x[48:], y[48:])
    rows = _rows(res.out)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "rec", "siam", "cls", "val_clean_acc", "val_adv_acc"} <= set(rows[0])
    assert float(rows[1]["loss"]) < float(rows[0]["loss"])
    # The trained denoiser reconstructs better than its own initialisation.
    torch.manual_seed(0)
    fresh = create_denoiser("dae", width=4, depth=2).eval()
    with torch.no_grad():
        assert (res.denoiser(x) - x).pow(2).mean() < (fresh(x) - x).pow(2).mean()
    for name in ("denoiser.safetensors", "denoiser.json", "card.json", "config.yaml", "environment.json"):
        assert (res.out / name).is_file(), name
    resolved = yaml.safe_load((res.out / "config.yaml").read_text())
    assert resolved["w_rec"] == 1.0 and resolved["attacks"][0]["eps"][0] == "2/255"
    # The Siamese-DAE trains against the adaptive adversary by default, and says so.
    assert resolved["adversary"] == "adaptive" and "val_adaptive_acc" in rows[0]
    spec = json.loads((res.out / "denoiser.json").read_text())
    adversary = spec["training"]["adversary"]
    assert adversary["adversary"] == "adaptive" and adversary["target"].startswith("f∘D")
    assert adversary["attacks"] == [
        {
            "name": "pgd",
            "eps": ["8/255", "8/255"],
            "eps_image_units": [8 / 255, 8 / 255],
            "steps": 2,
            "weight": 1.0,
        }
    ]
    assert json.loads((res.out / "summary.json").read_text())["adversary"] == adversary
    notes = json.loads((res.out / "card.json").read_text())["notes"]
    assert any(n.startswith("Training adversary: adaptive (PGD-2 at eps 8/255 against f∘D") for n in notes)
    again = load_denoiser(res.out)
    with torch.no_grad():
        torch.testing.assert_close(again(x), res.denoiser(x), rtol=0, atol=0)


def test_train_defense_reads_classifier_run_and_ablation(tmp_path, phantom_run) -> None:
    run, _ = phantom_run
    out = train_defense(
        {
            "classifier": str(run),
            "kind": "siamese-dae",
            "ablate": ["siam"],
            "arch_params": {"width": 4, "depth": 1},
            "epochs": 1,
            "batch_size": 16,
            "limit": 32,
            "adversary": "graybox",
            "crafting": "per_epoch",
            "attacks": [{"name": "fgsm", "eps": ["2/255", "4/255"]}],
            "out": str(tmp_path / "abl"),
            "progress": False,
        }
    )
    rows = _rows(out)
    assert "siam" not in rows[0] and "rec" in rows[0] and "cls" in rows[0]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["w_siam"] == 0.0
    assert resolved["data"].endswith(".npz") and resolved["spatial_size"] == [32, 32]


def test_cli_train_defense(tmp_path, phantom_run) -> None:
    from medrobust.cli.main import main

    run, _ = phantom_run
    cfg = tmp_path / "defense.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "arch_params": {"width": 4, "depth": 1},
                "batch_size": 16,
                "limit": 32,
                "attacks": [{"name": "fgsm", "eps": ["2/255", "4/255"]}],
                "progress": False,
            }
        )
    )
    out = tmp_path / "magnet"
    rc = main(
        ["train", "defense", "--classifier", str(run), "--kind", "magnet", "--out", str(out),
         "--config", str(cfg), "--epochs", "1", "--seed", "3"]
    )  # fmt: skip
    assert rc == 0
    assert load_denoiser(out).name == "dae"
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 3
    # A second run into the same folder needs --overwrite.
    assert main(["train", "defense", "--classifier", str(run), "--out", str(out), "--config", str(cfg)]) == 2


@pytest.mark.parametrize("kind", ["dae", "magnet", "hgd"])
def test_baselines_train(tmp_path, phantom_run, kind) -> None:
    from medrobust.models import load_model

    clf = load_model(phantom_run[0])
    x, y = _phantom_tensors(24)
    cfg = {
        "classifier": "in-memory",
        "kind": kind,
        "arch_params": {"width": 4, "depth": 1},
        "epochs": 1,
        "batch_size": 12,
        "attacks": [{"name": "fgsm", "eps": ["4/255", "4/255"]}],
        "out": str(tmp_path / kind),
        "progress": False,
    }
    res = fit_denoiser(cfg, clf, x[:16], y[:16], x[16:], y[16:])
    row = res.metrics[0]
    # The published baselines keep gray-box twins by default; the plain DAE has no adversary.
    spec = json.loads((res.out / "denoiser.json").read_text())["training"]["adversary"]
    assert (spec or {}).get("adversary") == {"dae": None, "magnet": "graybox", "hgd": "graybox"}[kind]
    assert "val_adaptive_acc" not in row
    expected = {"dae": {"rec"}, "magnet": {"rec"}, "hgd": {"cls"}}[kind]
    assert expected == {k for k in row if k in ("rec", "siam", "cls")}
    assert row["loss"] > 0


def test_forward_with_latent_matches_forward() -> None:
    x = torch.rand(2, 1, 18, 20)
    for name, params in [("dae", {"width": 4, "depth": 2}), ("autoencoder", {"channels": (4, 8)})]:
        d = create_denoiser(name, **params).eval()
        out, z = forward_with_latent(d, x)
        assert z is not None
        torch.testing.assert_close(out, d(x))
    out, z = forward_with_latent(create_denoiser("dncnn", depth=3, width=4), x)
    assert z is None and out.shape == x.shape


def test_siamese_terms_vanish_for_identical_pairs() -> None:
    from medrobust.models import ModelCard, build_classifier

    torch.manual_seed(0)
    clf = build_classifier(
        "small_cnn", ModelCard(in_channels=1, class_names=["a", "b"]), width=4, depth=2
    ).eval()
    d = create_denoiser("dae", width=4, depth=1)
    objective = DEFENSE_KINDS.get("siamese-dae")({"rec": 1.0, "siam": 1.0, "cls": 1.0}, {"siam_on": "both"})
    x = torch.rand(4, 1, 16, 16)
    terms = objective.losses(
        d, clf, Batch(x=x, y=torch.zeros(4, dtype=torch.long), x_adv=x.clone(), generator=None)
    )
    assert terms["siam"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["rec"].item() > 0 and terms["cls"].item() >= 0
    x_adv = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    terms = objective.losses(
        d, clf, Batch(x=x, y=torch.zeros(4, dtype=torch.long), x_adv=x_adv, generator=None)
    )
    assert terms["siam"].item() > 0
    terms["siam"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())


# --------------------------------------------------------------------------- the adaptive adversary


def _tiny_pair(seed: int = 0):
    from medrobust.models import ModelCard, build_classifier

    torch.manual_seed(seed)
    clf = build_classifier(
        "small_cnn", ModelCard(in_channels=1, class_names=["a", "b"]), width=4, depth=2
    ).eval()
    for p in clf.parameters():
        p.requires_grad_(False)
    return clf, create_denoiser("dae", width=4, depth=1)


def test_adaptive_twins_are_recomputed_through_the_denoiser_as_it_trains() -> None:
    import numpy as np

    from medrobust.defenses.adversarial import craft, craft_adaptive, default_adaptive_mix

    clf, den = _tiny_pair()
    x, y = _phantom_tensors(8)
    mix, bounds = default_adaptive_mix(), (0.0, 1.0)

    def twins(adaptive: bool) -> torch.Tensor:
        rng = np.random.default_rng(0)  # same attack seed every time: only D can change the result
        return (
            craft_adaptive(den, clf, x, y, mix, rng, bounds)
            if adaptive
            else craft(clf, x, y, mix, rng, bounds)
        )

    before, gray_before = twins(True), twins(False)
    torch.testing.assert_close(twins(True), before, rtol=0, atol=0)  # deterministic given D and the seed
    den.train()
    opt = torch.optim.Adam(den.parameters(), lr=1e-2)
    for _ in range(3):  # a few training steps change D
        opt.zero_grad()
        ((den(x) - x) ** 2).mean().backward()
        opt.step()
    after, gray_after = twins(True), twins(False)
    assert den.training  # the attack ran D in eval mode and restored its mode
    assert (after - before).abs().max() > 1e-3  # recomputed through the new D
    torch.testing.assert_close(gray_after, gray_before, rtol=0, atol=0)  # gray-box twins ignore D
    assert (after - x).abs().max() <= 8 / 255 + 1e-6 and after.min() >= 0 and after.max() <= 1


def test_adaptive_attack_and_classifier_loss_send_gradients_through_the_denoiser() -> None:
    import numpy as np

    from medrobust.defenses.adversarial import craft_adaptive, default_adaptive_mix
    from medrobust.defenses.objectives.siamese import consistency

    clf, den = _tiny_pair(1)
    x, y = _phantom_tensors(8)
    # The attack differentiates through D: its input reaches D with gradients switched on.
    seen: list[bool] = []
    hook = den.register_forward_pre_hook(lambda m, args: seen.append(args[0].requires_grad))
    try:
        x_adv = craft_adaptive(den, clf, x, y, default_adaptive_mix(), np.random.default_rng(0), (0.0, 1.0))
    finally:
        hook.remove()
    assert seen.count(True) == 2  # one per PGD step (the success check runs without gradients)
    assert not x_adv.requires_grad and all(p.grad is None for p in den.parameters())  # no weight grads
    # The classification-consistency loss of the adversarial branch reaches D's input and weights.
    x_adv = x_adv.clone().requires_grad_(True)
    with torch.no_grad():
        clean_logits = clf(x)
    consistency(clean_logits, clf(den(x_adv)), y, "kl").backward()
    assert x_adv.grad is not None and x_adv.grad.abs().sum() > 0
    assert all(p.grad is not None for p in den.parameters())
    assert sum(float(p.grad.abs().sum()) for p in den.parameters()) > 0
    assert all(p.grad is None for p in clf.parameters())  # the classifier stays frozen


# --------------------------------------------------------------------------- the one training loop


class _KilledError(RuntimeError):
    """Stands in for a killed process."""


def _kill_after(epoch: int):
    def callback(end) -> None:
        if end.epoch == epoch:
            raise _KilledError(f"killed after epoch {epoch}")

    return callback


def _sdae_config(run, out, **kw):
    return {
        "classifier": str(run),
        "kind": "siamese-dae",
        "arch_params": {"width": 4, "depth": 2},
        "epochs": 4,
        "batch_size": 16,
        "lr": 3e-3,
        "out": str(out),
        "progress": False,
        "device": "cpu",
        "attacks": [
            {"name": "fgsm", "eps": ["2/255", "8/255"]},
            {"name": "pgd", "eps": ["2/255", "8/255"], "steps": 2},
        ],
        **kw,
    }


def test_siamese_dae_killed_after_epoch_2_resumes_to_the_same_weights(tmp_path, phantom_run) -> None:
    from medrobust.models import load_model
    from medrobust.run.loop import checkpoint_path

    run, _ = phantom_run
    clf = load_model(run)
    x, y = _phantom_tensors(40)
    args = (clf, x[:32], y[:32], x[32:], y[32:])
    straight = fit_denoiser(_sdae_config(run, tmp_path / "straight"), *args)
    cfg = _sdae_config(run, tmp_path / "killed")
    with pytest.raises(_KilledError):
        fit_denoiser(cfg, *args, callbacks=[_kill_after(2)])
    assert all(p.requires_grad for p in clf.parameters())  # the caller's classifier is unfrozen again
    state = torch.load(checkpoint_path(tmp_path / "killed"), map_location="cpu", weights_only=True)
    assert (
        state["epoch"] == 2
        and len(state["rows"]) == 2
        and not (tmp_path / "killed" / "denoiser.json").exists()
    )

    with pytest.raises(ConfigError, match=r"--resume: the config differs .*lr: 0\.003 -> 0\.01"):
        fit_denoiser({**cfg, "lr": 1e-2}, *args, resume=True)
    resumed = fit_denoiser(cfg, *args, resume=True)
    a, b = straight.denoiser.state_dict(), resumed.denoiser.state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    drop = lambda rows: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]  # noqa: E731
    assert drop(straight.metrics) == drop(resumed.metrics) and len(resumed.metrics) == 4
    assert not (resumed.out / "checkpoint").exists()


def test_cli_train_defense_resume_and_refusals(tmp_path, phantom_run) -> None:
    from medrobust.cli.main import main

    run, _ = phantom_run
    out = tmp_path / "dae"
    cfg = {
        **_sdae_config(run, out, kind="dae", epochs=2, limit=16),
        "attacks": [{"name": "fgsm", "eps": [0.01, 0.02]}],
    }
    with pytest.raises(_KilledError):
        train_defense(cfg, callbacks=[_kill_after(1)])
    path = tmp_path / "defense.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "defense", "--config", str(path)]) == 2  # unfinished run: --resume or --overwrite
    assert main(["train", "defense", "--config", str(path), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["resumed_after_epoch"] == 1
    assert main(["train", "defense", "--config", str(path), "--resume"]) == 2  # finished: nothing to resume


class _Brightness(torch.nn.Module):
    """A 'classifier' that reads mean brightness: dark images are class 0, bright ones class 1."""

    def __init__(self) -> None:
        from medrobust.models import ModelCard

        super().__init__()
        self.card = ModelCard(in_channels=1, class_names=["dark", "bright"], spatial_size=(32, 32))
        self.scale = torch.nn.Parameter(torch.tensor(40.0))

        self.constant = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3)) - 0.5
        if self.constant:  # class 0 whatever the image (still differentiable, with a zero gradient)
            return torch.stack([1.0 + 0 * m, 0 * m], dim=1)
        return torch.stack([-m, m], dim=1) * self.scale


def _brightness_data(n: int = 32):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = (0.3 + 0.4 * y.view(-1, 1, 1, 1) + 0.05 * torch.randn(n, 1, 32, 32, generator=g)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("constant", [True, False])
def test_chance_warning_at_the_end_of_defense_training(tmp_path, caplog, constant) -> None:
    import logging

    clf = _Brightness()
    clf.constant = constant
    x, y = _brightness_data()
    cfg = {
        "classifier": "in-memory",
        "kind": "dae",
        "arch": "dncnn",  # residual: starts near the identity, so a good classifier stays good
        "arch_params": {"width": 4, "depth": 3},
        "epochs": 1,
        "batch_size": 8,
        "lr": 1e-3,
        "attacks": [{"name": "fgsm", "eps": ["2/255", "2/255"]}],
        "out": str(tmp_path / "d"),
        "progress": False,
        "device": "cpu",
    }
    with caplog.at_level(logging.WARNING, logger="medrobust"):
        res = fit_denoiser(cfg, clf, x[:24], y[:24], x[24:], y[24:])
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "dae defense" in r.getMessage()
    ]
    summary = json.loads((res.out / "summary.json").read_text())
    if constant:
        assert warned and "predicts one class" in warned[0]
        assert summary["chance"]["constant"] is True and res.chance["warning"]
    else:
        assert warned == [], warned
        assert summary["chance"]["at_chance"] is False and summary["chance"]["warning"] is None
