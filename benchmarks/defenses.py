"""Denoising defenses against adversarial training and denoised smoothing, evaluated adaptively.

The experiment of issue 14 (items 5 and 6), through the public API only:

1. Data: phantoms (``write_phantom(MODALITY, N, SIZE, "npz")``; chest X-ray: 2 classes, brain MRI:
   4 classes), the data layer's train/val/test split; a stratified subset of ``--n-test`` test images.
2. Per training seed: the bare classifier (``train_classifier``, small_cnn), PGD-AT and TRADES
   (``--adversarial``), a Gaussian-noise-augmented classifier (``noise_sigma``) for randomized
   smoothing, and six denoisers in front of the bare classifier (``train_defense``): plain DAE,
   MagNet-style, HGD-style, Siamese-DAE trained gray-box, Siamese-DAE trained adaptively, and the
   adaptive Siamese-DAE with the agreement (Siamese) weight at 0 (ablation). The adaptive rows use
   train_defense's defaults: 3 warm-start epochs (noise twins, no attack, no classification term),
   then the classification weight ramps up over 3 epochs (without them ``f∘D`` collapsed to one
   class at 2 of 3 seeds; docs/siamese_dae.md). ``--rows`` picks rows;
   ``median`` (3x3 median filter, BPDA) is available but not in the default set.
3. Columns, per sample and per row:
   * clean: ``f∘D`` on the clean image (smoothing: CERTIFY's prediction, abstentions wrong);
   * gray: AutoAttack (``--aa-version``, L∞ 8/255) crafted on the bare classifier ``f`` and passed
     through ``D`` (rows without a denoiser of ``f``: "—");
   * adaptive: AutoAttack on the deployed pipeline ``f∘D`` end to end (version ``rand`` with EOT for
     randomised targets; BPDA through non-differentiable denoisers, then Square beside it);
     smoothing is judged by the smoothed classifier's PREDICT on the adversarial image;
   * square: Square (gradient-free) beside every BPDA cell;
   * certified accuracy at two L2 radii (smoothing row; CERTIFY with n0 = 100, ``--certify-n``);
   * worst: correct under every attack run on that sample (the headline);
   * tiny grad: share of test samples whose cross-entropy input gradient through ``f∘D`` has L2 norm
     below 1e-12 (useless gradients; the margin-loss gradient is in results.json too);
   * train s: wall seconds to train the row's own component (denoiser, or classifier for the
     classifier rows; denoiser rows also need the bare classifier).
4. Intervals: Wilson 95 % for one seed; over seeds the mean ± s.d. of the per-seed rates, the
   per-seed values and a Wilson interval on the pooled samples. Paired comparisons (Siamese-DAE
   variants, PGD-AT, TRADES) on the pooled per-sample worst-case outcomes: McNemar's exact test
   (two-sided binomial test of the discordant pairs at p = 1/2).

Query budgets scale with the image size: Square's queries (stand-alone and inside AutoAttack) are
``--square-queries`` × max(1, d / 3072) for d = C·H·W input values (AutoAttack's 5000 were set
for 3072-value CIFAR-10 images), so larger images get proportionally more queries.

Writes ``results.json`` (settings, every per-sample outcome, timings) and ``results.md`` (the
tables) under ``--out`` and prints the tables.

    # full experiment (2 idle cores: one single-threaded process per modality; docs/siamese_dae.md)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defenses.py --jobs 2
    # CI smoke run
    .venv/bin/python benchmarks/defenses.py --quick --out /tmp/defenses-quick
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

EPS = "8/255"
GRAD_FLOOR = 1e-12
#: Input values of a CIFAR-10 image, for which AutoAttack's Square budget (5000 queries) was set.
SQUARE_REFERENCE_DIM = 3072

ROWS: dict[str, str] = {
    "bare": "No defense",
    "dae": "DAE (Gaussian noise)",
    "magnet": "MagNet-style",
    "hgd": "HGD-style",
    "siamese-graybox": "Siamese-DAE, gray-box trained",
    "siamese-adaptive": "Siamese-DAE, adaptive trained",
    "siamese-adaptive-nosiam": "Siamese-DAE, adaptive, w_siam = 0",
    "pgd-at": "PGD-AT",
    "trades": "TRADES",
    "smoothing": "Randomized smoothing",
    "median": "Median 3x3",
}
DEFAULT_ROWS = [k for k in ROWS if k != "median"]
#: Denoiser rows: train_defense settings beyond the shared ones.
DENOISER_ROWS: dict[str, dict[str, Any]] = {
    "dae": {"kind": "dae", "noise_sigma": "16/255"},
    "magnet": {"kind": "magnet"},
    "hgd": {"kind": "hgd"},
    "siamese-graybox": {"kind": "siamese-dae", "adversary": "graybox"},
    "siamese-adaptive": {"kind": "siamese-dae", "adversary": "adaptive"},
    "siamese-adaptive-nosiam": {"kind": "siamese-dae", "adversary": "adaptive", "w_siam": 0.0},
}
#: Paired comparisons (McNemar on the pooled per-sample worst case).
PAIRS = [
    ("siamese-adaptive", "siamese-graybox"),
    ("siamese-adaptive", "siamese-adaptive-nosiam"),
    ("siamese-adaptive", "pgd-at"),
    ("siamese-adaptive", "trades"),
    ("siamese-graybox", "pgd-at"),
    ("siamese-adaptive-nosiam", "pgd-at"),
    ("pgd-at", "trades"),
]
COLUMNS = ["clean", "gray", "adaptive", "square", "worst"]

QUICK = {
    "modalities": ["chest_xray"],
    "n": 240,
    "size": 32,
    "n_test": 16,
    "seeds": [0],
    "clf_epochs": 2,
    "def_epochs": 1,
    "adv_steps": 2,
    "aa_steps": 3,
    "square_queries": 50,
    "eot_iter": 2,
    "certify_n": 50,
    "predict_n": 20,
}


# --------------------------------------------------------------------------- statistics


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson 95 % interval of ``k / n`` (medrobust.evaluation.statistics)."""
    from medrobust.evaluation.statistics import wilson_interval

    ci = wilson_interval(k, n)
    return (math.nan, math.nan) if ci is None else ci


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test on paired outcomes: two-sided binomial test of the discordant pairs."""
    from scipy.stats import binomtest

    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"a_only": only_a, "b_only": only_b, "n": len(a), "p_value": p}


def summarise(per_seed: list[list[bool]]) -> dict[str, Any]:
    """Rate per seed, mean ± s.d. over seeds and the pooled Wilson interval."""
    rates = [sum(v) / len(v) for v in per_seed]
    k = sum(sum(v) for v in per_seed)
    n = sum(len(v) for v in per_seed)
    lo, hi = wilson(k, n)
    return {
        "per_seed": rates,
        "mean": statistics.fmean(rates),
        "sd": statistics.stdev(rates) if len(rates) > 1 else None,
        "pooled_k": k,
        "pooled_n": n,
        "ci95": [lo, hi],
    }


def fmt_cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return "—"
    lo, hi = (100 * v for v in s["ci95"])
    if s["sd"] is None:
        return f"{100 * s['mean']:.1f} ({lo:.0f}–{hi:.0f})"
    seeds = ", ".join(f"{100 * r:.0f}" for r in s["per_seed"])
    return f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f} ({lo:.0f}–{hi:.0f}) [{seeds}]"


# --------------------------------------------------------------------------- model helpers


def predictions(model: torch.nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]).argmax(1).cpu() for i in range(0, len(x), batch)])


def gradient_norms(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 128
) -> dict[str, Any]:
    """Per-sample input-gradient L2 norms of the cross-entropy and of the margin loss through ``model``."""
    import torch.nn.functional as F

    ce_norms, margin_norms = [], []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].clone().requires_grad_(True)
        yb = y[i : i + batch]
        logits = model(xb).float()
        (g_ce,) = torch.autograd.grad(F.cross_entropy(logits, yb, reduction="sum"), xb, retain_graph=True)
        true = logits.gather(1, yb[:, None]).squeeze(1)
        other = logits.masked_fill(torch.nn.functional.one_hot(yb, logits.shape[1]).bool(), -torch.inf)
        (g_m,) = torch.autograd.grad((true - other.max(1).values).sum(), xb)
        ce_norms += g_ce.flatten(1).norm(dim=1).tolist()
        margin_norms += g_m.flatten(1).norm(dim=1).tolist()
    return {
        "ce_below_floor": sum(v < GRAD_FLOOR for v in ce_norms),
        "margin_below_floor": sum(v < GRAD_FLOOR for v in margin_norms),
        "n": len(ce_norms),
        "ce_median": float(np.median(ce_norms)),
        "margin_median": float(np.median(margin_norms)),
    }


def square_queries(base: int, x: torch.Tensor) -> int:
    """Square's query budget for images like ``x``: ``base`` × max(1, C·H·W / 3072)."""
    dim = int(np.prod(x.shape[1:]))
    return round(base * max(1.0, dim / SQUARE_REFERENCE_DIM))


