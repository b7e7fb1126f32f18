"""``medrobust train ...``: train classifiers; defenses, denoisers and segmenters in their own modules.

Only typer is imported at module level; torch/MONAI load inside the command.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from medrobust.cli.options import from_config, progress_option

app = typer.Typer(help="Train classifiers and defenses.", no_args_is_help=True)


def _parse_size(text: str | None) -> list[int] | None:
    """``"64"`` -> [64, 64]; ``"64x64"`` / ``"64,64,8"`` -> explicit sizes."""
    from medrobust.errors import ConfigError

    if text is None:
        return None
    parts = [p for p in text.lower().replace(",", "x").split("x") if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(
            f"The 'size' parameter must look like 64, 64x64 or 64x64x8. Got {text!r}."
        ) from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) not in (2, 3) or any(s < 1 for s in sizes):
        raise ConfigError(f"The 'size' parameter must look like 64, 64x64 or 64x64x8. Got {text!r}.")
    return sizes


@app.command("classifier")
def classifier(
    data: str | None = typer.Option(
        None, "--data", help="Data source: file or folder (npz, csv, folders, DICOM, NIfTI)."
    ),
    modality: str | None = typer.Option(None, "--modality", help="Preset name, e.g. chest_xray, brain_mri."),
    arch: str | None = typer.Option(
        None, "--arch", help="Classifier architecture.", show_default=from_config("small_cnn")
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Maximum number of epochs.", show_default=from_config("10")
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Run folder to write.", show_default=from_config("runs/classifier")
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML config; command-line options override it."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto (CUDA when present), cpu or cuda[:N].", show_default=from_config("auto")
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed.", show_default=from_config("0")),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Per-process batch size.", show_default=from_config("16")
    ),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate.", show_default=from_config("0.003")),
    size: str | None = typer.Option(
        None,
        "--size",
        help="Input size: 64, 64x64 or 64x64x8.",
        show_default=from_config("the preset's, or the data's when smaller"),
    ),
    patience: int | None = typer.Option(
        None, "--patience", help="Early-stopping patience in epochs (0: off).", show_default=from_config("5")
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="DataLoader workers.", show_default=from_config("0")
    ),
    adversarial: str | None = typer.Option(
        None,
        "--adversarial",
        help="Adversarial training: none, pgd (PGD-AT, Madry et al.) or trades (Zhang et al.).",
        show_default=from_config("none"),
    ),
    eps: str | None = typer.Option(
        None,
        "--eps",
        help="L-inf budget of adversarial training: k/255 of the bounds range, or image units.",
        show_default=from_config("8/255"),
    ),
    adv_steps: int | None = typer.Option(
        None,
        "--adv-steps",
        help="PGD/TRADES inner steps of adversarial training.",
        show_default=from_config("7"),
    ),
    trades_beta: float | None = typer.Option(
        None, "--trades-beta", help="TRADES weight of the KL term.", show_default=from_config("6")
    ),
    noise_sigma: str | None = typer.Option(
        None,
        "--noise-sigma",
        help="Gaussian-noise augmentation for a randomized-smoothing base classifier: sigma as k/255 of "
        "the bounds range (64/255) or image units.",
        show_default=from_config("none"),
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Allow writing into a folder with a checkpoint."
    ),
    progress: bool = progress_option(),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the unfinished run in --out from its last epoch (same settings; refused otherwise).",
    ),
) -> None:
    """Train a classifier and write a run folder (weights, card, config, metrics).

    A checkpoint is written every epoch (OUT/checkpoint/last.pt); --resume continues an interrupted run.
    Images smaller than the preset's size are trained at their own size unless --size is given.
    --adversarial pgd|trades trains against PGD examples crafted on each batch (each process's
    own batch under torchrun); the best epoch is then chosen by validation accuracy under PGD.
    --noise-sigma trains on clip(x + sigma*N(0, I)) for randomized smoothing (medrobust certify); the best
    epoch is then chosen by validation accuracy on noisy images.
    """
    import json

    from medrobust.models.training import SUMMARY_NAME, TrainClassifierConfig, train_classifier

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
        "spatial_size": _parse_size(size),
        "patience": patience,
        "num_workers": workers,
        "adversarial": adversarial,
        "adv_eps": eps,
        "adv_steps": adv_steps,
        "trades_beta": trades_beta,
        "noise_sigma": noise_sigma,
        "overwrite": overwrite or None,
        "progress": None if progress else False,  # --no-progress overrides the config's
    }
    if config is not None:
        cfg = TrainClassifierConfig.from_yaml(config, **overrides)
    else:
        cfg = TrainClassifierConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    run_dir = train_classifier(cfg, resume=resume)
    from medrobust.distributed import launch_rank

    if launch_rank() == 0:  # the process group is gone by now; torchrun's RANK still says who we are
        summary_path = run_dir / SUMMARY_NAME
        typer.echo(f"run folder: {run_dir}")
        if summary_path.exists():
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            best = summary.get("best_val") or {}
            robust = best.get("robust")
            noisy = best.get("noisy")
            typer.echo(
                f"best epoch {summary['best_epoch']}/{summary['epochs_run']}: "
                f"val balanced accuracy {best.get('balanced_accuracy', float('nan')):.4f}, "
                f"AUROC {best.get('auroc', float('nan')):.4f}"
                + (
                    f", under PGD {robust.get('balanced_accuracy', float('nan')):.4f}"
                    if isinstance(robust, dict)
                    else ""
                )
                + (
                    f", on noisy images {noisy.get('balanced_accuracy', float('nan')):.4f}"
                    if isinstance(noisy, dict)
                    else ""
                )
            )
            test = summary.get("test")
            if test:
                typer.echo(
                    f"test: accuracy {test['accuracy']:.4f}, "
                    f"balanced accuracy {test['balanced_accuracy']:.4f}, "
                    f"AUROC {test['auroc']:.4f}, sensitivity {test['sensitivity']:.4f}, "
                    f"specificity {test['specificity']:.4f}"
                )


def _register_commands() -> None:
    # ``train defense`` / ``train denoiser`` / ``train segmenter`` live in their own modules,
    # each defining ``register(app)``.
    for name in ("train_defense", "train_denoiser", "train_segmenter"):
        importlib.import_module(f"medrobust.cli.{name}").register(app)


_register_commands()
