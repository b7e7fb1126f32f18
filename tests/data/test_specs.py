"""Data named by a spec: ``phantom:MODALITY`` (generated once, cached) and ``medmnist:NAME[@SIZE]``."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import medrobust.data.phantoms as phantoms
from medrobust.cli.main import main
from medrobust.data import open_source
from medrobust.data.specs import (
    DEFAULT_PHANTOM_CACHE,
    medmnist_filename,
    parse_spec,
    phantom_cache_root,
    phantom_npz_path,
)
from medrobust.errors import ConfigError, DataError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """``$MEDROBUST_CACHE`` in tmp_path; returns the phantom cache folder."""
    monkeypatch.setenv("MEDROBUST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "phantoms"


# --- phantom: ---------------------------------------------------------------------------------


def test_phantom_spec_opens_generated_npz_with_class_names(cache):
    src = open_source("phantom:chest_xray?n=40&size=32&seed=3")
    assert src.kind == "npz" and len(src) == 40
    assert src.root == phantom_npz_path("chest_xray", 40, 32, 3, cache)
    assert src.class_names == ["normal", "pneumonia"]
    assert src.spec == "phantom:chest_xray?n=40&size=32&seed=3"
    assert src.describe()["spec"] == src.spec and src.splits() == ["train", "val", "test"]
    sample = src.load(src.records("test")[0])
    assert sample["image"].shape == (1, 32, 32)
    # the pixels are the phantom generator's
    ref = phantoms.make_phantom("chest_xray", n=40, size=32, seed=3)
    imgs, _ = ref.subset("test")
    np.testing.assert_array_equal(sample["image"][0], imgs[0, 0].astype(np.float32))


def test_phantom_is_generated_once_then_reused(cache, monkeypatch):
    first = open_source("phantom:skin@28?n=20")
    assert first.spec == "phantom:skin?n=20&size=28&seed=0" and first.class_names == ["benign", "malignant"]
    stamp = os.stat(first.root).st_mtime_ns

    def no_second_write(*args, **kwargs):
        raise AssertionError("the cached phantom set was generated again")

    monkeypatch.setattr(phantoms, "write_phantom", no_second_write)
    again = open_source("phantom:skin?size=28&n=20&seed=0")
    assert again.root == first.root and os.stat(again.root).st_mtime_ns == stamp
    assert [r.label for r in again.records()] == [r.label for r in first.records()]


def test_phantom_defaults_and_cache_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDROBUST_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert phantom_cache_root() == DEFAULT_PHANTOM_CACHE  # runs/cache/phantoms, as the audit's
    src = open_source("phantom:retina_oct?n=8")  # size 64 and seed 0 by default
    assert src.spec == "phantom:retina_oct?n=8&size=64&seed=0"
    (npz,) = (tmp_path / "runs/cache/phantoms").glob("retina_oct-n8-s64-seed0-g*/retina_oct_phantom.npz")
    assert npz.parent.name == phantom_npz_path("retina_oct", 8, 64, 0).parent.name


def test_phantom_spec_takes_source_options(cache):
    src = open_source("phantom:chest_xray?n=20&size=28", class_names=["healthy", "sick"])
    assert src.class_names == ["healthy", "sick"]
    with pytest.raises(ConfigError, match=r"'kind' parameter must be 'npz' or omitted\. Got 'folder'"):
        open_source("phantom:chest_xray?n=20&size=28", kind="folder")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("phantom:chest_xrya", r"Unknown phantom modality 'chest_xrya'\. Did you mean 'chest_xray'\?"),
        ("phantom:chest_xray?sise=64", r"unknown option 'sise'\. Did you mean 'size'\?"),
        (
            "phantom:chest_xray?n=abc",
            r"'n' option of the data spec 'phantom:chest_xray\?n=abc' must be an integer",
        ),
        ("phantom:chest_xray?n=1e9", r"'n' option .* must be an integer\. Got '1e9'"),
        ("phantom:chest_xray?n=0", r"'n' parameter of phantom 'chest_xray' must be an int in \[1, "),
        ("phantom:chest_xray?n=1000000000", r"'n' parameter of phantom 'chest_xray' must be an int in \[1, "),
        ("phantom:chest_xray?n=1000000&size=512", r"'n' and 'size' parameters .* GiB in memory"),
        ("phantom:chest_xray@4", r"'size' parameter of phantom 'chest_xray' must be an int in \[28, 512\]"),
        ("phantom:chest_xray?seed=-1", r"'seed' parameter of phantom 'chest_xray'"),
        ("phantom:chest_xray?n", r"malformed option 'n'; write KEY=VALUE"),
        ("phantom:chest_xray?n=4&n=5", r"option 'n' given twice"),
        ("phantom:chest_xray@64?size=32", r"'size' given both as @SIZE and size="),
        ("phantom:", r"names no data; write a modality, e\.g\. phantom:chest_xray"),
    ],
)
def test_bad_phantom_specs_fail_before_generating(cache, spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        open_source(spec)
    assert "\n" not in str(info.value)
    assert not cache.exists()  # refused before anything was generated


def test_parse_spec_grammar():
    spec = parse_spec("MedMNIST:dermamnist@224?root=/data/mm")
    assert (spec.scheme, spec.name, spec.options) == (
        "medmnist",
        "dermamnist",
        {"size": "224", "root": "/data/mm"},
    )


def test_data_inspect_phantom_spec(cache, capsys):
    assert main(["data", "inspect", "phantom:brain_mri?n=30&size=28", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source"]["spec"] == "phantom:brain_mri?n=30&size=28&seed=0"
    assert report["source"]["kind"] == "npz" and report["n_records"] == 30
    assert report["shapes"] == {"1x28x28": 30} and report["unreadable"] == []
    assert main(["data", "inspect", "phantom:brain_mri?n=30&size=28", "--modality", "brain_mri"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("source: phantom:brain_mri?n=30&size=28&seed=0 -> ")
    assert main(["data", "inspect", "phantom:brain_mr"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "brain_mr" in err and len(err.strip().splitlines()) == 1


def test_train_classifier_reads_a_phantom_spec(cache, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "classifier", "--data", "phantom:chest_xray?n=24&size=28", "--modality", "chest_xray"]
    argv += ["--epochs", "1", "--out", str(out), "--device", "cpu", "--no-progress", "--batch-size", "8"]
    assert main(argv) == 0, capsys.readouterr().err
    card = json.loads((out / "card.json").read_text())
    assert card["class_names"] == ["normal", "pneumonia"] and card["positive_class"] == "pneumonia"


# --- medmnist: --------------------------------------------------------------------------------


def _medmnist_file(folder, name, size=28, n=(8, 2, 4), volume=False, labels=2, columns=None):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n, strict=True):
        shape = (k, size, size, size) if volume else (k, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        y = np.arange(k) % labels
        arrays[f"{split}_labels"] = (
            y[:, None] if columns is None else rng.integers(0, 2, (k, columns))
        ).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / name, **arrays)
    return folder / name


def test_medmnist_file_names_follow_the_package():
    assert medmnist_filename("pneumoniamnist") == "pneumoniamnist.npz"
    assert medmnist_filename("pneumoniamnist", 28) == "pneumoniamnist.npz"
    assert medmnist_filename("pneumoniamnist", 64) == "pneumoniamnist_64.npz"
    assert medmnist_filename("organmnist3d", 64) == "organmnist3d_64.npz"


def test_medmnist_from_the_package_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDMNIST_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = _medmnist_file(tmp_path / "home" / ".medmnist", "pneumoniamnist_64.npz", size=64)
    src = open_source("medmnist:pneumoniamnist@64")
    assert src.root == path and src.spec == "medmnist:pneumoniamnist@64"
    assert src.class_names == ["normal", "pneumonia"] and len(src) == 14
    assert src.load(src.records("val")[0])["image"].shape == (1, 64, 64)
    _medmnist_file(tmp_path / "home" / ".medmnist", "pneumoniamnist.npz", size=28)
    assert open_source("medmnist:PneumoniaMNIST").root.name == "pneumoniamnist.npz"  # 28 px: no suffix


def test_medmnist_root_option_and_environment(tmp_path, monkeypatch):
    _medmnist_file(tmp_path / "env", "dermamnist_128.npz", size=128, labels=7)
    _medmnist_file(tmp_path / "opt", "dermamnist_128.npz", size=128, labels=7)
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "env"))
    assert open_source("medmnist:dermamnist@128").root.parent == tmp_path / "env"
    src = open_source(f"medmnist:dermamnist?size=128&root={tmp_path / 'opt'}")
    assert src.root.parent == tmp_path / "opt" and src.class_names[4] == "melanoma"


def test_medmnist_3d_and_multi_label(tmp_path):
    _medmnist_file(tmp_path, "nodulemnist3d_64.npz", size=64, volume=True, n=(2, 1, 1))
    vol = open_source(f"medmnist:nodulemnist3d@64?root={tmp_path}")
    assert vol.class_names == ["benign", "malignant"]
    assert vol.load(vol.records("train")[0])["image"].shape == (1, 64, 64, 64)
    _medmnist_file(tmp_path, "chestmnist.npz", columns=14)
    chest = open_source(f"medmnist:chestmnist?root={tmp_path}&label_column=6")
    assert (
        chest.class_names == ["no pneumonia", "pneumonia"]
        and chest.spec == "medmnist:chestmnist@28?label_column=6"
    )
    with pytest.raises(ConfigError, match=r"multi-label set chestmnist; .*\?label_column=K \(0: atelectasis"):
        open_source(f"medmnist:chestmnist?root={tmp_path}")


def test_missing_medmnist_file_says_where_to_put_which_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "mm"))
    with pytest.raises(DataError) as info:
        open_source("medmnist:octmnist@224")
    message = str(info.value)
    assert info.value.path == str(tmp_path / "mm" / "octmnist_224.npz")
    assert "never downloads" in message and f"place octmnist_224.npz in {tmp_path / 'mm'}" in message
    assert "does not exist yet" in message and "zenodo.org/records/10519652/files/octmnist_224.npz" in message
    assert not (tmp_path / "mm").exists()  # nothing created, nothing fetched
    assert main(["data", "inspect", "medmnist:octmnist@224"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "octmnist_224.npz" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("medmnist:pneumoniamnis", r"unknown 'pneumoniamnis'\. Did you mean 'pneumoniamnist'\?"),
        (
            "medmnist:organmnist3d@128",
            r"'size' option .* must be one of \[28, 64\] for organmnist3d\. Got '128'",
        ),
        ("medmnist:pathmnist@100", r"must be one of \[28, 64, 128, 224\] for pathmnist\. Got '100'"),
        ("medmnist:pathmnist?label_column=1", r"'label_column' option .* applies to multi-label sets"),
        ("medmnist:pathmnist?split=test", r"unknown option 'split'"),
    ],
)
def test_bad_medmnist_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        open_source(spec)


def test_concurrent_first_use_gives_one_readable_file(cache):
    from concurrent.futures import ThreadPoolExecutor

    from medrobust.data import phantom_npz

    with ThreadPoolExecutor(2) as pool:  # two torchrun ranks opening the same spec at once
        paths = list(pool.map(lambda _: phantom_npz("retina_fundus", n=12, size=28), range(2)))
    assert paths[0] == paths[1] and paths[0].is_file()
    assert [p.name for p in cache.rglob(".*")] == []  # no private folders or temp files left
    assert len(open_source("phantom:retina_fundus?n=12&size=28")) == 12


def test_a_cache_written_by_another_generator_version_is_not_read(tmp_path, monkeypatch):
    """The cache folder names the generator's code, so phantoms cached by older code are never reused."""
    from medrobust.data.phantoms.base import PHANTOMS
    from medrobust.data.specs import generator_tag

    monkeypatch.delenv("MEDROBUST_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "runs/cache/phantoms/chest_xray-n8-s32-seed0"  # the name before the tag
    stale.mkdir(parents=True)
    (stale / "chest_xray_phantom.npz").write_bytes(b"PK\x03\x04 drawn by an older generator")
    src = open_source("phantom:chest_xray?n=8&size=32")
    tag = generator_tag(PHANTOMS.get("chest_xray"))
    assert len(tag) == 8 and int(tag, 16) >= 0
    assert src.root.parent.name == f"chest_xray-n8-s32-seed0-g{tag}" and len(src) == 8
