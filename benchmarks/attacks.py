"""Benchmark medrobust attacks against torchattacks on the same model, data and parameters.

Run:  python benchmarks/attacks.py [--quick] [--threads 2] [--only pgd,deepfool]

The parent process trains a small conv net (medrobust ``small_cnn``, 1x64x64, 4 classes)
on a synthetic learnable task for a few seconds, saves it with the evaluation images to a
temporary folder, then runs every measurement in a fresh subprocess so that peak memory
is honest: RSS (psutil) is sampled every 2 ms in a thread while the attack runs and the
peak minus the RSS just before the attack is reported. Every subprocess uses the same
``torch.set_num_threads(--threads)``. Times are the best of ``--repeats`` runs (1 for the
expensive attacks) after one warm-up forward/backward.

PGD's compute floor is ``steps x (forward + input-gradient backward)`` measured in a tight
loop on the same model, batch and memory format medrobust uses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

#: L∞ budget for FGSM/PGD/SPSA/AutoAttack: large enough that attacks matter on this task.
EPS = 0.05


# ------------------------------------------------------------------------------------------
# model and data
# ------------------------------------------------------------------------------------------
def build_model(channels: int, classes: int):
    import torch
    from torch import nn

    try:
        from medrobust.models import ModelCard, build_classifier

        card = ModelCard(in_channels=channels, class_names=[f"c{i}" for i in range(classes)])
        return build_classifier("small_cnn", card, width=8, depth=3), "medrobust small_cnn(width=8, depth=3)"
    except ImportError:  # the models package is not there yet: an equivalent local net
        from medrobust.models.card import ModelCard

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                layers: list[nn.Module] = []
                ch = channels
                for i in range(3):
                    out = 8 * 2**i
                    layers += [nn.Conv2d(ch, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
                    if i < 2:
                        layers.append(nn.MaxPool2d(2))
                    ch = out
                self.features = nn.Sequential(*layers)
                self.head = nn.Linear(ch, classes)
                self.card = ModelCard(in_channels=channels, class_names=[f"c{i}" for i in range(classes)])

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.head(self.features(x).flatten(2).mean(2))

        return Net(), "local small CNN (width 8, depth 3)"


def stripe_data(n: int, channels: int, classes: int, size: int, seed: int):
    """Faint stripes whose orientation is the class, under noise and a random bright blob, in [0, 1].

    Orientation survives global average pooling, so a small CNN learns it in seconds.
    """
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((n, channels, size, size), dtype=np.float32)
    for i, y in enumerate(labels):
        angle = np.pi * y / classes + rng.normal(0, 0.05)
        phase = rng.uniform(0, 2 * np.pi)
        stripes = np.sin(2 * np.pi * 6 * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
        cy, cx = rng.uniform(0.2, 0.8, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.15**2))
        for c in range(channels):
            images[i, c] = 0.4 + 0.15 * stripes + 0.2 * blob + rng.normal(0, 0.08, (size, size))
    return torch.from_numpy(np.clip(images, 0, 1)), torch.from_numpy(labels).long()


def prepare(workdir: Path, channels: int, n_eval: int, threads: int) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    classes = 4
    x, y = stripe_data(960, channels, classes, 64, seed=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # seeds the initial weights too: the same model in every run
        model, desc = build_model(channels, classes)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(40):
            idx = torch.randint(0, len(x), (32,))
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    xe, ye = stripe_data(n_eval, channels, classes, 64, seed=2)
    with torch.no_grad():
        acc = (model(xe).argmax(1) == ye).float().mean().item()
    torch.save(model.state_dict(), workdir / f"model{channels}.pt")
    torch.save({"images": xe, "labels": ye}, workdir / f"data{channels}.pt")
    return {"model": desc, "clean_accuracy": acc}


# ------------------------------------------------------------------------------------------
# worker (runs in a fresh subprocess)
# ------------------------------------------------------------------------------------------
class PeakRSS:
    """Sample this process's RSS every ``interval`` seconds in a thread; report the peak."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def make_runner(job: dict[str, Any], model, images, labels):
    """Return a zero-argument callable producing adversarial images for ``job``."""
    import torch

    impl, attack, p = job["impl"], job["attack"], job["params"]
    if attack == "floor":
        from medrobust.attacks._utils import conv_weights_channels_last, frozen_params, to_format

        def floor():
            x = to_format(images, p["channels_last"])
            cl = conv_weights_channels_last(model, p["channels_last"])  # the layout medrobust uses
            with torch.enable_grad(), frozen_params(model), cl:
                for _ in range(p["steps"]):
                    a = x.detach().requires_grad_(True)
                    loss = torch.nn.functional.cross_entropy(model(a), labels)
                    torch.autograd.grad(loss, a)
            return images

        return floor
    if impl == "medrobust":
        from medrobust.attacks import create_attack, list_attacks

        if attack not in list_attacks():
            return None
        atk = create_attack(attack, model, bounds=(0.0, 1.0), **p)
        return lambda: atk(images, labels).adv
    import torchattacks

    if attack == "fgsm":
        atk = torchattacks.FGSM(model, eps=p["eps"])
    elif attack == "pgd":
        atk = torchattacks.PGD(model, eps=p["eps"], alpha=p["alpha"], steps=p["steps"])
    elif attack == "cw":
        atk = torchattacks.CW(model, c=p["c"], kappa=0, steps=p["steps"], lr=p["lr"])
    elif attack == "deepfool":
        atk = torchattacks.DeepFool(model, steps=p["steps"], overshoot=p["overshoot"])
    elif attack == "spsa":
        atk = torchattacks.SPSA(
            model,
            eps=p["eps"],
            delta=p["delta"],
            lr=p["lr"],
            nb_iter=p["nb_iter"],
            nb_sample=p["nb_sample"],
            max_batch_size=p["max_batch_size"],
        )
    elif attack == "autoattack":
        atk = torchattacks.AutoAttack(
            model, norm="Linf", eps=p["eps"], version="standard", n_classes=4, seed=0
        )
    else:
        raise ValueError(attack)

    def run():
        torch.manual_seed(0)
        return atk(images, labels)

    return run


