"""Does the default recipe learn? ``small_cnn`` on phantoms of every modality, as the CLI trains it.

For each modality: ``write_phantom(MODALITY, N, SIZE, FORMAT)`` (the files ``medrobust data phantom``
writes), then ``train_classifier`` with the defaults of ``medrobust train classifier --data DIR
--modality MODALITY --size SIZE --epochs EPOCHS`` (only the seed varies). Reports, per modality and
seed, the best validation balanced accuracy, the first epoch reaching ``--target``, the test
balanced accuracy of the kept weights and the seconds per epoch, then a summary table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phantom_training.py --seeds 0,1,2
    .venv/bin/python benchmarks/phantom_training.py --modalities chest_xray --seeds 0,1,2 --set lr=3e-3

Writes ``OUT.json`` (settings, thread count, load average, every row) and ``OUT.md`` (the table) for
``--out OUT`` (default ``benchmarks/results/phantom_training``) and prints the table. ``--update`` re-runs
some modalities and keeps the other modalities' rows of an existing ``OUT.json`` (the re-run's settings
and machine are recorded under ``updates``):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/phantom_training.py --modalities retina_fundus \
        --seeds 0,1,2 --update
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

MODALITIES = ("chest_xray", "brain_mri", "retina_fundus", "retina_oct", "skin")


def _value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def run_one(modality: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Write the phantoms (once per modality) and train on them; returns the row of the table."""
    from medrobust.data import write_phantom
    from medrobust.models.training import TrainClassifierConfig, train_classifier

    folder = work / f"{modality}-{args.n}-{args.size}-{args.format}"
    target = write_phantom(modality, args.n, args.size, args.format, folder, seed=0, progress=False)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    cfg = TrainClassifierConfig.from_dict(
        {
            "data": str(target),
            "modality": modality,
            "epochs": args.epochs,
            "seed": seed,
            "out": str(work / "runs" / f"{modality}-{seed}"),
            "overwrite": True,
            "progress": False,
            "device": args.device,
            **({"spatial_size": [args.size, args.size]} if not args.native else {}),
            **{k: _value(v) for k, v in overrides.items()},
        }
    )
    start = time.perf_counter()
    run = train_classifier(cfg)
    seconds = time.perf_counter() - start
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    with open(run / "metrics.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    curve = [float(r["val_balanced_accuracy"]) for r in rows]
    reached = next((i + 1 for i, v in enumerate(curve) if v >= args.target), None)
    return {
        "modality": modality,
        "seed": seed,
        "classes": len(json.loads((run / "card.json").read_text(encoding="utf-8"))["class_names"]),
        "size": "x".join(str(v) for v in json.loads((run / "card.json").read_text())["spatial_size"]),
        "best_val_bacc": max(curve),
        "first_epoch_at_target": reached,
        "test_bacc": (summary.get("test") or {}).get("balanced_accuracy", math.nan),
        "seconds_per_epoch": summary["seconds_per_epoch"],
        "seconds_total": seconds,
        "val_curve": [round(v, 3) for v in curve],
    }


def table(rows: list[dict[str, Any]], target: float) -> str:
    """Markdown summary: one line per modality (mean and worst over seeds)."""
    lines = [
        f"| modality | K | size | best val bal. acc. (mean / min over seeds) | epoch reaching {target:g} "
        "(per seed) | test bal. acc. (mean) | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for modality in dict.fromkeys(r["modality"] for r in rows):
        rs = [r for r in rows if r["modality"] == modality]
        best = [r["best_val_bacc"] for r in rs]
        test = [r["test_bacc"] for r in rs]
        epochs = ", ".join(
            "-" if r["first_epoch_at_target"] is None else str(r["first_epoch_at_target"]) for r in rs
        )
        speed = sum(r["seconds_per_epoch"] for r in rs) / len(rs)
        lines.append(
            f"| {modality} | {rs[0]['classes']} | {rs[0]['size']} | {sum(best) / len(best):.3f} / "
            f"{min(best):.3f} | {epochs} | {sum(test) / len(test):.3f} | {speed:.2f} |"
        )
    return "\n".join(lines)


def provenance(record: dict[str, Any]) -> str:
    """Markdown lines naming the command (and machine load) behind the rows, updates included."""

    def line(settings: dict[str, Any], machine: dict[str, Any], what: str) -> str:
        flags = [f"--modalities {settings['modalities']}", f"--seeds {settings['seeds']}"]
        defaults = {"n": 200, "size": 32, "epochs": 10, "format": "png", "device": "cpu"}
        flags += [f"--{k} {settings[k]}" for k, v in defaults.items() if settings.get(k, v) != v]
        flags += [f"--set {kv}" for kv in settings.get("set") or []]
        flags += ["--update"] if settings.get("update") else []
        threads = machine.get("omp_num_threads")
        env = f"OMP_NUM_THREADS={threads} " if threads else ""
        load = "/".join(str(v) for v in machine.get("load_average_1_5_15", []))
        return (
            f"- {what}: `{env}.venv/bin/python benchmarks/phantom_training.py {' '.join(flags)}` "
            f"({machine.get('cpus')} CPUs, load average {load} at the end)"
        )

    lines = [line(record["settings"], record["machine"], "Measured")]
    for update in record.get("updates", []):
        lines.append(
            line(update["settings"], update["machine"], f"Re-run ({', '.join(update['modalities'])})")
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modalities", default=",".join(MODALITIES), help="comma-separated phantom modalities")
    ap.add_argument("--n", type=int, default=200, help="phantoms per modality (70/15/15 split)")
    ap.add_argument("--size", type=int, default=32, help="phantom side in pixels (and --size of training)")
    ap.add_argument("--native", action="store_true", help="do not pass --size: the default recipe picks it")
    ap.add_argument("--format", default="png", help="phantom file format (png as `medrobust data phantom`)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    ap.add_argument("--target", type=float, default=0.8, help="validation balanced accuracy to reach")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", action="append", default=[], help="override a training option: key=value")
    out_help = "writes OUT.json and OUT.md"
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/phantom_training"), help=out_help)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument(
        "--update", action="store_true", help="keep the other modalities' rows of an existing OUT.json"
    )
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="medrobust-phantom-training-"))
    rows = []
    for modality in args.modalities.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            row = run_one(modality.strip(), seed, args, work)
            rows.append(row)
            print(
                f"{row['modality']:14s} seed {seed}: best val {row['best_val_bacc']:.3f} "
                f"(epoch at target: {row['first_epoch_at_target']}), test {row['test_bacc']:.3f}, "
                f"{row['seconds_per_epoch']:.2f} s/epoch, curve {row['val_curve']}",
                flush=True,
            )
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    machine = {
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }
    record: dict[str, Any] = {"settings": settings, "machine": machine, "rows": rows}
    previous = args.out.with_suffix(".json")
    if args.update and previous.is_file():
        record = json.loads(previous.read_text(encoding="utf-8"))
        rerun = {r["modality"] for r in rows}
        kept = [r for r in record["rows"] if r["modality"] not in rerun]
        order = list(dict.fromkeys([*(r["modality"] for r in record["rows"]), *rerun]))
        record["rows"] = sorted([*kept, *rows], key=lambda r: (order.index(r["modality"]), r["seed"]))
        # An earlier update of only these modalities no longer describes any row.
        updates = [u for u in record.get("updates", []) if not set(u["modalities"]) <= rerun]
        record["updates"] = [
            *updates,
            {"modalities": sorted(rerun), "settings": settings, "machine": machine},
        ]
    text = table(record["rows"], args.target)
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(text + "\n\n" + provenance(record) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
