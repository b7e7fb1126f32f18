"""Resume after a killed audit process: finished cells are kept, none is computed twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml

from medrobust.errors import ConfigError
from medrobust.evaluation.config import load_config
from medrobust.evaluation.runner import run_audit

TIMING = ("seconds", "craft_seconds", "eval_seconds")


def _strip_timing(results):
    out = json.loads(json.dumps(results))
    for cell in out["cells"]:
        for key in TIMING:
            cell.pop(key)
    return out


def test_resume_after_kill(tmp_path, easy_npz, tiny_model, audit_dict):
    # Slow enough to be killed mid-run: 6 PGD crafts of 150 steps, one cell each.
    cfg = audit_dict(
        easy_npz,
        tiny_model,
        defenses=[],
        attacks=[{"name": "pgd", "params": {"steps": 150}}],
        budgets={"linf": ["1/255", "2/255", "3/255", "4/255", "6/255", "8/255"]},
        save_examples=2,
    )
    cfg_path = tmp_path / "slow.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    cells_dir = out / "state" / "cells"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medrobust",
            "audit",
            "--config",
            str(cfg_path),
            "--out",
            str(out),
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if cells_dir.exists() and any(
                p.name.endswith(".json") and not p.name.startswith(".") for p in cells_dir.iterdir()
            ):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"audit ended before it could be killed: {proc.stderr.read().decode()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done_before = [p.name for p in cells_dir.glob("*.json") if not p.name.startswith(".")]
    assert 1 <= len(done_before) < 6
    assert not (out / "results.json").exists()
    killed_log = (out / "state" / "computed.log").read_text().splitlines()

    config = load_config(cfg_path)
    resumed = run_audit(config, out, progress=False)
    log = (out / "state" / "computed.log").read_text().splitlines()
    assert log[: len(killed_log)] == killed_log
    counts = Counter(log)
    assert set(counts) == {c["key"] for c in resumed["cells"]} and max(counts.values()) == 1  # no cell twice

    # same results as an uninterrupted run (timings aside), and the resumed run kept the old timings
    straight = run_audit(config, tmp_path / "straight", progress=False)
    assert _strip_timing(resumed) == _strip_timing(straight)
    first = json.loads((out / "state" / "cells" / done_before[0]).read_text())
    assert next(c for c in resumed["cells"] if c["key"] == first["key"])["seconds"] == first["seconds"]

    # rerunning the finished folder recomputes nothing and writes an identical results.json
    before = (out / "results.json").read_bytes()
    run_audit(config, out, progress=False)
    assert (out / "results.json").read_bytes() == before
    assert (out / "state" / "computed.log").read_text().splitlines() == log

    # a changed run-level setting is refused, and accepted with fresh=True (which starts over)
    changed = load_config(cfg_path, {"attacks": ["fgsm"], "budgets": {"linf": ["2/255"]}, "seed": 4})
    with pytest.raises(ConfigError, match=r"different config \(changed: seed;.*--fresh"):
        run_audit(changed, out, progress=False)
    fresh = run_audit(changed, out, fresh=True, progress=False)
    assert [c["key"] for c in fresh["cells"]] == ["bare/whitebox/fgsm@2/255"]
    assert (out / "state" / "computed.log").read_text().splitlines() == ["bare/whitebox/fgsm@2/255"]
