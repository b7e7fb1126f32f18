"""Training deep denoisers for the zoo: ``y = x + n``, MSE between ``D(y)`` and ``x``.

Non-blind training uses one fixed σ; blind training (DnCNN-B style) draws σ per image
uniformly from ``sigma_range``. σ is a fraction of the dynamic range
(``bounds[1] − bounds[0]``): ``"15/255"`` is 15 grey levels whatever the bounds. The
noise is not clipped (see :mod:`medrobust.denoising.attacks.base`). Denoisers whose
``forward`` accepts a noise level (``accepts_noise_level``, e.g. FFDNet) receive the
per-image σ during training and use their constructor σ at inference.

Checkpoints are written with :func:`medrobust.defenses.save_denoiser` (safetensors +
JSON, never pickle) plus ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from medrobust.denoising.data import CleanImages, DenoisingData, load_clean_images
from medrobust.errors import ConfigError
from medrobust.run.config import ConfigModel
from medrobust.run.loop import EpochContext, EpochEnd, LoopSettings, StepOutput, TrainingLoop
from medrobust.validation import parse_number

log = logging.getLogger("medrobust.denoising.training")


def parse_sigma(value: Any, name: str = "sigma") -> float:
    """Parse a σ given as a number or fraction string ("15/255") into a float in [0, 1]."""
    out = parse_number(value, name)
    if not 0.0 <= out <= 1.0:
        raise ConfigError(f"The {name!r} parameter must be a fraction of the range in [0, 1]. Got {value!r}.")
    return out


def parse_sigma_range(value: Any) -> tuple[float, float]:
    """Parse ``"0,55/255"`` or ``[0, "55/255"]`` into ``(low, high)`` with ``low < high``."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        low, high = (parse_sigma(p, "sigma_range") for p in parts)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"The 'sigma_range' parameter must be 'low,high' (e.g. '0,55/255'). Got {value!r}."
        ) from None
    if not low < high:
        raise ConfigError(f"The 'sigma_range' parameter must satisfy low < high. Got {value!r}.")
    return (low, high)


class NoiseLevels(ConfigModel):
    """The noise-level fields shared by a denoiser's training config and a study member's.

    ``sigma`` (one level, non-blind) or ``blind`` with ``sigma_range`` (σ drawn per image);
    fractions of the range, "15/255" accepted.
    """

    sigma: float | None = None
    blind: bool = False
    sigma_range: tuple[float, float] | None = None

    @field_validator("sigma", mode="before")
    @classmethod
    def _sigma(cls, v: Any) -> float | None:
        return None if v is None else parse_sigma(v)

    @field_validator("sigma_range", mode="before")
    @classmethod
    def _sigma_range(cls, v: Any) -> tuple[float, float] | None:
        return None if v is None else parse_sigma_range(v)

    @model_validator(mode="after")
    def _blind_needs_a_range(self) -> NoiseLevels:
        if self.blind and self.sigma_range is None:
            raise ConfigError("Blind training (blind: true) needs sigma_range, e.g. '0,55/255'.")
        return self


def deep_denoiser_names() -> list[str]:
    """Registered denoisers of kind "deep" (the trainable ones)."""
    from medrobust.defenses.denoisers import DENOISERS, list_denoisers

    return [n for n in list_denoisers() if getattr(DENOISERS.get(n), "kind", "deep") == "deep"]


