"""Benchmark attacks on 3D segmenters: PGD against its compute floor, sliding-window peak memory.

Run:  python benchmarks/segmentation.py [--quick] [--reps 5] [--json out.json]

Two measurements (see benchmarks/README.md for the figures):

* **3D PGD vs its compute floor.** ``SegmentationPGD`` (L∞, 10 steps, random start, CE over
  every voxel) on a MONAI 3D UNet (``channels=(16, 32, 64, 128)``, 2 residual units, random
  weights, 2 labels) and one 96³ volume, against the floor: the random start plus ``steps`` x
  (forward + input-gradient backward) of the same segmenter with the same loss. PGD also
  ranks its iterates (one extra forward after the last step), which the floor leaves out. One
  process, ``torch.set_num_threads(1)``, interleaved repetitions after a warm-up call, median
  CPU time (``time.process_time``).
* **Sliding-window attack memory.** One PGD step (forward, input gradient, the final ranking
  forward and the attack's clean prediction) on volumes larger than the segmenter's window
  (``card.roi_size``, windows blended by MONAI's ``sliding_window_inference``), each in a fresh
  subprocess: the peak resident memory of the attack (``ru_maxrss`` minus the resident size
  just before the attack, with the model and volume already built) for a 256³ volume and a
  128³ one, each with the default activation checkpointing (each batch of windows recomputed in
  the backward, :mod:`medrobust.models.segmentation.sliding`) and with checkpointing off (every
  window's activations kept until the backward), and one window alone (the volume equal to the
  window, no sliding). "Bounded by the window" reads: the checkpointed peak is the
  one-window peak plus input-sized buffers (the volume, its gradient, the window inputs and
  the blended logits), and does not grow with the number of windows as the uncheckpointed one does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def _interleaved() -> Callable[[dict[str, Callable[[], Any]], int], dict[str, float]]:
    """benchmarks/attacks.py's ``interleaved`` (the same rotated, median-CPU-time timing)."""
    path = Path(__file__).with_name("attacks.py")
    spec = importlib.util.spec_from_file_location("_attacks_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.interleaved

EPS = "8/255"


def unet3d(
    side: int, roi: int | None = None, channels: tuple[int, ...] = (16, 32, 64, 128)
) -> torch.nn.Module:
    """A MONAI 3D UNet segmenter (random weights, seeded) for ``side``³ volumes, window ``roi``³."""
    from medrobust.models.segmentation import SegmentationCard, build_segmenter

    torch.manual_seed(0)
    card = SegmentationCard(
        in_channels=1,
        class_names=["background", "tumour"],
        spatial_dims=3,
        spatial_size=(side,) * 3,
        roi_size=None if roi is None else (roi,) * 3,
    )
    return build_segmenter("unet", card, channels=list(channels), num_res_units=2).eval()


def volume(side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random volume and a mask with a central 'tumour' (``(1, 1, s, s, s)``, ``(1, s, s, s)``)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, side, side, side, generator=gen)
    mask = torch.zeros(1, side, side, side, dtype=torch.long)
    q = side // 4
    mask[:, q:-q, q:-q, q:-q] = 1
    return x, mask


def pgd_floor_row(side: int, steps: int, reps: int) -> dict[str, Any]:
    """Time SegmentationPGD against ``steps`` x (forward + input gradient) of the same segmenter."""
    from medrobust.attacks.segmentation import create_segmentation_attack
    from medrobust.validation import budget_to_image_units

    model = unet3d(side)
    for p in model.parameters():
        p.requires_grad_(False)
    x, mask = volume(side)
    atk = create_segmentation_attack("pgd", model, eps=EPS, steps=steps, seed=0)
    eps = budget_to_image_units(EPS, (0.0, 1.0), "eps", "benchmark")

    def ours() -> None:
        atk(x, mask)

    def floor() -> None:
        gen = torch.Generator().manual_seed(0)
        adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=gen)).clamp(0.0, 1.0)
        for _ in range(steps):
            a = adv.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(a), mask), a)

    def one_forward() -> None:
        with torch.no_grad():
            model(x)

    t = _interleaved()({"medrobust": ours, "floor": floor, "forward": one_forward}, reps)
    return {
        "side": side,
        "steps": steps,
        "params": sum(p.numel() for p in model.parameters()),
        "t_mr": t["medrobust"],
        "t_floor": t["floor"],
        "t_forward": t["forward"],
        "ratio": t["medrobust"] / t["floor"],
    }


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux ``/proc``; 0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def child_memory(side: int, roi: int, checkpoint: str, channels: tuple[int, ...]) -> dict[str, Any]:
    """In a fresh process: one PGD step on a ``side``³ volume through ``roi``³ windows; peak memory."""
    import medrobust.models.segmentation.sliding as sliding
    from medrobust.attacks.segmentation import create_segmentation_attack

    model = unet3d(side, None if roi >= side else roi, channels)
    for p in model.parameters():
        p.requires_grad_(False)
    x, mask = volume(side)
    if checkpoint == "off":
        original = sliding.sliding_window_logits

        def no_checkpoint(*args: Any, **kw: Any) -> torch.Tensor:
            return original(*args, **{**kw, "checkpoint": False})

        sliding.sliding_window_logits = no_checkpoint
    atk = create_segmentation_attack("pgd", model, eps=EPS, steps=1, seed=0)
    base = _rss_bytes()
    t0 = time.perf_counter()
    atk(x, mask)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    windows = sliding.window_count((side,) * 3, (roi,) * 3, model.card.sw_overlap) if roi < side else 1
    return {
        "side": side,
        "roi": roi,
        "checkpoint": checkpoint,
        "windows": windows,
        "sw_batch_size": model.card.sw_batch_size,
        "volume_mb": x.numel() * x.element_size() / 2**20,
        "base_rss_mb": base / 2**20,
        "peak_rss_mb": peak / 2**20,
        "attack_peak_mb": (peak - base) / 2**20,
        "wall_s": wall,
    }