def autoattack(model, x, y, args, seed: int, *, stochastic: bool) -> torch.Tensor:
    from medrobust.attacks import create_attack

    params: dict[str, Any] = {"eps": 8 / 255, "seed": seed}
    if stochastic:
        params.update(version="rand", eot_iter=args.eot_iter)
    else:
        params.update(version=args.aa_version, queries=square_queries(args.square_queries, x))
    if args.aa_steps is not None:
        params["steps"] = args.aa_steps
    torch.manual_seed(seed)  # randomised targets draw from the global generator
    return create_attack("autoattack", model, **params)(x, y).adv.detach()


def square(model, x, y, args, seed: int) -> torch.Tensor:
    from medrobust.attacks import create_attack

    attack = create_attack(
        "square", model, eps=8 / 255, queries=square_queries(args.square_queries, x), seed=seed
    )
    return attack(x, y).adv.detach()


# --------------------------------------------------------------------------- training


def train_classifiers(
    data: Path, modality: str, seed: int, args, work: Path
) -> dict[str, tuple[Path, float]]:
    from medrobust.models import train_classifier

    base = {
        "data": str(data),
        "modality": modality,
        "spatial_size": [args.size, args.size],
        "arch": "small_cnn",
        "arch_kwargs": {"width": args.width, "depth": 3},
        "epochs": args.clf_epochs,
        "batch_size": 32,
        "lr": 3e-3,
        "patience": 0,
        "seed": seed,
        "amp": False,
        "augment": False,
        "device": args.device,
        "progress": False,
        "overwrite": True,
    }
    recipes = {
        "bare": {},
        "pgd-at": {"adversarial": "pgd", "adv_eps": EPS, "adv_steps": args.adv_steps},
        "trades": {"adversarial": "trades", "adv_eps": EPS, "adv_steps": args.adv_steps},
        "smoothing": {"noise_sigma": args.smooth_sigma, "epochs": args.clf_epochs * args.noise_epochs_factor},
    }
    out = {}
    for key, extra in recipes.items():
        if key != "bare" and key not in args.rows:
            continue
        t, cpu = time.perf_counter(), time.process_time()
        run = train_classifier({**base, **extra, "out": str(work / f"clf-{key}")})
        out[key] = (run, time.perf_counter() - t)
        print(
            f"  trained {key} classifier in {out[key][1]:.1f} s ({time.process_time() - cpu:.1f} CPU s)",
            flush=True,
        )
    return out


