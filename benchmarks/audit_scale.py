"""Audit scaling: peak memory vs dataset size (streaming) and wall time with torchrun sharding.

Usage::

    python benchmarks/audit_scale.py            # full: 2 000 and 20 000 PNGs, PGD-10 on 2 000
    python benchmarks/audit_scale.py --quick    # 200 and 2 000 PNGs, PGD-10 on 200
    python benchmarks/audit_scale.py --skip-sharding --mmap-threshold 131072  # (a), fixed glibc threshold

What it does:

1. Writes phantom chest X-ray PNG folders (64x64, ``medrobust.data.write_phantom``) into
   ``--cache`` (default ``.bench_cache/``, git-ignored); written once, reused after.
2. Trains a ``small_cnn`` briefly (100 Adam steps on 1 024 images of the 2 000 folder) and
   saves it as a run folder. Its accuracy is printed; it only needs correct predictions
   for the attacks to have something to flip (memory does not depend on it).
3. (a) Memory: ``medrobust audit`` (FGSM at 8/255, every image of the folder, batch 64,
   ``OMP_NUM_THREADS=1``) in a fresh subprocess per folder; the subprocess' peak RSS comes
   from ``os.wait4`` (``ru_maxrss``). The audit streams batches, so the ratio of the largest
   to the smallest folder's peak RSS should stay near 1.
4. (b) Sharding: the same audit with PGD-10 on the smaller folder, timed (wall clock of
   the whole command, start-up included) with 1 process (``OMP_NUM_THREADS=1`` and ``=2``)
   and with ``torchrun --nproc_per_node 2`` (``OMP_NUM_THREADS=1`` per rank). The sharded
   run's cells are checked equal to the single-process run's (timings aside).

Prints a table and writes JSON to ``--json`` (default ``benchmarks/results/audit_scale.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
STEPS = 100  # Adam steps of the benchmark classifier


def _phantom_folder(cache: Path, n: int) -> tuple[Path, float]:
    """A phantom PNG folder of ``n`` images (written once); returns it and the seconds spent writing."""
    from medrobust.data import write_phantom

    out = cache / f"chest_xray-png-n{n}-s{SIZE}"
    meta = out / "phantom.json"
    if meta.exists() and json.loads(meta.read_text()).get("complete"):
        return out, 0.0
    if out.exists():
        shutil.rmtree(out)  # an interrupted earlier write
    t0 = time.perf_counter()
    write_phantom("chest_xray", n, SIZE, "png", out, seed=0)
    return out, time.perf_counter() - t0


def _train_model(cache: Path, data: Path) -> tuple[Path, float]:
    """A briefly trained small_cnn run folder (cached) and its accuracy on the folder's val split."""
    import torch
    import torch.nn.functional as F

    from medrobust.data import load_arrays, make_dataset, open_source
    from medrobust.models import ModelCard, build_classifier, load_model, save_checkpoint

    out = cache / "small_cnn"
    source = open_source(str(data))
    val = make_dataset(source, split="val", preset="chest_xray", spatial_size=(SIZE, SIZE))
    xv, yv = load_arrays(val, limit=256)
    if not (out / "model.safetensors").exists():
        train = make_dataset(source, split="train", preset="chest_xray", spatial_size=(SIZE, SIZE))
        x, y = load_arrays(train, limit=1024)
        card = ModelCard(
            in_channels=1,
            class_names=list(source.class_names),
            positive_class=source.class_names[-1],
            spatial_size=(SIZE, SIZE),
            modality="chest_xray",
            bounds=(0.0, 1.0),
            mean=[float(x.mean())],
            std=[float(x.std())],
        )
        torch.manual_seed(0)
        model = build_classifier("small_cnn", card)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(STEPS):
            idx = torch.randint(0, len(y), (32,), generator=gen)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        save_checkpoint(model.eval(), out)
    model = load_model(out).eval()
    with torch.no_grad():
        acc = float((model(xv).argmax(1) == yv).float().mean())
    return out, acc


