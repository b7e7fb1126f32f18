"""Hostile cases for the audit's run folder: --out, resume state, changed inputs, the lock, options."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ._case import Call, hostile
from ._fixtures import tiny_classifier_run, write_yaml

SIZE = 32


def _npz(path: Path) -> Path:
    """A tiny MedMNIST-layout npz (two classes, SIZE x SIZE grey images)."""
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 4), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, SIZE, SIZE), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def _audit(d: Path, *extra: str, out: Path | None = None) -> list[str]:
    """A tiny, fast audit of an untrained classifier on the npz (FGSM at 2/255 on 4 samples)."""
    model = d / "model" if (d / "model").exists() else tiny_classifier_run(d / "model", SIZE)
    data = d / "data.npz" if (d / "data.npz").exists() else _npz(d / "data.npz")
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
        "4",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out or d / "out"),
        *extra,
    ]


def _finished_run(d: Path) -> list[str]:
    """Run the tiny audit into ``d/out`` (before the case's snapshot) and return its argv."""
    from medrobust.cli.main import main

    argv = _audit(d)
    code = main(argv)
    if code != 0:
        raise RuntimeError(f"the hostile case's preparatory audit failed with exit {code}")
    return argv


# -- --out ---------------------------------------------------------------------------------------
@hostile("audit-out-is-a-file")
def _out_file(d: Path) -> Call:
    blocker = d / "report.txt"
    blocker.write_text("a file, not a folder\n")
    return Call(_audit(d, out=blocker), names=("report.txt",))


@hostile("audit-out-under-a-file")
def _out_under_file(d: Path) -> Call:
    blocker = d / "blocker"
    blocker.write_text("a file, not a folder\n")
    return Call(_audit(d, out=blocker / "run"), names=(f"{blocker} is a file",))


# -- resume state --------------------------------------------------------------------------------
@hostile("audit-state-json-corrupt")
def _state_corrupt(d: Path) -> Call:
    argv = _audit(d)
    (d / "out" / "state").mkdir(parents=True)
    (d / "out" / "state" / "state.json").write_bytes(b'{"schema": "medrobust.audit-state/2", "fing')
    return Call(argv, names=("state.json",))


@hostile("audit-state-json-wrong-shape")
def _state_list(d: Path) -> Call:
    argv = _audit(d)
    (d / "out" / "state").mkdir(parents=True)
    (d / "out" / "state" / "state.json").write_text("[1, 2, 3]")
    return Call(argv, names=("state.json",))


@hostile("audit-cell-json-truncated")
def _cell_truncated(d: Path) -> Call:
    """A truncated finished cell is recomputed (a warning names it): exit 0, results written."""
    argv = _finished_run(d)
    cell = next((d / "out" / "state" / "cells").glob("*.json"))
    cell.write_bytes(cell.read_bytes()[:40])
    (d / "out" / "results.json").unlink()
    return Call(argv, names=(), exit_code=0)


@hostile("audit-cell-json-wrong-shape")
def _cell_shape(d: Path) -> Call:
    argv = _finished_run(d)
    cell = next((d / "out" / "state" / "cells").glob("*.json"))
    cell.write_text(json.dumps({"key": "bare/whitebox/fgsm@2/255", "metrics": []}))
    return Call(argv, names=(), exit_code=0)


@hostile("audit-resume-changed-model-weights")
def _changed_weights(d: Path) -> Call:
    """The stale-resume reproduction: new weights at the same path are refused, naming them."""
    import torch

    from medrobust.models import load_model, save_checkpoint

    argv = _finished_run(d)
    model = load_model(d / "model")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    save_checkpoint(model, d / "model")
    return Call(argv, names=("the model weights changed since this audit began",))


@hostile("audit-resume-changed-card")
def _changed_card(d: Path) -> Call:
    argv = _finished_run(d)
    card = d / "model" / "card.json"
    card.write_text(json.dumps(json.loads(card.read_text()), indent=1))
    return Call(argv, names=("the model card changed",))


@hostile("audit-locked-by-live-process")
def _locked(d: Path) -> Call:
    """A lock held by a live process (this test process) refuses the audit, naming the owner."""
    (d / "out").mkdir()
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2024-05-01T10:00:00+00:00"}
    (d / "out" / "medrobust.lock").write_text(json.dumps(owner))
    return Call(_audit(d), names=(f"pid {os.getpid()} on host {socket.gethostname()}, started 2024-05-01",))


# -- config and options --------------------------------------------------------------------------
@hostile("audit-phantom-billion-images")
def _phantom_bomb(d: Path) -> Call:
    model = tiny_classifier_run(d / "model", SIZE)
    cfg = write_yaml(
        d / "audit.yaml",
        "data:\n  phantom: {modality: chest_xray, n: 1000000000, size: 32}\n"
        f"model: {{path: {model}}}\nattacks: [fgsm]\nbudgets: {{linf: [2/255]}}\nn_samples: 4\n",
    )
    return Call(
        ["audit", "--config", str(cfg), "--out", str(d / "out")], names=("data.phantom.n",), bomb=True
    )


@hostile("audit-yaml-unknown-keys")
def _unknown_keys(d: Path) -> Call:
    model = tiny_classifier_run(d / "model", SIZE)
    data = _npz(d / "data.npz")
    cfg = write_yaml(
        d / "audit.yaml",
        f"data: {{source: {data}, preset: chest_xray, splt: test}}\nmodel: {{path: {model}}}\n"
        "attacks: [fgsm]\nbudgets: {linf: [2/255]}\nthreat_models: [adaptive]\n",
    )
    return Call(
        ["audit", "--config", str(cfg), "--out", str(d / "out")], names=("data.splt", "threat_models")
    )


@hostile("audit-defense-missing-folder")
def _defense_missing(d: Path) -> Call:
    return Call(_audit(d, "--defense", str(d / "nope" / "siamese")), names=("nope/siamese",))


@hostile("audit-defense-none-with-another")
def _defense_none_and_more(d: Path) -> Call:
    return Call(_audit(d, "--defense", "none", "--defense", "median"), names=("--defense",))


for _label, _value in (("division-by-zero", "2/0"), ("word", "abc"), ("negative", "-1"), ("nan", "nan")):

    def _build(d: Path, value: str = _value) -> Call:
        argv = _audit(d)
        argv[argv.index("--eps") + 1] = value
        return Call(argv, names=("budgets.linf",))

    hostile(f"audit-eps-garbage-{_label}")(_build)


@hostile("audit-n-zero")
def _n_zero(d: Path) -> Call:
    argv = _audit(d)
    argv[argv.index("--samples") + 1] = "0"
    return Call(argv, names=("n_samples",))
