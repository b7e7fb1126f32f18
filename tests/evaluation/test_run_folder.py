"""An audit run folder that cannot lie: input hashes, partial resume, corrupt state, --out, lock."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from medrobust.errors import ConfigError
from medrobust.evaluation.config import config_from_dict
from medrobust.evaluation.runner import run_audit
from medrobust.utils.hashing import sha256_file
from medrobust.utils.lock import LOCK_NAME, LockedError, RunLock


def _computed(out: Path) -> list[str]:
    return (out / "state" / "computed.log").read_text().splitlines()


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
    """A copy of the tiny classifier's run folder (tests replace its files)."""
    dst = tmp_path / "model"
    shutil.copytree(tiny_model, dst)
    return dst


@pytest.fixture
def small(easy_npz, audit_dict):
    """``small(model, **overrides)``: a fast audit config (FGSM at 2/255, 8 samples, no defense)."""

    def make(model: Path, **over):
        cfg = audit_dict(
            easy_npz,
            model,
            defenses=[],
            attacks=["fgsm"],
            budgets={"linf": ["2/255"]},
            n_samples=8,
            batch_size=4,
            save_examples=2,
        )
        cfg.update(over)
        return config_from_dict(cfg)

    return make


def _other_weights(folder: Path) -> None:
    """Replace the classifier's weights in ``folder`` by different ones (same path, same card)."""
    from medrobust.models import load_model, save_checkpoint

    model = load_model(folder)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    save_checkpoint(model, folder)


# -- provenance: a changed input is refused on resume --------------------------------------------
def test_replaced_weights_are_refused_and_recorded(small, model_copy, tmp_path):
    """The reproduction: audit, replace the weights at the same path, audit again into the same folder."""
    config = small(model_copy)
    out = tmp_path / "runs" / "a"
    first = run_audit(config, out, progress=False)
    weights = model_copy / "model.safetensors"
    old_sha, size = sha256_file(weights)
    prov = first["provenance"]
    assert prov["model"]["weights"] == {"path": str(weights.resolve()), "sha256": old_sha, "size": size}
    assert prov["model"]["card"]["sha256"] == sha256_file(model_copy / "card.json")[0]
    assert prov["data"]["n_files"] == 1 and prov["data"]["files"][0]["path"] == "easy.npz"
    assert f"model sha256 `{old_sha[:12]}`" in (out / "report.md").read_text()

    _other_weights(model_copy)
    new_sha = sha256_file(weights)[0]
    pattern = (
        rf"runs/a: the model weights changed since this audit began \({weights.resolve()} "
        rf"sha256 {old_sha[:6]}… → {new_sha[:6]}…\); rerun with --fresh"
    )
    with pytest.raises(ConfigError, match=pattern) as err:
        run_audit(config, out, progress=False)
    assert "\n" not in str(err.value)
    assert (
        json.loads((out / "results.json").read_text())["provenance"]["model"]["weights"]["sha256"] == old_sha
    )

    redone = run_audit(config, out, fresh=True, progress=False)
    assert redone["provenance"]["model"]["weights"]["sha256"] == new_sha
    assert _computed(out) == ["bare/whitebox/fgsm@2/255"]


def test_edited_card_is_refused(small, model_copy, tmp_path):
    config = small(model_copy)
    out = tmp_path / "run"
    run_audit(config, out, progress=False)
    card = model_copy / "card.json"
    card.write_text(json.dumps(json.loads(card.read_text()), indent=4))  # same card, other bytes
    with pytest.raises(ConfigError, match=r"the model card changed since this audit began \(.*card\.json"):
        run_audit(config, out, progress=False)


def test_changed_data_is_refused(small, tiny_model, easy_npz, tmp_path, audit_dict):
    import numpy as np

    data = tmp_path / "easy.npz"
    shutil.copy(easy_npz, data)
    config = config_from_dict(
        {
            **audit_dict(data, tiny_model, defenses=[], attacks=["fgsm"], budgets={"linf": ["2/255"]}),
            "n_samples": 4,
        }
    )
    out = tmp_path / "run"
    run_audit(config, out, progress=False)
    with np.load(data) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["test_images"][0, 0, 0] ^= 1
    np.savez(data, **arrays)
    with pytest.raises(ConfigError, match=r"the data changed since this audit began \(.*easy\.npz sha256"):
        run_audit(config, out, progress=False)


