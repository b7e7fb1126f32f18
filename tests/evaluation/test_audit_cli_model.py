"""The audit CLI on the models and data users bring: phantom specs shared with training, ``--weights``."""

from __future__ import annotations

import json

import pytest

from medrobust.cli.main import main


@pytest.fixture
def phantom_cache(tmp_path, monkeypatch):
    """Phantom sets generated under ``tmp_path`` (``$MEDROBUST_CACHE``), never in the working folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDROBUST_CACHE", str(cache))
    return cache / "phantoms"


def test_audit_of_a_model_trained_on_phantom_spec_data(tmp_path, phantom_cache, capsys):
    """train classifier --data phantom:... names classes normal/pneumonia; the audit's phantom data agree."""
    clf = tmp_path / "clf"
    train = ["train", "classifier", "--data", "phantom:chest_xray?n=40&size=32", "--modality", "chest_xray"]
    train += ["--arch", "small_cnn", "--size", "32", "--epochs", "1", "--out", str(clf), "--device", "cpu"]
    assert main([*train, "--no-progress"]) == 0
    card = json.loads((clf / "card.json").read_text())
    assert card["class_names"] == ["normal", "pneumonia"]

    out = tmp_path / "audit"
    argv = ["audit", "--model", str(clf), "--data", "phantom:chest_xray@32?n=40", "--attacks", "fgsm"]
    argv += ["--eps", "2/255", "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert [c["attack"] for c in results["cells"]] == ["fgsm"]
    data = results["data"]
    assert set(data["class_counts"]) == {"normal", "pneumonia"} and data["n"] == 6  # the test split
    # the same spec names the same file in training and in the audit
    npz = phantom_cache / "chest_xray-n40-s32-seed0" / "chest_xray_phantom.npz"
    assert data["source"] == str(npz) and npz.is_file()
    assert len(list(phantom_cache.iterdir())) == 1


def test_phantom_block_and_spec_open_the_same_file_and_classes(tmp_path, phantom_cache):
    from types import SimpleNamespace

    from medrobust.data import open_source
    from medrobust.evaluation.targets import open_configured_source

    block = SimpleNamespace(modality="skin", n=24, size=32, seed=1, cache_dir=None)
    source, path = open_configured_source(SimpleNamespace(source=None, phantom=block, kind=None))
    spec = open_source("phantom:skin@32?n=24&seed=1")
    assert source.class_names == spec.class_names and source.class_names[0] != "0"
    assert str(path) == str(spec.root) and source.spec == spec.spec == "phantom:skin?n=24&size=32&seed=1"
    # an explicit cache folder is honoured (the same file name under it)
    own = SimpleNamespace(**{**vars(block), "cache_dir": tmp_path / "own"})
    _, other = open_configured_source(SimpleNamespace(source=None, phantom=own, kind=None))
    assert other == tmp_path / "own" / "skin-n24-s32-seed1" / "skin_phantom.npz" and other.is_file()
