"""Denoising defenses on phantom chest X-rays: clean, gray-box and adaptive robust accuracy.

Pipeline (all through the public API, seeded, CPU-friendly):
  1. ``write_phantom("chest_xray", N, SIZE, "npz")`` and ``train_classifier`` (small_cnn).
  2. ``train_defense`` for the DAE, MagNet-style, HGD-style and Siamese-DAE denoisers
     (plus two Siamese-DAE ablations: no Siamese term, no classification term).
  3. On the test split: clean accuracy of f∘D; gray-box robust accuracy (FGSM/PGD crafted
     on the bare classifier f, then passed through D); adaptive robust accuracy (FGSM/PGD
     crafted end-to-end on ``defend(f, D)``, BPDA through non-differentiable filters).

Writes ``results.json`` and ``results.md`` under ``--out`` and prints the table.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/defenses.py --out benchmarks/results/defenses
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

EPS = {"2/255": 2 / 255, "8/255": 8 / 255}


def accuracy(model, x, y, batch=256) -> float:
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((pred == y).float().mean())


def attack(name, model, x, y, eps, steps):
    from medrobust.attacks import create_attack

    params = {"eps": eps, "seed": 0}
    if name == "pgd":
        params.update(steps=steps, random_start=True)
    return create_attack(name, model, **params)(x, y).adv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="phantom images")
    ap.add_argument("--size", type=int, default=32, help="image size")
    ap.add_argument("--clf-epochs", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=40, help="defense training epochs")
    ap.add_argument("--pgd-steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/defenses"))
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    if args.work is None:
        import tempfile

        args.work = Path(tempfile.mkdtemp(prefix="medrobust-defenses-"))

    from medrobust.data import get_preset, load_arrays, make_dataset, open_source, write_phantom
    from medrobust.defenses import create_denoiser, defend, load_denoiser, train_defense
    from medrobust.defenses.denoisers.hybrid import HybridDenoiser
    from medrobust.models import load_model, train_classifier

    t0 = time.perf_counter()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = write_phantom("chest_xray", args.n, args.size, "npz", work / "data", seed=args.seed)
    clf_dir = work / "classifier"
    if not (clf_dir / "model.safetensors").exists():
        train_classifier(
            {
                "data": str(data),
                "modality": "chest_xray",
                "spatial_size": [args.size, args.size],
                "arch": "small_cnn",
                "arch_kwargs": {"width": 8, "depth": 3},
                "epochs": args.clf_epochs,
                "batch_size": 32,
                "lr": 3e-3,
                "patience": 0,
                "seed": args.seed,
                "amp": False,
                "augment": False,
                "out": str(clf_dir),
                "progress": False,
            }
        )
    clf = load_model(clf_dir)
    t_clf = time.perf_counter() - t0

    # Shared defense settings: a small DAE (2x compressed latent), FGSM+PGD mix at 1..8/255.
    base = {
        "classifier": str(clf_dir),
        "arch": "dae",
        "arch_params": {"width": 8, "depth": 2, "latent_channels": 8},
        "epochs": args.epochs,
        "batch_size": 32,
        "lr": 3e-3,
        "seed": args.seed,
        "attacks": [
            {"name": "fgsm", "eps": ["1/255", "8/255"]},
            {"name": "pgd", "eps": ["1/255", "8/255"], "steps": 5},
        ],
        "progress": False,
        "overwrite": True,
    }
    trained = {
        "DAE (Gaussian noise)": {"kind": "dae", "noise_sigma": "16/255"},
        "MagNet-style": {"kind": "magnet"},
        "HGD-style": {"kind": "hgd"},
        "Siamese-DAE": {"kind": "siamese-dae"},
        "Siamese-DAE, no siam": {"kind": "siamese-dae", "ablate": ["siam"]},
        "Siamese-DAE, no cls": {"kind": "siamese-dae", "ablate": ["cls"]},
    }
    denoisers = {}
    train_seconds = {}
    for label, extra in trained.items():
        t = time.perf_counter()
        slug = label.lower().replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
        out = train_defense({**base, **extra, "out": str(work / slug)})
        denoisers[label] = load_denoiser(out)
        train_seconds[label] = round(time.perf_counter() - t, 1)
    median = create_denoiser("median", in_channels=1, bounds=clf.card.bounds, kernel_size=3)
    denoisers["Median 3x3"] = median
    denoisers["Hybrid median→Siamese-DAE"] = HybridDenoiser(
        bounds=clf.card.bounds, classical=median, deep=denoisers["Siamese-DAE"], mode="classical_then_deep"
    ).eval()

    preset = get_preset("chest_xray")
    test_ds = make_dataset(open_source(str(data)), split="test", preset=preset, spatial_size=[args.size] * 2)
    x, y = load_arrays(test_ds)
    models = {"No defense": clf, **{k: defend(clf, d).eval() for k, d in denoisers.items()}}

    # Gray-box: crafted once on the bare classifier.
    gray_adv = {(a, e): attack(a, clf, x, y, EPS[e], args.pgd_steps) for a in ("fgsm", "pgd") for e in EPS}
    rows = []
    for label, model in models.items():
        bpda = bool(getattr(model, "uses_bpda", False))
        row = {"defense": label, "clean": accuracy(model, x, y), "bpda": bpda}
        for (a, e), adv in gray_adv.items():
            row[f"gray {a} {e}"] = accuracy(model, adv, y)
        for a in ("fgsm", "pgd"):
            for e in EPS:
                row[f"adaptive {a} {e}"] = accuracy(model, attack(a, model, x, y, EPS[e], args.pgd_steps), y)
        rows.append(row)
    total = time.perf_counter() - t0

    cols = ["clean"] + [f"{m} {a} {e}" for m in ("gray", "adaptive") for a in ("fgsm", "pgd") for e in EPS]
    header = "| defense | " + " | ".join(cols) + " |"
    lines = [header, "|" + "---|" * (len(cols) + 1)]
    for r in rows:
        name = r["defense"] + (" (BPDA)" if r["bpda"] else "")
        lines.append(f"| {name} | " + " | ".join(f"{100 * r[c]:.1f}" for c in cols) + " |")
    table = "\n".join(lines)
    meta = {
        "n_images": args.n,
        "size": args.size,
        "n_test": len(y),
        "test_class_counts": torch.bincount(y).tolist(),
        "classifier": "small_cnn width 8 depth 3",
        "classifier_epochs": args.clf_epochs,
        "defense_epochs": args.epochs,
        "pgd_steps": args.pgd_steps,
        "seed": args.seed,
        "seconds_classifier": round(t_clf, 1),
        "seconds_defense_training": train_seconds,
        "seconds_total": round(total, 1),
        "threads": torch.get_num_threads(),
    }
    from medrobust.utils.io import atomic_write_json, atomic_write_text

    atomic_write_json(args.out / "results.json", {"meta": meta, "rows": rows})
    atomic_write_text(
        args.out / "results.md",
        f"Accuracy (%) on {len(y)} phantom chest X-ray test images ({args.size}x{args.size}).\n\n{table}\n\n"
        f"```\n{json.dumps(meta, indent=2)}\n```\n",
    )
    print(table)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
