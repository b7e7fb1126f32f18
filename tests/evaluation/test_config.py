"""Audit config validation, gate grammar and planning (no models run)."""

from __future__ import annotations

import hashlib
import math

import pytest
import yaml

from medrobust.errors import ConfigError
from medrobust.evaluation.config import config_from_dict, eps_label, load_config
from medrobust.evaluation.gate import evaluate_gates, parse_gate
from medrobust.evaluation.planning import plan_audit
from medrobust.run.seeds import derive_seed


@pytest.fixture
def base(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    data = tmp_path / "data.npz"
    data.write_bytes(b"")
    return {
        "data": {"source": str(data), "preset": "chest_xray"},
        "model": {"path": str(model)},
        "attacks": ["fgsm", {"name": "pgd", "params": {"steps": 3}}, "deepfool"],
        "budgets": {"linf": ["2/255", 0.03], "l2": [0.5]},
    }


def test_valid_config_parses_fractions_and_defaults(base):
    cfg = config_from_dict(base)
    assert cfg.budgets.linf == ["2/255", 0.03]  # kept as written; converted with the card's bounds
    assert cfg.threats == ["graybox", "adaptive"]
    assert [a.label for a in cfg.attacks] == ["fgsm", "pgd", "deepfool"]
    assert cfg.attacks[2].minimal and not cfg.attacks[1].minimal
    assert cfg.attacks[2].norm == "l2"
    assert eps_label(2 / 255) == "2/255" and eps_label(0.5) == "0.5" and eps_label(math.inf) == "inf"


def test_unknown_attack_did_you_mean(base):
    base["attacks"] = ["fgsm", "deepfol"]
    with pytest.raises(ConfigError) as info:
        config_from_dict(base)
    msg = str(info.value)
    assert "attacks.1" in msg and "Did you mean 'deepfool'" in msg


@pytest.mark.parametrize("bad", ["2/0", "abc", -0.1, 0, None])
def test_bad_eps_names_the_field(base, bad):
    base["budgets"]["linf"] = ["2/255", bad] if bad is not None else [None]
    with pytest.raises(ConfigError, match=r"budgets\.linf"):
        config_from_dict(base)


def test_missing_model_file(base, tmp_path):
    base["model"]["path"] = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"model\.path: model not found: .*nope"):
        config_from_dict(base)


def test_missing_data_file(base, tmp_path):
    base["data"]["source"] = str(tmp_path / "missing.npz")
    with pytest.raises(ConfigError, match=r"data\.source: data source not found"):
        config_from_dict(base)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="audit config not found"):
        load_config(tmp_path / "x.yaml")


def test_unknown_field_and_reserved_param(base):
    bad = {**base, "atacks": []}
    with pytest.raises(ConfigError, match=r"atacks: unknown field"):
        config_from_dict(bad)
    base["attacks"] = [{"name": "pgd", "params": {"eps": 0.1}}]
    with pytest.raises(ConfigError, match="use 'budgets' for eps"):
        config_from_dict(base)
    base["attacks"] = [{"name": "pgd", "params": {"stepz": 3}}]
    with pytest.raises(ConfigError, match=r"no parameter\(s\) \['stepz'\]"):
        config_from_dict(base)


def test_bounded_attack_needs_budget(base):
    base["attacks"] = ["pgd-l2"]
    base["budgets"] = {"linf": ["2/255"]}
    with pytest.raises(ConfigError, match=r"bounded l2 attack but budgets\.l2 is empty"):
        config_from_dict(base)


def test_defense_validation(base, tmp_path):
    base["defenses"] = [{"name": "m", "denoiser": "mediam"}]
    with pytest.raises(ConfigError, match="Did you mean 'median'"):
        config_from_dict(base)
    base["defenses"] = [{"name": "m", "denoiser": "median", "path": str(tmp_path)}]
    with pytest.raises(ConfigError, match="exactly one of 'path' or 'denoiser'"):
        config_from_dict(base)
    base["defenses"] = [{"name": "m", "path": str(tmp_path / "nodir")}]
    with pytest.raises(ConfigError, match="denoiser run folder not found"):
        config_from_dict(base)


def test_yaml_round_trip_and_fingerprint(base, tmp_path):
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(base))
    cfg = load_config(path)
    same = load_config(path, {"gates": ["pgd@2/255>=0.5"], "name": "other"})
    assert cfg.fingerprint() == same.fingerprint()  # gates and name do not change results
    changed = load_config(path, {"n_samples": 7})
    assert changed.fingerprint() != cfg.fingerprint()
    path.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_plan_cells_and_seeds(base):
    base["defenses"] = [{"name": "med", "denoiser": "median"}]
    cfg = config_from_dict({**base, "seed": 7})
    plan = plan_audit(cfg)
    keys = [c.key for c in plan.cells]
    assert len(keys) == len(set(keys))
    # bounded: 2 attacks x 2 eps x (bare whitebox + med graybox + med adaptive) = 12
    # deepfool: (l2 budget 0.5 + inf) x 3 = 6
    assert len(keys) == 18
    assert "bare/whitebox/pgd@2/255" in keys and "med/adaptive/deepfool@inf" in keys
    assert "med/graybox/deepfool@0.5" in keys
    craft = next(c for c in plan.crafts if c.key == "med|pgd|2/255")
    expected = int.from_bytes(hashlib.sha256(b"7:med|pgd|2/255").digest()[:4], "big") & 0x7FFFFFFF
    assert craft.seed == expected == derive_seed(7, "med|pgd|2/255")
    assert len({c.seed for c in plan.crafts}) == len(plan.crafts)
    only_adaptive = plan_audit(config_from_dict({**base, "threats": ["adaptive"]}))
    assert not any(c.threat == "graybox" for c in only_adaptive.cells)