def test_replaced_defense_weights_are_refused(small, tiny_model, tmp_path):
    from medrobust.defenses import create_denoiser
    from medrobust.defenses.checkpoint import save_denoiser

    den_dir = tmp_path / "den"
    torch.manual_seed(0)
    save_denoiser(create_denoiser("dae", in_channels=1, bounds=(0.0, 1.0)), den_dir)
    config = small(tiny_model, defenses=[{"name": "dae", "path": str(den_dir)}], threats=["graybox"])
    out = tmp_path / "run"
    results = run_audit(config, out, progress=False)
    assert set(results["provenance"]["defenses"]["dae"]) == {"weights", "spec", "card"}
    torch.manual_seed(1)
    save_denoiser(create_denoiser("dae", in_channels=1, bounds=(0.0, 1.0)), den_dir)
    with pytest.raises(
        ConfigError, match=r"the weights of defense 'dae' changed .*denoiser\.safetensors sha256"
    ):
        run_audit(config, out, progress=False)


def test_describe_input_change_names_the_data_file():
    from medrobust.evaluation.state import describe_input_change

    def prov(files):
        return {"model": {}, "defenses": {}, "data": {"path": "/d", "sha256": str(files), "files": files}}

    a = [{"path": "test/1/x.png", "size": 3, "sha256": "aa" * 32}]
    b = [{"path": "test/1/x.png", "size": 3, "sha256": "bb" * 32}]
    c = [*a, {"path": "test/0/y.png", "size": 3, "sha256": "cc" * 32}]
    assert describe_input_change(prov(a), prov(b)) == (
        "the data changed since this audit began (/d/test/1/x.png sha256 aaaaaa… → bbbbbb…)"
    )
    assert "1 file(s) now read that were not, e.g. /d/test/0/y.png" in describe_input_change(prov(a), prov(c))
    assert describe_input_change(prov(a), prov(a)) is None


# -- partial resume: attacks, budgets and threats may change --------------------------------------
def test_changed_attack_list_keeps_finished_cells(small, tiny_model, tmp_path):
    out = tmp_path / "run"
    run_audit(small(tiny_model), out, progress=False)
    fgsm_file = next((out / "state" / "cells").glob("bare_whitebox_fgsm*.json"))
    before = fgsm_file.read_bytes()

    more = small(
        tiny_model,
        attacks=["fgsm", {"name": "pgd", "params": {"steps": 2}}],
        budgets={"linf": ["2/255", "4/255"]},
    )
    results = run_audit(more, out, progress=False)
    assert _computed(out) == [
        "bare/whitebox/fgsm@2/255",
        "bare/whitebox/fgsm@4/255",
        "bare/whitebox/pgd@2/255",
        "bare/whitebox/pgd@4/255",
    ]
    assert fgsm_file.read_bytes() == before  # reused as it was
    assert [c["key"] for c in results["cells"]] == _computed(out)

    fewer = small(tiny_model, attacks=[{"name": "pgd", "params": {"steps": 2}}], budgets={"linf": ["4/255"]})
    results = run_audit(fewer, out, progress=False)
    assert [c["key"] for c in results["cells"]] == ["bare/whitebox/pgd@4/255"]
    assert len(_computed(out)) == 4  # nothing recomputed


