"""Train a classifier: class-weighted CE, preset augmentations, early stopping, DDP-ready.

The same loop runs single-process (CPU or CUDA, AMP on CUDA) and under
``torchrun --nproc_per_node N -m medrobust train classifier ...`` (DDP: gloo on CPU,
nccl on GPU, a ``DistributedSampler``, validation metrics gathered across ranks,
only rank 0 writes files).

>>> cfg = TrainClassifierConfig(data="phantom_cxr/", modality="chest_xray", epochs=3, out="runs/cxr")
>>> run_dir = train_classifier(cfg)            # doctest: +SKIP
"""

from __future__ import annotations

import copy
import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn
from torch.utils.data import Dataset, Subset

from medrobust import distributed as dist_utils
from medrobust.errors import ConfigError, DataError
from medrobust.limits import MAX_IMAGE_PIXELS
from medrobust.metrics import classification_metrics
from medrobust.models.card import ModelCard, format_validation_error
from medrobust.models.checkpoint import WEIGHTS_NAME, save_checkpoint
from medrobust.models.classifier import build_classifier
from medrobust.models.predictions import collect_predictions
from medrobust.models.registry import MAX_PARAMETERS, check_arch_kwargs, count_parameters, get_classifier_arch
from medrobust.registry import did_you_mean
from medrobust.run.config import ConfigModel
from medrobust.run.environment import environment
from medrobust.run.loop import (  # noqa: F401  (EarlyStopping, TrainingDivergedError: re-exported)
    EarlyStopping,
    EpochContext,
    EpochEnd,
    Evaluation,
    LoopSettings,
    StepOutput,
    TrainingDivergedError,
    TrainingLoop,
)
from medrobust.utils.io import atomic_write_json, atomic_write_text
from medrobust.utils.logging import get_logger
from medrobust.validation import check_float

log = get_logger("models.training")

METRICS_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"
METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_auroc",
    "val_sensitivity",
    "val_specificity",
    "lr",
    "seconds",
)
#: Columns of ``metrics.csv`` with adversarial training: the training accuracy on the adversarial
#: examples and the validation accuracy under PGD (the recipe's ε and steps) beside the clean ones.
ADVERSARIAL_METRIC_COLUMNS = (
    *METRIC_COLUMNS[:3],
    "train_adv_accuracy",
    *METRIC_COLUMNS[3:8],
    "val_robust_accuracy",
    "val_robust_balanced_accuracy",
    *METRIC_COLUMNS[8:],
)
#: Columns of ``metrics.csv`` with Gaussian-noise augmentation: the validation accuracy on noisy
#: images (one seeded draw per image, clipped to the bounds) beside the clean ones.
NOISE_METRIC_COLUMNS = (
    *METRIC_COLUMNS[:8],
    "val_noisy_accuracy",
    "val_noisy_balanced_accuracy",
    *METRIC_COLUMNS[8:],
)
#: Command-line flags of the config fields (named in error messages).
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
    "patience": "--patience",
    "num_workers": "--workers",
    "adversarial": "--adversarial",
    "adv_eps": "--eps",
    "adv_steps": "--adv-steps",
    "trades_beta": "--trades-beta",
    "noise_sigma": "--noise-sigma",
}
#: Unaugmented datasets (validation, BatchNorm statistics) up to this many bytes are kept in memory
#: after their first pass, so later epochs skip decoding and the preset pipeline.
MEMORY_CACHE_BYTES = 512 * 2**20
#: At most this many training images recompute the BatchNorm statistics before each validation.
PRECISE_BN_SAMPLES = 256
#: Largest seed (NumPy seeds are 32-bit).
MAX_SEED = 2**32 - 1
#: Caps on loop sizes a config can ask for (far above any real run).
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_WORKERS = 256


def _param_name(field: str) -> str:
    flag = CLI_FLAGS.get(field)
    return f"The {field!r} parameter" + (f" ({flag})" if flag else "")


