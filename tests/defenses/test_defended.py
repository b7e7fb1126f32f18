"""defend(): one module (denoiser -> classifier) with the classifier's card; checkpoint round trip."""

from __future__ import annotations

import json

import pytest
import torch

from medrobust.defenses import defend, load_denoiser, save_denoiser
from medrobust.defenses.denoisers import create_denoiser
from medrobust.errors import CheckpointError, ConfigError
from medrobust.models import ModelCard, build_classifier


def _classifier(bounds=(0.0, 1.0), channels=1):
    torch.manual_seed(0)
    card = ModelCard(in_channels=channels, class_names=["normal", "pneumonia"], bounds=bounds)
    return build_classifier("small_cnn", card, width=4, depth=2).eval()


@pytest.mark.parametrize("name", ["dae", "median", "hybrid"])
def test_defended_logits_equal_composition(name: str) -> None:
    clf = _classifier()
    params = {
        "median": {},
        "dae": {"width": 4, "depth": 1},
        "hybrid": {"deep_params": {"width": 4, "depth": 1}},
    }
    den = create_denoiser(name, in_channels=1, bounds=clf.card.bounds, **params[name]).eval()
    model = defend(clf, den)
    assert model.card is clf.card
    assert model.denoiser is den and model.classifier is clf
    assert model.uses_bpda == (not den.differentiable)
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), clf(den(x)))


def test_defend_checks_card_compatibility() -> None:
    clf = _classifier(bounds=(-1000.0, 400.0))
    with pytest.raises(ConfigError, match="bounds"):
        defend(clf, create_denoiser("median", bounds=(0, 1)))
    with pytest.raises(ConfigError, match="in_channels"):
        defend(clf, create_denoiser("median", in_channels=3, bounds=(-1000, 400)))
    with pytest.raises(ConfigError, match="card"):
        defend(torch.nn.Identity(), create_denoiser("median"))


def test_attack_runs_end_to_end_through_defended_model() -> None:
    from medrobust.attacks import create_attack

    clf = _classifier()
    model = defend(clf, create_denoiser("median"))
    x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 0, 1])
    res = create_attack("fgsm", model, eps=0.05)(x, y)
    assert res.adv.shape == x.shape
    assert float(res.linf.max()) <= 0.05 + 1e-6
    # BPDA: the perturbation is non-zero although the median has no useful exact gradient.
    assert float(res.linf.max()) > 0


@pytest.mark.parametrize("name", ["dae", "dncnn", "hybrid"])
def test_checkpoint_round_trip(tmp_path, name: str) -> None:
    torch.manual_seed(1)
    params = {"dae": {"width": 4, "depth": 2}, "dncnn": {"depth": 3, "width": 4}, "hybrid": {}}
    den = create_denoiser(name, in_channels=1, bounds=(-1, 1), **params[name])
    if name == "dncnn":  # make the (zero-initialised) last layer non-trivial
        torch.nn.init.normal_(den.net[-1].weight, std=0.1)
    den.eval()
    save_denoiser(den, tmp_path / "run", config={"note": "x"})
    again = load_denoiser(tmp_path / "run")
    x = torch.rand(2, 1, 12, 12) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(again(x), den(x), rtol=0, atol=0)
    assert not again.training
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("note")


def test_load_rejects_bad_checkpoints(tmp_path) -> None:
    den = create_denoiser("dae", width=4, depth=1)
    run = save_denoiser(den, tmp_path / "run")
    with pytest.raises(CheckpointError, match="denoiser spec not found"):
        load_denoiser(tmp_path / "missing")
    spec = json.loads((run / "denoiser.json").read_text())
    spec["params"]["width"] = 8
    (run / "denoiser.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match="weights"):
        load_denoiser(run)
    spec["format"] = "something-else"
    (run / "denoiser.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match="not a medrobust denoiser"):
        load_denoiser(run)