def memory_row(
    side: int, roi: int, checkpoint: str, channels: tuple[int, ...], threads: int
) -> dict[str, Any]:
    """Run :func:`child_memory` in a fresh interpreter and return its measurements."""
    cmd = [
        sys.executable, __file__, "--child", str(side), str(roi), checkpoint,
        "--channels", *[str(c) for c in channels],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"memory child {side}/{roi}/{checkpoint} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small volumes, fewer steps and repetitions")
    ap.add_argument(
        "--reps", type=int, default=0, help="interleaved repetitions (default 5, as attacks.py; quick 2)"
    )
    ap.add_argument("--threads", type=int, default=2, help="threads of the memory subprocesses (default 2)")
    ap.add_argument("--json", default="", help="also write all measurements to this JSON file")
    ap.add_argument("--child", nargs=3, metavar=("SIDE", "ROI", "CHECKPOINT"), help=argparse.SUPPRESS)
    ap.add_argument("--channels", nargs="+", type=int, default=[16, 32, 64, 128], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        side, roi, ckpt = int(args.child[0]), int(args.child[1]), args.child[2]
        print(json.dumps(child_memory(side, roi, ckpt, tuple(args.channels))))
        return 0

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    reps = args.reps or (2 if args.quick else 5)
    t_start = time.perf_counter()
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average at start {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    side, steps = (32, 3) if args.quick else (96, 10)
    print(
        f"\n3D PGD-{steps} (L-inf 8/255, CE over every voxel), MONAI UNet (16, 32, 64, 128), "
        f"one {side}^3 volume,"
    )
    print(f"1 thread, median CPU time of {reps} interleaved repetitions")
    pgd = pgd_floor_row(side, steps, reps)
    print(
        f"    medrobust {pgd['t_mr']:.2f} s, floor (random start + {steps} x forward and input gradient) "
        f"{pgd['t_floor']:.2f} s: {pgd['ratio']:.3f}x; one forward {pgd['t_forward']:.2f} s"
    )

    channels = (4, 8, 16, 16) if args.quick else (16, 32, 64, 128)
    roi = 16 if args.quick else 64
    sides = (32, 64) if args.quick else (128, 256)
    print(
        f"\nSliding-window PGD step (window {roi}^3, overlap 0.25, 4 windows per forward), UNet {channels}, "
        f"{args.threads} threads, fresh process each; attack peak = peak RSS - RSS before the attack"
    )
    head = [("volume", 8), ("windows", 7), ("checkpoint", 10), ("volume MB", 9), ("attack peak MB", 14)]
    head.append(("wall s", 7))
    print(" ".join(f"{name:>{width}}" for name, width in head))
    rows = [memory_row(roi, roi, "auto", channels, args.threads)]
    rows += [memory_row(s, roi, mode, channels, args.threads) for mode in ("auto", "off") for s in sides]
    for r in rows:
        label = "one window" if r["windows"] == 1 else ("on" if r["checkpoint"] == "auto" else "off")
        print(
            f"{str(r['side']) + '^3':>8} {r['windows']:>7} {label:>10} {r['volume_mb']:>9.1f} "
            f"{r['attack_peak_mb']:>14.0f} {r['wall_s']:>7.1f}"
        )
    window, _, big, _, big_off = rows
    extra = big["attack_peak_mb"] - window["attack_peak_mb"]
    print(
        f"    {big['side']}^3 with checkpointing: one window's peak + {extra:.0f} MB "
        f"({extra / big['volume_mb']:.1f} x the volume's float32 size: input, gradient, iterates, "
        f"window inputs, blended logits, label maps); without checkpointing "
        f"{big_off['attack_peak_mb'] / max(big['attack_peak_mb'], 1e-9):.1f} x that peak"
    )
    out = {
        "pgd_3d": pgd,
        "sliding_memory": rows,
        "load_end": os.getloadavg(),
        "wall_s": time.perf_counter() - t_start,
        "torch": torch.__version__,
    }
    end_load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nload average at end {end_load}; total wall {out['wall_s']:.0f} s")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(out, indent=2) + "\n")
        tmp.replace(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