class TrainClassifierConfig(ConfigModel):
    """Everything ``medrobust train classifier`` needs; loadable from YAML.

    Attributes:
        data: Data source spec (file or folder) for :func:`medrobust.data.open_source`.
        source_kind: Force a source kind ("npz", "csv", "folder", "dicom", "nifti").
        source_options: Extra keyword options for ``open_source``.
        modality: Preset name (``chest_xray``, ``brain_mri``, ...): channels, bounds, transforms.
        arch: Registered classifier name.
        arch_kwargs: Architecture keyword arguments (e.g. ``{"width": 16}`` for small_cnn).
        epochs: Maximum number of epochs.
        batch_size: Per-process batch size (16: small data sets still get several updates per epoch).
        lr: AdamW learning rate (cosine-annealed over ``epochs``). The defaults (3e-3, batches of 16)
            take ``small_cnn`` on 200 phantom chest X-rays past 0.8 validation balanced accuracy in
            1-2 epochs (``benchmarks/phantom_training.py``); 1e-3 with batches of 32 needed 3-6.
        weight_decay: AdamW weight decay.
        spatial_size: Input size; None uses the preset's default, or the data's native size when
            the images are smaller (no upsampling unless asked for).
        val_split: Fraction of the training pool held out for validation when the
            source has no validation split (stratified by class).
        seed: Seed of model init, shuffling, augmentation and the validation split.
        device: "auto" (CUDA when present), "cpu" or "cuda[:N]".
        amp: Mixed precision (only ever on CUDA).
        channels_last: Use ``channels_last`` memory format for 2D conv nets.
        patience: Stop after this many epochs without a better validation balanced
            accuracy (0 disables early stopping). The best weights are kept.
        num_workers: DataLoader workers.
        class_weighting: "balanced" (weights ``n / (K * n_k)``) or "none".
        augment: Apply the preset's augmentations to the training split.
        precise_bn: Before each validation, recompute the BatchNorm statistics from (up to
            ``PRECISE_BN_SAMPLES``) unaugmented training images. The running averages lag far
            behind the weights when an epoch has few batches (140 images in batches of 32:
            5 updates per epoch), and a model that is right in training mode then predicts one
            class in evaluation mode.
        positive_class: Class for sensitivity/specificity; default: the preset's hint.
        adversarial: "none" (standard training), "pgd" (PGD-AT, Madry et al. 2018: cross-entropy
            on PGD examples) or "trades" (TRADES, Zhang et al. 2019: clean cross-entropy +
            ``trades_beta`` × KL between the clean and adversarial predictions); see
            :mod:`medrobust.models.adversarial_training`. The best epoch is then the one with the
            best validation balanced accuracy under PGD (robust overfitting, Rice et al. 2020).
        adv_eps: L∞ training budget in the one unit of ε (``"8/255"`` = 8/255 of the card's
            range; a number is in image units).
        adv_steps: Inner-maximisation steps (PGD steps; also the validation PGD's).
        adv_alpha: Step size in the unit of ε; default ``2.5 * adv_eps / adv_steps``.
        trades_beta: TRADES' weight of the KL term (6 in the paper; larger: more robust, less
            accurate on clean images).
        noise_sigma: Gaussian-noise augmentation for a base classifier of randomized smoothing
            (Cohen et al. 2019): every training image becomes ``clip(x + σ·N(0, I))`` (clipped to
            the card's bounds, as :class:`medrobust.defenses.smoothing.SmoothedClassifier` feeds
            it), σ in the one unit of ε (``"64/255"`` = 64/255 of the bounds' range; a number is
            in image units). BatchNorm statistics are recomputed on noisy images and the best
            epoch is the one with the best validation balanced accuracy on noisy images. None:
            no noise. Not combined with ``adversarial``.
        out: Run folder to write (``model.safetensors``, ``card.json``, ``metrics.csv``...).
        overwrite: Allow writing into a folder that already holds a checkpoint.
        progress: Show a tqdm progress bar (rank 0 only).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    config_name = "classifier training config"
    flag_names = CLI_FLAGS

    data: str | None = None
    source_kind: str | None = None
    source_options: dict[str, Any] = Field(default_factory=dict)
    modality: str | None = None
    arch: str = "small_cnn"
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(16, ge=1, le=MAX_BATCH_SIZE)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    spatial_size: tuple[int, ...] | None = None
    val_split: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    patience: int = Field(5, ge=0)
    num_workers: int = Field(0, ge=0, le=MAX_WORKERS)
    class_weighting: Literal["balanced", "none"] = "balanced"
    augment: bool = True
    precise_bn: bool = True
    positive_class: str | None = None
    adversarial: Literal["none", "pgd", "trades"] = "none"
    adv_eps: float | str = "8/255"
    adv_steps: int = Field(7, ge=1, le=1000)
    adv_alpha: float | str | None = None
    trades_beta: float = Field(6.0, ge=0)
    noise_sigma: float | str | None = None
    out: str = "runs/classifier"
    overwrite: bool = False
    progress: bool = True

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        return get_classifier_arch(v).name

    @field_validator("lr", mode="before")
    @classmethod
    def _check_lr(cls, v: Any) -> float:
        return check_float(v, "lr", "train classifier (--lr)", low=0)

    @field_validator("weight_decay", mode="before")
    @classmethod
    def _check_weight_decay(cls, v: Any) -> float:
        return check_float(v, "weight_decay", "train classifier", low=0, low_inclusive=True)

    @field_validator("val_split", mode="before")
    @classmethod
    def _check_val_split(cls, v: Any) -> float:
        return check_float(v, "val_split", "train classifier", low=0, high=1, high_inclusive=False)

    @field_validator("adv_eps", "adv_alpha", mode="before")
    @classmethod
    def _check_budget(cls, v: Any, info: Any) -> Any:
        if v is None:
            return v
        from medrobust.validation import is_range_fraction, parse_number

        flag = "--eps" if info.field_name == "adv_eps" else "adv_alpha"
        value = parse_number(v, info.field_name, f"adversarial training ({flag})")
        if not value > 0:
            raise ValueError(
                f"The {info.field_name!r} parameter ({flag}) must be a budget > 0 ('8/255' or image "
                f"units). Got {v!r}."
            )
        return v.strip() if is_range_fraction(v) else value

    @field_validator("noise_sigma", mode="before")
    @classmethod
    def _check_noise_sigma(cls, v: Any) -> Any:
        if v is None:
            return v
        from medrobust.validation import is_range_fraction, parse_number

        value = parse_number(v, "noise_sigma", "Gaussian-noise augmentation (--noise-sigma)")
        if not value > 0:
            raise ValueError(
                f"The 'noise_sigma' parameter (--noise-sigma) must be a noise level > 0 ('64/255' of the "
                f"bounds' range or image units). Got {v!r}."
            )
        return v.strip() if is_range_fraction(v) else value

    @field_validator("spatial_size")
    @classmethod
    def _check_size(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (len(v) not in (2, 3) or any(s < 1 for s in v)):
            raise ValueError(
                f"The 'spatial_size' parameter (--size) must have 2 or 3 positive values. Got {list(v)}."
            )
        if v is not None and math.prod(v) > MAX_IMAGE_PIXELS:
            raise ValueError(
                f"The 'spatial_size' parameter (--size) asks for {math.prod(v)} pixels per image; at most "
                f"{MAX_IMAGE_PIXELS} (medrobust.limits.MAX_IMAGE_PIXELS) are accepted. Got {list(v)}."
            )
        return v

    @model_validator(mode="after")
    def _check_noise_alone(self) -> TrainClassifierConfig:
        if self.noise_sigma is not None and self.adversarial != "none":
            raise ValueError(
                f"The 'noise_sigma' parameter (--noise-sigma) trains a base classifier for randomized "
                f"smoothing and cannot be combined with adversarial training (--adversarial); give one of "
                f"the two. Got noise_sigma={self.noise_sigma!r} with adversarial={self.adversarial!r}."
            )
        return self

    @model_validator(mode="after")
    def _check_arch_kwargs(self) -> TrainClassifierConfig:
        # Names and types now; the size on the meta device with the smallest input (1 channel,
        # 2 classes): a network too large even then is refused before any data is read.
        kwargs = check_arch_kwargs(self.arch, self.arch_kwargs)
        dims = len(self.spatial_size) if self.spatial_size is not None else 2
        if dims in get_classifier_arch(self.arch).spatial_dims:
            n_params = count_parameters(self.arch, 1, 2, dims, **kwargs)
            if n_params > MAX_PARAMETERS:
                raise ValueError(
                    f"The 'arch_kwargs' parameter {kwargs} gives classifier {self.arch!r} at least "
                    f"{n_params:.3g} parameters; at most {MAX_PARAMETERS:.3g} "
                    "(medrobust.models.registry.MAX_PARAMETERS) are built."
                )
        return self


@dataclass
class TrainData:
    """Datasets and facts the training loop needs (built by :func:`prepare_data`, or by hand).

    Each dataset yields ``{"image": float32 (C, *spatial) in bounds, "label": int64, "meta": {}}``.

    Attributes:
        train: Training dataset (with augmentation).
        val: Validation dataset (no augmentation).
        class_names: Class names, index = label.
        in_channels: Image channels.
        spatial_size: Image size.
        bounds: Intensity interval of the images.
        modality: Modality/preset name recorded on the card.
        positive_class: Positive class for sensitivity/specificity.
        train_labels: Labels of ``train`` (for class weights); gathered by iterating when None.
        stats_dataset: Unaugmented view of the training data for normalisation statistics
            (default ``train``).
        test: Held-back test dataset, evaluated once with the best weights.
        source: Description of the data source (recorded on the card).
    """

    train: Dataset
    val: Dataset
    class_names: list[str]
    in_channels: int
    spatial_size: tuple[int, ...]
    bounds: tuple[float, float] = (0.0, 1.0)
    modality: str = "unknown"
    positive_class: str | None = None
    train_labels: np.ndarray | None = None
    stats_dataset: Dataset | None = None
    test: Dataset | None = None
    source: str | None = None


@dataclass(frozen=True)
class NoiseAugmentation:
    """Gaussian-noise augmentation of a base classifier for randomized smoothing (budget in image units).

    Attributes:
        sigma: Noise standard deviation in image units.
        bounds: Intensity interval the noisy images are clipped to.
        sigma_text: σ as the config wrote it (recorded on the card).
    """

    sigma: float
    bounds: tuple[float, float]
    sigma_text: str

    @classmethod
    def resolve(cls, sigma: Any, bounds: tuple[float, float]) -> NoiseAugmentation:
        """Convert ``sigma`` with the card's ``bounds`` (the one unit of ε) and validate it.

        Raises:
            ConfigError: naming ``noise_sigma`` (--noise-sigma) when the value is not in (0, range].
        """
        from medrobust.validation import budget_to_image_units

        low, high = (float(b) for b in bounds)
        owner = "Gaussian-noise augmentation (--noise-sigma)"
        value = budget_to_image_units(sigma, (low, high), "noise_sigma", owner)
        check_float(value, "noise_sigma", owner, low=0.0, high=high - low)
        return cls(value, (low, high), str(sigma))

    def apply(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``clip(images + σ·N(0, I))``, the noise drawn on the CPU from ``generator`` (any device)."""
        noise = torch.randn(images.shape, generator=generator, dtype=torch.float32)
        return (images + self.sigma * noise.to(images)).clamp(*self.bounds)

    def record(self) -> dict[str, Any]:
        """The recipe as plain values (``summary.json``)."""
        return {
            "method": "gaussian",
            "sigma": self.sigma_text,
            "sigma_image_units": self.sigma,
            "clipped_to_bounds": list(self.bounds),
            "purpose": "base classifier for randomized smoothing (Cohen et al. 2019)",
            "best_epoch_by": "validation balanced accuracy on noisy images (one seeded draw per image)",
            "batchnorm_statistics": "recomputed on noisy training images",
        }

    def describe(self) -> str:
        """One line for the card's notes."""
        return (
            f"Trained with Gaussian-noise augmentation for randomized smoothing: sigma {self.sigma_text} "
            f"(= {self.sigma:.6g} image units), noisy images clipped to the bounds; smooth it at this sigma."
        )


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, held_out) with ``fraction`` of each class held out.

    Every class with at least two samples contributes at least one held-out sample.
    """
    rng = np.random.default_rng(int(seed))
    labels = np.asarray(labels)
    held: list[int] = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        rng.shuffle(idx)
        n_val = round(len(idx) * fraction)
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        held.extend(idx[:n_val].tolist())
    held_arr = np.array(sorted(held), dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), held_arr)
    return keep, held_arr


def _split_names(splits: list[str]) -> dict[str, str | None]:
    lower = {s.lower(): s for s in splits}
    pick = lambda *names: next((lower[n] for n in names if n in lower), None)  # noqa: E731
    return {
        "train": pick("train", "training"),
        "val": pick("val", "valid", "validation"),
        "test": pick("test", "testing"),
    }


def native_size(source: Any, split: str | None, samples: int = 8) -> tuple[int, ...] | None:
    """Largest image size (per axis) over up to ``samples`` evenly spaced records.

    None when the records hold no images or their dimensionality differs.
    """
    records = source.records(split)
    if not records:
        return None
    idx = np.unique(np.linspace(0, len(records) - 1, num=min(len(records), samples)).astype(int))
    shapes = [tuple(int(v) for v in source.load(records[int(i)])["image"].shape[1:]) for i in idx]
    if len({len(s) for s in shapes}) != 1:
        return None
    return tuple(max(s[d] for s in shapes) for d in range(len(shapes[0])))


def training_size(
    source: Any, split: str | None, preset: Any, config: TrainClassifierConfig
) -> tuple[int, ...]:
    """The size images are trained at: ``--size``, else the preset's, or the smaller native size.

    Without ``spatial_size`` the data's native size is used when the images are smaller than the
    preset's (no upsampling by default), never below the architecture's ``min_size``.

    Upsampling small images (a 32x32 set to a 224x224 preset) costs about 50x the compute per
    epoch and gives the network nothing to learn from; when ``--size`` asks for it, it is logged.
    """
    default = tuple(int(v) for v in preset.spatial_size)
    native = native_size(source, split)
    shown = lambda size: "x".join(str(v) for v in size)  # noqa: E731
    if config.spatial_size:
        size = tuple(int(v) for v in config.spatial_size)
        if (
            native is not None
            and len(native) == len(size)
            and any(s > n for s, n in zip(size, native, strict=True))
        ):
            log.info("images of up to %s pixels are upsampled to %s (--size)", shown(native), shown(size))
        return size
    if native is None or len(native) != len(default) or native == default:
        return default
    if all(n <= d for n, d in zip(native, default, strict=True)):
        min_side = int(getattr(get_classifier_arch(config.arch), "min_size", 1))
        size = tuple(max(n, min_side) for n in native)
        log.info(
            "training at the data's native size %s (the %s preset's default %s would upsample the images; "
            "pass --size to choose)",
            shown(size),
            getattr(preset, "name", config.modality),
            shown(default),
        )
        return size
    return default


def prepare_data(config: TrainClassifierConfig) -> TrainData:
    """Open ``config.data`` with the data layer and build train/val(/test) datasets.

    The source's own ``train``/``val``/``test`` splits are used when present;
    otherwise ``val_split`` of the training pool is held out (stratified, seeded). Without
    ``spatial_size`` images smaller than the preset's size are trained at their native size
    (:func:`training_size`).
    """
    if not config.data:
        raise ConfigError("The 'data' parameter of train classifier is required (a file or folder).")
    if not config.modality:
        raise ConfigError("The 'modality' parameter of train classifier is required (a preset name).")
    from medrobust.data import get_preset, make_dataset, open_source

    preset = get_preset(config.modality)
    source = open_source(config.data, kind=config.source_kind, **config.source_options)
    names = _split_names(list(source.splits()))

    def dataset(split: str | None, augment: bool) -> Dataset:
        return make_dataset(source, split=split, preset=preset, spatial_size=spatial, augment=augment)

    train_split = names["train"]
    train_labels = np.array([r.label for r in source.records(train_split)], dtype=np.int64)
    if train_labels.size == 0:
        raise ConfigError(f"The data source {config.data!r} has no training records.")
    check_training_labels(train_labels, list(source.class_names), config.data)
    spatial = training_size(source, train_split, preset, config)
    train_aug = dataset(train_split, config.augment)
    train_plain = dataset(train_split, False)
    if names["val"] is not None and train_split is not None:
        train_ds: Dataset = train_aug
        stats_ds: Dataset = train_plain
        val_ds: Dataset = dataset(names["val"], False)
        labels = train_labels
    else:
        keep, held = stratified_split(train_labels, config.val_split, config.seed)
        train_ds = Subset(train_aug, keep.tolist())
        stats_ds = Subset(train_plain, keep.tolist())
        val_ds = Subset(train_plain, held.tolist())
        labels = train_labels[keep]
    test_ds = dataset(names["test"], False) if names["test"] is not None and train_split is not None else None
    class_names = list(source.class_names)
    positive = config.positive_class
    hint = getattr(preset, "positive_class_hint", None)
    if positive is None and hint in class_names:
        positive = hint
    return TrainData(
        train=train_ds,
        val=val_ds,
        class_names=class_names,
        in_channels=int(preset.channels),
        spatial_size=spatial,
        bounds=tuple(float(b) for b in preset.bounds),  # type: ignore[arg-type]
        modality=str(getattr(preset, "modality", config.modality)),
        positive_class=positive,
        train_labels=labels,
        stats_dataset=stats_ds,
        test=test_ds,
        source=str(config.data),
    )


def check_training_labels(labels: np.ndarray, class_names: list[str], data: object) -> None:
    """Refuse training data with fewer than two classes, or labels outside the class list.

    Raises:
        DataError: naming the data source, what was found and what is needed.
    """
    labels = np.asarray(labels)
    present = np.unique(labels)
    if len(class_names) < 2 or present.size < 2:
        found = [class_names[int(k)] if 0 <= int(k) < len(class_names) else int(k) for k in present]
        n = int(present.size)
        raise DataError(
            data,
            f"found {n} class{'es' if n != 1 else ''} {found if found else class_names} in the training "
            "data, need ≥ 2 to train a classifier (check the labels and the split).",
        )
    if present.size and (int(present.min()) < 0 or int(present.max()) >= len(class_names)):
        raise DataError(
            data,
            f"training labels must lie in 0..{len(class_names) - 1} (one per class {class_names[:10]}); "
            f"found labels {present[:10].tolist()}.",
        )


def _collate(batch: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images and labels only (``meta`` dicts stay out of the batch)."""
    images = []
    for item in batch:
        img = item["image"]
        as_tensor = getattr(img, "as_tensor", None)
        img = as_tensor() if callable(as_tensor) else torch.as_tensor(img)
        images.append(img.float())
    labels = torch.as_tensor([int(item["label"]) for item in batch], dtype=torch.long)
    return torch.stack(images), labels


