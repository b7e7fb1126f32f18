"""Benchmark medrobust attacks against their compute floor and torchattacks, in one process.

Run:  python benchmarks/attacks.py [--quick] [--reps 5] [--json out.json]

Every comparison runs in this one process with ``torch.set_num_threads(1)``; the contenders
of a row are timed in **interleaved** repetitions (A B C, B C A, C A B, ...) after one
warm-up call each, and the figure is the **median CPU time** (``time.process_time``) over
the repetitions, so that other jobs on a shared machine inflate the ratios as little as
possible. The load average and ``uptime`` are printed at the start and the end.

Rows (see benchmarks/README.md for the figures and what they mean):

* **PGD-10** on a trained ``small_cnn`` (1x64x64, 4 classes, 64 images) and on a torchvision
  ResNet-18 (3x64x64, random weights with random BatchNorm statistics, 16 images):
  medrobust as configured by default (BatchNorm folded, max-pools before their ReLU,
  ``channels_last``; ``result.success`` left undecided, as in the audit, and timed separately
  with its read) against its compute floor (random start + ``steps`` x forward and
  input-gradient backward of the *same folded copy* the attack queries) and against torchattacks
  given the same ``channels_last`` model (an unfolded copy with canonical ``channels_last`` conv
  weights, ``channels_last`` images). The parity mode (``fuse_bn=False, channels_last=False``) is
  checked to equal torchattacks bit for bit.
* **DeepFool** at K = 2 and K = 10 classes (``small_cnn`` trained for each K, 64 images):
  medrobust against torchattacks on the same ``channels_last`` model and on the model as given,
  success rate and median L2 over the points fooled; medrobust with the class gradients from
  one vectorised backward (``batched_gradients=True``) is timed too.
* **SPSA** at equal chunk size: torchattacks' ``max_batch_size`` m evaluates m x N
  perturbed images per forward; medrobust gets ``chunk = m x N``. Both run the same
  iterations x samples with no early stop and no random start (same work).
* **Import**: CPU and wall time of ``python -c "import medrobust.evaluation.runner"``
  (what every audit and every torchrun rank imports) against ``python -c "import torch"``,
  each in a fresh interpreter, interleaved.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: L∞ budget of PGD and SPSA: large enough that attacks matter on the stripes task.
EPS = 0.05


# ------------------------------------------------------------------------------------------
# models and data
# ------------------------------------------------------------------------------------------
def stripe_data(
    n: int, channels: int, classes: int, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Faint stripes whose orientation is the class, under noise and a random bright blob, in [0, 1]."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((n, channels, size, size), dtype=np.float32)
    for i, y in enumerate(labels):
        angle = np.pi * y / classes + rng.normal(0, 0.02)
        phase = rng.uniform(0, 2 * np.pi)
        stripes = np.sin(2 * np.pi * 6 * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
        cy, cx = rng.uniform(0.2, 0.8, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.15**2))
        for c in range(channels):
            images[i, c] = 0.4 + 0.15 * stripes + 0.2 * blob + rng.normal(0, 0.08, (size, size))
    return torch.from_numpy(np.clip(images, 0, 1)), torch.from_numpy(labels).long()


def small_cnn(
    classes: int, n_eval: int, steps: int = 60
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """medrobust ``small_cnn(width=8, depth=3)`` trained briefly on the stripes task (seeded)."""
    from medrobust.models import ModelCard, build_classifier

    x, y = stripe_data(960, 1, classes, 64, seed=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        card = ModelCard(in_channels=1, class_names=[f"c{i}" for i in range(classes)])
        model = build_classifier("small_cnn", card, width=8, depth=3)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, len(x), (32,))
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    xe, ye = stripe_data(n_eval, 1, classes, 64, seed=2)
    with torch.no_grad():
        acc = (model(xe).argmax(1) == ye).float().mean().item()
    return model, xe, ye, f"small_cnn 1x64x64 K={classes} (clean acc {acc:.2f})"


def resnet18(n_eval: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """torchvision ResNet-18 (4 classes), random weights and random BatchNorm statistics."""
    import torchvision

    from medrobust.models import ModelCard

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=4)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    model.card = ModelCard(in_channels=3, class_names=[f"c{i}" for i in range(4)])
    x, _ = stripe_data(n_eval, 3, 4, 64, seed=3)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels = the model's predictions: every point is attackable
    return model, x, y, "torchvision resnet18 3x64x64 (random weights)"


def channels_last_copy(model: nn.Module) -> nn.Module:
    """An unfolded copy with canonical ``channels_last`` conv weights (what torchattacks gets)."""
    from medrobust.attacks._fuse import _to_channels_last

    out = copy.deepcopy(model).eval()
    _to_channels_last(out)
    return out


# ------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------
def interleaved(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Median CPU seconds per contender over ``reps`` rotated rounds (one warm-up call each)."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.process_time()
            fns[name]()
            times[name].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def uptime() -> str:
    """``uptime``'s line (load of the shared machine), or the load average where it is missing."""
    try:
        done = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return f"load average: {load()}"
    return done.stdout.strip() or f"load average: {load()}"