class TrainDenoiserConfig(NoiseLevels):
    """Settings of :func:`train_denoiser` (YAML-loadable; fractions such as "15/255" accepted).

    Attributes:
        arch: A registered deep denoiser ("dncnn", "ffdnet", "unet", "dae", ...).
        params: Constructor arguments of the denoiser (``depth``, ``width``, ...).
        sigma: Fixed noise level for non-blind training (fraction of the range).
        blind: Train over ``sigma_range`` (σ drawn per image) instead of one σ.
        sigma_range: ``(low, high)`` for blind training; also accepted as "0,55/255".
        data: Where clean images come from.
        epochs, batch_size, lr: Optimisation (Adam).
        patch_size: Train on random square crops of this side (a fully convolutional
            denoiser does not care; crops make each step cheaper); None: whole images.
        seed: Seed of initialisation, shuffling and noise.
        device: "auto", "cpu" or "cuda[:N]".
        out: Output folder (run directory).
        overwrite: Allow replacing a denoiser checkpoint already in ``out``.
    """

    config_name = "denoiser training config"

    arch: str
    params: dict[str, Any] = Field(default_factory=dict)
    sigma: float | None = 15 / 255
    data: DenoisingData = Field(default_factory=DenoisingData)
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=1e-3, gt=0.0, le=1.0)
    patch_size: int | None = Field(default=None, ge=8)
    seed: int = Field(default=0, ge=0)
    device: str = "auto"
    out: Path | None = None
    overwrite: bool = False

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        from medrobust.defenses.denoisers import DENOISERS

        if DENOISERS.get(v).kind != "deep":  # unknown names raise with a "did you mean" hint
            raise ConfigError(
                "The 'arch' parameter must be a trainable (deep) denoiser: "
                f"{deep_denoiser_names()}. Got {v!r}."
            )
        return v

    @model_validator(mode="after")
    def _check(self) -> TrainDenoiserConfig:
        if not self.blind and self.sigma is None:
            raise ConfigError("Non-blind training needs sigma (e.g. '15/255'), or set blind: true.")
        return self


def _random_crop(x: Any, size: int, gen: Any) -> Any:
    """One random ``size`` x ``size`` crop per image, drawn from ``gen``."""
    import torch

    h, w = x.shape[-2:]
    tops = torch.randint(0, h - size + 1, (x.shape[0],), generator=gen).tolist()
    lefts = torch.randint(0, w - size + 1, (x.shape[0],), generator=gen).tolist()
    return torch.stack(
        [img[..., t : t + size, s : s + size] for img, t, s in zip(x, tops, lefts, strict=True)]
    )


def _loop_settings(
    config: TrainDenoiserConfig,
    progress: bool,
    run_dir: Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callable[[EpochEnd], None]] = (),
) -> LoopSettings:
    from medrobust.utils.device import resolve_device

    return LoopSettings(
        epochs=config.epochs,
        seed=config.seed,
        run_dir=run_dir,
        config=config.model_dump(mode="json"),
        resume=resume,
        overwrite=config.overwrite,
        device=resolve_device(config.device),
        progress=progress,
        desc=f"train {config.arch}",
        lr=config.lr,
        purpose="denoiser training",
        callbacks=tuple(callbacks),
    )