def channel_stats(dataset: Dataset, limit: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over up to ``limit`` evenly spaced samples."""
    n = len(dataset)  # type: ignore[arg-type]
    idx = np.unique(np.linspace(0, n - 1, num=min(n, limit)).astype(int))
    total = sq = count = None
    for i in idx:
        img = _collate([dataset[int(i)]])[0][0].double()
        flat = img.flatten(1)
        s, s2, c = flat.sum(1), (flat**2).sum(1), flat.shape[1]
        total = s if total is None else total + s
        sq = s2 if sq is None else sq + s2
        count = c if count is None else count + c
    mean = total / count  # type: ignore[operator]
    var = (sq / count - mean**2).clamp_min(0)  # type: ignore[operator]
    std = var.sqrt().clamp_min(1e-6)
    return [float(m) for m in mean], [float(s) for s in std]


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> torch.Tensor | None:
    """``n / (K * n_k)`` per class (K: classes present; "balanced"), None for "none"; absent classes get 0."""
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = int((counts > 0).sum())
    weights = np.where(counts > 0, counts.sum() / (present * np.maximum(counts, 1)), 0.0)
    if (counts == 0).any():
        log.warning(
            "classes %s have no training samples; their loss weight is 0", np.flatnonzero(counts == 0)
        )
    return torch.tensor(weights, dtype=torch.float32)


def _resolve_train_device(spec: str) -> torch.device:
    from medrobust.utils.device import resolve_device

    device = resolve_device(spec)
    if device.type == "cuda" and dist_utils.is_distributed():
        device = torch.device("cuda", dist_utils.local_rank())
    return device


class _Remembered(Dataset):
    """Items of a deterministic dataset kept in memory after their first read."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._items: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._items.get(index)
        if item is None:
            raw = self.dataset[index]
            item = self._items[index] = {"image": raw["image"], "label": raw["label"]}
        return item


def _remember(dataset: Dataset, in_channels: int, spatial_size: tuple[int, ...]) -> Dataset:
    """``dataset`` kept in memory when its images fit in :data:`MEMORY_CACHE_BYTES`."""
    nbytes = len(dataset) * in_channels * math.prod(spatial_size) * 4  # type: ignore[arg-type]
    return _Remembered(dataset) if nbytes <= MEMORY_CACHE_BYTES else dataset


def _shard(dataset: Dataset) -> Dataset:
    """This rank's share of an evaluation set (no padding, so gathered metrics are exact)."""
    ws = dist_utils.world_size()
    if ws == 1:
        return dataset
    return Subset(dataset, list(range(dist_utils.rank(), len(dataset), ws)))  # type: ignore[arg-type]


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    channels_last: bool = False,
    noise: NoiseAugmentation | None = None,
    seed: int = 0,
) -> bool:
    """Replace BatchNorm running statistics by exact averages over ``loader`` ("precise BN").

    Each BatchNorm layer's running mean and variance become the average over the loader's
    batches, computed in training mode with the weights fixed. Under DDP every rank uses its
    shard and the statistics are averaged over ranks. With ``noise`` the images are noised first
    (seeded by ``seed``), so the statistics match a classifier that sees noisy inputs. Returns False
    when the model has no BatchNorm layer (nothing done).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    generator = torch.Generator().manual_seed(int(seed))
    try:
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            if noise is not None:
                images = noise.apply(images, generator)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            model(images)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    ws = dist_utils.world_size()
    if ws > 1:
        for m in norms:
            for buf in (m.running_mean, m.running_var):
                if buf is not None:
                    buf.copy_(dist_utils.all_reduce_sum(buf) / ws)
    return True


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    channels_last: bool = False,
    amp: bool = False,
    noise: NoiseAugmentation | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels over ``loader`` (gathered from all ranks when distributed).

    With ``noise`` the logits are on noisy images (one draw per image from a generator seeded by
    ``seed``: the same draws every call).
    """
    was_training = model.training
    model.eval()
    logits_list, labels_list = [], []
    generator = torch.Generator().manual_seed(int(seed))
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        if noise is not None:
            images = noise.apply(images, generator)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            out = model(images)
        logits_list.append(out.float().cpu())
        labels_list.append(labels.cpu())
    model.train(was_training)
    return collect_predictions(model, logits_list, labels_list)


