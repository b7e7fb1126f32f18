"""TrainDefenseConfig validation: readable errors, fractions, YAML, ablation rules."""

from __future__ import annotations

import pytest

from medrobust.defenses.training import TrainDefenseConfig
from medrobust.errors import ConfigError


def _cfg(**kw):
    return TrainDefenseConfig.from_dict({"classifier": "runs/clf", **kw})


def test_defaults_and_fractions() -> None:
    cfg = _cfg(attacks=[{"name": "PGD", "eps": ["1/255", "8/255"], "steps": 3}], noise_sigma="25/255")
    assert cfg.attacks[0].name == "pgd"
    assert cfg.attacks[0].eps == ("1/255", "8/255")  # kept as written; "k/255" = k/255 of the range
    assert cfg.noise_sigma == pytest.approx(25 / 255)
    assert cfg.resolved_weights() == {"rec": 1.0, "siam": 1.0, "cls": 0.1}
    assert cfg.validation_attack().eps == ("8/255", "8/255")


def test_bad_eps_range() -> None:
    with pytest.raises(ConfigError, match="eps range must satisfy 0 < low <= high"):
        _cfg(attacks=[{"name": "pgd", "eps": ["8/255", "2/255"]}])
    with pytest.raises(ConfigError, match="eps"):
        _cfg(attacks=[{"name": "fgsm", "eps": ["a", "2/255"]}])


def test_unknown_names_suggest() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'siamese-dae'"):
        _cfg(kind="siamese-dea")
    with pytest.raises(ConfigError, match="Did you mean 'unet'"):
        _cfg(arch="unte")
    with pytest.raises(ConfigError, match="Did you mean 'pgd'"):
        _cfg(attacks=[{"name": "pdg", "eps": [0.01, 0.02]}])
    with pytest.raises(ConfigError, match="epohcs"):
        _cfg(epohcs=3)


def test_ablation_rules() -> None:
    cfg = _cfg(ablate=["siam", "cls"])
    assert cfg.resolved_weights() == {"rec": 1.0}
    assert _cfg(w_siam=0).resolved_weights() == {"rec": 1.0, "cls": 0.1}
    with pytest.raises(ConfigError, match="has no term"):
        _cfg(kind="dae", ablate=["siam"])
    with pytest.raises(ConfigError, match="no active loss term"):
        _cfg(kind="magnet", ablate=["rec"])
    with pytest.raises(ConfigError, match="'ablate' parameter"):
        _cfg(ablate=["sim"])


def test_yaml_round_trip(tmp_path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("classifier: runs/clf\nkind: hgd\nattacks:\n  - {name: fgsm, eps: ['2/255', '4/255']}\n")
    cfg = TrainDefenseConfig.from_yaml(path, epochs=3, seed=None)
    assert cfg.kind == "hgd" and cfg.epochs == 3 and cfg.seed == 0
    assert cfg.resolved_weights() == {"cls": 1.0}
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        TrainDefenseConfig.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        TrainDefenseConfig.from_yaml(tmp_path / "missing.yaml")


def test_adversary_defaults_and_refusals() -> None:
    assert _cfg().resolved_adversary() == "adaptive"  # the Siamese-DAE trains against f∘D by default
    assert [i.name for i in _cfg().adversary_mix()] == ["pgd"]
    assert _cfg(adversary="graybox").adversary_mix() == _cfg().attacks
    assert _cfg(kind="hgd").resolved_adversary() == "graybox"
    assert _cfg(kind="magnet", adversary="adaptive").resolved_adversary() == "adaptive"
    assert _cfg(kind="dae").resolved_adversary() is None and _cfg(kind="dae").adversary_mix() == []
    cfg = _cfg(adaptive_attacks=[{"name": "pgd", "eps": "4/255", "steps": 1}])
    assert cfg.adversary_mix()[0].eps == ("4/255", "4/255") and cfg.adversary_mix()[0].steps == 1
    with pytest.raises(
        ConfigError, match=r"'adversary' parameter \(--adversary\).*kind 'dae'.*Got 'graybox'"
    ):
        _cfg(kind="dae", adversary="graybox")
    with pytest.raises(ConfigError, match="'crafting' parameter must be 'on_the_fly' with the adaptive"):
        _cfg(crafting="per_epoch")
    assert _cfg(crafting="per_epoch", adversary="graybox").crafting == "per_epoch"
    with pytest.raises(ConfigError, match="adversary"):
        _cfg(adversary="whitebox")


def test_shipped_siamese_dae_pipeline_validates() -> None:
    from pathlib import Path

    from medrobust.utils.yaml_io import read_yaml_mapping

    path = Path(__file__).resolve().parents[2] / "pipelines" / "train_siamese_dae.yaml"
    cfg = TrainDefenseConfig.from_dict(read_yaml_mapping(path), str(path))
    assert cfg.kind == "siamese-dae" and cfg.resolved_adversary() == "adaptive"
    assert [a.name for a in cfg.adaptive_attacks] == ["pgd"] and cfg.adaptive_attacks[0].steps == 2
