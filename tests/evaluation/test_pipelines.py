"""The shipped pipelines/*.yaml validate (model paths swapped for existing folders)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medrobust.evaluation.config import config_from_dict
from medrobust.evaluation.planning import plan_audit

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


@pytest.mark.parametrize("name", ["chest_xray", "brain_mri", "retina", "skin", "demo"])
def test_pipeline_validates(name, tmp_path):
    data = yaml.safe_load((PIPELINES / f"{name}.yaml").read_text())
    data["model"]["path"] = str(tmp_path)
    for d in data.get("defenses", []):
        if "path" in d:
            d["path"] = str(tmp_path)
    if "source" in data["data"]:
        data["data"]["source"] = str(tmp_path)
    cfg = config_from_dict(data, name)
    assert {a.name for a in cfg.attacks} == {"fgsm", "pgd", "cw", "deepfool", "spsa", "autoattack"}
    assert cfg.threats[:2] == ["graybox", "adaptive"] and cfg.budgets.linf and cfg.budgets.l2
    assert cfg.threats[2:] == (["certified"] if name == "demo" else [])  # the demo certifies too
    plan = plan_audit(cfg)
    assert {c.threat for c in plan.cells} == {"whitebox", "graybox", "adaptive"}
    if name != "demo":  # the shipped pipelines evaluate defenses under the defense protocol, EOT on
        assert cfg.protocol == "defense" and cfg.eot.mode == "auto"


def test_demo_yaml_matches_the_demo(tmp_path):
    from medrobust.evaluation import demo

    shipped = yaml.safe_load((PIPELINES / "demo.yaml").read_text())
    built = demo.demo_audit_config(Path("runs/demo"))
    for key in ("attacks", "budgets", "threats", "n_samples", "batch_size", "seed", "notes", "name"):
        assert shipped[key] == built[key], key
    assert shipped["model"]["path"] == built["model"]["path"]
    # the audit reads the held-out phantom set (another seed than the training data), whole
    assert shipped["data"] == built["data"] and shipped["data"]["split"] == "all"
    assert shipped["data"]["phantom"] == {**demo.AUDIT_DATA, "cache_dir": "runs/demo/data"}
    assert built["n_samples"] == demo.AUDIT_DATA["n"] and demo.AUDIT_DATA["seed"] != demo.DATA["seed"]
    from medrobust.evaluation.statistics import wilson_half_width

    assert wilson_half_width(built["n_samples"]) <= 0.10  # headline intervals at most ±10 points