def test_gate_grammar():
    g = parse_gate("pgd@2/255>=0.60")
    assert (g.attack, g.metric, g.op, g.target, g.threat) == ("pgd", "robust_accuracy", ">=", None, None)
    assert g.eps == pytest.approx(2 / 255) and g.value == pytest.approx(0.6)
    g = parse_gate("pgd@8/255:target=siamese:threat=adaptive:balanced_accuracy > 50%")
    assert (g.target, g.threat, g.metric, g.op, g.value) == (
        "siamese",
        "adaptive",
        "balanced_accuracy",
        ">",
        0.5,
    )
    assert math.isinf(parse_gate("cw@inf:median_l2>=0.1").eps)
    assert parse_gate("*@*<=1").attack is None
    for bad in ["pgd>=0.6", "pgd@2/255", "pgd@2/255=>0.6", "__import__('os')@1>=0", "pgd@2/255>=abc"]:
        with pytest.raises(ConfigError, match="Cannot parse gate"):
            parse_gate(bad)
    with pytest.raises(ConfigError, match="Did you mean 'robust_accuracy'"):
        parse_gate("pgd@2/255:robust_acuracy>=0.5")


def test_gate_evaluation():
    cells = [
        {
            "target": "bare",
            "threat": "whitebox",
            "attack": "pgd",
            "eps": 2 / 255,
            "eps_label": "2/255",
            "metrics": {"robust_accuracy": 0.7, "clean_auroc": None},
        },
        {
            "target": "med",
            "threat": "adaptive",
            "attack": "pgd",
            "eps": 2 / 255,
            "eps_label": "2/255",
            "metrics": {"robust_accuracy": 0.4, "clean_auroc": 0.9},
        },
    ]
    ok, bad, undefined = evaluate_gates(
        [
            parse_gate("pgd@2/255:target=bare>=0.6"),
            parse_gate("pgd@2/255>=0.6"),
            parse_gate("pgd@2/255:clean_auroc>=0.5"),
        ],
        cells,
    )
    assert ok.passed and ok.checked == ["bare/whitebox/pgd@2/255"]
    assert not bad.passed and bad.failures == [("med/adaptive/pgd@2/255", 0.4)]
    assert undefined.failures == [("bare/whitebox/pgd@2/255", None)]
    with pytest.raises(ConfigError, match="matches no audit cell"):
        evaluate_gates([parse_gate("fgsm@2/255>=0.1")], cells)
    with pytest.raises(ConfigError, match="'auroc' under attack cannot be gated"):
        parse_gate("pgd@2/255:auroc>=0.5")  # descriptive under untargeted attacks


def test_budgets_convert_once_with_the_card_bounds(base):
    from medrobust.evaluation.planning import resolve_budgets

    base["budgets"] = {"linf": ["8/255", 2.0, "2/255", 0.03, "2/255"], "l2": ["0.5"]}
    cfg = config_from_dict(base)
    assert cfg.budgets.linf == ["2/255", 0.03, "8/255", 2.0] and cfg.budgets.l2 == [0.5]
    unit = resolve_budgets(cfg, (0.0, 1.0))["linf"]
    assert [(b.label, b.value) for b in unit] == [
        ("2/255", pytest.approx(2 / 255)),
        ("0.03", 0.03),
        ("8/255", pytest.approx(8 / 255)),
        ("2", 2.0),
    ]
    ct = resolve_budgets(cfg, (-1024.0, 3071.0))["linf"]  # a plain number is HU, never refused as tiny
    assert [(b.label, b.value) for b in ct] == [
        ("0.03", 0.03),
        ("2", 2.0),
        ("2/255", pytest.approx(2 / 255 * 4095)),
        ("8/255", pytest.approx(8 / 255 * 4095)),
    ]
    plan = plan_audit(cfg, (-1024.0, 3071.0))
    assert {c.key: c.eps for c in plan.cells}["bare/whitebox/pgd@2/255"] == pytest.approx(32.118, abs=1e-3)
    assert plan_audit(cfg).cells[0].eps is None  # names only before the card is read
    # "2/255" and its decimal read alike: one budget on [0, 1], refused where they differ
    base["budgets"] = {"linf": ["2/255", 2 / 255], "l2": [0.5]}
    cfg = config_from_dict(base)
    assert len(resolve_budgets(cfg, (0.0, 1.0))["linf"]) == 1
    with pytest.raises(ConfigError, match=r"'budgets\.linf' values .* both read 2/255"):
        resolve_budgets(cfg, (-1024.0, 3071.0))


def test_gates_name_budgets_as_written():
    ct_cell = {"target": "bare", "threat": "whitebox", "attack": "pgd", "eps": 32.12, "eps_label": "2/255"}
    assert parse_gate("pgd@2/255>=0.5").matches(ct_cell)
    assert not parse_gate("pgd@32.12>=0.5").matches(ct_cell)
    assert not parse_gate("pgd@inf>=0.5").matches(ct_cell)
    unit_cell = {**ct_cell, "eps": 0.25, "eps_label": "0.25"}
    assert parse_gate("pgd@1/4>=0.5").matches(unit_cell)
    assert parse_gate("pgd@0.2500001>=0.5").matches(unit_cell)
    assert parse_gate("pgd@inf>=0.5").matches({**ct_cell, "eps": None, "eps_label": "inf"})
