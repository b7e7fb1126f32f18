"""The demo's certified threat: planned from pipelines/demo.yaml (no training); how the report shows it."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import pytest
import yaml

from medrobust.evaluation import demo
from medrobust.evaluation.config import config_from_dict
from medrobust.evaluation.planning import plan_audit

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def _shipped(tmp_path: Path) -> dict:
    """pipelines/demo.yaml with its run folders swapped for an existing folder (nothing is trained)."""
    data = yaml.safe_load((PIPELINES / "demo.yaml").read_text(encoding="utf-8"))
    data["model"]["path"] = str(tmp_path)
    for d in data["defenses"]:
        d["path"] = str(tmp_path)
    return data


def test_demo_config_plans_a_certified_cell_per_target_and_radius(tmp_path):
    data = _shipped(tmp_path)
    assert data["certify"] == demo.CERTIFY == demo.demo_audit_config(tmp_path)["certify"]
    cfg = config_from_dict(data, "demo")
    assert "certified" in cfg.threats and cfg.certify is not None
    assert float(cfg.certify.sigma) == 0.25 and cfg.certify.n0 + cfg.certify.n <= 64  # seconds per target
    plan = plan_audit(cfg, (0.0, 1.0), image_size=[64, 64])
    keys = [c.key for c in plan.certified]
    assert keys == [
        f"{t}/certified/certified@{r}" for t in ("bare", "siamese-dae", "dae") for r in ("0.25", "0.5", "1")
    ]
    assert {c.threat for c in plan.certified} == {"certified"} and {c.norm for c in plan.certified} == {"l2"}
    assert [float(c.eps) for c in plan.certified[:3]] == [0.25, 0.5, 1.0]
    # certified cells are not crafts: the empirical cells are those of the two threat models
    assert {c.threat for c in plan.cells} == {"whitebox", "graybox", "adaptive"}
    assert not any(k.attack == "certified" for k in plan.crafts)


def test_demo_certify_settings_can_certify_radius_025_but_not_05():
    """Radius 0.25 is reachable with the demo's draws (all n on the true class); 0.5 is not."""
    from medrobust.defenses.certify import lower_confidence_bound
    from medrobust.reporting.writers import max_certifiable_radius

    sigma, n, alpha = demo.CERTIFY["sigma"], demo.CERTIFY["n"], demo.CERTIFY["alpha"]
    top = max_certifiable_radius(sigma, n, alpha)
    assert top == pytest.approx(sigma * NormalDist().inv_cdf(lower_confidence_bound(n, n, alpha)), rel=1e-6)
    assert 0.25 < top < 0.5
    # the fewest estimation draws on the true class that certify 0.25
    z = NormalDist().inv_cdf
    needed = next(k for k in range(1, n + 1) if sigma * z(lower_confidence_bound(k, n, alpha)) >= 0.25)
    assert needed == n - 1


def _document(predictions: list[int], radii: list[float], eps: float, abstained: int = 0):
    from medrobust.evaluation.results import AuditDocument

    labels = [0, 1, 0, 1]
    hits = [p == y and r >= eps for p, y, r in zip(predictions, labels, radii, strict=True)]
    cell = {
        "target": "siamese-dae",
        "threat": "certified",
        "attack": "certified",
        "norm": "l2",
        "eps": eps,
        "eps_label": f"{eps:g}",
        **{k: demo.CERTIFY[k] for k in ("sigma", "n0", "alpha")},
        "n_draws": demo.CERTIFY["n"],
        "n_abstained": abstained,
        "metrics": {"n": 4, "robust_accuracy": sum(hits) / 4, "clean_accuracy": 0.5},
        "intervals": {
            "robust_accuracy": {"value": sum(hits) / 4, "ci": [0.0, 0.9], "method": "clopper-pearson"}
        },
        "samples": {
            "position": [0, 1, 2, 3],
            "label": labels,
            "prediction": predictions,
            "radius": radii,
            "certified": hits,
        },
    }
    return AuditDocument.from_dict(
        {
            "bounds": [0.0, 1.0],
            "data": {"spatial_size": [64, 64], "class_names": ["normal", "pneumonia"]},
            "model": {"card": {"in_channels": 1}},
            "certified": [cell],
        }
    )


def test_report_says_what_the_radius_means_and_when_a_number_is_no_evidence():
    from medrobust.reporting.writers import certified_table

    (row,) = certified_table(_document([0, 1, 0, 0], [0.3, 0.27, 0.1, 0.3], 0.25))
    # 0.25 spread evenly over 64x64 values is 0.25 / 64 = 0.0039 = 1/255 of the [0, 1] range
    assert row["per_pixel"] == "1/255 per pixel if spread evenly over 4096 values"
    assert row["note"] == "" and row["certified"].ci == [0.0, 0.9]
    (row,) = certified_table(_document([0, 1, 0, 0], [0.3, 0.27, 0.1, 0.3], 0.5))
    assert row["per_pixel"].startswith("2/255 per pixel")
    assert row["note"] == "beyond the largest radius 40 draws can certify (0.308)"
    (row,) = certified_table(_document([1, 1, 1, 1], [0.3] * 4, 0.25))
    assert row["note"] == "predicts pneumonia for every sample: the accuracy is at most that class's share"
    (row,) = certified_table(_document([1, -1, 1, 1], [0.3, 0.0, 0.3, 0.3], 0.25, abstained=1))
    assert "predicts pneumonia whenever it does not abstain" in row["note"]
