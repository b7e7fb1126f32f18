import json
import shutil

import pytest

from medrobust.denoising.config import DenoiserStudyConfig
from medrobust.denoising.study import run_study
from medrobust.errors import ConfigError
from medrobust.run.config import validate_config

TINY = {
    "seed": 0,
    "data": {"kind": "synthetic", "n": 16, "size": 16},
    "sigma": "25/255",
    "n_test": 3,
    "batch_size": 2,
    "training": {"epochs": 1, "batch_size": 8, "lr": 0.003},
    "attack": {"eps": "4/255", "steps": 2, "l2_rms": "2/255", "transfer_norms": ["linf"]},
    "models": [
        {"name": "dncnn", "arch": "dncnn", "params": {"depth": 3, "width": 4}},
        {
            "name": "ffdnet",
            "arch": "ffdnet",
            "params": {"depth": 3, "width": 4},
            "train": {"blind": True, "sigma_range": "0,50/255"},
        },
        {"name": "median", "arch": "median"},
    ],
    "hybrids": [{"name": "median-dncnn", "classical": "median", "deep": "dncnn", "mode": "blend"}],
    "gallery": 1,
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    cfg = validate_config(DenoiserStudyConfig, TINY)
    path = run_study(cfg, out)
    return cfg, out, path.read_bytes()


def test_outputs_and_schema(study):
    _, out, raw = study
    for name in ("results.json", "report.html", "report.md", "config.resolved.yaml", "environment.json"):
        assert (out / name).is_file(), name
    res = json.loads(raw)
    assert res["schema"] == "medrobust.denoiser_study" and res["schema_version"] == 1
    assert list(res["models"]) == ["dncnn", "ffdnet", "median", "median-dncnn"]
    assert res["models"]["median"]["differentiable"] is False
    wb = res["whitebox"]["linf"]
    assert wb["median"]["method"] == "bpda" and wb["dncnn"]["method"] == "gradient"
    assert wb["median-dncnn"]["method"] == "bpda"
    assert set(res["whitebox"]) == {"linf", "l2"}
    for rec in wb.values():
        assert rec["perturbation"]["linf_rel"]["max"] <= 4 / 255 * (1 + 1e-5)
        assert len(rec["per_image"]["ks_p"]) == 3
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert "NaN" not in raw.decode()  # strict JSON


def test_transfer_diagonal_equals_whitebox(study):
    _, out, raw = study
    res = json.loads(raw)
    t = res["transfer"]["linf"]
    assert t["diagonal_matches_whitebox"] is True
    for i, name in enumerate(t["members"]):
        # exactly the same numbers: the diagonal cell and the white-box mean drop
        assert t["raw_psnr_drop"][i][i] == res["whitebox"]["linf"][name]["psnr_drop"]["mean"]
        units = out / "state" / "units"
        cell = json.loads((units / "transfer" / "linf" / f"{name}__{name}.json").read_text())
        assert cell["psnr_drop"] == res["whitebox"]["linf"][name]["per_image"]["psnr_drop"]
        assert t["relative"][i][i] in (1.0, None)
        # recomputing the diagonal through the transfer path gives the very same numbers
        assert cell["recomputed_psnr_drop"] == cell["psnr_drop"]
        assert t["diagonal_recompute_max_abs_diff_db"][name] == 0.0


def test_resume_after_deleting_units_is_identical(study):
    cfg, out, raw = study
    (out / "state" / "units" / "whitebox" / "linf" / "ffdnet.json").unlink()
    (out / "state" / "units" / "transfer" / "linf" / "median__dncnn.json").unlink()
    shutil.rmtree(out / "state" / "models" / "dncnn")  # retrain: seeded, same weights
    run_study(cfg, out, report=False)
    assert (out / "results.json").read_bytes() == raw


def test_changed_config_is_refused_unless_fresh(study, tmp_path):
    _, out, _ = study
    changed = validate_config(DenoiserStudyConfig, {**TINY, "attack": {**TINY["attack"], "steps": 3}})
    with pytest.raises(ConfigError, match=r"different config.*attack.*--fresh"):
        run_study(changed, out, report=False)
    small = validate_config(
        DenoiserStudyConfig,
        {
            **TINY,
            "models": [*TINY["models"][2:], {"name": "gauss", "arch": "gaussian"}],
            "hybrids": [],
            "attack": {
                **TINY["attack"],
                "l2_rms": None,
                "classical": "spsa",
                "spsa_samples": 2,
                "clip": "extended",
            },
        },
    )
    path = run_study(small, tmp_path, report=False)
    res = json.loads(path.read_text())
    assert res["whitebox"]["linf"]["median"]["method"] == "spsa"  # gradient-free on the BPDA filter
    assert res["whitebox"]["linf"]["gauss"]["method"] == "gradient"  # differentiable filter: exact gradient
    assert res["data"]["clip_range"] == pytest.approx([-3 * 25 / 255, 1 + 3 * 25 / 255])
    run_study(small.model_copy(update={"seed": 1}), tmp_path, fresh=True, report=False)
    assert json.loads(path.read_text())["seeds"]["study"] == 1


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        (
            {"models": [{"name": "a", "arch": "dncnnn"}, {"name": "b", "arch": "median"}]},
            "Did you mean 'dncnn'",
        ),
        ({"models": [{"name": "a", "arch": "median"}, {"name": "a", "arch": "tv"}]}, "unique"),
        ({"models": [{"name": "a", "arch": "median"}]}, "at least 2"),
        ({"hybrids": [{"name": "h", "classical": "dncnn", "deep": "median"}]}, "is deep, not classical"),
        ({"hybrids": [{"name": "h", "classical": "nlm", "deep": "dncnn"}]}, "not declared"),
        ({"sigma": "300/255"}, "sigma"),
        ({"attack": {"eps": -1}}, "eps"),
        ({"attack": {"l2_rms": None, "transfer_norms": ["l2"]}}, "L2 attack is disabled"),
        ({"models": [{"name": "bad name", "arch": "median"}, {"name": "b", "arch": "tv"}]}, "letters"),
        (
            {
                "models": [
                    {"name": "m", "arch": "median", "train": {"sigma": 0.1}},
                    {"name": "b", "arch": "tv"},
                ]
            },
            "classical",
        ),
        ({"unknown_key": 1}, "unknown_key: unknown field"),
    ],
)
def test_config_validation(patch, match):
    with pytest.raises(ConfigError, match=match):
        validate_config(DenoiserStudyConfig, {**TINY, **patch})


def test_cli_study_resumes(study, capsys):
    from medrobust.cli.main import main

    _, out, raw = study
    import yaml

    cfg_path = out.parent / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    assert main(["denoisers", "study", "--config", str(cfg_path), "--out", str(out), "--no-progress"]) == 0
    assert (out / "results.json").read_bytes() == raw
    assert "median-dncnn" in capsys.readouterr().out
    assert main(["denoisers", "study", "--config", str(out / "missing.yaml"), "--out", str(out)]) == 2