def _write_config(path: Path, data: Path, model: Path, attack: dict[str, Any]) -> Path:
    import yaml

    cfg = {
        "name": f"audit scale {data.name}",
        "data": {"source": str(data), "split": None, "preset": "chest_xray", "size": SIZE},
        "model": {"path": str(model)},
        "attacks": [attack],
        "budgets": {"linf": ["8/255"]},
        "n_samples": None,
        "batch_size": 64,
        "seed": 0,
        "device": "cpu",
        "save_examples": 8,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], threads: int) -> dict[str, Any]:
    """Run ``cmd``; its wall seconds and stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr.decode()[-4000:]}")
    return {"seconds": seconds, "stdout": stdout.decode()}


def _run_rss(cmd: list[str], threads: int, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` and report its wall time and peak RSS from ``os.wait4`` (Linux ``ru_maxrss`` KB)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        **(extra_env or {}),
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-4000:]}")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def _audit_cmd(config: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "medrobust",
        "audit",
        "--config",
        str(config),
        "--out",
        str(out),
        "--fresh",
        "--no-progress",
    ]


def _cells(out: Path) -> list[dict[str, Any]]:
    cells = json.loads((out / "results.json").read_text())["cells"]
    for c in cells:
        for key in ("seconds", "craft_seconds", "eval_seconds"):
            c.pop(key)
    return cells


def _load() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 and 2 000 images; PGD on 200.")
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench_cache", help="Phantom/model cache.")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "audit_scale.json")
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--skip-sharding", action="store_true", help="Only the memory part (a).")
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        default=None,
        help="Set MALLOC_MMAP_THRESHOLD_ (bytes) for the memory runs: glibc then returns freed "
        "batch buffers to the OS instead of growing its heap (see README).",
    )
    args = parser.parse_args(argv)
    sizes = (200, 2000) if args.quick else (2000, 20000)
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / "runs"
    work.mkdir(exist_ok=True)

    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_start": _load()},
        "quick": args.quick,
    }
    folders = {}
    for n in sizes:
        folders[n], secs = _phantom_folder(cache, n)
        if secs:
            print(f"wrote {n} phantom PNGs in {secs:.0f} s -> {folders[n]}", flush=True)
    model, acc = _train_model(cache, folders[2000])
    report["model"] = {"arch": "small_cnn", "steps": STEPS, "val_accuracy": acc}
    print(f"small_cnn ({STEPS} Adam steps): val accuracy {acc:.3f}", flush=True)

    # (a) peak RSS vs number of images (FGSM, all images, one process)
    imports = (
        "import medrobust.evaluation.runner, medrobust.data.dataset, medrobust.reporting, medrobust.defenses"
    )
    malloc_env = {} if args.mmap_threshold is None else {"MALLOC_MMAP_THRESHOLD_": str(args.mmap_threshold)}
    report["malloc_env"] = malloc_env
    base_rss = _run_rss([sys.executable, "-c", imports], threads=1, extra_env=malloc_env)["peak_rss_mb"]
    print(f"  peak RSS of the imports alone: {base_rss:.0f} MB", flush=True)
    memory = []
    for n in sizes:
        cfg = _write_config(work / f"fgsm-{n}.yaml", folders[n], model, {"name": "fgsm"})
        out = work / f"fgsm-{n}"
        load = _load()
        res = _run_rss(_audit_cmd(cfg, out), threads=1, extra_env=malloc_env)
        data = json.loads((out / "results.json").read_text())
        m = data["cells"][0]["metrics"]
        memory.append(
            {
                "n": data["data"]["n"],
                **res,
                "n_attacked": m["n_attacked"],
                "robust_accuracy": m["robust_accuracy"],
                "clean_accuracy": m["clean_accuracy"],
                "load": load,
            }
        )
        print(f"  fgsm n={n}: {res['seconds']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    ratio = memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"]
    for r in memory:
        r["above_imports_mb"] = r["peak_rss_mb"] - base_rss
    report["memory"] = {"runs": memory, "rss_ratio": ratio, "imports_rss_mb": base_rss}

    # (b) PGD wall time: 1 process vs torchrun with 2 processes
    if not args.skip_sharding:
        n = sizes[0]
        attack = {"name": "pgd", "params": {"steps": args.pgd_steps}}
        cfg = _write_config(work / f"pgd-{n}.yaml", folders[n], model, attack)
        timing = []
        for label, threads, nproc in (
            ("1 proc, OMP=1", 1, 1),
            ("1 proc, OMP=2", 2, 1),
            ("torchrun 2x OMP=1", 1, 2),
        ):
            out = work / f"pgd-{n}-{nproc}x{threads}"
            cmd = _audit_cmd(cfg, out)
            if nproc > 1:
                cmd = [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--nproc_per_node",
                    str(nproc),
                    "--master_addr",
                    "127.0.0.1",
                    "--master_port",
                    str(_free_port()),
                    *cmd[1:],
                ]
            load = _load()
            res = _run(cmd, threads)
            cells = json.loads((out / "results.json").read_text())["cells"]
            timing.append(
                {
                    "label": label,
                    "n": n,
                    "processes": nproc,
                    "threads": threads,
                    "seconds": res["seconds"],
                    "craft_seconds": cells[0]["craft_seconds"],
                    "load": load,
                    "out": str(out),
                }
            )
            print(f"  pgd-{args.pgd_steps} n={n} {label}: {res['seconds']:.1f} s", flush=True)
        base = timing[0]["seconds"]
        for t in timing:
            t["speedup_vs_1proc_omp1"] = base / t["seconds"]
        same = _cells(Path(timing[0]["out"])) == _cells(Path(timing[2]["out"]))
        report["sharding"] = {"runs": timing, "pgd_steps": args.pgd_steps, "identical_cells": same}

    report["machine"]["load_end"] = _load()
    from medrobust.utils.io import atomic_write_json

    atomic_write_json(args.json, report)

    print()
    print(
        f"(a) peak RSS, FGSM over all images, 1 process (load {report['machine']['load_start']:.1f}) "
        f"{malloc_env or ''}"
    )
    print(f"{'images':>8} {'wall s':>8} {'peak RSS MB':>12} {'above imports':>14} {'attacked':>9}")
    for r in memory:
        print(
            f"{r['n']:>8} {r['seconds']:>8.1f} {r['peak_rss_mb']:>12.0f} {r['above_imports_mb']:>14.0f} "
            f"{r['n_attacked']:>9}"
        )
    print(f"RSS ratio {memory[-1]['n']}/{memory[0]['n']}: {ratio:.2f} (imports alone: {base_rss:.0f} MB)")
    if "sharding" in report:
        print()
        print(f"(b) PGD-{args.pgd_steps} over {sizes[0]} images: wall time (start-up included)")
        print(f"{'run':<20} {'wall s':>8} {'speed-up':>9} {'load':>5}")
        for t in report["sharding"]["runs"]:
            print(
                f"{t['label']:<20} {t['seconds']:>8.1f} {t['speedup_vs_1proc_omp1']:>8.2f}x {t['load']:>5.1f}"
            )
        print(f"sharded cells identical to 1-process cells: {report['sharding']['identical_cells']}")
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