def fooled_stats(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, adv: torch.Tensor) -> dict:
    """Success rate over the clean-correct points and the median L2 over the points fooled."""
    adv = adv.detach().as_subclass(torch.Tensor).contiguous()
    with torch.no_grad():
        clean_ok = model(images).argmax(1) == labels
        fooled = clean_ok & (model(adv).argmax(1) != labels)
    l2 = (adv - images).flatten(1).norm(dim=1)
    return {
        "success": float(fooled.sum() / clean_ok.sum().clamp_min(1)),
        "median_l2": float(l2[fooled].median()) if fooled.any() else float("nan"),
    }


# ------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------
def pgd_row(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, desc: str, reps: int) -> dict:
    import torchattacks

    from medrobust.attacks import create_attack
    from medrobust.attacks._fuse import folded_model

    steps, alpha = 10, 2.5 * EPS / 10
    x_cl = images.contiguous(memory_format=torch.channels_last)
    atk = create_attack("pgd", model, eps=EPS, alpha=alpha, steps=steps, seed=0)
    folded, fold_desc = folded_model(model, x_cl[:8], channels_last=True)
    ta_model = channels_last_copy(model)
    ta = torchattacks.PGD(ta_model, eps=EPS, alpha=alpha, steps=steps, random_start=True)

    def floor() -> None:
        gen = torch.Generator().manual_seed(0)
        noise = torch.empty_like(x_cl).uniform_(-EPS, EPS, generator=gen)
        adv = (x_cl + noise).clamp(0.0, 1.0)
        for _ in range(steps):
            a = adv.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(folded(a), labels), a)

    def ours() -> None:
        atk(images, labels)

    def ours_decided() -> None:
        atk(images, labels).success  # noqa: B018  (reading it runs the success forward)

    def theirs() -> None:
        torch.manual_seed(0)
        ta(x_cl, labels)

    ta_given = torchattacks.PGD(model, eps=EPS, alpha=alpha, steps=steps, random_start=True)

    def theirs_given() -> None:
        torch.manual_seed(0)
        ta_given(images, labels)

    def one_forward() -> None:
        with torch.no_grad():
            model(images)

    t = interleaved(
        {
            "medrobust": ours,
            "medrobust_decided": ours_decided,
            "floor": floor,
            "torchattacks": theirs,
            "torchattacks_given": theirs_given,
            "forward": one_forward,
        },
        reps,
    )
    res = atk(images, labels)
    torch.manual_seed(0)
    ref = ta(x_cl, labels)
    # parity mode against torchattacks on the model as given
    par = create_attack(
        "pgd", model, eps=EPS, alpha=alpha, steps=steps, seed=0, fuse_bn=False, channels_last=False
    )
    torch.manual_seed(0)
    ta_plain = torchattacks.PGD(model, eps=EPS, alpha=alpha, steps=steps, random_start=True)(images, labels)
    return {
        "row": f"PGD-10 {desc}",
        "n": len(images),
        "t_mr": t["medrobust"],
        "t_mr_decided": t["medrobust_decided"],
        "t_floor": t["floor"],
        "t_ta": t["torchattacks"],
        "t_ta_given": t["torchattacks_given"],
        "t_forward": t["forward"],
        "query_model": res.info["query_model"],
        "fold": fold_desc,
        "success_mr": float(res.success.float().mean()),
        "success_ta": fooled_stats(model, images, labels, ref)["success"],
        "differs_default": float((res.adv != ref).float().mean()),
        "parity_bitwise": bool(torch.equal(par(images, labels).adv, ta_plain)),
    }