def _write_metrics(path: Path, rows: list[dict[str, Any]], columns: Sequence[str] = METRIC_COLUMNS) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def _loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator,
    workers: int,
    epoch_sampler: Any = None,
    persistent: bool = False,
):
    """A MONAI ``DataLoader`` over ``dataset`` (shuffled from ``generator``; its workers seeded from it)."""
    from monai.data import DataLoader

    n = len(epoch_sampler) if epoch_sampler is not None else len(dataset)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and epoch_sampler is None,
        sampler=epoch_sampler,
        generator=generator,
        num_workers=workers,
        collate_fn=_collate,
        # BatchNorm cannot train on a final batch of one sample.
        drop_last=shuffle and n > 1 and n % batch_size == 1,
        persistent_workers=persistent and workers > 0,
    )


def _check_finite_outputs(logits: torch.Tensor, epoch: int, lr: float, split: str = "validation") -> None:
    """Refuse NaN/inf model outputs before any metric sees them (scikit-learn would raise)."""
    if logits.numel() and not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch}: the model's outputs on {bad} of {logits.shape[0]} "
            f"{split} images are NaN or infinite; lower --lr (now {lr:g}) or check the data for extreme "
            "values."
        )


def chance_record(
    labels: np.ndarray, preds: np.ndarray, num_classes: int, what: str
) -> dict[str, Any] | None:
    """Compare validation predictions with chance; log a warning when at (or near) chance.

    Uses :func:`medrobust.evaluation.degenerate.assess_chance` (constant predictions; balanced
    accuracy's 95 % upper bound within 10 points of chance) and its warning text.

    Returns:
        The assessment as plain values (``constant``, ``at_chance``, ``near_chance``, the point
        estimates and bounds, ``warning``: the message or None), or None without samples.
    """
    import dataclasses

    from medrobust.evaluation.degenerate import assess_chance, chance_level_warning

    assessment = assess_chance(labels, preds, num_classes)
    if assessment is None:
        return None
    message = chance_level_warning(labels, preds, num_classes, what)
    if message:
        log.warning(message)
    return {
        **dataclasses.asdict(assessment),
        "constant": assessment.constant,
        "at_chance": assessment.at_chance,
        "near_chance": assessment.near_chance,
        "warning": message,
    }