def test_changed_attack_params_recompute_that_cell_only(small, tiny_model, tmp_path):
    out = tmp_path / "run"
    attacks = ["fgsm", {"name": "pgd", "params": {"steps": 1}}]
    run_audit(small(tiny_model, attacks=attacks), out, progress=False)
    assert _computed(out) == ["bare/whitebox/fgsm@2/255", "bare/whitebox/pgd@2/255"]

    changed = small(tiny_model, attacks=["fgsm", {"name": "pgd", "params": {"steps": 4}}])
    results = run_audit(changed, out, progress=False)
    assert _computed(out) == [
        "bare/whitebox/fgsm@2/255",
        "bare/whitebox/pgd@2/255",
        "bare/whitebox/pgd@2/255",
    ]
    pgd = next(c for c in results["cells"] if c["attack"] == "pgd")
    assert pgd["params"]["steps"] == 4  # the pieces of the 1-step craft were not reused
    straight = run_audit(changed, tmp_path / "straight", progress=False)
    want = next(c for c in straight["cells"] if c["attack"] == "pgd")
    assert pgd["samples"] == want["samples"] and pgd["cell_fingerprint"] == want["cell_fingerprint"]


def test_spelled_out_default_keeps_the_cell(small, tiny_model, tmp_path):
    out = tmp_path / "run"
    run_audit(small(tiny_model, attacks=["pgd"]), out, progress=False)
    run_audit(small(tiny_model, attacks=[{"name": "pgd", "params": {"steps": 10}}]), out, progress=False)
    assert _computed(out) == ["bare/whitebox/pgd@2/255"]  # steps=10 is pgd's default


def test_piece_store_refuses_pieces_of_other_attack_settings(tmp_path):
    import numpy as np

    from medrobust.evaluation.state import BatchPiece, PieceStore

    store = PieceStore(tmp_path)
    z = np.zeros(1)
    piece = BatchPiece("bare|pgd|2/255", 0, np.array([0]), z, z, np.zeros(1, dtype=np.int64), craft_hash="h1")
    store.save("c", piece)
    assert store.load("c", "bare|pgd|2/255", 0, [], "h1").craft_hash == "h1"
    assert store.load("c", "bare|pgd|2/255", 0, [], "h2") is None


# -- corrupt state -------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b'{"id": "x", "key": ', b"\xff\xfe not json", b"[1, 2, 3]"])
def test_corrupt_cell_is_recomputed(small, tiny_model, tmp_path, caplog, content):
    out = tmp_path / "run"
    config = small(tiny_model)
    first = run_audit(config, out, progress=False)
    cell = next((out / "state" / "cells").glob("*.json"))
    cell.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="medrobust"):
        again = run_audit(config, out, progress=False)
    warned = [r.getMessage() for r in caplog.records if str(cell) in r.getMessage()]
    assert len(warned) == 1 and "recomputing it" in warned[0]
    assert _computed(out) == ["bare/whitebox/fgsm@2/255"] * 2
    assert again["cells"][0]["samples"] == first["cells"][0]["samples"]
    assert json.loads(cell.read_text())["key"] == "bare/whitebox/fgsm@2/255"


@pytest.mark.parametrize("content", ["{not json", "[]", '{"schema": "medrobust.audit-state/1"}'])
def test_corrupt_state_json_is_refused(small, tiny_model, tmp_path, content):
    out = tmp_path / "run"
    (out / "state").mkdir(parents=True)
    state_file = out / "state" / "state.json"
    state_file.write_text(content)
    with pytest.raises(ConfigError, match=rf"{state_file}: .*--fresh") as err:
        run_audit(small(tiny_model), out, progress=False)
    assert "\n" not in str(err.value)
    assert run_audit(small(tiny_model), out, fresh=True, progress=False)["cells"]


# -- --out problems ------------------------------------------------------------------------------
def test_out_that_is_a_file_or_under_a_file(small, tiny_model, tmp_path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=rf"The --out path {blocker} is a file; expected a folder"):
        run_audit(small(tiny_model), blocker, progress=False)
    with pytest.raises(
        ConfigError, match=rf"The --out folder {blocker}/run cannot be created: {blocker} is a file"
    ):
        run_audit(small(tiny_model), blocker / "run", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def test_read_only_out_is_named(small, tiny_model, tmp_path, monkeypatch):
    """Tests run as root (permission bits do not stop it): the first write fails with EROFS instead."""
    import errno

    import medrobust.utils.lock as lock_mod

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(args[0]))

    monkeypatch.setattr(lock_mod.os, "open", read_only)
    out = tmp_path / "ro"
    with pytest.raises(
        ConfigError, match=rf"The --out folder {out} is not writable \(read-only file system\)"
    ):
        run_audit(small(tiny_model), out, progress=False)