def deepfool_row(classes: int, n: int, reps: int) -> dict:
    import torchattacks

    from medrobust.attacks import create_attack

    model, images, labels, desc = small_cnn(classes, n)
    x_cl = images.contiguous(memory_format=torch.channels_last)
    ta_model = channels_last_copy(model)
    atk = create_attack("deepfool", model, steps=50, overshoot=0.02)
    batched = create_attack("deepfool", model, steps=50, overshoot=0.02, batched_gradients=True)
    ta = torchattacks.DeepFool(ta_model, steps=50, overshoot=0.02)
    ta_given = torchattacks.DeepFool(model, steps=50, overshoot=0.02)
    t = interleaved(
        {
            "medrobust": lambda: atk(images, labels),
            "medrobust_decided": lambda: atk(images, labels).success,
            "batched": lambda: batched(images, labels),
            "torchattacks": lambda: ta(x_cl, labels),
            "torchattacks_given": lambda: ta_given(images, labels),
        },
        reps,
    )
    ours = atk(images, labels)
    mr = fooled_stats(model, images, labels, ours.adv)
    tr = fooled_stats(model, images, labels, ta(x_cl, labels))
    return {
        "row": f"DeepFool {desc}",
        "k": classes,
        "n": n,
        "t_mr": t["medrobust"],
        "t_mr_decided": t["medrobust_decided"],
        "t_batched": t["batched"],
        "t_ta": t["torchattacks"],
        "t_ta_given": t["torchattacks_given"],
        "success_mr": mr["success"],
        "success_ta": tr["success"],
        "l2_mr": mr["median_l2"],
        "l2_ta": tr["median_l2"],
        "class_gradients": ours.info["class_gradients"],
    }


def spsa_row(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, iters: int, reps: int) -> dict:
    import torchattacks

    from medrobust.attacks import create_attack

    samples, mbs = 128, 32
    chunk = mbs * len(images)
    x_cl = images.contiguous(memory_format=torch.channels_last)
    ta_model = channels_last_copy(model)
    atk = create_attack(
        "spsa",
        model,
        eps=EPS,
        steps=iters,
        samples=samples,
        delta=0.01,
        lr=0.01,
        chunk=chunk,
        early_stop=False,
        random_start=False,
    )
    ta_kw = dict(eps=EPS, delta=0.01, lr=0.01, nb_iter=iters, nb_sample=samples, max_batch_size=mbs)
    ta = torchattacks.SPSA(ta_model, **ta_kw)
    ta_given = torchattacks.SPSA(model, **ta_kw)

    def theirs() -> None:
        torch.manual_seed(0)
        ta(x_cl, labels)

    def theirs_given() -> None:
        torch.manual_seed(0)
        ta_given(images, labels)

    t = interleaved(
        {
            "medrobust": lambda: atk(images, labels),
            "torchattacks": theirs,
            "torchattacks_given": theirs_given,
        },
        reps,
    )
    res = atk(images, labels)
    return {
        "row": f"SPSA {iters}x{samples}",
        "n": len(images),
        "chunk": chunk,
        "t_mr": t["medrobust"],
        "t_ta": t["torchattacks"],
        "t_ta_given": t["torchattacks_given"],
        "query_model": res.info["query_model"],
    }