def train_denoisers(clf_dir: Path, seed: int, args, work: Path) -> dict[str, tuple[Path, float]]:
    from medrobust.defenses import train_defense

    base = {
        "classifier": str(clf_dir),
        "arch": "dae",
        "arch_params": {"width": 8, "depth": 2, "latent_channels": 8},
        "epochs": args.def_epochs,
        "batch_size": 32,
        "lr": 3e-3,
        "seed": seed,
        "device": args.device,
        "val_limit": 128,
        "adaptive_val_every": 0,  # the adaptive validation attack once, after the last epoch
        "progress": False,
        "overwrite": True,
    }
    out = {}
    for key, extra in DENOISER_ROWS.items():
        if key not in args.rows:
            continue
        t, cpu = time.perf_counter(), time.process_time()
        run = train_defense({**base, **extra, "out": str(work / f"def-{key}")})
        out[key] = (run, time.perf_counter() - t)
        print(
            f"  trained {key} denoiser in {out[key][1]:.1f} s ({time.process_time() - cpu:.1f} CPU s)",
            flush=True,
        )
    return out


# --------------------------------------------------------------------------- one seed


def run_seed(modality: str, data: Path, x: torch.Tensor, y: torch.Tensor, seed: int, args) -> dict[str, Any]:
    from medrobust.defenses import create_denoiser, defend, load_denoiser
    from medrobust.defenses.certify import certified_accuracy
    from medrobust.defenses.smoothing import smooth
    from medrobust.models import load_model
    from medrobust.run.seeds import derive_seed
    from medrobust.utils.device import resolve_device

    device = resolve_device(args.device)
    work = args.work / modality / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    classifiers = train_classifiers(data, modality, seed, args, work)
    denoisers = train_denoisers(classifiers["bare"][0], seed, args, work)
    bare = load_model(classifiers["bare"][0]).eval().to(device)
    x, y = x.to(device), y.to(device)

    def seed_of(*keys: object) -> int:
        return derive_seed(seed, modality, *keys)

    t = time.perf_counter()
    x_gray = autoattack(bare, x, y, args, seed_of("gray"), stochastic=False)
    print(f"  gray-box AutoAttack on f in {time.perf_counter() - t:.1f} s", flush=True)

    rows: dict[str, Any] = {}
    for key in args.rows:
        t0, cpu0 = time.perf_counter(), time.process_time()
        row: dict[str, Any] = {"bpda": False, "stochastic": False}
        outcome: dict[str, list[bool]] = {}
        if key == "smoothing":
            clf = load_model(classifiers["smoothing"][0]).eval().to(device)
            g = smooth(clf, args.smooth_sigma, seed=seed_of("smooth"))
            certs = g.certify(x, n0=100, n=args.certify_n, alpha=0.001, seed=seed_of("certify"))
            preds = [c.prediction for c in certs]
            radii = [c.radius for c in certs]
            labels = y.cpu().tolist()
            outcome["clean"] = [p == t for p, t in zip(preds, labels, strict=True)]
            row["clean_classes_predicted"] = len({p for p in preds if p >= 0})
            rows_cert = certified_accuracy(preds, radii, labels, at=args.radii)
            row["certified"] = [
                {
                    **r,
                    "correct": [
                        p == t and rad >= r["radius"] for p, rad, t in zip(preds, radii, labels, strict=True)
                    ],
                }
                for r in rows_cert
            ]
            row["certificates"] = [c.to_dict() for c in certs]
            x_adv = autoattack(g, x, y, args, seed_of(key, "adaptive"), stochastic=True)
            pred_adv = g.predict(x_adv, n=args.predict_n, alpha=0.001, seed=seed_of("predict"))
            outcome["adaptive"] = (pred_adv == y.cpu()).tolist()
            row["stochastic"] = True
            row["sigma"] = args.smooth_sigma
            torch.manual_seed(seed_of("grad"))
            row["gradients"] = gradient_norms(g, x, y)
            row["train_seconds"] = classifiers["smoothing"][1]
        else:
            if key in ("bare", "pgd-at", "trades"):
                model = bare if key == "bare" else load_model(classifiers[key][0]).eval().to(device)
                row["train_seconds"] = classifiers[key][1]
            else:
                if key == "median":
                    den = create_denoiser(
                        "median", in_channels=bare.card.in_channels, bounds=bare.card.bounds, kernel_size=3
                    )
                    row["train_seconds"] = 0.0
                else:
                    den = load_denoiser(denoisers[key][0])
                    row["train_seconds"] = denoisers[key][1]
                    summary = json.loads((denoisers[key][0] / "summary.json").read_text())
                    row["loop_train_seconds"] = summary.get("train_seconds")
                    row["val_adaptive_acc"] = (summary.get("final") or {}).get("val_adaptive_acc")
                model = defend(bare, den).eval().to(device)
                row["bpda"] = bool(getattr(model, "uses_bpda", False))
            pred_clean = predictions(model, x)
            outcome["clean"] = (pred_clean == y.cpu()).tolist()
            row["clean_classes_predicted"] = len(set(pred_clean.tolist()))
            if key not in ("pgd-at", "trades"):  # gray-box needs the bare f behind the row
                outcome["gray"] = (predictions(model, x_gray) == y.cpu()).tolist()
            if key == "bare":
                outcome["adaptive"] = list(outcome["gray"])
            else:
                x_adv = autoattack(model, x, y, args, seed_of(key, "adaptive"), stochastic=False)
                outcome["adaptive"] = (predictions(model, x_adv) == y.cpu()).tolist()
            if row["bpda"]:
                x_sq = square(model, x, y, args, seed_of(key, "square"))
                outcome["square"] = (predictions(model, x_sq) == y.cpu()).tolist()
            row["gradients"] = gradient_norms(model, x, y)
        outcome["worst"] = [all(v) for v in zip(*outcome.values(), strict=True)]
        row["outcomes"] = outcome
        row["eval_seconds"] = round(time.perf_counter() - t0, 1)
        row["eval_cpu_seconds"] = round(time.process_time() - cpu0, 1)
        rows[key] = row
        rates = {c: f"{100 * sum(v) / len(v):.0f}" for c, v in outcome.items()}
        print(
            f"  {ROWS[key]}: {rates} ({row['eval_seconds']} s, {row['eval_cpu_seconds']} CPU s)", flush=True
        )
    return rows