# -- the run-folder lock -------------------------------------------------------------------------
def test_second_audit_on_a_locked_folder_is_refused(small, tiny_model, tmp_path):
    import os
    import socket

    out = tmp_path / "run"
    config = small(tiny_model)
    run_audit(config, out, progress=False)
    cells = sorted((out / "state" / "cells").iterdir())
    with RunLock(out, "audit") as held:  # another audit holds the folder
        for fresh in (False, True):
            with pytest.raises(LockedError) as err:
                run_audit(config, out, fresh=fresh, progress=False)
            msg = str(err.value)
            assert msg.startswith(f"{out} is in use by another audit (pid {os.getpid()} on host ")
            assert socket.gethostname() in msg and "started 20" in msg and str(held.path) in msg
        assert sorted((out / "state" / "cells").iterdir()) == cells  # --fresh wiped nothing
        assert held.path.exists()
    assert not held.path.exists()


def test_stale_lock_of_a_dead_process_is_taken_over(small, tiny_model, tmp_path, caplog):
    import socket
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    out = tmp_path / "run"
    out.mkdir()
    owner = {"pid": pid, "host": socket.gethostname(), "started": "2020-01-01T00:00:00+00:00"}
    (out / LOCK_NAME).write_text(json.dumps(owner))
    with caplog.at_level(logging.WARNING, logger="medrobust"):
        results = run_audit(small(tiny_model), out, progress=False)
    assert results["cells"]
    assert any(
        "taking over a stale audit lock" in r.getMessage() and str(pid) in r.getMessage()
        for r in caplog.records
    )
    assert not (out / LOCK_NAME).exists()  # released at the end


def test_lock_is_released_after_an_error(tiny_model, tmp_path, audit_dict):
    from medrobust.errors import DataError

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    config = config_from_dict(audit_dict(bad, tiny_model, defenses=[]))
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"bad\.npz"):
        run_audit(config, out, progress=False)
    assert out.is_dir() and not (out / LOCK_NAME).exists()
    # a gate matching no cell is refused before the folder is even created
    with pytest.raises(ConfigError, match="matches no audit cell"):
        run_audit(config_from_dict(audit_dict(bad, tiny_model, gates=["fgsm@1/255>=0.5"])), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_lock_rules(tmp_path):
    import os
    import socket

    first = RunLock(tmp_path, "training").acquire()
    with pytest.raises(LockedError, match=r"is in use by another training \(pid"):
        RunLock(tmp_path, "training").acquire()
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()

    lock_file = tmp_path / LOCK_NAME
    # another host: never taken over
    lock_file.write_text(json.dumps({"pid": 1, "host": "elsewhere-host", "started": "x"}))
    with pytest.raises(LockedError, match="on host elsewhere-host"):
        RunLock(tmp_path).acquire()
    # this pid, but a process that started at another time (pid reused): stale
    lock_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "pid_start": "-1"}))
    taken = RunLock(tmp_path).acquire()
    assert json.loads(lock_file.read_text())["token"]
    # a lock replaced by someone else is left alone on release
    lock_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": "other"}))
    taken.release()
    assert lock_file.exists()
    # an unreadable lock: young means being written (refused), old means its writer died (taken over)
    lock_file.write_text("")
    with pytest.raises(LockedError, match="being written"):
        RunLock(tmp_path).acquire()
    os.utime(lock_file, (1, 1))
    RunLock(tmp_path).acquire().release()
    assert not lock_file.exists()


