"""``medrobust train denoiser``: train a deep denoiser on Gaussian noise (blind or non-blind).

Only typer is imported at module level; torch and friends load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medrobust.cli.options import (
    from_config,
    progress_option,
    samples_option,
)


def _params(items: list[str] | None) -> dict:
    """``["depth=6", "channels=[16,32]"]`` -> ``{"depth": 6, "channels": [16, 32]}`` (YAML scalars)."""
    from medrobust.errors import ConfigError
    from medrobust.utils.yaml_io import parse_yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"The '--param' option must look like key=value. Got {item!r}.")
        out[key.strip()] = parse_yaml(value, f"--param {key.strip()}")
    return out


def denoiser(
    arch: str | None = typer.Option(
        None, "--arch", help="Deep denoiser: dncnn, ffdnet, unet, dae, ...", show_default=from_config()
    ),
    sigma: str | None = typer.Option(
        None,
        "--sigma",
        help="Noise level, fraction of the range (e.g. 15/255).",
        show_default=from_config("15/255"),
    ),
    blind: bool = typer.Option(False, "--blind", help="Train over --sigma-range (σ drawn per image)."),
    sigma_range: str | None = typer.Option(
        None, "--sigma-range", help="Blind σ range, e.g. 0,55/255.", show_default=from_config()
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Data path (folder, CSV, NPZ, DICOM, NIfTI) or phantom:MODALITY.",
        show_default=from_config("phantom:brain_mri"),
    ),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="Modality preset for --data (bounds, resizing).",
        show_default=from_config("the phantom's modality"),
    ),
    size: int | None = typer.Option(
        None, "--size", help="Image side in pixels.", show_default=from_config("64")
    ),
    samples: int | None = samples_option(
        "Number of images to use (also -n; safe under torchrun).", show_default=from_config("120")
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder.", show_default=from_config()),
    config: Path | None = typer.Option(None, "--config", help="YAML config (options override it)."),
    param: list[str] | None = typer.Option(
        None, "--param", help="Denoiser parameter key=value (repeatable).", show_default=from_config("none")
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Training epochs.", show_default=from_config("10")
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Batch size.", show_default=from_config("16")
    ),
    patch_size: int | None = typer.Option(
        None,
        "--patch-size",
        help="Train on random crops of this side.",
        show_default=from_config("whole images"),
    ),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate.", show_default=from_config("0.001")),
    seed: int | None = typer.Option(None, "--seed", help="Random seed.", show_default=from_config("0")),
    device: str | None = typer.Option(
        None, "--device", help="auto (CUDA when present), cpu or cuda[:N].", show_default=from_config("auto")
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a checkpoint already in --out."),
    progress: bool = progress_option(),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the unfinished run in --out from its last epoch (same settings; refused otherwise).",
    ),
) -> None:
    """Train a denoiser on y = x + n (MSE to x) and write a checkpoint folder.

    A checkpoint is written every epoch (OUT/checkpoint/last.pt); --resume continues an interrupted run.
    """
    import json

    from medrobust.denoising.training import TrainDenoiserConfig, train_denoiser
    from medrobust.utils.yaml_io import read_yaml_mapping

    base: dict = read_yaml_mapping(config, "denoiser training config") if config is not None else {}
    data_cfg = dict(base.get("data") or {})
    if data is not None:
        if data.startswith("phantom:"):
            data_cfg.update(kind="phantom", modality=data.split(":", 1)[1])
        else:
            data_cfg.update(kind="source", path=data)
    for key, value in (("preset", preset), ("size", size), ("n", samples)):
        if value is not None:
            data_cfg[key] = value
    overrides = {
        "arch": arch,
        "sigma": sigma,
        "sigma_range": sigma_range,
        "epochs": epochs,
        "batch_size": batch_size,
        "patch_size": patch_size,
        "lr": lr,
        "seed": seed,
        "device": device,
        "out": None if out is None else str(out),
    }
    merged = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    if blind:
        merged["blind"] = True
    if overwrite:
        merged["overwrite"] = True
    if data_cfg:
        merged["data"] = data_cfg
    if param:
        merged["params"] = {**(merged.get("params") or {}), **_params(param)}
    cfg = TrainDenoiserConfig.from_dict(merged, str(config) if config else None)
    run = train_denoiser(cfg, progress=progress, resume=resume)
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    typer.echo(f"run folder: {run}")
    typer.echo(
        f"validation at σ={metrics['eval_sigma']:.4f}: noisy {metrics['val_psnr_noisy_clipped']:.2f} dB -> "
        f"denoised {metrics['val_psnr_denoised']:.2f} dB"
    )


def register(app: typer.Typer) -> None:
    """Add the ``denoiser`` command to the ``medrobust train`` group."""
    app.command("denoiser")(denoiser)