# --------------------------------------------------------------------------- tables


def aggregate(per_seed: list[dict[str, Any]], rows: list[str], seeds: Sequence[int]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for key in rows:
        entries = [s[key] for s in per_seed]
        cell: dict[str, Any] = {}
        for col in COLUMNS:
            if all(col in e["outcomes"] for e in entries):
                cell[col] = summarise([e["outcomes"][col] for e in entries])
        if "certified" in entries[0]:
            cell["certified"] = [
                {"radius": r["radius"], **summarise([e["certified"][i]["correct"] for e in entries])}
                for i, r in enumerate(entries[0]["certified"])
            ]
        grads = [e["gradients"] for e in entries]
        cell["tiny_grad"] = sum(g["ce_below_floor"] for g in grads) / sum(g["n"] for g in grads)
        cell["tiny_margin_grad"] = sum(g["margin_below_floor"] for g in grads) / sum(g["n"] for g in grads)
        cell["train_seconds"] = [round(e["train_seconds"], 1) for e in entries]
        cell["constant_in_seeds"] = [
            seed for seed, e in zip(seeds, entries, strict=True) if e.get("clean_classes_predicted", 2) <= 1
        ]  # a collapsed pipeline: one class for every clean test image (its "robustness" is the class share)
        cell["bpda"] = entries[0]["bpda"]
        cell["stochastic"] = entries[0]["stochastic"]
        table[key] = cell
    return table


def pairs(per_seed: list[dict[str, Any]], rows: list[str]) -> list[dict[str, Any]]:
    out = []
    for a, b in PAIRS:
        if a in rows and b in rows:
            wa = [v for s in per_seed for v in s[a]["outcomes"]["worst"]]
            wb = [v for s in per_seed for v in s[b]["outcomes"]["worst"]]
            out.append(
                {"a": a, "b": b, "a_rate": sum(wa) / len(wa), "b_rate": sum(wb) / len(wb), **mcnemar(wa, wb)}
            )
    return out


def markdown(
    modality: str, table: dict[str, Any], tests: list[dict[str, Any]], meta: dict[str, Any], radii
) -> str:
    r1, r2 = radii
    head = (
        f"| defense | clean | gray AA | adaptive AA | Square (BPDA) | cert. r={r1:g} | cert. r={r2:g} "
        "| worst case | grad < 1e-12 | train s |"
    )
    lines = [head, "|" + "---|" * 10]
    for key, c in table.items():
        name = ROWS[key] + (" (BPDA)" if c["bpda"] else "") + (" (EOT)" if c["stochastic"] else "")
        if c.get("constant_in_seeds"):
            name += f" ⚠ one class for every image at seed(s) {c['constant_in_seeds']}"
        cert = c.get("certified") or [None, None]
        secs = "/".join(f"{s:.0f}" for s in c["train_seconds"])
        lines.append(
            f"| {name} | {fmt_cell(c.get('clean'))} | {fmt_cell(c.get('gray'))} "
            f"| {fmt_cell(c.get('adaptive'))} | {fmt_cell(c.get('square'))} | {fmt_cell(cert[0])} "
            f"| {fmt_cell(cert[1])} "
            f"| **{fmt_cell(c.get('worst'))}** | {100 * c['tiny_grad']:.0f} % | {secs} |"
        )
    pair_lines = ["| worst case: A vs B | A | B | only A right | only B right | n pairs | McNemar exact p |"]
    pair_lines.append("|---|---|---|---|---|---|---|")
    for t in tests:
        pair_lines.append(
            f"| {ROWS[t['a']]} vs {ROWS[t['b']]} | {100 * t['a_rate']:.1f} | {100 * t['b_rate']:.1f} "
            f"| {t['a_only']} | {t['b_only']} | {t['n']} | {t['p_value']:.3g} |"
        )
    return (
        f"### {modality} ({meta['size']}×{meta['size']}, {meta['n_test']} test images, "
        f"seeds {meta['seeds']})\n\n"
        "Accuracy (%): mean ± s.d. over seeds (pooled Wilson 95 % interval) [per seed]; one seed: rate "
        "(Wilson 95 %). L∞ ε = 8/255; certified: L2 radius in image units.\n\n"
        + "\n".join(lines)
        + "\n\nPaired comparisons on the pooled per-sample worst case (McNemar's exact test: two-sided "
        "binomial test of the discordant pairs at p = 1/2; pairs from different seeds share test images).\n\n"
        + "\n".join(pair_lines)
        + "\n"
    )


# --------------------------------------------------------------------------- main


def test_subset(data: Path, modality: str, size: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stratified subset of the test split (same images for every seed)."""
    from medrobust.data import get_preset, load_arrays, make_dataset, open_source
    from medrobust.run.seeds import derive_seed

    ds = make_dataset(
        open_source(str(data)), split="test", preset=get_preset(modality), spatial_size=[size] * 2
    )
    x, y = load_arrays(ds)
    rng = np.random.default_rng(derive_seed(0, "defenses-test-subset", modality))
    classes = sorted(set(y.tolist()))
    per = n_test // len(classes)
    keep: list[int] = []
    for k in classes:
        idx = np.flatnonzero(y.numpy() == k)
        keep += rng.permutation(idx)[:per].tolist()
    keep = sorted(keep)
    return x[keep], y[keep]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny CI run (chest only, 1 seed, a few steps)")
    ap.add_argument("--modalities", nargs="+", default=["chest_xray", "brain_mri"])
    ap.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    ap.add_argument("--n", type=int, default=2000, help="phantom images per modality")
    ap.add_argument("--size", type=int, default=32, help="image size")
    ap.add_argument("--n-test", type=int, default=100, help="test images (stratified)")
    ap.add_argument("--width", type=int, default=8, help="small_cnn width")
    ap.add_argument("--clf-epochs", type=int, default=10)
    ap.add_argument(
        "--noise-epochs-factor", type=int, default=2, help="smoothing classifier epochs ÷ clf-epochs"
    )
    ap.add_argument("--def-epochs", type=int, default=15, help="denoiser training epochs")
    ap.add_argument("--adv-steps", type=int, default=5, help="PGD-AT / TRADES inner steps")
    ap.add_argument("--aa-version", default="standard", choices=["standard", "fast"])
    ap.add_argument("--aa-steps", type=int, default=None, help="AutoAttack iterations (default 100)")
    ap.add_argument("--square-queries", type=int, default=5000, help="Square queries per 3072 input values")
    ap.add_argument("--eot-iter", type=int, default=20, help="EOT draws of AutoAttack 'rand'")
    ap.add_argument(
        "--smooth-sigma", default="64/255", help="smoothing noise (k/255 of the range or image units)"
    )
    ap.add_argument("--radii", nargs=2, type=float, default=[0.25, 0.5], help="certified L2 radii")
    ap.add_argument("--certify-n", type=int, default=1000, help="CERTIFY estimation samples")
    ap.add_argument("--predict-n", type=int, default=100, help="PREDICT samples on adversarial images")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: these small nets run faster on one thread, and much faster on a "
        "loaded machine)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="modalities run in parallel processes")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/defenses"))
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)
    if args.quick:
        defaults = ap.parse_args([])
        for key, value in QUICK.items():
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)
    if "bare" not in args.rows:
        args.rows = ["bare", *args.rows]
    args.rows = [k for k in ROWS if k in args.rows]
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the experiment (arguments as on the command line) and return what results.json holds."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _modality(modality: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Every seed of one modality: the per-seed rows and the test labels."""
    from medrobust.data import write_phantom

    torch.set_num_threads(args.threads)  # also in a worker process of --jobs
    print(f"[{modality}]", flush=True)
    data = write_phantom(
        modality, args.n, args.size, "npz", args.work / "data" / modality, seed=0, progress=False
    )
    x, y = test_subset(data, modality, args.size, args.n_test)
    per_seed = []
    for seed in args.seeds:
        t = time.perf_counter()
        print(f" {modality} seed {seed}", flush=True)
        per_seed.append(run_seed(modality, data, x, y, seed, args))
        print(f" {modality} seed {seed} done in {time.perf_counter() - t:.0f} s", flush=True)
    return per_seed, y


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.work is None:
        args.work = Path(tempfile.mkdtemp(prefix="medrobust-defenses-"))
    from medrobust.utils.io import atomic_write_json, atomic_write_text

    t_start = time.perf_counter()
    results: dict[str, Any] = {"modalities": {}}
    sections = []
    if args.jobs > 1 and len(args.modalities) > 1:  # one process per modality (each single-threaded)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            done = list(pool.map(_modality, args.modalities, [args] * len(args.modalities)))
    else:
        done = [_modality(modality, args) for modality in args.modalities]
    for modality, (per_seed, y) in zip(args.modalities, done, strict=True):
        table = aggregate(per_seed, args.rows, args.seeds)
        tests = pairs(per_seed, args.rows)
        meta = {"size": args.size, "n_test": len(y), "seeds": args.seeds, "classes": int(y.max()) + 1}
        results["modalities"][modality] = {
            "meta": {**meta, "test_class_counts": torch.bincount(y).tolist()},
            "table": table,
            "mcnemar": tests,
            "per_seed": {str(s): r for s, r in zip(args.seeds, per_seed, strict=True)},
        }
        sections.append(markdown(modality, table, tests, meta, args.radii))
    total = time.perf_counter() - t_start
    settings = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "work")
    }
    results["settings"] = settings
    results["eps"] = EPS
    results["square_queries_rule"] = f"{args.square_queries} x max(1, C*H*W / {SQUARE_REFERENCE_DIM})"
    results["seconds_total"] = round(total, 1)
    results["threads"] = args.threads
    cost = {}
    for modality, res in results["modalities"].items():
        t = res["table"]
        if "siamese-adaptive" in t and "siamese-graybox" in t:
            cost[modality] = sum(t["siamese-adaptive"]["train_seconds"]) / sum(
                t["siamese-graybox"]["train_seconds"]
            )
    results["adaptive_over_graybox_training_time"] = cost
    command = "python benchmarks/defenses.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in settings.items()
        if k != "quick" and v is not None
    )
    text = (
        "# Defense experiment\n\n"
        + "\n".join(sections)
        + "\nAdaptive / gray-box Siamese-DAE training time (same epochs): "
        + ", ".join(f"{m} {r:.2f}×" for m, r in cost.items())
        + f"\n\nTotal {total / 60:.1f} min, {args.jobs} process(es) × {args.threads} thread(s). Settings:\n\n"
        + f"```\n{command}\n```\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", results)
    atomic_write_text(args.out / "results.md", text)
    print(text)
    return results


if __name__ == "__main__":
    main()
