"""``medrobust train segmenter``: train a MONAI segmentation network on image + mask pairs.

Only typer is imported at module level; torch and MONAI load inside the command. The ``train``
group picks the command up through :func:`register`.
"""

from __future__ import annotations

from pathlib import Path

import typer


def _sizes(text: str | None, name: str) -> list[int] | None:
    """``"64"`` -> [64, 64]; ``"64x64"`` / ``"32x32x32"`` -> explicit sizes."""
    from medrobust.errors import ConfigError

    if text is None:
        return None
    parts = [p for p in text.lower().replace(",", "x").split("x") if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(
            f"The {name!r} parameter must look like 64, 64x64 or 32x32x32. Got {text!r}."
        ) from None
    sizes = sizes * 2 if len(sizes) == 1 else sizes
    if len(sizes) not in (2, 3) or any(s < 1 for s in sizes):
        raise ConfigError(f"The {name!r} parameter must look like 64, 64x64 or 32x32x32. Got {text!r}.")
    return sizes


def segmenter(
    data: str | None = typer.Option(
        None,
        "--data",
        help="Image + mask pairs: Decathlon folder (imagesTr/, labelsTr/), images/ + masks/ folder, CSV "
        "manifest (image,label), or phantom:MODALITY[@SIZE][?n=N].",
    ),
    modality: str | None = typer.Option(
        None,
        "--modality",
        help="Preset (chest_xray, brain_mri, skin, ...); default: the data's dataset.json.",
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="unet (default), segresnet, unetr, swin_unetr, tiny."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Maximum number of epochs."),
    out: Path | None = typer.Option(None, "--out", help="Run folder to write."),
    config: Path | None = typer.Option(None, "--config", help="YAML config; options override it."),
    device: str | None = typer.Option(None, "--device", help="auto (CUDA when present), cpu or cuda[:N]."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate."),
    size: str | None = typer.Option(
        None, "--size", help="Resize to 64, 64x64 or 32x32x32 (default: native)."
    ),
    roi_size: str | None = typer.Option(
        None, "--roi-size", help="Sliding-window size recorded on the card (e.g. 32x32x32)."
    ),
    patience: int | None = typer.Option(
        None, "--patience", help="Early-stopping patience in epochs (0: off)."
    ),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader workers."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Allow writing into a folder with a checkpoint."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the unfinished run in --out from its last epoch (same settings)."
    ),
) -> None:
    """Train a segmenter with Dice + cross-entropy and write a run folder (weights, card, metrics).

    A checkpoint is written every epoch (OUT/checkpoint/last.pt); --resume continues an interrupted run.
    """
    import json

    from medrobust.models.segmentation.training import SUMMARY_NAME, TrainSegmenterConfig, train_segmenter

    overrides = {
        "data": data,
        "modality": modality,
        "arch": arch,
        "epochs": epochs,
        "out": None if out is None else str(out),
        "device": device,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "spatial_size": _sizes(size, "size"),
        "roi_size": _sizes(roi_size, "roi_size"),
        "patience": patience,
        "num_workers": workers,
        "overwrite": overwrite or None,
        "progress": False if no_progress else None,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    cfg = (
        TrainSegmenterConfig.from_yaml(config, **given)
        if config is not None
        else TrainSegmenterConfig.from_dict(given)
    )
    run_dir = train_segmenter(cfg, resume=resume)
    typer.echo(f"run folder: {run_dir}")
    summary = json.loads((run_dir / SUMMARY_NAME).read_text(encoding="utf-8"))
    dice = (summary.get("best_val") or {}).get("dice") or {}
    shown = ", ".join(f"{name} {value:.4f}" for name, value in dice.items())
    typer.echo(f"best epoch {summary['best_epoch']}/{summary['epochs_run']}: validation Dice {shown}")


def register(app: typer.Typer) -> None:
    """Add the ``segmenter`` command to the ``medrobust train`` group."""
    app.command("segmenter")(segmenter)