def import_row(reps: int) -> dict:
    """Child CPU (user + sys) and wall seconds of two imports in fresh interpreters, interleaved."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parents[1])
    stmts = {"torch": "import torch", "audit": "import medrobust.evaluation.runner"}
    cpu: dict[str, list[float]] = {k: [] for k in stmts}
    wall: dict[str, list[float]] = {k: [] for k in stmts}
    for k in stmts:  # warm the file cache once; a tree that does not import is reported, not timed
        done = subprocess.run(
            [sys.executable, "-c", stmts[k]], env=env, cwd=root, capture_output=True, text=True
        )
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            return {"error": f"{stmts[k]!r} failed: {last}"}
    names = list(stmts)
    for r in range(reps):
        for k in names[r % 2 :] + names[: r % 2]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", stmts[k]], env=env, cwd=root, check=True)
            wall[k].append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[k].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    med = statistics.median
    return {
        "cpu_torch": med(cpu["torch"]),
        "cpu_audit": med(cpu["audit"]),
        "wall_torch": med(wall["torch"]),
        "wall_audit": med(wall["audit"]),
    }


# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer images, iterations and repetitions")
    ap.add_argument(
        "--reps", type=int, default=0, help="interleaved repetitions per row (default 5; quick 3)"
    )
    ap.add_argument("--json", default="", help="also write all measurements to this JSON file")
    args = ap.parse_args(argv)
    reps = args.reps or (3 if args.quick else 5)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    load_start, uptime_start = load(), uptime()
    print(
        f"# torch {torch.__version__}, 1 thread, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; {reps} interleaved repetitions, median CPU time; "
        f"load average at start {load_start}\n# uptime at start: {uptime_start}"
    )
    checks: list[tuple[str, bool, str]] = []
    out: dict[str, Any] = {"pgd": [], "deepfool": [], "spsa": None, "import": None}

    print("\nPGD-10: medrobust default (BatchNorm folded, channels_last) vs its floor and torchattacks")
    print(
        "    mr = the attack call (success is decided when first read: the audit never reads it);\n"
        "    +succ = the call and reading result.success (one more forward of the model as given);\n"
        "    floor = random start + 10 x (forward + input gradient) of the same folded copy; ta_cl =\n"
        "    torchattacks on an unfolded channels_last copy with channels_last images; ta = torchattacks\n"
        "    on the model as given"
    )
    print(
        f"{'model':<46} {'n':>3} {'mr[s]':>7} {'floor':>7} {'mr/fl':>6} {'+succ':>6} {'fwd':>6} "
        f"{'ta_cl':>7} {'ta_cl/mr':>8} {'ta_cl/+succ':>11} {'ta':>7} {'ta/mr':>6}"
    )
    n_small = 32 if args.quick else 64
    model4, x4, y4, desc4 = small_cnn(4, n_small)
    pgd_models = [(model4, x4, y4, desc4)]
    pgd_models.append(resnet18(8 if args.quick else 16))
    for model, images, labels, desc in pgd_models:
        r = pgd_row(model, images, labels, desc, reps)
        out["pgd"].append(r)
        ratio, speed = r["t_mr"] / r["t_floor"], r["t_ta"] / r["t_mr"]
        print(
            f"{desc:<46} {r['n']:>3} {r['t_mr']:>7.3f} {r['t_floor']:>7.3f} {ratio:>6.3f} "
            f"{r['t_mr_decided']:>6.3f} {r['t_forward']:>6.3f} {r['t_ta']:>7.3f} {speed:>8.2f} "
            f"{r['t_ta'] / r['t_mr_decided']:>11.2f} {r['t_ta_given']:>7.3f} "
            f"{r['t_ta_given'] / r['t_mr']:>6.2f}"
        )
        print(
            f"    {r['query_model']}; success mr {r['success_mr']:.3f} / ta {r['success_ta']:.3f};\n"
            f"    default mode: {100 * r['differs_default']:.2f} % of pixels differ from torchattacks; "
            f"parity mode bit-identical: {r['parity_bitwise']}"
        )
        short = desc.split(" (")[0]
        checks.append((f"PGD-10 {short}: <= 1.02x floor", ratio <= 1.02, f"{ratio:.3f}x"))
        checks.append(
            (f"PGD-10 {short}: >= 1.25x faster than torchattacks (cl model)", speed >= 1.25, f"{speed:.2f}x")
        )
        checks.append(
            (f"PGD-10 {short}: parity mode equals torchattacks bit for bit", r["parity_bitwise"], "")
        )

    print("\nDeepFool (50 steps, overshoot 0.02): medrobust default vs torchattacks")
    print(
        "    mr = default (on CPU one backward per class; success decided when read); +succ = mr and\n"
        "    reading result.success; vec = one vectorised backward for all classes; success = fooled /\n"
        "    clean-correct; median L2 over the points fooled"
    )
    print(
        f"{'model':<40} {'n':>3} {'mr[s]':>7} {'+succ':>6} {'vec[s]':>7} {'ta_cl':>7} {'ta_cl/mr':>8} "
        f"{'ta':>7} {'ta/mr':>6} {'ta/+succ':>8} {'succ mr/ta':>11} {'medL2 mr/ta':>13}"
    )
    for k in (2, 10):
        r = deepfool_row(k, 32 if args.quick else 64, reps)
        out["deepfool"].append(r)
        speed, speed_given = r["t_ta"] / r["t_mr"], r["t_ta_given"] / r["t_mr"]
        print(
            f"{r['row'][9:]:<40} {r['n']:>3} {r['t_mr']:>7.3f} {r['t_mr_decided']:>6.3f} "
            f"{r['t_batched']:>7.3f} {r['t_ta']:>7.3f} {speed:>8.2f} {r['t_ta_given']:>7.3f} "
            f"{speed_given:>6.2f} "
            f"{r['t_ta_given'] / r['t_mr_decided']:>8.2f} "
            f"{r['success_mr']:>5.3f}/{r['success_ta']:<5.3f} {r['l2_mr']:>6.3f}/{r['l2_ta']:<6.3f}"
        )
        target = 6.0 if k == 2 else 4.0
        for label, v in (("cl model", speed), ("model as given", speed_given)):
            checks.append(
                (
                    f"DeepFool K={k}: >= {target:g}x faster than torchattacks ({label})",
                    v >= target,
                    f"{v:.2f}x",
                )
            )
        same = r["success_mr"] >= r["success_ta"] and r["l2_mr"] <= r["l2_ta"] * (1 + 1e-3)
        checks.append(
            (
                f"DeepFool K={k}: success >= and median L2 <= torchattacks' (+0.1 %)",
                same,
                f"{r['success_mr']:.3f} vs {r['success_ta']:.3f}, {r['l2_mr']:.4f} vs {r['l2_ta']:.4f}",
            )
        )
    d2, d10 = out["deepfool"]
    print(
        f"    time K=10 / K=2 (9x the class gradients per step): medrobust {d10['t_mr'] / d2['t_mr']:.2f}, "
        f"vectorised {d10['t_batched'] / d2['t_batched']:.2f}, torchattacks {d10['t_ta'] / d2['t_ta']:.2f}"
    )

    iters = 2 if args.quick else 5
    n_spsa = 4 if args.quick else 8
    r = spsa_row(model4, x4[:n_spsa], y4[:n_spsa], iters, reps)
    out["spsa"] = r
    speed, speed_given = r["t_ta"] / r["t_mr"], r["t_ta_given"] / r["t_mr"]
    print(
        f"\nSPSA {iters} iterations x 128 samples, {r['n']} images, {r['chunk']} perturbed images per "
        "forward (no early stop, no random start)"
    )
    print(
        f"    medrobust {r['t_mr']:.3f} s; torchattacks on the cl model {r['t_ta']:.3f} s ({speed:.2f}x), "
        f"on the model as given {r['t_ta_given']:.3f} s ({speed_given:.2f}x)\n    {r['query_model']}"
    )
    for label, v in (("cl model", speed), ("model as given", speed_given)):
        checks.append((f"SPSA: >= 3x faster than torchattacks at equal chunk ({label})", v >= 3, f"{v:.2f}x"))

    r = import_row(3 if args.quick else 5)
    out["import"] = r
    if "error" in r:
        print(f"\nImport, fresh interpreter: not measured, {r['error']}")
        checks.append(("audit import <= 1.3x 'import torch' (CPU)", False, r["error"]))
    else:
        cpu_ratio, wall_ratio = r["cpu_audit"] / r["cpu_torch"], r["wall_audit"] / r["wall_torch"]
        print(
            f"\nImport, fresh interpreter: 'import medrobust.evaluation.runner' {r['cpu_audit']:.2f} s CPU "
            f"({r['wall_audit']:.2f} s wall)\n    vs 'import torch' {r['cpu_torch']:.2f} s CPU "
            f"({r['wall_torch']:.2f} s wall): {cpu_ratio:.2f}x CPU, {wall_ratio:.2f}x wall"
        )
        checks.append(("audit import <= 1.3x 'import torch' (CPU)", cpu_ratio <= 1.3, f"{cpu_ratio:.2f}x"))

    print("\ntargets")
    for name, passed, detail in checks:
        print(f"  [{'PASS' if passed else 'FAIL'}] {name}{': ' + detail if detail else ''}")
    uptime_end = uptime()
    print(f"\nload average at end {load()}; total wall time {time.perf_counter() - t_start:.0f} s")
    print(f"# uptime at end: {uptime_end}")
    if args.json:
        out["meta"] = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "torch": torch.__version__,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, 1 thread",
            "reps": reps,
            "quick": args.quick,
            "load_average_start": load_start,
            "load_average_end": load(),
            "uptime_start": uptime_start,
            "uptime_end": uptime_end,
            "wall_seconds": round(time.perf_counter() - t_start),
            "figure": "median CPU seconds (time.process_time) over interleaved repetitions",
            "checks": [
                {"target": name, "passed": passed, "value": detail} for name, passed, detail in checks
            ],
        }
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
