"""Sharded audit (``torchrun --nproc_per_node 2 -m medrobust audit``): equals one process, resumes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medrobust.evaluation.config import load_config
from medrobust.evaluation.distributed import ShardContext, owned_batches
from medrobust.evaluation.planning import plan_audit, safe_id
from medrobust.evaluation.runner import run_audit
from medrobust.evaluation.state import BatchPiece, PieceStore

TIMING = ("seconds", "craft_seconds", "eval_seconds")
N, BATCH = 22, 8  # three batches (8, 8, 6): rank 0 gets batches 0 and 2, rank 1 batch 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strip_timing(results: dict) -> dict:
    out = json.loads(json.dumps(results))
    for cell in out["cells"]:
        for key in TIMING:
            cell.pop(key)
    return out


def _torchrun(cfg_path: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "medrobust",
        "-v",
        "audit",
        "--config",
        str(cfg_path),
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


#: Seconds written into a pre-seeded piece: only a reused (not recomputed) piece carries them.
MARK_SECONDS = 1234.5


@pytest.fixture(scope="module")
def runs(tmp_path_factory, easy_npz, tiny_model, audit_dict):
    """The same audit once in this process and once sharded over 2 torchrun processes.

    The sharded run starts from a folder left by a "killed" run: its state and one finished
    piece (craft ``RESUMED``, batch 1, which rank 1 owns) exist; everything else is computed.
    """
    root = tmp_path_factory.mktemp("sharded")
    cfg = audit_dict(
        easy_npz,
        tiny_model,
        attacks=["fgsm", {"name": "pgd", "params": {"steps": 3}}],
        threats=["graybox"],
        n_samples=N,
        batch_size=BATCH,
        save_examples=10,  # spans batches 0 (rank 0) and 1 (rank 1)
    )
    cfg_path = root / "audit.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    config = load_config(cfg_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the torchrun ranks run with OMP_NUM_THREADS=1 too
    try:
        single = run_audit(config, root / "single", progress=False)
    finally:
        torch.set_num_threads(threads)

    resumed_craft = plan_audit(config).crafts[-1].key
    out = root / "sharded"
    (out / "state").mkdir(parents=True)
    (out / "state" / "state.json").write_bytes((root / "single" / "state" / "state.json").read_bytes())
    src = PieceStore(root / "single").path(safe_id(resumed_craft), 1)
    with np.load(src, allow_pickle=False) as z:
        piece = BatchPiece.from_arrays(z)
    piece.craft_seconds = MARK_SECONDS
    seeded = PieceStore(out).save(safe_id(resumed_craft), piece)
    seeded_mtime = seeded.stat().st_mtime_ns

    proc = _torchrun(cfg_path, out)
    sharded = json.loads((out / "results.json").read_text())
    return {
        "config": config,
        "root": root,
        "single": single,
        "sharded": sharded,
        "proc": proc,
        "resumed_craft": resumed_craft,
        "seeded": (seeded, seeded_mtime),
    }


def test_owned_batches_round_robin():
    assert owned_batches(5, 0, 2) == [0, 2, 4] and owned_batches(5, 1, 2) == [1, 3]
    assert owned_batches(3, 2, 4) == [2] and owned_batches(3, 3, 4) == []
    single = ShardContext()
    assert single.owned(3) == [0, 1, 2] and single.all_gather("x") == ["x"] and single.broadcast(7) == 7
    assert single.agree(lambda: 5) == 5


def test_sharded_equals_single_process(runs):
    root, single, sharded = runs["root"], runs["single"], runs["sharded"]
    assert _strip_timing(sharded) == _strip_timing(single)
    assert len(sharded["cells"]) == len(plan_audit(runs["config"]).cells) == 8
    assert sum(c["metrics"]["n_fooled"] for c in sharded["cells"]) > 0  # attacks did something
    # the saved examples (first 10 positions, from both ranks' batches) are identical too
    names = sorted(p.name for p in (root / "single" / "examples").glob("*.npz"))
    assert names == sorted(p.name for p in (root / "sharded" / "examples").glob("*.npz")) and names
    for name in names:
        with (
            np.load(root / "single" / "examples" / name) as a,
            np.load(root / "sharded" / "examples" / name) as b,
        ):
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")
    env = json.loads((root / "sharded" / "environment.json").read_text())
    assert env["world_size"] == 2 and env["backend"] == "gloo"
    assert runs["proc"].stdout.count("report:") == 1  # rank 0 alone printed the summary


def test_batches_split_round_robin_and_resumed(runs):
    proc, resumed_craft = runs["proc"], runs["resumed_craft"]
    done = re.findall(r"rank (\d), craft (\S+): (\d+) batch\(es\) attacked, (\d+) reused", proc.stderr)
    crafts = [c.key for c in plan_audit(runs["config"]).crafts]
    assert sorted({k for _, k, _, _ in done}) == sorted(crafts)
    store = PieceStore(runs["root"] / "sharded")
    for key in crafts:
        per_rank = {int(r): (int(a), int(u)) for r, k, a, u in done if k == key}
        want = {0: (2, 0), 1: (0, 1) if key == resumed_craft else (1, 0)}
        assert per_rank == want, (key, per_rank)
        assert store.finished(safe_id(key)) == [0, 1, 2]
    # the pre-seeded piece was reused as it was (its marked timing reached the cells), not rewritten
    seeded, mtime = runs["seeded"]
    assert seeded.stat().st_mtime_ns == mtime
    cells = [c for c in runs["sharded"]["cells"] if c["craft"] == resumed_craft]
    assert cells and all(c["craft_seconds"] > MARK_SECONDS for c in cells)
    assert all(c["craft_seconds"] < MARK_SECONDS for c in runs["sharded"]["cells"] if c not in cells)


_AGREE_WORKER = r"""
import json, sys
import torch.distributed as dist
from medrobust.errors import DataError
from medrobust.evaluation.distributed import ShardContext

rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
ctx = ShardContext(rank=rank, world_size=2, backend="gloo")

def work():
    if rank == 1:
        raise DataError("/data/bad.dcm", "truncated pixel data")
    return 42

try:
    got = {"value": ctx.agree(work)}
except Exception as exc:
    got = {"error": type(exc).__name__, "message": str(exc)}
after = ctx.all_gather(rank)  # both ranks are still in step: no one hangs in a collective
got["after"] = after
open(out, "w").write(json.dumps(got))
dist.destroy_process_group()
"""


def test_a_failing_rank_stops_every_rank_with_its_error(tmp_path):
    """Rank 1 raises inside agree(): rank 0 gets the same DataError (naming the file)
    instead of waiting forever in the next collective; both ranks stay in step."""
    script = tmp_path / "agree_worker.py"
    script.write_text(_AGREE_WORKER)
    store = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), str(store), str(tmp_path / f"r{r}.json")], env=env
        )
        for r in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    r0, r1 = (json.loads((tmp_path / f"r{r}.json").read_text()) for r in (0, 1))
    assert r1["error"] == "DataError" and "/data/bad.dcm" in r1["message"]
    assert r0["error"] == "DataError" and "/data/bad.dcm" in r0["message"]
    assert "truncated pixel data" in r0["message"]
    assert r0["after"] == r1["after"] == [0, 1]