def test_only_one_of_many_concurrent_lockers_wins(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def try_lock(_):
        try:
            return RunLock(tmp_path).acquire()
        except LockedError:
            return None

    with ThreadPoolExecutor(8) as pool:
        got = [g for g in pool.map(try_lock, range(16)) if g is not None]
    assert len(got) == 1
    got[0].release()


# -- CLI and config ------------------------------------------------------------------------------
def test_cli_defense_none_removes_the_config_defenses(tiny_model, easy_npz, audit_dict, tmp_path, capsys):
    import yaml

    from medrobust.cli.main import main

    cfg = audit_dict(easy_npz, tiny_model, attacks=["fgsm"], budgets={"linf": ["2/255"]}, n_samples=4)
    cfg_path = tmp_path / "audit.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    code = main(["audit", "--config", str(cfg_path), "--defense", "none", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert [t["name"] for t in results["targets"]] == ["bare"] and results["config"]["defenses"] == []
    code = main(
        ["audit", "--config", str(cfg_path), "--defense", "none", "--defense", "median", "--out", str(out)]
    )
    assert code == 2 and "'--defense' option 'none'" in capsys.readouterr().err


def test_phantom_count_is_capped(tiny_model):
    from medrobust.limits import MAX_PHANTOM_IMAGES

    cfg = {
        "data": {"phantom": {"modality": "chest_xray", "n": MAX_PHANTOM_IMAGES + 1}},
        "model": {"path": str(tiny_model)},
        "attacks": ["fgsm"],
        "budgets": {"linf": [0.01]},
    }
    with pytest.raises(ConfigError, match=rf"data\.phantom\.n: .*less than or equal to {MAX_PHANTOM_IMAGES}"):
        config_from_dict(cfg)
    cfg["data"]["phantom"]["n"] = MAX_PHANTOM_IMAGES
    assert config_from_dict(cfg).data.phantom.n == MAX_PHANTOM_IMAGES


def test_folder_data_change_names_the_image(small, tiny_model, tmp_path, audit_dict):
    import numpy as np
    from PIL import Image

    root = tmp_path / "pngs"
    rng = np.random.default_rng(0)
    for label in ("0", "1"):
        (root / "test" / label).mkdir(parents=True)
        for i in range(3):
            img = rng.integers(40, 200, size=(32, 32), dtype=np.uint8)
            Image.fromarray(img).save(root / "test" / label / f"img{i}.png")
    config = config_from_dict(
        audit_dict(root, tiny_model, defenses=[], attacks=["fgsm"], budgets={"linf": [0.01]})
    )
    out = tmp_path / "run"
    results = run_audit(config, out, progress=False)
    files = results["provenance"]["data"]["files"]
    assert [f["path"] for f in files] == sorted(f"test/{c}/img{i}.png" for c in "01" for i in range(3))
    target = root / "test" / "1" / "img2.png"
    old = sha256_file(target)[0]
    Image.fromarray(np.full((32, 32), 99, dtype=np.uint8)).save(target)
    with pytest.raises(
        ConfigError, match=rf"the data changed since this audit began \({target} sha256 {old[:6]}…"
    ):
        run_audit(config, out, progress=False)


def test_phantom_data_are_described_by_their_spec(tmp_path):
    from types import SimpleNamespace

    from medrobust.evaluation.state import data_provenance
    from medrobust.utils.hashing import FileHasher

    def prov(n, cache="a"):
        cfg = {
            "data": {"phantom": {"modality": "chest_xray", "n": n, "cache_dir": str(tmp_path / cache)}},
            "model": {"path": str(tmp_path)},
            "attacks": ["fgsm"],
            "budgets": {"linf": [0.01]},
        }
        return data_provenance(config_from_dict(cfg), SimpleNamespace(path=tmp_path / "x.npz"), FileHasher())

    a, b = prov(40), prov(48)
    assert a["kind"] == "phantom" and a["phantom"] == {
        "modality": "chest_xray",
        "n": 40,
        "size": 64,
        "seed": 0,
    }
    assert a["sha256"] != b["sha256"] and prov(40, cache="b")["sha256"] == a["sha256"]  # cache folder ignored
