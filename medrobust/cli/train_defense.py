"""``medrobust train defense``: train a Siamese-DAE (or a baseline denoiser) for a classifier.

Only typer is imported at module level; torch and friends load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medrobust.cli.options import from_config, progress_option


def defense(
    classifier: Path | None = typer.Option(None, "--classifier", help="Classifier run folder."),
    data: str | None = typer.Option(
        None, "--data", help="Data source.", show_default=from_config("the classifier's")
    ),
    kind: str | None = typer.Option(
        None, "--kind", help="siamese-dae, dae, magnet or hgd.", show_default=from_config("siamese-dae")
    ),
    adversary: str | None = typer.Option(
        None,
        "--adversary",
        help="Who the training twins attack: adaptive (PGD through the current denoiser and the "
        "classifier, every batch) or graybox (the bare classifier).",
        show_default=from_config("adaptive for siamese-dae, else graybox"),
    ),
    adaptive_warmup_epochs: int | None = typer.Option(
        None,
        "--adaptive-warmup-epochs",
        help="With the adaptive adversary: the first N epochs are a reconstruction warm start (no attack, "
        "no classification term).",
        show_default=from_config("3, at most epochs - 1"),
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder.", show_default=from_config("runs/defense")
    ),
    config: Path | None = typer.Option(None, "--config", help="YAML config (options override it)."),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Training epochs.", show_default=from_config("10")
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="Denoiser architecture.", show_default=from_config("dae")
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto (CUDA when present), cpu or cuda[:N].", show_default=from_config("auto")
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed.", show_default=from_config("0")),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Batch size.", show_default=from_config("32")
    ),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate.", show_default=from_config("0.001")),
    limit: int | None = typer.Option(
        None,
        "--limit",
        help="Use at most this many training images.",
        show_default=from_config("every image"),
    ),
    ablate: list[str] | None = typer.Option(None, "--ablate", help="Term to switch off: rec|siam|cls."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow writing into a folder with a denoiser."),
    progress: bool = progress_option(),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the unfinished run in --out from its last epoch (same settings; refused otherwise).",
    ),
) -> None:
    """Train a denoising defense in front of a frozen classifier and write a checkpoint folder.

    A checkpoint is written every epoch (OUT/checkpoint/last.pt); --resume continues an interrupted run.
    The training adversary (adaptive or gray-box, its attacks and budgets) is recorded in
    OUT/denoiser.json, OUT/summary.json and the notes of OUT/card.json.
    """
    import csv

    from medrobust.defenses.training import TrainDefenseConfig, train_defense
    from medrobust.errors import ConfigError

    overrides = {
        "classifier": None if classifier is None else str(classifier),
        "data": data,
        "kind": kind,
        "adversary": adversary,
        "adaptive_warmup_epochs": adaptive_warmup_epochs,
        "out": None if out is None else str(out),
        "epochs": epochs,
        "arch": arch,
        "device": device,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "limit": limit,
        "ablate": ablate or None,
        "overwrite": overwrite or None,
        "progress": None if progress else False,  # --no-progress overrides the config's
    }
    if config is not None:
        cfg = TrainDefenseConfig.from_yaml(config, **overrides)
    else:
        if classifier is None:
            raise ConfigError("train defense needs --classifier RUN (or --config YAML naming it).")
        cfg = TrainDefenseConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    run = train_defense(cfg, resume=resume)
    typer.echo(f"defense folder: {run}")
    metrics = run / "metrics.csv"
    if metrics.exists():
        rows = list(csv.DictReader(metrics.read_text(encoding="utf-8").splitlines()))
        if rows:
            last = rows[-1]
            adaptive = last.get("val_adaptive_acc")
            typer.echo(
                f"epoch {last['epoch']}: loss {float(last['loss']):.4g}, "
                f"val clean accuracy {float(last['val_clean_acc']):.4f}, "
                f"val adversarial accuracy {float(last['val_adv_acc']):.4f} (gray-box)"
                + (f", {float(adaptive):.4f} (adaptive)" if adaptive else "")
            )


def register(app: typer.Typer) -> None:
    """Add the ``defense`` command to the ``medrobust train`` group."""
    app.command("defense")(defense)
