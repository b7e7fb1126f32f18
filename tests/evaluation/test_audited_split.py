"""What was audited: a folder without splits is audited whole, --split all works, counts are printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medrobust.cli.main import main


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory, easy_npz) -> Path:
    """17 images in class folders "0"/"1" with no train/val/test sub-folders (a held-out test folder)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("flat") / "heldout"
    with np.load(easy_npz) as z:
        images, labels = z["test_images"][:17], z["test_labels"][:17, 0]
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        folder = root / str(int(y))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"img{i:02d}.png")
    return root


def _argv(model, data, out, *extra):
    return [
        "audit",
        "--model",
        str(model),
        "--data",
        str(data),
        "--modality",
        "chest_xray",
        "--attacks",
        "fgsm",
        "--eps",
        "2/255",
        "--samples",
        "100",
        "--defense",
        "none",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_folder_without_splits_is_audited_whole(flat_folder, tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(tiny_model, flat_folder, out)) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    data = results["data"]
    assert data["n"] == data["n_available"] == 17 and len(data["labels"]) == 17
    assert data["split"] == "all" and data["split_requested"] == "auto"
    assert "no split of its own" in data["split_reason"]
    counts = {k: int(v) for k, v in data["class_counts"].items()}
    assert sum(counts.values()) == 17 and all(counts.values())
    first = printed.splitlines()[0]
    assert first.startswith("audited: split all (every record: the source has no split of its own)")
    assert f"0 {counts['0']}, 1 {counts['1']}" in first
    report = (out / "report.md").read_text()
    assert "17 of the split's 17 images audited" in report.split("##")[1]  # the report's first section


def test_split_all_and_explicit_split_on_a_source_with_its_own_splits(easy_npz, tiny_model, tmp_path, capsys):
    out = tmp_path / "all"
    assert main(_argv(tiny_model, easy_npz, out, "--split", "all", "--samples", "50")) == 0
    data = json.loads((out / "results.json").read_text())["data"]
    assert data["split"] == "all" and data["n_available"] == 216 and data["n"] == 50
    out = tmp_path / "auto"
    assert main(_argv(tiny_model, easy_npz, out, "--samples", "8")) == 0
    data = json.loads((out / "results.json").read_text())["data"]
    assert data["split"] == "test" and data["n_available"] == 40
    assert data["split_reason"] == "the source's own test split"
    capsys.readouterr()


def test_a_model_trained_on_the_folder_audits_its_held_out_part(flat_folder, tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "config.yaml").write_text(f"data: {flat_folder}\nmodality: chest_xray\n")
    out = tmp_path / "run"
    assert main(_argv(model, flat_folder, out)) == 0
    data = json.loads((out / "results.json").read_text())["data"]
    assert data["split"] == "test" and data["n"] < 17
    assert "trained on this source" in data["split_reason"]


def test_unknown_split_names_the_field(easy_npz, tiny_model, audit_dict):
    from medrobust.errors import ConfigError
    from medrobust.evaluation.config import config_from_dict

    cfg = audit_dict(easy_npz, tiny_model)
    cfg["data"]["split"] = "tset"
    with pytest.raises(ConfigError, match=r"data\.split: unknown split 'tset'.*'auto', 'all'"):
        config_from_dict(cfg)
    for name in ("auto", "all", "Testing", None):
        cfg["data"]["split"] = name
        assert config_from_dict(cfg).data.split == name


def test_a_manifest_with_patients_gets_cluster_bootstrap_intervals(easy_npz, tiny_model, tmp_path, capsys):
    from PIL import Image

    with np.load(easy_npz) as z:
        images, labels = z["test_images"][:24], z["test_labels"][:24, 0]
    rows = ["path,label,patient"]
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(img).save(tmp_path / f"im{i:02d}.png")
        rows.append(f"im{i:02d}.png,{int(y)},P{i // 3:02d}")  # 8 patients, 3 images each
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    assert main(_argv(tiny_model, tmp_path / "manifest.csv", out)) == 0
    capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    data = results["data"]
    assert data["n"] == 24 and data["n_patients"] == 8
    assert data["clusters"] == [i // 3 for i in range(24)]  # anonymous numbers, not the patient ids
    assert "P00" not in (out / "results.json").read_text()
    assert results["statistics"]["clustered"] and results["statistics"]["n_clusters"] == 8
    iv = results["cells"][0]["intervals"]["robust_accuracy"]
    assert iv["method"] == "cluster-bootstrap" and iv["n_clusters"] == 8
