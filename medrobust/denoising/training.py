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
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from medrobust.denoising.data import CleanImages, DenoisingData, load_clean_images
from medrobust.errors import ConfigError
from medrobust.run.config import ConfigModel
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


def deep_denoiser_names() -> list[str]:
    """Registered denoisers of kind "deep" (the trainable ones)."""
    from medrobust.defenses.denoisers import DENOISERS, list_denoisers

    return [n for n in list_denoisers() if getattr(DENOISERS.get(n), "kind", "deep") == "deep"]


class TrainDenoiserConfig(ConfigModel):
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
    blind: bool = False
    sigma_range: tuple[float, float] | None = None
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

    @field_validator("sigma", mode="before")
    @classmethod
    def _sigma(cls, v: Any) -> float | None:
        return None if v is None else parse_sigma(v)

    @field_validator("sigma_range", mode="before")
    @classmethod
    def _sigma_range(cls, v: Any) -> tuple[float, float] | None:
        return None if v is None else parse_sigma_range(v)

    @model_validator(mode="after")
    def _check(self) -> TrainDenoiserConfig:
        if self.blind and self.sigma_range is None:
            raise ConfigError("Blind training (blind: true) needs sigma_range, e.g. '0,55/255'.")
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


def train_on_images(
    config: TrainDenoiserConfig, images: CleanImages, progress: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Train ``config.arch`` on clean ``images``; returns ``(denoiser in eval mode, metrics)``."""
    import torch
    from tqdm.auto import tqdm

    from medrobust.defenses.denoisers import create_denoiser
    from medrobust.denoising.metrics import denoise, psnr
    from medrobust.utils.device import resolve_device

    device = resolve_device(config.device)
    bounds = images.bounds
    scale = bounds[1] - bounds[0]
    params = dict(config.params)
    if config.arch == "ffdnet" and "sigma" not in params:
        params["sigma"] = config.sigma if config.sigma is not None else sum(config.sigma_range) / 2  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(config.seed)
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
    steps_per_epoch = max(1, -(-n // config.batch_size))
    noise_level = bool(getattr(model, "accepts_noise_level", False))
    history: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(
        total=config.epochs * steps_per_epoch, desc=f"train {config.arch}", disable=not progress, leave=False
    )
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for i in range(0, n, config.batch_size):
            x = train[order[i : i + config.batch_size]]
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
            loss = torch.nn.functional.mse_loss(out, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * x.shape[0]
            count += x.shape[0]
            bar.update(1)
        history.append(total / max(count, 1))
    bar.close()
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
    config: TrainDenoiserConfig, images: CleanImages | None = None, progress: bool = False
) -> Path:
    """Train a denoiser and write its run folder; returns the folder.

    Args:
        config: Training settings (``config.out`` is required).
        images: Pre-loaded clean images (the study passes them); default: load ``config.data``.
        progress: Show a progress bar.

    Returns:
        The run folder holding the checkpoint (``save_denoiser`` layout) and ``metrics.json``.
    """
    from medrobust.utils.io import atomic_write_json

    if config.out is None:
        raise ConfigError("The 'out' parameter of train_denoiser must name an output folder. Got None.")
    if (Path(config.out) / "denoiser.json").exists() and not config.overwrite:
        raise ConfigError(
            f"{config.out} already holds a denoiser checkpoint; "
            "pass overwrite=True (--overwrite) to replace it."
        )
    images = images if images is not None else load_clean_images(config.data)
    model, metrics = train_on_images(config, images, progress=progress)
    from medrobust.defenses.checkpoint import save_denoiser

    out = Path(config.out)
    noise_model = "blind" if config.blind else "non-blind"
    save_denoiser(
        model, out, config=config.model_dump(mode="json"), extra={"training": "gaussian-" + noise_model}
    )
    atomic_write_json(out / "metrics.json", metrics)
    log.info("trained %s: validation PSNR %.2f dB -> %s", config.arch, metrics["val_psnr_denoised"], out)
    return out