def train_on_images(
    config: TrainDenoiserConfig,
    images: CleanImages,
    progress: bool = False,
    *,
    loop: TrainingLoop | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train ``config.arch`` on clean ``images``; returns ``(denoiser in eval mode, metrics)``.

    Args:
        config: Training settings.
        images: Clean training and test images.
        progress: Show a progress bar.
        loop: The :class:`~medrobust.run.loop.TrainingLoop` to run in, entered by the caller
            (:func:`train_denoiser` passes one with checkpoints in its run folder); default: a
            loop without checkpoints.
    """
    import torch

    from medrobust.defenses.denoisers import create_denoiser
    from medrobust.denoising.metrics import denoise, psnr

    if loop is None:
        with TrainingLoop(_loop_settings(config, progress)) as own:
            return train_on_images(config, images, progress, loop=own)
    device = torch.device(loop.settings.device)
    bounds = images.bounds
    scale = bounds[1] - bounds[0]
    params = dict(config.params)
    if config.arch == "ffdnet" and "sigma" not in params:
        params["sigma"] = config.sigma if config.sigma is not None else sum(config.sigma_range) / 2  # type: ignore[arg-type]
    # Initialise the weights from the seed without touching the global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = create_denoiser(config.arch, in_channels=images.in_channels, bounds=bounds, **params)
    if getattr(model, "kind", "deep") != "deep":
        raise ConfigError(
            f"The 'arch' parameter must be a deep denoiser. Got {config.arch!r} ({model.kind})."
        )
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    train = images.train
    n = train.shape[0]
    noise_level = bool(getattr(model, "accepts_noise_level", False))
    t0 = time.perf_counter()

    def batches(ctx: EpochContext) -> list[Any]:
        order = torch.randperm(n, generator=ctx.generator)
        return [order[i : i + config.batch_size] for i in range(0, n, config.batch_size)]

    def step(idx: Any, ctx: EpochContext) -> StepOutput:
        gen = ctx.generator
        x = train[idx]
        if config.patch_size is not None and config.patch_size < min(x.shape[-2:]):
            x = _random_crop(x, config.patch_size, gen)
        if config.blind:
            lo, hi = config.sigma_range  # type: ignore[misc]
            sig = lo + (hi - lo) * torch.rand((x.shape[0],), generator=gen)
        else:
            sig = torch.full((x.shape[0],), float(config.sigma))
        y = x + torch.randn(x.shape, generator=gen) * (sig * scale).view(-1, 1, 1, 1)
        x, y = x.to(device), y.to(device)
        out = model(y, sigma=sig.to(device)) if noise_level else model(y)
        return StepOutput(loss=torch.nn.functional.mse_loss(out, x), n=int(x.shape[0]))

    result = loop.fit(model, opt, batches=batches, step=step)
    history = [float(row["loss"]) for row in result.rows]
    model.eval()
    eval_sigma = config.sigma if config.sigma is not None else sum(config.sigma_range) / 2  # type: ignore[arg-type]
    test = images.test
    noisy = test + torch.randn(test.shape, generator=torch.Generator().manual_seed(config.seed + 7)) * (
        eval_sigma * scale
    )
    val_psnr_noisy = psnr(noisy.clamp(*bounds), test, scale).mean().item()
    val_psnr = psnr(denoise(model, noisy.to(device)).cpu(), test, scale).mean().item()
    metrics = {
        "train_loss": history,
        "eval_sigma": eval_sigma,
        "val_psnr_denoised": val_psnr,
        "val_psnr_noisy_clipped": val_psnr_noisy,
        "n_train": int(n),
        "n_val": int(test.shape[0]),
        "seconds": time.perf_counter() - t0,
    }
    return model.cpu(), metrics


def train_denoiser(
    config: TrainDenoiserConfig,
    images: CleanImages | None = None,
    progress: bool = False,
    *,
    resume: bool = False,
    callbacks: Sequence[Callable[[EpochEnd], None]] = (),
) -> Path:
    """Train a denoiser and write its run folder; returns the folder.

    The epochs run in :class:`medrobust.run.loop.TrainingLoop` with a checkpoint every epoch in
    ``out/checkpoint/last.pt`` (removed when training ends) and the folder locked.

    Args:
        config: Training settings (``config.out`` is required).
        images: Pre-loaded clean images (the study passes them); default: load ``config.data``.
        progress: Show a progress bar.
        resume: Continue the unfinished run in ``config.out`` (same config, else refused).
        callbacks: Called after every epoch with a :class:`~medrobust.run.loop.EpochEnd`.

    Returns:
        The run folder holding the checkpoint (``save_denoiser`` layout) and ``metrics.json``.
    """
    from medrobust.utils.io import atomic_write_json

    if config.out is None:
        raise ConfigError("The 'out' parameter of train_denoiser must name an output folder. Got None.")
    if (Path(config.out) / "denoiser.json").exists() and not config.overwrite and not resume:
        raise ConfigError(
            f"{config.out} already holds a denoiser checkpoint; "
            "pass overwrite=True (--overwrite) to replace it."
        )
    out = Path(config.out)
    loop = TrainingLoop(_loop_settings(config, progress, out, resume, callbacks))
    images = images if images is not None else load_clean_images(config.data)
    from medrobust.defenses.checkpoint import save_denoiser

    with loop:
        model, metrics = train_on_images(config, images, progress=progress, loop=loop)
        noise_model = "blind" if config.blind else "non-blind"
        save_denoiser(
            model, out, config=config.model_dump(mode="json"), extra={"training": "gaussian-" + noise_model}
        )
        atomic_write_json(out / "metrics.json", metrics)
    log.info("trained %s: validation PSNR %.2f dB -> %s", config.arch, metrics["val_psnr_denoised"], out)
    return out
