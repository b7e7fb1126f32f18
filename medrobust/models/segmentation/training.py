"""Train a segmenter with MONAI ``DiceCELoss`` on the one training loop (:mod:`medrobust.run.loop`).

Like :func:`medrobust.models.training.train_classifier`, this module supplies only its part of the
loop (the epoch's batches, the batch's loss, the validation); the loop owns epochs, seeds, AMP,
early stopping, the per-epoch checkpoint and ``--resume``. Early stopping follows the validation
mean foreground Dice. The run folder holds ``model.safetensors`` + ``card.json``
(:mod:`medrobust.models.segmentation.checkpoint`), ``config.yaml``, ``environment.json``,
``metrics.csv`` and ``summary.json``.

>>> cfg = TrainSegmenterConfig(data="phantom:chest_xray?n=60", arch="unet", epochs=5, out="runs/seg")
>>> run_dir = train_segmenter(cfg)            # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ConfigDict, Field, field_validator, model_validator

from medrobust.errors import ConfigError, DataError
from medrobust.models.checkpoint import WEIGHTS_NAME
from medrobust.models.segmentation.card import SegmentationCard
from medrobust.models.segmentation.registry import check_segmenter_kwargs, get_segmenter_arch
from medrobust.run.config import ConfigModel
from medrobust.run.environment import environment
from medrobust.run.loop import EpochContext, EpochEnd, Evaluation, LoopSettings, StepOutput, TrainingLoop
from medrobust.utils.io import atomic_write_json, atomic_write_text
from medrobust.utils.labels import label_map
from medrobust.utils.logging import get_logger
from medrobust.validation import check_float

log = get_logger("models.segmentation.training")

METRICS_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"
CLI_FLAGS = {
    "data": "--data",
    "modality": "--modality",
    "arch": "--arch",
    "epochs": "--epochs",
    "out": "--out",
    "device": "--device",
    "seed": "--seed",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "spatial_size": "--size",
    "roi_size": "--roi-size",
    "patience": "--patience",
    "num_workers": "--workers",
}
#: Training images whose statistics give the card's ``mean``/``std``.
STATS_SAMPLES = 64


class TrainSegmenterConfig(ConfigModel):
    """Everything ``medrobust train segmenter`` needs; loadable from YAML.

    Attributes:
        data: An image + mask layout (Decathlon folder, ``images/`` + ``masks/`` folder, CSV
            manifest) or ``phantom:MODALITY[@SIZE][?n=N&seed=S]``.
        source_kind: Force the layout (``decathlon``, ``csv``, ``mask-folder``).
        source_options: Extra source options (``label_names``, ``lesion_labels``, ``slice``, ...).
        modality: Preset (channels, intensity scaling, bounds); default: the data's ``dataset.json``.
        arch: Registered segmenter (``unet``, ``segresnet``, ``unetr``, ``swin_unetr``, ``tiny``).
        arch_kwargs: Architecture keyword arguments.
        epochs: Maximum number of epochs.
        batch_size: Batch size.
        lr: AdamW learning rate (cosine-annealed over ``epochs``).
        weight_decay: AdamW weight decay.
        spatial_size: Size images are resized to (None: the first training image's size).
        roi_size: Sliding-window size recorded on the card (None: whole images).
        lambda_dice: Weight of the Dice term of ``DiceCELoss``.
        lambda_ce: Weight of the cross-entropy term.
        augment: Paired augmentations on the training split.
        seed: Seed of model init, shuffling and augmentation.
        device: "auto" (CUDA when present), "cpu" or "cuda[:N]".
        amp: Mixed precision (CUDA only).
        patience: Stop after this many epochs without a better validation Dice (0: never).
        num_workers: DataLoader workers.
        out: Run folder.
        overwrite: Allow writing into a folder that already holds a checkpoint.
        progress: Show a progress bar.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    config_name = "segmenter training config"
    flag_names = CLI_FLAGS

    data: str | None = None
    source_kind: str | None = None
    source_options: dict[str, Any] = Field(default_factory=dict)
    modality: str | None = None
    arch: str = "unet"
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(20, ge=1, le=100_000)
    batch_size: int = Field(8, ge=1, le=65_536)
    lr: float = 3e-3
    weight_decay: float = 1e-5
    spatial_size: tuple[int, ...] | None = None
    roi_size: tuple[int, ...] | None = None
    lambda_dice: float = Field(1.0, ge=0.0)
    lambda_ce: float = Field(1.0, ge=0.0)
    augment: bool = True
    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: str = "auto"
    amp: bool = True
    patience: int = Field(10, ge=0)
    num_workers: int = Field(0, ge=0, le=256)
    out: str = "runs/segmenter"
    overwrite: bool = False
    progress: bool = True

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        return get_segmenter_arch(v).name

    @field_validator("lr", mode="before")
    @classmethod
    def _check_lr(cls, v: Any) -> float:
        return check_float(v, "lr", "train segmenter (--lr)", low=0)

    @field_validator("spatial_size", "roi_size")
    @classmethod
    def _check_size(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (len(v) not in (2, 3) or any(s < 1 for s in v) or math.prod(v) > 8192**2):
            raise ValueError(f"must have 2 or 3 positive values (at most 8192² pixels). Got {list(v)}")
        return v

    @model_validator(mode="after")
    def _check_kwargs(self) -> TrainSegmenterConfig:
        check_segmenter_kwargs(self.arch, self.arch_kwargs)
        if self.lambda_dice == 0 and self.lambda_ce == 0:
            raise ValueError("lambda_dice and lambda_ce are both 0: the loss would be constant")
        return self


def _channel_stats(dataset: Any, limit: int = STATS_SAMPLES) -> tuple[list[float], list[float]]:
    n = len(dataset)
    idx = np.unique(np.linspace(0, n - 1, num=min(n, limit)).astype(int))
    flat = torch.cat([torch.as_tensor(dataset[int(i)]["image"]).float().flatten(1) for i in idx], dim=1)
    mean = flat.double().mean(1)
    std = flat.double().std(1).clamp_min(1e-6)
    return [float(m) for m in mean], [float(s) for s in std]


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


@torch.no_grad()
def predict_labels(
    model: torch.nn.Module, loader: Any, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Predicted label maps, true masks and the mean ``DiceCELoss`` over ``loader`` (model in eval mode)."""
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    was = model.training
    model.eval()
    preds, labels, losses = [], [], []
    for images, masks in loader:
        logits = model(images.to(device)).float()
        losses.append(float(loss_fn(logits, masks.to(device))) * images.shape[0])
        preds.append(label_map(logits).cpu())
        labels.append(masks[:, 0].cpu())
    model.train(was)
    n = sum(p.shape[0] for p in preds)
    return torch.cat(preds), torch.cat(labels), sum(losses) / max(n, 1)


def train_segmenter(
    config: TrainSegmenterConfig | dict[str, Any],
    *,
    resume: bool = False,
    callbacks: Sequence[Callable[[EpochEnd], None]] = (),
) -> Path:
    """Train a segmenter and write a run folder; returns the folder (see the module docstring).

    Raises:
        ConfigError: for a bad config, a folder that already holds a checkpoint, data without a
            training or validation split, or sizes the architecture cannot take.
        DataError: naming the file for unreadable or inconsistent image + mask pairs.
    """
    from monai.data import DataLoader
    from monai.losses import DiceCELoss

    from medrobust.data.presets import get_preset
    from medrobust.data.segmentation import SegmentationDataset, collate_pairs, open_segmentation_source
    from medrobust.data.segmentation.specs import segmentation_data_path
    from medrobust.metrics_segmentation import dice_per_class
    from medrobust.models.segmentation.checkpoint import save_segmenter
    from medrobust.models.segmentation.segmenter import build_segmenter
    from medrobust.utils.device import resolve_device
    from medrobust.utils.seed import seed_everything

    if not isinstance(config, TrainSegmenterConfig):
        config = TrainSegmenterConfig.from_dict(dict(config))
    if not config.data:
        raise ConfigError(
            "The 'data' parameter (--data) of train segmenter is required (a folder, CSV or phantom:)."
        )
    run_dir = Path(config.out)
    if (run_dir / WEIGHTS_NAME).exists() and not config.overwrite and not resume:
        raise ConfigError(
            f"{run_dir} already holds a checkpoint ({WEIGHTS_NAME}); choose another --out or --overwrite."
        )
    device = resolve_device(config.device)
    use_amp = bool(config.amp and device.type == "cuda")
    seed_everything(config.seed)
    source = open_segmentation_source(
        segmentation_data_path(config.data), config.source_kind, **config.source_options
    )
    modality = config.modality or (source.dataset_info.get("medrobust") or {}).get("preset")
    if not modality:
        raise ConfigError(
            f"The 'modality' parameter (--modality) of train segmenter is required for {config.data!r} "
            "(a preset name: chest_xray, brain_mri, skin, ...); no dataset.json names one."
        )
    preset = get_preset(modality)
    train_records, val_records = source.records("train"), source.records("val")
    if not train_records or not val_records:
        raise ConfigError(
            f"The data {config.data!r} need a training and a validation split; found "
            f"{len(train_records)} training and {len(val_records)} validation pairs."
        )
    size = config.spatial_size or tuple(int(s) for s in source.load(train_records[0])["image"].shape[1:])
    family = get_segmenter_arch(config.arch)
    net_size = config.roi_size or size
    if any(s % family.size_multiple for s in net_size):
        raise ConfigError(
            f"The 'spatial_size' (--size) of train segmenter must be multiples of {family.size_multiple} for "
            f"--arch {family.name} (or give --roi-size such multiples). Got {list(net_size)}."
        )

    def dataset(split: str, augment: bool) -> SegmentationDataset:
        return SegmentationDataset(source, split, preset, size, augment=augment, seed=config.seed)

    train_ds, val_ds = dataset("train", config.augment), dataset("val", False)
    mean, std = _channel_stats(dataset("train", False))
    try:
        card = SegmentationCard(
            in_channels=preset.channels,
            class_names=list(source.label_names),
            spatial_size=tuple(size),
            spatial_dims=len(size),  # type: ignore[arg-type]
            modality=preset.modality,
            bounds=preset.bounds,
            mean=mean,
            std=std,
            arch=family.name,
            source=str(config.data),
            lesion_classes=list(source.lesion_labels),
            roi_size=config.roi_size,
            notes=[f"Trained by medrobust train segmenter ({family.name}, seed {config.seed})."],
        )
    except ValueError as exc:
        raise DataError(config.data, f"the data do not make a valid segmentation card: {exc}") from None
    model = build_segmenter(family.name, card, **config.arch_kwargs).to(device)
    loss_fn = DiceCELoss(
        to_onehot_y=True, softmax=True, lambda_dice=config.lambda_dice, lambda_ce=config.lambda_ce
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    val_loader = DataLoader(val_ds, batch_size=config.batch_size, shuffle=False, collate_fn=collate_pairs)
    names = card.class_names

    def batches(ctx: EpochContext) -> Any:
        return DataLoader(
            train_ds,
            batch_size=config.batch_size,
            shuffle=True,
            generator=ctx.generator,
            num_workers=config.num_workers,
            collate_fn=collate_pairs,
        )

    def step(batch: tuple[torch.Tensor, torch.Tensor], ctx: EpochContext) -> StepOutput:
        images, masks = (t.to(device, non_blocking=True) for t in batch)
        loss = loss_fn(model(images).float(), masks)
        return StepOutput(loss=loss, n=int(images.shape[0]))

    def evaluate(ctx: EpochContext, train: dict[str, float]) -> Evaluation:
        pred, truth, val_loss = predict_labels(model, val_loader, device)
        dice = dice_per_class(pred, truth, len(names))
        per_class = {
            n: float(np.nanmean(dice[:, c])) if np.isfinite(dice[:, c]).any() else math.nan
            for c, n in enumerate(names)
        }
        fg = [v for n, v in per_class.items() if n != names[0] and math.isfinite(v)]
        score = float(np.mean(fg)) if fg else math.nan
        row = {"train_loss": train["loss"], "val_loss": val_loss, "val_dice": score}
        row.update({f"val_dice_{n}": v for n, v in per_class.items()})
        row["lr"] = ctx.lr
        metrics = {"val_dice": score, "val_loss": val_loss, "dice": per_class}
        return Evaluation(row=row, score=score, loss=val_loss, metrics=metrics)

    loop = TrainingLoop(
        LoopSettings(
            epochs=config.epochs,
            seed=config.seed,
            run_dir=run_dir,
            config=config.model_dump(mode="json"),
            resume=resume,
            overwrite=config.overwrite,
            patience=config.patience,
            restore_best=True,
            amp=use_amp,
            device=device,
            progress=config.progress,
            desc="segmenter",
            lr=config.lr,
            purpose="segmenter training",
            callbacks=tuple(callbacks),
        )
    )
    with loop:
        result = loop.fit(
            model,
            optimizer,
            batches=batches,
            step=step,
            evaluate=evaluate,
            scheduler=scheduler,
            on_epoch_end=lambda rows: _write_metrics(run_dir / METRICS_NAME, rows),
            random_objects=[train_ds],
        )
        model.eval()
        note = (
            f"Best epoch {result.best_epoch} of {len(result.rows)}: validation mean foreground Dice "
            f"{result.best_score:.4f}."
        )
        model.card = model.card.model_copy(update={"notes": [*model.card.notes, note]})
        resolved = config.model_dump(mode="json")
        resolved.update(spatial_size=list(size), modality=preset.name)
        save_segmenter(
            model, run_dir, config=resolved, environment=environment(device, config.seed, amp=use_amp)
        )
        atomic_write_json(
            run_dir / SUMMARY_NAME,
            {
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.rows),
                "seconds_per_epoch": float(np.mean(result.epoch_seconds)) if result.epoch_seconds else None,
                "best_val": dict(result.best_metrics or {}),
                "n_train": len(train_ds),
                "n_val": len(val_ds),
                "device": str(device),
                "resumed_after_epoch": result.resumed_from,
            },
        )
    return run_dir