def train_classifier(
    config: TrainClassifierConfig | dict[str, Any],
    data: TrainData | None = None,
    *,
    resume: bool = False,
    callbacks: Sequence[Callable[[EpochEnd], None]] = (),
) -> Path:
    """Train a classifier and write a run folder; returns the folder.

    The epochs run in :class:`medrobust.run.loop.TrainingLoop` (checkpoint every epoch in
    ``out/checkpoint/last.pt``, removed when the run ends; time estimate; early stopping).

    Args:
        config: Training config (or a mapping validated into one).
        data: Prepared datasets; default :func:`prepare_data` on ``config.data``.
        resume: Continue the unfinished run in ``config.out`` (same config, else refused).
        callbacks: Called after every epoch with a :class:`~medrobust.run.loop.EpochEnd`.

    Returns:
        The run folder (``config.out``) holding ``model.safetensors``, ``card.json``,
        ``config.yaml``, ``environment.json``, ``metrics.csv`` and ``summary.json``
        (best epoch, best validation and test metrics, seconds per epoch, chance check).
    """
    from medrobust.utils.seed import seed_everything

    if not isinstance(config, TrainClassifierConfig):
        config = TrainClassifierConfig.from_dict(dict(config))
    created_group = dist_utils.init_distributed()
    try:
        rank, ws = dist_utils.rank(), dist_utils.world_size()
        main = rank == 0
        run_dir = Path(config.out)
        if (run_dir / WEIGHTS_NAME).exists() and not config.overwrite and not resume:
            raise ConfigError(
                f"{run_dir} already holds a checkpoint ({WEIGHTS_NAME}); "
                "choose another --out or set overwrite."
            )
        device = _resolve_train_device(config.device)
        use_amp = bool(config.amp and device.type == "cuda")
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
                desc="train",
                lr=config.lr,
                purpose="classifier training",
                callbacks=tuple(callbacks),
            )
        )
        seed_everything(config.seed)  # training entry point: model init is reproducible
        if data is None:
            data = prepare_data(config)
        if len(data.train) == 0 or len(data.val) == 0:  # type: ignore[arg-type]
            raise ConfigError("Training needs non-empty training and validation sets.")

        num_classes = len(data.class_names)
        train_labels = data.train_labels
        if train_labels is None:
            train_labels = np.array([int(data.train[i]["label"]) for i in range(len(data.train))])  # type: ignore[arg-type]
        check_training_labels(train_labels, list(data.class_names), data.source or "the training data")
        mean, std = channel_stats(data.stats_dataset if data.stats_dataset is not None else data.train)
        if not all(math.isfinite(v) for v in (*mean, *std)):
            raise DataError(
                data.source or "the training data",
                f"the training images hold NaN or infinite values (channel means {mean}); "
                "fix or drop those images before training.",
            )
        positive = config.positive_class or data.positive_class
        if positive is not None and positive not in data.class_names:
            hint = did_you_mean(str(positive), list(data.class_names))
            raise ConfigError(
                f"The 'positive_class' parameter of train classifier must be one of the data's classes "
                f"{list(data.class_names)[:10]}. Got {positive!r}.{hint}"
            )
        try:
            card = ModelCard(
                in_channels=data.in_channels,
                class_names=list(data.class_names),
                spatial_size=tuple(data.spatial_size),
                spatial_dims=len(data.spatial_size),  # type: ignore[arg-type]
                modality=data.modality,
                bounds=data.bounds,
                mean=mean,
                std=std,
                positive_class=positive,
                arch=config.arch,
                source=data.source,
                notes=[f"Trained by medrobust train classifier ({config.arch}, seed {config.seed})."],
            )
        except ValidationError as exc:
            raise DataError(
                data.source or "the training data",
                f"the data do not make a valid model card: {format_validation_error(exc)}",
            ) from None
        adv = None
        if config.adversarial != "none":
            from medrobust.models.adversarial_training import AdversarialTraining

            adv = AdversarialTraining.resolve(
                config.adversarial,
                config.adv_eps,
                config.adv_steps,
                config.adv_alpha,
                config.trades_beta,
                card.bounds,
            )
            card = card.model_copy(update={"notes": [*card.notes, adv.describe()]})
        noise = None
        if config.noise_sigma is not None:
            noise = NoiseAugmentation.resolve(config.noise_sigma, card.bounds)
            card = card.model_copy(update={"notes": [*card.notes, noise.describe()]})
        columns = METRIC_COLUMNS
        if adv is not None or noise is not None:
            columns = ADVERSARIAL_METRIC_COLUMNS if adv is not None else NOISE_METRIC_COLUMNS
        model = build_classifier(config.arch, card, **config.arch_kwargs).to(device)
        use_cl = bool(
            config.channels_last and card.spatial_dims == 2 and get_classifier_arch(config.arch).channels_last
        )
        if use_cl:
            model = model.to(memory_format=torch.channels_last)
        net: nn.Module = model
        if ws > 1:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )

        weights = class_weights(train_labels, num_classes, config.class_weighting)
        criterion = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
        val_criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)

        sampler = None
        if ws > 1:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(
                data.train, num_replicas=ws, rank=rank, shuffle=True, seed=config.seed
            )
        seed = config.seed + 1000 * rank
        val_loader = _loader(
            _remember(_shard(data.val), data.in_channels, tuple(data.spatial_size)),
            config.batch_size,
            shuffle=False,
            generator=torch.Generator().manual_seed(seed),
            workers=config.num_workers,
            persistent=True,
        )
        pos_idx = card.positive_index
        bn_loader = None
        if config.precise_bn:
            stats_ds = data.stats_dataset if data.stats_dataset is not None else data.train
            n_stats = len(stats_ds)  # type: ignore[arg-type]
            keep = np.unique(np.linspace(0, n_stats - 1, num=min(n_stats, PRECISE_BN_SAMPLES)).astype(int))
            if keep.size > 1 and keep.size % config.batch_size == 1:
                keep = keep[:-1]  # BatchNorm cannot take a batch of one sample in training mode
            bn_loader = _loader(
                _remember(
                    _shard(Subset(stats_ds, keep.tolist())), data.in_channels, tuple(data.spatial_size)
                ),
                config.batch_size,
                shuffle=False,
                generator=torch.Generator().manual_seed(seed),
                workers=config.num_workers,
                persistent=True,
            )

        def batches(ctx: EpochContext) -> Any:
            if sampler is not None:
                sampler.set_epoch(ctx.epoch)
            return _loader(
                data.train,
                config.batch_size,
                shuffle=True,
                generator=ctx.generator,
                workers=config.num_workers,
                epoch_sampler=sampler,
            )

        def step(batch: tuple[torch.Tensor, torch.Tensor], ctx: EpochContext) -> StepOutput:
            images, labels = batch
            images = images.to(device, non_blocking=True)
            if use_cl:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            n = int(labels.shape[0])
            if noise is not None:  # one seeded draw per batch from the epoch's generator of seeds
                generator = torch.Generator().manual_seed(int(ctx.rng.integers(0, 2**31 - 1)))
                images = noise.apply(images, generator)
                if use_cl:
                    images = images.contiguous(memory_format=torch.channels_last)
            if adv is not None:  # the adversary runs on this rank's batch, on the bare model
                loss, values = adv.loss(net, model, images, labels, criterion, ctx.rng, use_cl)
                return StepOutput(loss=loss, n=n, values=values)
            logits = net(images)
            loss = criterion(logits.float(), labels)
            correct = float((logits.argmax(1) == labels).sum())
            return StepOutput(loss=loss, n=n, values={"accuracy": correct / max(n, 1)})

        def evaluate(ctx: EpochContext, train: dict[str, float]) -> Evaluation:
            if bn_loader is not None:
                recompute_batchnorm(model, bn_loader, device, use_cl, noise, seed=seed)
            logits_v, labels_v = predict(model, val_loader, device, use_cl, use_amp)
            _check_finite_outputs(logits_v, ctx.epoch, config.lr)
            val_loss = float(val_criterion(logits_v, labels_v)) if labels_v.numel() else math.nan
            m = classification_metrics(labels_v.numpy(), logits_v.numpy(), pos_idx)
            row = {
                "train_loss": train["loss"],
                "train_accuracy": train["accuracy"],
                "val_loss": val_loss,
                "val_accuracy": m["accuracy"],
                "val_balanced_accuracy": m["balanced_accuracy"],
                "val_auroc": m["auroc"],
                "val_sensitivity": m["sensitivity"],
                "val_specificity": m["specificity"],
                "lr": ctx.lr,
            }
            if noise is not None:
                logits_n, labels_n = predict(model, val_loader, device, use_cl, use_amp, noise, seed=seed + 1)
                _check_finite_outputs(logits_n, ctx.epoch, config.lr)
                m_n = classification_metrics(labels_n.numpy(), logits_n.numpy(), pos_idx)
                row.update(
                    val_noisy_accuracy=m_n["accuracy"], val_noisy_balanced_accuracy=m_n["balanced_accuracy"]
                )
                metrics = {**m, "noisy": m_n}
                return Evaluation(row=row, score=m_n["balanced_accuracy"], loss=val_loss, metrics=metrics)
            if adv is None:
                return Evaluation(row=row, score=m["balanced_accuracy"], loss=val_loss, metrics=m)
            from medrobust.models.adversarial_training import predict_robust

            logits_r, labels_r = predict_robust(adv, model, val_loader, device, use_cl, seed=config.seed)
            _check_finite_outputs(logits_r, ctx.epoch, config.lr)
            m_r = classification_metrics(labels_r.numpy(), logits_r.numpy(), pos_idx)
            row.update(
                train_adv_accuracy=train.get("adv_accuracy", math.nan),
                val_robust_accuracy=m_r["accuracy"],
                val_robust_balanced_accuracy=m_r["balanced_accuracy"],
            )
            metrics = {**m, "robust": m_r}
            return Evaluation(row=row, score=m_r["balanced_accuracy"], loss=val_loss, metrics=metrics)

        with loop:
            result = loop.fit(
                model,
                optimizer,
                batches=batches,
                step=step,
                evaluate=evaluate,
                scheduler=scheduler,
                on_epoch_end=lambda rows: _write_metrics(run_dir / METRICS_NAME, rows, columns),
                random_objects=[data.train],
            )
            model = model.to(memory_format=torch.contiguous_format)
            model.eval()
            test_metrics = None
            if data.test is not None and len(data.test) > 0:  # type: ignore[arg-type]
                test_loader = _loader(
                    _shard(data.test),
                    config.batch_size,
                    shuffle=False,
                    generator=torch.Generator().manual_seed(seed),
                    workers=0,
                )
                logits_t, labels_t = predict(model, test_loader, device, False, use_amp)
                _check_finite_outputs(logits_t, result.best_epoch, config.lr, "test")
                test_metrics = classification_metrics(labels_t.numpy(), logits_t.numpy(), pos_idx)
            logits_v, labels_v = predict(model, val_loader, device, False, use_amp)  # the kept weights
            chance = None
            if main:
                chance = chance_record(
                    labels_v.numpy(), logits_v.argmax(1).numpy(), num_classes, f"{config.arch} validation"
                )
            score_name = "validation balanced accuracy" + (
                " under PGD" if adv is not None else " on noisy images" if noise is not None else ""
            )
            note = (
                f"Best epoch {result.best_epoch} of {len(result.rows)}: "
                f"{score_name} {result.best_score:.4f}"
                + (
                    f"; test balanced accuracy {test_metrics['balanced_accuracy']:.4f}"
                    if test_metrics
                    else ""
                )
                + "."
            )
            model.card = model.card.model_copy(update={"notes": [*model.card.notes, note]})
            if main:
                resolved = config.model_dump(mode="json")
                resolved.update(
                    spatial_size=list(data.spatial_size),
                    positive_class=positive,
                    modality=config.modality or data.modality,
                )
                save_checkpoint(
                    model,
                    run_dir,
                    config=resolved,
                    environment=environment(device, config.seed, amp=use_amp, channels_last=use_cl),
                )
                atomic_write_json(
                    run_dir / SUMMARY_NAME,
                    {
                        "best_epoch": result.best_epoch,
                        "epochs_run": len(result.rows),
                        "seconds_per_epoch": float(np.mean(result.epoch_seconds)),
                        "best_val": dict(result.best_metrics or {}),
                        "test": test_metrics,
                        "chance": chance,
                        "n_train": len(data.train),  # type: ignore[arg-type]
                        "n_val": len(data.val),  # type: ignore[arg-type]
                        "n_test": None if data.test is None else len(data.test),  # type: ignore[arg-type]
                        "world_size": ws,
                        "device": str(device),
                        "adversarial": None if adv is None else adv.record(),
                        "noise_augmentation": None if noise is None else noise.record(),
                        "resumed_after_epoch": result.resumed_from,
                    },
                )
        dist_utils.barrier()
        return run_dir
    finally:
        if created_group:
            dist_utils.cleanup_distributed()


def copy_config(config: TrainClassifierConfig, **updates: Any) -> TrainClassifierConfig:
    """Return a validated copy of ``config`` with ``updates`` applied."""
    values = copy.deepcopy(config.model_dump())
    values.update(updates)
    return TrainClassifierConfig.from_dict(values)
