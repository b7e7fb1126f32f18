"""Training denoising defenses: ``TrainDefenseConfig`` + ``train_defense`` (Siamese-DAE and baselines).

A defense is trained in front of a *frozen* classifier ``f`` (a medrobust run folder).
Each batch pairs clean images ``x`` with adversarial twins ``x'`` and the objective of the
chosen ``kind`` (``medrobust.defenses.objectives``) is minimised over the denoiser's weights
only. The twins come from one of two adversaries (``adversary``):

* ``adaptive`` (the default for ``siamese-dae``): PGD through the *current* denoiser and the
  frozen classifier, ``f∘D`` end to end, regenerated every batch (``adaptive_attacks``,
  default 2-step PGD at 8/255). The denoiser is trained on the attacks an adaptive attacker
  runs against the deployed pipeline; a denoiser trained only on gray-box twins falls to
  near 0 % under them (docs/siamese_dae.md). The first ``adaptive_warmup_epochs`` (default 3)
  are a reconstruction warm start (twins = uniform noise in the ε-ball, no classification term),
  and the classification weight then ramps up over ``adaptive_cls_ramp_epochs`` (default 3):
  started cold, ``f∘D`` collapsed to one class at 2 of 3 seeds.
* ``graybox`` (the default for ``magnet`` and ``hgd``): an attack mix at random budgets
  against the bare ``f`` (``attacks``; on the fly, or once per epoch); ``D`` never sees an
  attack aimed at itself.

The adversary, its attacks and budgets are recorded in ``denoiser.json`` (``training.adversary``),
``summary.json`` and the notes of the saved ``card.json``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from medrobust.defenses.adversarial import (
    AttackMixItem,
    adversary_record,
    ball_noise,
    craft,
    craft_adaptive,
    default_adaptive_mix,
    default_mix,
    describe_adversary,
    ramp_scale,
)
from medrobust.errors import ConfigError
from medrobust.run.config import ConfigModel
from medrobust.run.loop import EpochContext, EpochEnd, Evaluation, LoopSettings, StepOutput, TrainingLoop
from medrobust.utils.logging import get_logger
from medrobust.validation import budget_to_image_units, parse_number

log = get_logger("defenses.training")

ABLATABLE = ("rec", "siam", "cls")
SUMMARY_NAME = "summary.json"
#: Kinds trained against the adaptive adversary unless ``adversary`` says otherwise. The HGD- and
#: MagNet-style baselines stay gray-box by default, as published.
ADAPTIVE_BY_DEFAULT = ("siamese-dae",)
#: Warm-start epochs of the adaptive adversary when ``adaptive_warmup_epochs`` is unset.
DEFAULT_ADAPTIVE_WARMUP = 3
#: Adversarial epochs of the classification-weight ramp when ``adaptive_cls_ramp_epochs`` is unset.
DEFAULT_CLS_RAMP = 3


class TrainDefenseConfig(ConfigModel):
    """Everything ``medrobust train defense`` needs; loadable from YAML (``yaml.safe_load``).

    Attributes:
        classifier: Run folder of the frozen target classifier (``medrobust train classifier``).
        data: Data source spec; default: the ``data`` of the classifier's ``config.yaml``.
        source_kind: Force a source kind (npz, csv, folder, dicom, nifti); default: the classifier's.
        modality: Preset name; default: the classifier's.
        spatial_size: Image size; default: the classifier card's ``spatial_size``.
        val_split: Held-out fraction when the source has no validation split; default: the
            classifier's (same seed and fraction give the same split, so validation images
            were not used to train the classifier).
        limit: At most this many training images (None: all).
        val_limit: At most this many validation images for the per-epoch accuracies.
        kind: Objective: ``siamese-dae``, ``dae``, ``magnet`` or ``hgd``.
        arch: Denoiser architecture (``list_denoisers()``), e.g. ``dae``, ``unet``, ``dncnn``.
        arch_params: Constructor arguments of the denoiser (e.g. ``{"width": 16, "depth": 2}``).
        epochs: Training epochs.
        batch_size: Batch size (pairs per batch for the Siamese-DAE).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: Seed of initialisation, shuffling, noise and the attack mix.
        device: "auto" (CUDA when present), "cpu" or "cuda[:N]".
        adversary: "adaptive" (twins crafted every batch through the current ``f∘D`` with
            ``adaptive_attacks``) or "graybox" (twins crafted against the bare ``f`` with
            ``attacks``); None: adaptive for ``siamese-dae``, gray-box for the other kinds.
            Kinds that train on Gaussian noise (``dae``) take no adversary.
        attacks: The gray-box attack mix crafting ``x'`` against ``f`` (FGSM/PGD, budget ranges
            in the one unit of ε).
        adaptive_attacks: The adaptive attack mix crafting ``x'`` through ``f∘D`` (default
            2-step PGD, random start, step 1.25 ε, at 8/255).
        crafting: "on_the_fly" (fresh twins every batch) or "per_epoch" (all twins crafted at
            the start of each epoch; same cost, less variance within an epoch; gray-box only).
        val_attack: Attack for the per-epoch adversarial accuracy (crafted once on ``f``);
            default: 10-step PGD at the largest budget of the gray-box mix. With the adaptive
            adversary the same attack is also run through the current ``f∘D`` every epoch
            (``val_adaptive_acc``).
        adaptive_val_every: With the adaptive adversary, run the adaptive validation attack every
            this many epochs and after the last one (1: every epoch; 0: only after the last epoch).
            It costs about a quarter of an adaptive run's time, so long runs may thin it out.
        adaptive_warmup_epochs: With the adaptive adversary, the first this many epochs are a
            reconstruction warm start: no attack is crafted, each twin is ``x`` plus uniform noise
            in the adaptive mix's ε-ball, and the classification term is off (its gradient through
            a fresh denoiser, whose output ``f`` misclassifies confidently, drives the DAE into a
            saturated state that the adaptive adversary then keeps it in). None: 3, or
            ``epochs - 1`` when that is smaller (0 for other adversaries, where it must stay 0).
        adaptive_cls_ramp_epochs: With the adaptive adversary, the weight of the classification
            term grows linearly, batch by batch, from 0 to ``w_cls`` over the first this many
            adversarial epochs after the warm start (switched on at once, its gradient dwarfs the
            warm-start gradients Adam has adapted to and throws the denoiser back to chance for
            several epochs). None: 3, or what is left after the warm start when that is smaller.
        w_rec: Weight of the reconstruction term (None: the kind's default).
        w_siam: Weight of the Siamese agreement term (None: default).
        w_cls: Weight of the classification term (None: default).
        ablate: Terms switched off, e.g. ``["siam"]`` or ``["siam", "cls"]``.
        siam_on: Agreement on "latent" codes, "output" images or "both" (latent needs a
            denoiser with ``encode``; otherwise outputs are used).
        siam_distance: Latent distance: "cosine" (1 - cosine similarity) or "l2".
        siam_stop_grad: Treat the clean branch as a fixed target in the agreement term.
        cls_target: "kl" (to the classifier's clean prediction) or "ce" (to the labels).
        noise_sigma: Gaussian noise of the plain DAE, bounds-relative.
        channels_last: ``channels_last`` memory format for 2D conv nets.
        progress: Show a tqdm progress bar.
        out: Output folder.
        overwrite: Allow writing into a folder that already holds a denoiser.
    """

    config_name = "defense training config"

    classifier: str
    data: str | None = None
    source_kind: str | None = None
    modality: str | None = None
    spatial_size: tuple[int, int] | None = None
    val_split: float | None = Field(None, gt=0, lt=1)
    limit: int | None = Field(None, ge=1)
    val_limit: int = Field(256, ge=1)
    kind: str = "siamese-dae"
    arch: str = "dae"
    arch_params: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0)
    device: str = "auto"
    adversary: Literal["adaptive", "graybox"] | None = None
    attacks: list[AttackMixItem] = Field(default_factory=default_mix, min_length=1)
    adaptive_attacks: list[AttackMixItem] = Field(default_factory=default_adaptive_mix, min_length=1)
    crafting: Literal["on_the_fly", "per_epoch"] = "on_the_fly"
    val_attack: AttackMixItem | None = None
    adaptive_val_every: int = Field(1, ge=0)
    adaptive_warmup_epochs: int | None = Field(None, ge=0)
    adaptive_cls_ramp_epochs: int | None = Field(None, ge=0)
    w_rec: float | None = Field(None, ge=0)
    w_siam: float | None = Field(None, ge=0)
    w_cls: float | None = Field(None, ge=0)
    ablate: list[str] = Field(default_factory=list)
    siam_on: Literal["latent", "output", "both"] = "both"
    siam_distance: Literal["cosine", "l2"] = "cosine"
    siam_stop_grad: bool = True
    cls_target: Literal["kl", "ce"] = "kl"
    noise_sigma: float = Field(0.1, gt=0, le=1)
    channels_last: bool = True
    progress: bool = True
    out: str = "runs/defense"
    overwrite: bool = False

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from medrobust.defenses.objectives import DEFENSE_KINDS

        return DEFENSE_KINDS.get(v).name

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from medrobust.defenses.denoisers import DENOISERS

        return DENOISERS.get(v).name

    @field_validator("noise_sigma", mode="before")
    @classmethod
    def _fraction(cls, v: Any) -> float:
        return parse_number(v, "noise_sigma")

    @field_validator("ablate")
    @classmethod
    def _known_terms(cls, v: list[str]) -> list[str]:
        from medrobust.validation import check_choice

        return [check_choice(t, "ablate", ABLATABLE) for t in v]

    @model_validator(mode="after")
    def _terms(self) -> TrainDefenseConfig:
        from medrobust.defenses.objectives import DEFENSE_KINDS

        objective = DEFENSE_KINDS.get(self.kind)
        unknown = [t for t in self.ablate if t not in objective.terms]
        if unknown:
            raise ValueError(
                f"kind {self.kind!r} has no term(s) {unknown} to ablate; "
                f"its terms are {list(objective.terms)}."
            )
        self.resolved_weights()  # at least one active term
        if self.adversary is not None and not objective.needs_adversarial:
            raise ValueError(
                f"The 'adversary' parameter (--adversary) applies to kinds trained on adversarial twins "
                f"(siamese-dae, magnet, hgd); kind {self.kind!r} trains on Gaussian noise. Got "
                f"{self.adversary!r}."
            )
        if self.resolved_adversary() != "adaptive" and (
            self.adaptive_warmup_epochs or self.adaptive_cls_ramp_epochs
        ):
            raise ValueError(
                "The 'adaptive_warmup_epochs' and 'adaptive_cls_ramp_epochs' parameters apply to the "
                f"adaptive adversary only; adversary {self.resolved_adversary()!r} must leave them at 0. Got "
                f"{self.adaptive_warmup_epochs!r} and {self.adaptive_cls_ramp_epochs!r}."
            )
        if self.adaptive_warmup_epochs and self.adaptive_warmup_epochs >= self.epochs:
            raise ValueError(
                f"The 'adaptive_warmup_epochs' parameter must be smaller than epochs ({self.epochs}) so the "
                f"adaptive adversary trains at least one epoch. Got {self.adaptive_warmup_epochs}."
            )
        if self.resolved_warmup() and not set(self.resolved_weights()) - {"cls"}:
            raise ValueError(
                "The adaptive warm start trains the reconstruction / agreement terms only, and none is "
                f"active for kind {self.kind!r}; set adaptive_warmup_epochs: 0. Got "
                f"{self.adaptive_warmup_epochs!r} (default {DEFAULT_ADAPTIVE_WARMUP})."
            )
        if self.resolved_adversary() == "adaptive" and self.crafting == "per_epoch":
            raise ValueError(
                "The 'crafting' parameter must be 'on_the_fly' with the adaptive adversary (its twins are "
                "recomputed through the current denoiser every batch); use adversary: graybox for "
                "per-epoch crafting. Got 'per_epoch'."
            )
        return self

    def resolved_adversary(self) -> str | None:
        """``adversary`` with its default filled in: None for kinds without adversarial twins."""
        from medrobust.defenses.objectives import DEFENSE_KINDS

        if not DEFENSE_KINDS.get(self.kind).needs_adversarial:
            return None
        if self.adversary is not None:
            return self.adversary
        return "adaptive" if self.kind in ADAPTIVE_BY_DEFAULT else "graybox"

    def resolved_warmup(self) -> int:
        """Warm-start epochs of the adaptive adversary (``adaptive_warmup_epochs`` with its default)."""
        if self.resolved_adversary() != "adaptive":
            return 0
        if self.adaptive_warmup_epochs is not None:
            return self.adaptive_warmup_epochs
        if not set(self.resolved_weights()) - {"cls"}:  # nothing to warm up (e.g. HGD)
            return 0
        return min(DEFAULT_ADAPTIVE_WARMUP, self.epochs - 1)

    def resolved_cls_ramp(self) -> int:
        """Adversarial epochs over which the classification weight ramps up (0: none)."""
        if self.resolved_adversary() != "adaptive" or "cls" not in self.resolved_weights():
            return 0
        if self.adaptive_cls_ramp_epochs is not None:
            return self.adaptive_cls_ramp_epochs
        return min(DEFAULT_CLS_RAMP, self.epochs - self.resolved_warmup())

    def adversary_mix(self) -> list[AttackMixItem]:
        """The attack mix of the resolved adversary (empty without one)."""
        adversary = self.resolved_adversary()
        if adversary is None:
            return []
        return list(self.adaptive_attacks if adversary == "adaptive" else self.attacks)

    def resolved_weights(self) -> dict[str, float]:
        """Weight of each active term of ``kind`` (ablated and zero-weight terms left out)."""
        from medrobust.defenses.objectives import DEFENSE_KINDS, WEIGHT_FIELDS

        objective = DEFENSE_KINDS.get(self.kind)
        weights: dict[str, float] = {}
        for term in objective.terms:
            value = getattr(self, WEIGHT_FIELDS[term])
            value = objective.default_weights.get(term, 0.0) if value is None else float(value)
            if term not in self.ablate and value > 0:
                weights[term] = value
        if not weights:
            raise ValueError(f"kind {self.kind!r} has no active loss term (all ablated or weighted 0).")
        return weights

    def objective_options(self) -> dict[str, Any]:
        """Options handed to the objective."""
        return {
            "siam_on": self.siam_on,
            "siam_distance": self.siam_distance,
            "siam_stop_grad": self.siam_stop_grad,
            "cls_target": self.cls_target,
            "noise_sigma": self.noise_sigma,
        }

    def validation_attack(self) -> AttackMixItem:
        """The configured ``val_attack`` or 10-step PGD at the mix's largest budget."""
        if self.val_attack is not None:
            return self.val_attack
        hi = max((item.eps[1] for item in self.attacks), key=parse_number)
        return AttackMixItem(name="pgd", eps=(hi, hi), steps=10)


# --------------------------------------------------------------------------- helpers


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    if images.shape[0] == 0:
        return float("nan")
    correct = 0
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            pred = model(images[i : i + batch_size]).argmax(dim=1)
            correct += int((pred == labels[i : i + batch_size]).sum())
    return correct / images.shape[0]


def _craft_all(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mix: list[AttackMixItem],
    rng: np.random.Generator,
    bounds: tuple[float, float],
    batch_size: int,
    fuse_bn: bool = True,
) -> torch.Tensor:
    out = torch.empty_like(images)
    for i in range(0, images.shape[0], batch_size):
        out[i : i + batch_size] = craft(
            classifier,
            images[i : i + batch_size],
            labels[i : i + batch_size],
            mix,
            rng,
            bounds,
            fuse_bn=fuse_bn,
        )
    return out


def _predictions(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predicted classes (CPU) of ``model`` on ``images``, in batches."""
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            out.append(model(images[i : i + batch_size]).argmax(dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _metrics_csv(rows: list[dict[str, Any]]) -> str:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _check_out(out: Path, overwrite: bool) -> None:
    from medrobust.defenses.checkpoint import WEIGHTS

    if (out / WEIGHTS).exists() and not overwrite:
        raise ConfigError(f"{out}: already holds a denoiser ({WEIGHTS}); pass overwrite=True (--overwrite).")


# --------------------------------------------------------------------------- core loop


@dataclass
class FitResult:
    """What :func:`fit_denoiser` returns.

    Attributes:
        out: The checkpoint folder.
        denoiser: The trained denoiser (CPU, eval mode), identical to ``load_denoiser(out)``.
        metrics: One row per epoch (the content of ``metrics.csv``).
        undefended: Validation clean/adversarial accuracy of the bare classifier.
        chance: The chance check of the defended classifier's validation predictions
            (:func:`medrobust.models.training.chance_record`), None without validation images.
    """

    out: Path
    denoiser: Any
    metrics: list[dict[str, Any]] = field(default_factory=list)
    undefended: dict[str, float] = field(default_factory=dict)
    chance: dict[str, Any] | None = None


def fit_denoiser(
    config: TrainDefenseConfig | dict[str, Any],
    classifier: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    resume: bool = False,
    callbacks: Sequence[Callable[[EpochEnd], None]] = (),
) -> FitResult:
    """Train a denoiser in front of an in-memory classifier on in-memory tensors.

    This is the trainer behind :func:`train_defense` (which loads the classifier and data
    first); benchmarks and tests call it directly. The epochs run in
    :class:`medrobust.run.loop.TrainingLoop` (a checkpoint every epoch in
    ``out/checkpoint/last.pt``, removed when training ends; ``resume`` continues from it).

    Args:
        config: Training config (``classifier``/``data`` are only recorded here).
        classifier: Frozen target classifier with a model card.
        train_images: (N, C, H, W) images in the card's bounds.
        train_labels: (N,) labels.
        val_images: Validation images (may be empty).
        val_labels: Validation labels.
        resume: Continue the unfinished run in ``config.out`` (same config, else refused).
        callbacks: Called after every epoch with a :class:`~medrobust.run.loop.EpochEnd`.

    Returns:
        A :class:`FitResult`; its folder holds ``denoiser.safetensors``, ``denoiser.json``,
        ``card.json``, ``config.yaml`` (resolved), ``metrics.csv``, ``environment.json`` and
        ``summary.json`` (final validation accuracies and the chance check).
    """
    from medrobust.defenses.checkpoint import save_denoiser
    from medrobust.defenses.defended import defend
    from medrobust.defenses.denoisers import create_denoiser
    from medrobust.defenses.objectives import DEFENSE_KINDS, Batch
    from medrobust.models.training import chance_record
    from medrobust.run.environment import environment
    from medrobust.utils.device import resolve_device
    from medrobust.utils.io import atomic_write_json, atomic_write_text
    from medrobust.utils.seed import numpy_rng, seed_everything

    if not isinstance(config, TrainDefenseConfig):
        config = TrainDefenseConfig.from_dict(dict(config))
    card = getattr(classifier, "card", None)
    if card is None:
        raise ConfigError("fit_denoiser needs a classifier with a model card (medrobust load_model).")
    out = Path(config.out)
    if not resume:
        _check_out(out, config.overwrite)
    if train_images.ndim != 4 or train_images.shape[1] != card.in_channels:
        raise ConfigError(
            f"Defense training expects 2D images (N, {card.in_channels}, H, W). "
            f"Got {tuple(train_images.shape)}."
        )
    if train_images.shape[0] != train_labels.shape[0] or val_images.shape[0] != val_labels.shape[0]:
        raise ConfigError("Images and labels must have the same number of samples.")
    bounds = (float(card.bounds[0]), float(card.bounds[1]))

    device = resolve_device(config.device)
    loop = TrainingLoop(
        LoopSettings(
            epochs=config.epochs,
            seed=config.seed,
            run_dir=out,
            config=config.model_dump(mode="json"),
            resume=resume,
            overwrite=config.overwrite,
            device=device,
            progress=config.progress,
            desc=config.kind,
            lr=config.lr,
            purpose="defense training",
            callbacks=tuple(callbacks),
        )
    )
    seed_everything(config.seed)  # training entry point: model init uses the global generator
    cl = config.channels_last and device.type in ("cpu", "cuda")
    fmt = torch.channels_last if cl else torch.contiguous_format

    denoiser = create_denoiser(config.arch, in_channels=card.in_channels, bounds=bounds, **config.arch_params)
    if not any(p.requires_grad for p in denoiser.parameters()):
        raise ConfigError(f"Denoiser {config.arch!r} has no trainable parameters; pick a deep architecture.")
    denoiser = denoiser.to(device, memory_format=fmt)
    classifier = classifier.to(device, memory_format=fmt).eval()
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    for p in trainable:  # frozen for the whole run, restored at the end
        p.requires_grad_(False)

    objective_cls = DEFENSE_KINDS.get(config.kind)
    weights = config.resolved_weights()
    objective = objective_cls(weights, {**config.objective_options(), "bounds": bounds})
    opt = torch.optim.Adam(denoiser.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    x_train = train_images.float().to(device).contiguous(memory_format=fmt)
    y_train = train_labels.long().to(device)
    x_val = val_images[: config.val_limit].float().to(device).contiguous(memory_format=fmt)
    y_val = val_labels[: config.val_limit].long().to(device)
    val_item = config.validation_attack()
    val_rng = numpy_rng(config.seed + 1)
    x_val_adv = (
        _craft_all(classifier, x_val, y_val, [val_item], val_rng, bounds, config.batch_size)
        if len(x_val)
        else x_val
    )
    undefended = {
        "val_clean_acc": _accuracy(classifier, x_val, y_val, config.batch_size),
        "val_adv_acc": _accuracy(classifier, x_val_adv, y_val, config.batch_size),
    }
    defended = defend(classifier, denoiser)
    adversary = config.resolved_adversary()
    mix = config.adversary_mix()
    warmup, cls_ramp = config.resolved_warmup(), config.resolved_cls_ramp()
    warm_objective = objective_cls(
        {k: v for k, v in weights.items() if k != "cls"}, {**config.objective_options(), "bounds": bounds}
    )
    warmup_eps = max(
        (budget_to_image_units(item.eps[1], bounds, "eps", "the attack mix") for item in mix), default=0.0
    )
    adversary_info = (
        adversary_record(adversary, mix, bounds, warmup_epochs=warmup, cls_ramp_epochs=cls_ramp)
        if adversary is not None
        else None
    )

    resolved = config.model_copy(
        update={
            "w_rec": weights.get("rec", 0.0 if "rec" in objective_cls.terms else None),
            "w_siam": weights.get("siam", 0.0 if "siam" in objective_cls.terms else None),
            "w_cls": weights.get("cls", 0.0 if "cls" in objective_cls.terms else None),
            "device": str(device),
            "val_attack": val_item,
            "adversary": adversary,
            "adaptive_warmup_epochs": warmup if adversary == "adaptive" else None,
            "adaptive_cls_ramp_epochs": cls_ramp if adversary == "adaptive" else None,
            "spatial_size": tuple(int(s) for s in train_images.shape[-2:]),
        }
    )
    n = x_train.shape[0]
    epoch_adv: dict[str, Any] = {"cache": None, "start": 0.0, "batch": 0}
    n_batches = -(-n // config.batch_size)

    def batches(ctx: EpochContext) -> list[torch.Tensor]:
        epoch_adv["start"] = time.perf_counter()
        epoch_adv["cache"] = None
        epoch_adv["batch"] = 0
        if adversary == "graybox" and config.crafting == "per_epoch":
            epoch_adv["cache"] = _craft_all(
                classifier, x_train, y_train, mix, ctx.rng, bounds, config.batch_size
            )
        perm = torch.randperm(n, generator=ctx.generator).to(device)
        return [perm[i : i + config.batch_size] for i in range(0, n, config.batch_size)]

    def step(idx: torch.Tensor, ctx: EpochContext) -> StepOutput:
        x, y = x_train[idx], y_train[idx]
        x_adv = None
        active = objective
        if adversary == "adaptive" and ctx.epoch <= warmup:
            # Warm start: no attack and no classification term until D is near the identity.
            x_adv = ball_noise(x, warmup_eps, bounds, ctx.generator)
            active = warm_objective
        elif adversary == "adaptive":
            # Recomputed through the denoiser as it is now; the gradients of the adversarial
            # branch reach D's parameters through the objective below.
            x_adv = craft_adaptive(denoiser, classifier, x, y, mix, ctx.rng, bounds)
            if "cls" in weights and cls_ramp:
                done = (ctx.epoch - warmup - 1) * n_batches + epoch_adv["batch"]
                objective.weights["cls"] = weights["cls"] * ramp_scale(done + 1, cls_ramp * n_batches)
            epoch_adv["batch"] += 1
        elif adversary == "graybox":
            cache = epoch_adv["cache"]
            x_adv = cache[idx] if cache is not None else craft(classifier, x, y, mix, ctx.rng, bounds)
        terms = active.losses(denoiser, classifier, Batch(x=x, y=y, x_adv=x_adv, generator=ctx.generator))
        values = {name: float(value.detach()) for name, value in terms.items()}
        return StepOutput(loss=active.total(terms), n=int(x.shape[0]), values=values)

    def evaluate(ctx: EpochContext, train: dict[str, float]) -> Evaluation:
        train_seconds = time.perf_counter() - epoch_adv["start"]
        denoiser.eval()
        row = {
            **train,
            "val_clean_acc": _accuracy(defended, x_val, y_val, config.batch_size),
            "val_adv_acc": _accuracy(defended, x_val_adv, y_val, config.batch_size),
        }
        every = config.adaptive_val_every
        due = ctx.epoch == ctx.epochs or (every > 0 and ctx.epoch % every == 0)
        if adversary == "adaptive" and due:
            # The validation attack through the current f∘D (same seeds every epoch).
            x_val_adaptive = (
                _craft_all(
                    defended, x_val, y_val, [val_item], numpy_rng(config.seed + 2), bounds,
                    config.batch_size, fuse_bn=False,
                )
                if len(x_val)
                else x_val
            )  # fmt: skip
            row["val_adaptive_acc"] = _accuracy(defended, x_val_adaptive, y_val, config.batch_size)
        row["train_seconds"] = round(train_seconds, 3)
        return Evaluation(row=row)

    try:
        with loop:
            result = loop.fit(
                denoiser,
                opt,
                batches=batches,
                step=step,
                evaluate=evaluate,
                on_epoch_end=lambda rows: atomic_write_text(out / "metrics.csv", _metrics_csv(rows)),
            )
            rows = result.rows
            denoiser.eval()
            chance = None
            if len(x_val):
                preds = _predictions(defended, x_val, config.batch_size)
                chance = chance_record(
                    y_val.cpu().numpy(), preds.numpy(), card.num_classes, f"{config.kind} defense validation"
                )
            denoiser = denoiser.to("cpu", memory_format=torch.contiguous_format).eval()
            notes = [f"Denoiser trained by medrobust train defense (kind {config.kind}, seed {config.seed})."]
            if adversary_info is not None:
                notes.append(describe_adversary(adversary_info))
            save_denoiser(
                denoiser,
                out,
                config=resolved,
                card=card.model_copy(update={"notes": [*card.notes, *notes]}),
                extra={
                    "training": {
                        "kind": config.kind,
                        "weights": weights,
                        "epochs": config.epochs,
                        "adversary": adversary_info,
                        "undefended": undefended,
                        "final": rows[-1] if rows else None,
                    }
                },
            )
            atomic_write_json(out / "environment.json", environment(device, config.seed))
            atomic_write_json(
                out / SUMMARY_NAME,
                {
                    "kind": config.kind,
                    "epochs_run": len(rows),
                    "seconds_per_epoch": float(np.mean(result.epoch_seconds))
                    if result.epoch_seconds
                    else None,
                    "train_seconds": float(sum(r.get("train_seconds", 0.0) for r in rows)),
                    "adversary": adversary_info,
                    "final": rows[-1] if rows else None,
                    "undefended": undefended,
                    "chance": chance,
                    "n_train": int(n),
                    "n_val": int(x_val.shape[0]),
                    "resumed_after_epoch": result.resumed_from,
                },
            )
    finally:
        for p in trainable:  # the classifier is the caller's: unfreeze it even after an error
            p.requires_grad_(True)
    return FitResult(out=out, denoiser=denoiser, metrics=rows, undefended=undefended, chance=chance)


# --------------------------------------------------------------------------- entry point


def _classifier_config(run: Path) -> dict[str, Any]:
    from medrobust.utils.yaml_io import read_yaml_mapping

    path = run / "config.yaml"
    return read_yaml_mapping(path, "classifier run config") if path.is_file() else {}


def _materialise(dataset: Any, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(count):
        item = dataset[i]
        img = item["image"]
        as_tensor = getattr(img, "as_tensor", None)
        images.append((as_tensor() if callable(as_tensor) else torch.as_tensor(img)).float())
        labels.append(int(item["label"]))
    if not images:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def train_defense(
    config: TrainDefenseConfig | dict[str, Any],
    *,
    resume: bool = False,
    callbacks: Sequence[Callable[[EpochEnd], None]] = (),
) -> Path:
    """Train a denoising defense for a classifier run folder; returns the output folder.

    The data source, preset, size and validation split default to those in the
    classifier's ``config.yaml``, so the defense sees the classifier's training
    distribution and is validated on images the classifier did not train on.

    Args:
        config: Training config (or a mapping validated into one).
        resume: Continue the unfinished run in ``config.out`` (same config, else refused).
        callbacks: Called after every epoch with a :class:`~medrobust.run.loop.EpochEnd`.
    """
    from medrobust.models import load_model
    from medrobust.models.training import TrainClassifierConfig, prepare_data

    if not isinstance(config, TrainDefenseConfig):
        config = TrainDefenseConfig.from_dict(dict(config))
    if not resume:
        _check_out(Path(config.out), config.overwrite)
    run = Path(config.classifier)
    classifier = load_model(run)
    card = classifier.card
    prior = _classifier_config(run)
    data = config.data or prior.get("data")
    modality = config.modality or prior.get("modality") or card.modality
    if not data:
        raise ConfigError(
            f"The 'data' parameter of train defense is required: {run} has no config.yaml naming its data."
        )
    size = config.spatial_size or (
        tuple(card.spatial_size) if card.spatial_size else prior.get("spatial_size")
    )
    cc = TrainClassifierConfig.from_dict(
        {
            "data": data,
            "source_kind": config.source_kind or prior.get("source_kind"),
            "source_options": prior.get("source_options") or {},
            "modality": modality,
            "spatial_size": size,
            "val_split": config.val_split or prior.get("val_split", 0.2),
            "seed": prior.get("seed", config.seed),
            "augment": False,
            "arch": card.arch or "small_cnn",
        }
    )
    prepared = prepare_data(cc)
    if prepared.in_channels != card.in_channels or tuple(prepared.bounds) != tuple(card.bounds):
        raise ConfigError(
            f"The data ({prepared.in_channels} channel(s), bounds {prepared.bounds}) does not match the "
            f"classifier card ({card.in_channels} channel(s), bounds {tuple(card.bounds)})."
        )
    x_train, y_train = _materialise(prepared.train, config.limit)
    x_val, y_val = _materialise(prepared.val, config.val_limit)
    config = config.model_copy(update={"data": str(data), "modality": modality})
    return fit_denoiser(
        config, classifier, x_train, y_train, x_val, y_val, resume=resume, callbacks=callbacks
    ).out