def worker(workdir: Path, job: dict[str, Any], threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    ch = job.get("channels", 1)
    model, _ = build_model(ch, 4)
    model.load_state_dict(torch.load(workdir / f"model{ch}.pt", weights_only=True))
    model.eval()
    data = torch.load(workdir / f"data{ch}.pt", weights_only=True)
    images, labels = data["images"], data["labels"]
    if job.get("n"):
        images, labels = images[: job["n"]], labels[: job["n"]]
    feed = images
    if job.get("metatensor"):
        # The batch exactly as a MONAI DataLoader yields it: a MetaTensor. torchattacks runs
        # on it as given; medrobust strips it to a plain tensor once (inside the timing).
        from monai.data import MetaTensor

        feed = MetaTensor(images.clone())
    run = make_runner(job, model, feed, labels)
    if run is None:
        return {"available": False}
    a = images[:8].clone().requires_grad_(True)  # warm-up
    torch.autograd.grad(model(a).sum(), a)
    times = []
    adv = images
    with PeakRSS() as mem:
        for _ in range(job.get("repeats", 1)):
            t0 = time.perf_counter()
            adv = run()
            times.append(time.perf_counter() - t0)
    adv = adv.detach().as_subclass(torch.Tensor)  # torchattacks returns a MetaTensor for one
    with torch.no_grad():
        pred = model(adv).argmax(1)
        clean_ok = model(images).argmax(1) == labels
    fooled = clean_ok & (pred != labels)  # norms are reported for points the attack fooled
    delta = (adv - images).flatten(1)
    l2, linf = delta.norm(dim=1), delta.abs().amax(dim=1)
    med = lambda v: float(v[fooled].median()) if fooled.any() else float("nan")  # noqa: E731
    return {
        "available": True,
        "time": min(times),
        "robust_acc": float((pred == labels).float().mean()),
        "median_l2": med(l2),
        "median_linf": med(linf),
        "peak_mb": mem.delta_mb,
        "in_bounds": bool(adv.min() >= 0 and adv.max() <= 1),
    }


# ------------------------------------------------------------------------------------------
# parent
# ------------------------------------------------------------------------------------------
def jobs(quick: bool) -> list[dict[str, Any]]:
    n_pgd = 10
    pgd = {"eps": EPS, "alpha": 2.5 * EPS / n_pgd, "steps": n_pgd}
    pgd50 = {"eps": EPS, "alpha": 2.5 * EPS / 50, "steps": 50}
    # CW at equal total optimisation steps: torchattacks has no binary search over c.
    cw_ta = {"c": 1.0, "steps": 40 if quick else 100, "lr": 0.05}
    cw_mr = {"c": 1.0, "steps": 10 if quick else 20, "binary_steps": 4 if quick else 5, "lr": 0.05}
    df = {"steps": 50, "overshoot": 0.02}
    spsa_iter = 2 if quick else 10
    spsa_mr = {"eps": EPS, "steps": spsa_iter, "samples": 128, "delta": 0.01, "lr": 0.01}
    spsa_ta = {
        "eps": EPS,
        "delta": 0.01,
        "lr": 0.01,
        "nb_iter": spsa_iter,
        "nb_sample": 128,
        "max_batch_size": 64,
    }
    fast = 1 if quick else 3
    n_spsa = 16 if quick else 32  # images in the SPSA row (torchattacks: ~4 s per image here)
    n_aa = 4 if quick else 8  # images in the AutoAttack row
    out: list[dict[str, Any]] = [
        {"row": "FGSM", "attack": "fgsm", "impl": "medrobust", "params": {"eps": EPS}, "repeats": fast},
        {"row": "FGSM", "attack": "fgsm", "impl": "torchattacks", "params": {"eps": EPS}, "repeats": fast},
        {"row": "PGD-10", "attack": "pgd", "impl": "medrobust", "params": pgd, "repeats": fast},
        {"row": "PGD-10", "attack": "pgd", "impl": "torchattacks", "params": pgd, "repeats": fast},
        {
            "row": "PGD-10",
            "attack": "floor",
            "impl": "floor",
            "params": {"steps": n_pgd, "channels_last": True},
            "repeats": fast,
        },
        {
            "row": "PGD-10",
            "attack": "floor",
            "impl": "floor-nchw",
            "params": {"steps": n_pgd, "channels_last": False},
            "repeats": fast,
        },
    ]
    if not quick:
        out += [
            {"row": "PGD-50", "attack": "pgd", "impl": "medrobust", "params": pgd50, "repeats": 1},
            {"row": "PGD-50", "attack": "pgd", "impl": "torchattacks", "params": pgd50, "repeats": 1},
            {
                "row": "PGD-50",
                "attack": "floor",
                "impl": "floor",
                "params": {"steps": 50, "channels_last": True},
                "repeats": 2,
            },
            {
                "row": "PGD-10 3ch",
                "attack": "pgd",
                "impl": "medrobust",
                "params": pgd,
                "repeats": fast,
                "channels": 3,
            },
            {
                "row": "PGD-10 3ch",
                "attack": "pgd",
                "impl": "torchattacks",
                "params": pgd,
                "repeats": fast,
                "channels": 3,
            },
            {
                "row": "PGD-10 3ch",
                "attack": "floor",
                "impl": "floor",
                "params": {"steps": n_pgd, "channels_last": True},
                "repeats": fast,
                "channels": 3,
            },
        ]
    # The same PGD-10 on the batch as MONAI's DataLoader yields it (a MetaTensor).
    out += [
        {
            "row": "PGD-10 MONAI",
            "attack": "pgd",
            "impl": impl,
            "params": pgd,
            "repeats": fast,
            "metatensor": True,
        }
        for impl in ("medrobust", "torchattacks")
    ]
    out += [
        {"row": "CW-L2", "attack": "cw", "impl": "medrobust", "params": cw_mr},
        {"row": "CW-L2", "attack": "cw", "impl": "torchattacks", "params": cw_ta},
        {"row": "DeepFool", "attack": "deepfool", "impl": "medrobust", "params": df, "repeats": fast},
        {"row": "DeepFool", "attack": "deepfool", "impl": "torchattacks", "params": df},
        {"row": "SPSA", "attack": "spsa", "impl": "medrobust", "params": spsa_mr, "n": n_spsa},
        {"row": "SPSA", "attack": "spsa", "impl": "torchattacks", "params": spsa_ta, "n": n_spsa},
        # Both at the original strength ("standard"); torchattacks' version takes minutes per
        # few images here (FAB-T and Square), so the row uses a subset to fit the time budget.
        {
            "row": "AutoAttack",
            "attack": "autoattack",
            "impl": "medrobust",
            "params": {"eps": EPS, "norm": "linf", "version": "standard"},
            "n": n_aa,
        },
        {
            "row": "AutoAttack",
            "attack": "autoattack",
            "impl": "torchattacks",
            "params": {"eps": EPS},
            "n": n_aa,
        },
    ]
    return out


def run_job(workdir: Path, job: dict[str, Any], threads: int, timeout: float) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        json.dumps(job),
        "--workdir",
        str(workdir),
        "--threads",
        str(threads),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"available": True, "error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"available": True, "error": tail[:160]}
    return json.loads(lines[-1])


def fmt(v: Any, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 images and cheaper settings (about 1 minute)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every measurement (default 2)")
    ap.add_argument(
        "--only", default="", help="comma-separated attacks (fgsm,pgd,cw,deepfool,spsa,autoattack)"
    )
    ap.add_argument("--timeout", type=float, default=420.0, help="per-measurement limit in seconds")
    ap.add_argument("--json", default="", help="also write all measurements to this JSON file")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(Path(args.workdir), json.loads(args.worker), args.threads)))
        return 0

    import platform

    import torch

    n_eval = 16 if args.quick else 64
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    todo = [
        j
        for j in jobs(args.quick)
        if not only or j["attack"] in only or (j["attack"] == "floor" and "pgd" in only)
    ]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medrobust-bench-") as tmp:
        workdir = Path(tmp)
        meta = prepare(workdir, 1, n_eval, args.threads)
        if any(j.get("channels", 1) == 3 for j in todo):
            meta["clean_accuracy_3ch"] = prepare(workdir, 3, n_eval, args.threads)["clean_accuracy"]
        print(
            f"# {meta['model']}, {n_eval} images 1x64x64, 4 classes, clean accuracy "
            f"{meta['clean_accuracy']:.3f}; torch {torch.__version__}, threads={args.threads}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
        )
        results: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for job in todo:
            res = run_job(workdir, job, args.threads, args.timeout)
            results.append((job, res))
            status = (
                "not available" if not res.get("available") else res.get("error") or f"{res['time']:.2f} s"
            )
            print(f"  {job['row']:<11} {job['impl']:<12} {status}", flush=True)

    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for job, res in results:
        rows.setdefault(job["row"], {})[job["impl"]] = res
    print()
    head = (
        f"{'attack':<11} {'t_mr[s]':>8} {'t_ta[s]':>8} {'ta/mr':>6} {'rob_mr':>7} {'rob_ta':>7} "
        f"{'L2_mr':>7} {'L2_ta':>7} {'Linf_mr':>7} {'Linf_ta':>7} {'mem_mr':>7} {'mem_ta':>7}  notes"
    )
    print(head)
    print("-" * len(head))
    checks: list[tuple[str, bool | None, str]] = []

    def ok(res: dict[str, Any] | None) -> bool:
        return bool(res) and res.get("available", False) and "error" not in res

    for row, impls in rows.items():
        mr, ta = impls.get("medrobust"), impls.get("torchattacks")
        ratio = ta["time"] / mr["time"] if ok(mr) and ok(ta) else None
        notes = []
        for name, res in (("medrobust", mr), ("torchattacks", ta)):
            if res is not None and not res.get("available", False):
                notes.append(f"{name} not available")
            elif res is not None and "error" in res:
                notes.append(f"{name}: {res['error']}")
        fl = impls.get("floor")
        if ok(fl) and ok(mr):
            notes.append(f"floor {fl['time']:.3f} s, mr/floor {mr['time'] / fl['time']:.3f}")
        if ok(impls.get("floor-nchw")):
            notes.append(f"floor NCHW {impls['floor-nchw']['time']:.3f} s")
        g = lambda r, k, s=".3f": fmt(r.get(k), s) if ok(r) else "-"  # noqa: E731
        print(
            f"{row:<11} {g(mr, 'time', '.2f'):>8} {g(ta, 'time', '.2f'):>8} {fmt(ratio, '.2f'):>6} "
            f"{g(mr, 'robust_acc'):>7} {g(ta, 'robust_acc'):>7} "
            f"{g(mr, 'median_l2'):>7} {g(ta, 'median_l2'):>7} "
            f"{g(mr, 'median_linf'):>7} {g(ta, 'median_linf'):>7} {g(mr, 'peak_mb', '.0f'):>7} "
            f"{g(ta, 'peak_mb', '.0f'):>7}  {'; '.join(notes)}"
        )
        if row.startswith("PGD") and ok(mr):
            if ok(fl):
                r = mr["time"] / fl["time"]
                checks.append((f"{row}: medrobust <= 1.02x floor", r <= 1.02, f"{r:.3f}x"))
            if ratio is not None:
                checks.append((f"{row}: >= 1.25x faster than torchattacks", ratio >= 1.25, f"{ratio:.2f}x"))
        if row == "DeepFool":
            if ratio is None:
                checks.append(("DeepFool targets", None, "not measured"))
            else:
                eq = mr["robust_acc"] <= ta["robust_acc"] + 1e-9
                l2_ok = not (mr["median_l2"] > ta["median_l2"] * (1 + 1e-4))  # float noise
                checks.append(("DeepFool: >= 10x faster than torchattacks", ratio >= 10, f"{ratio:.1f}x"))
                checks.append(
                    (
                        "DeepFool: success >= torchattacks, median L2 <= torchattacks",
                        eq and l2_ok,
                        f"rob {mr['robust_acc']:.3f} vs {ta['robust_acc']:.3f}, "
                        f"L2 {mr['median_l2']:.3f} vs {ta['median_l2']:.3f}",
                    )
                )
        if row == "SPSA":
            if ratio is None:
                checks.append(("SPSA targets", None, "; ".join(notes) or "not measured"))
            else:
                checks.append(("SPSA: >= 3x faster than torchattacks", ratio >= 3, f"{ratio:.1f}x"))
                m = mr["peak_mb"] / max(ta["peak_mb"], 1e-9)
                checks.append(
                    (
                        "SPSA: <= 50% of torchattacks' peak memory",
                        m <= 0.5,
                        f"{mr['peak_mb']:.0f} MB vs {ta['peak_mb']:.0f} MB",
                    )
                )
        if row == "AutoAttack":
            if ok(mr) and ok(ta):
                checks.append(
                    (
                        "AutoAttack: robust accuracy <= torchattacks'",
                        mr["robust_acc"] <= ta["robust_acc"],
                        f"{mr['robust_acc']:.3f} vs {ta['robust_acc']:.3f}",
                    )
                )
            else:
                checks.append(("AutoAttack comparison", None, "; ".join(notes) or "not measured"))
        for name, res in (("medrobust", mr), ("torchattacks", ta)):
            if ok(res) and not res["in_bounds"]:
                notes.append(f"{name} left the bounds")

    print("\ntargets")
    for name, passed, detail in checks:
        tag = "n/a " if passed is None else ("PASS" if passed else "FAIL")
        print(f"  [{tag}] {name}: {detail}")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
