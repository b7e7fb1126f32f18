"""Loading what an audit needs: the samples, the classifier and the defended targets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.config import BARE, AuditConfig, DataConfig, DefenseConfig
from medrobust.run.seeds import derive_seed
from medrobust.utils.logging import get_logger


@dataclass
class AuditData:
    """The audited samples materialised in memory (small audits, notebooks; the runner streams).

    Attributes:
        images: ``(N, C, *spatial)`` float32 inside the model card's bounds.
        labels: ``(N,)`` int64.
        indices: Position of each sample in the split's dataset (sorted ascending).
        ids: Record ids (file names) where the source provides them.
        describe: Where the data came from (recorded in results).
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: list[int]
    ids: list[str]
    describe: dict[str, Any] = field(default_factory=dict)


@dataclass
class SampleBatch:
    """One batch of audited samples, read from the source.

    Attributes:
        index: Batch number ``b`` (positions ``[b*batch_size, (b+1)*batch_size)``).
        positions: ``(B,)`` audit positions of the samples (0 .. N-1).
        images: ``(B, C, *spatial)`` float32 plain tensor, checked against the card.
        labels: ``(B,)`` int64.
        ids: Record ids.
    """

    index: int
    positions: np.ndarray
    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]


def open_configured_source(spec: DataConfig) -> tuple[Any, Path]:
    """Open the audit's data: ``data.source``, or the ``data.phantom`` set through the spec cache.

    Phantoms are opened through :func:`medrobust.data.specs.resolve_phantom`, the one way
    ``phantom:`` data are named, so ``data.phantom`` here and ``--data phantom:MODALITY`` in
    training read the same file with the phantom's class names (``normal``, ``pneumonia``).

    Returns:
        ``(source, path)``: the open source and the file or folder it reads.
    """
    from medrobust.data import open_source

    kwargs: dict[str, Any] = {} if spec.kind is None else {"kind": spec.kind}
    ph = spec.phantom
    if ph is None:
        path = Path(str(spec.source))
        return open_source(str(path), **kwargs), path
    from medrobust.data.specs import resolve_phantom

    resolved = resolve_phantom(ph.modality, ph.n, ph.size, ph.seed, ph.cache_dir)
    source = open_source(str(resolved.path), **kwargs, **resolved.source_options)
    source.spec = resolved.spec
    return source, resolved.path


def audit_preset_options(spec: Any, card: Any) -> dict[str, Any]:
    """The preset options the audit prepares data with: the card's, then ``data.preset_options``.

    The model card's ``preset_options`` say how the model's inputs were prepared (channels,
    intensity scaling, bounds; its size is ``spatial_size``); an audit config's
    ``data.preset_options`` (where the config has the field) override them key by key. Setting a
    scaling option in the config replaces the card's whole scaling (``scaling``, ``percentiles``,
    ``nonzero``, ``value_range`` go together).

    Raises:
        ConfigError: for an unknown option or an invalid value in ``data.preset_options``.
    """
    from medrobust.data.presets.base import PRESET_OPTIONS, check_preset_options

    options = dict(getattr(card, "preset_options", None) or {})
    given = getattr(spec, "preset_options", None)
    if given:
        if isinstance(given, dict) and "spatial_size" in given:
            raise ConfigError(
                "The 'data.preset_options' of an audit config cannot set spatial_size; the size is "
                f"data.size (default: the model card's spatial_size). Got {given!r}."
            )
        allowed = [k for k in PRESET_OPTIONS if k != "spatial_size"]
        override = check_preset_options(given, "data.preset_options", allowed)
        if set(override) & set(_SCALING_OPTIONS):
            options = {k: v for k, v in options.items() if k not in _SCALING_OPTIONS}
        options.update(override)
    return options


#: Preset options that together describe one intensity scaling.
_SCALING_OPTIONS = ("scaling", "percentiles", "nonzero", "value_range")


def select_indices(total: int, n_samples: int | None, seed: int) -> list[int]:
    """A seeded, sorted subset of ``range(total)`` (all when ``n_samples`` is None or large)."""
    if n_samples is None or n_samples >= total:
        return list(range(total))
    rng = np.random.default_rng(derive_seed(seed, "samples"))
    return sorted(int(i) for i in rng.choice(total, size=n_samples, replace=False))


def _record_id(meta: Any, fallback: int) -> str:
    meta = meta or {}
    return str(meta.get("id", meta.get("path", fallback)))


class _Collate:
    """DataLoader collate: plain float32 images (MetaTensor stripped), int64 labels, record ids.

    A module-level class (not a closure) so worker processes can pickle it.
    """

    def __call__(self, items: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        from medrobust.attacks.base import plain_tensor

        images = torch.stack([plain_tensor(it["image"]).float() for it in items])
        labels = torch.tensor([int(it["label"]) for it in items], dtype=torch.int64)
        return images, labels, [it.get("meta") for it in items]


class AuditSamples:
    """The audited samples of a config, read lazily in fixed batches (never all at once).

    Sample ``p`` (its *position*, ``0 .. n-1``) is item ``indices[p]`` of the split's MONAI
    dataset; batch ``b`` holds positions ``[b*batch_size, (b+1)*batch_size)``. Only the
    batches asked for are read, through a ``DataLoader`` over a ``Subset`` of the dataset
    (``num_workers`` worker processes), and each is checked against the model card.

    Args:
        dataset: The split's dataset (:func:`medrobust.data.make_dataset`).
        indices: Dataset items audited, in audit order.
        batch_size: Samples per batch.
        card: The model card (bounds and channels every batch is checked against).
        path: The source (named in :class:`DataError` messages).
        preset: The preset name (named in messages).
        num_workers: DataLoader worker processes.
        describe: Where the data came from (recorded in results).
    """

    def __init__(
        self,
        dataset: Any,
        indices: list[int],
        batch_size: int,
        card: Any,
        path: Path,
        preset: str | None = None,
        num_workers: int = 0,
        describe: dict[str, Any] | None = None,
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.batch_size = int(batch_size)
        self.card = card
        self.path = Path(path)
        self.preset = preset
        self.num_workers = int(num_workers)
        self.describe = dict(describe or {})
        #: Patient/group key per audited sample (in memory only; ``None`` without a patient column).
        self.groups: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def n_batches(self) -> int:
        """Number of batches (the last one may be short)."""
        return -(-len(self.indices) // self.batch_size)

    def positions(self, b: int) -> np.ndarray:
        """Audit positions of batch ``b``."""
        start = b * self.batch_size
        return np.arange(start, min(start + self.batch_size, len(self.indices)), dtype=np.int64)

    def check(self, images: torch.Tensor, ids: list[str]) -> None:
        """Refuse images outside the card's bounds or with the wrong channel count.

        Raises:
            DataError: naming the source (and the first offending record).
        """
        low, high = self.card.bounds
        lo, hi = float(images.min()), float(images.max())
        if lo < low - 1e-6 or hi > high + 1e-6:
            flat = images.flatten(1)
            bad = ((flat < low - 1e-6) | (flat > high + 1e-6)).any(1).nonzero()
            first = ids[int(bad[0])] if len(bad) else "?"
            raise DataError(
                self.path,
                f"preset {self.preset!r} produced values in [{lo:g}, {hi:g}] outside the model "
                f"card's bounds [{low:g}, {high:g}] (first such sample: {first})",
            )
        if images.shape[1] != self.card.in_channels:
            raise DataError(
                self.path,
                f"images have {images.shape[1]} channel(s); the model card expects {self.card.in_channels}",
            )

    def batches(self, batch_indices: list[int] | None = None) -> Iterator[SampleBatch]:
        """Read the given batches (all by default), in the given order, one at a time.

        Raises:
            DataError: for a bad file or a batch outside the card's bounds/channels.
        """
        from torch.utils.data import DataLoader, Subset

        wanted = list(range(self.n_batches)) if batch_indices is None else [int(b) for b in batch_indices]
        if not wanted:
            return
        pos = [self.positions(b).tolist() for b in wanted]
        loader = DataLoader(
            Subset(self.dataset, self.indices),
            batch_sampler=pos,
            num_workers=self.num_workers,
            collate_fn=_Collate(),
        )
        for b, p, (images, labels, metas) in zip(wanted, pos, loader, strict=True):
            ids = [_record_id(m, self.indices[q]) for m, q in zip(metas, p, strict=True)]
            self.check(images, ids)
            yield SampleBatch(b, np.asarray(p, dtype=np.int64), images, labels, ids)

    def read(self, positions: list[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of a few positions (model checks, saved examples), checked."""
        from medrobust.attacks.base import plain_tensor

        items = [self.dataset[self.indices[int(p)]] for p in positions]
        if not items:
            return torch.empty(0), torch.empty(0, dtype=torch.int64)
        images = torch.stack([plain_tensor(it["image"]).float() for it in items])
        labels = torch.tensor([int(it["label"]) for it in items], dtype=torch.int64)
        ids = [
            _record_id(it.get("meta"), self.indices[int(p)]) for it, p in zip(items, positions, strict=True)
        ]
        self.check(images, ids)
        return images, labels


def open_audit_data(config: AuditConfig, card: Any) -> AuditSamples:
    """Open the configured source, apply the preset and select the samples (reads no image).

    Raises:
        DataError: when the split is empty or the source's classes differ from the card's.
    """
    from medrobust.data import make_dataset

    spec = config.data
    source, path = open_configured_source(spec)
    card_size = getattr(card, "spatial_size", None)
    size = spec.size or (list(card_size) if card_size else None)
    if spec.size and card_size and tuple(spec.size) != tuple(card_size):
        get_logger("evaluation").warning(
            "data.size %s differs from the model card's spatial_size %s: the model is audited at "
            "a size it was not trained for (drop data.size to use the card's)",
            list(spec.size),
            list(card_size),
        )
    from medrobust.evaluation.audited import record_groups, resolve_split

    split, split_info = resolve_split(spec.split, source, Path(str(path)), config.model.path)
    options = audit_preset_options(spec, card)
    dataset = make_dataset(
        source,
        split=split,
        preset=spec.preset,
        spatial_size=tuple(size) if size else None,
        on_error=spec.on_error,
        preset_options=options or None,
    )
    total = len(dataset)
    if total == 0:
        raise DataError(path, f"no samples in split {split_info['split']!r}")
    groups_all = record_groups(dataset, range(total))
    if spec.cache_dir is not None:
        from medrobust.data.item_cache import CachedImages

        settings = {"preset": spec.preset, "size": list(size) if size else None, "on_error": spec.on_error}
        if options:
            settings["preset_options"] = options
        dataset = CachedImages(dataset, spec.cache_dir, settings)
    names = list(getattr(source, "class_names", []) or [])
    if names and list(card.class_names) != names:
        raise DataError(
            path, f"source classes {names} differ from the model card's classes {list(card.class_names)}"
        )
    indices = select_indices(total, config.n_samples, config.seed)
    describe = {
        "source": str(path),
        **split_info,
        "preset": spec.preset,
        **({"preset_options": options} if options else {}),
        "spatial_size": None,  # filled from the first batch read
        "n_available": total,
    }
    samples = AuditSamples(
        dataset, indices, config.batch_size, card, Path(str(path)), spec.preset, config.num_workers, describe
    )
    samples.groups = None if groups_all is None else [groups_all[i] for i in indices]
    return samples


def load_audit_data(config: AuditConfig, card: Any) -> AuditData:
    """All selected samples in memory (for small audits and notebooks; the runner streams).

    Raises:
        DataError: when the split is empty or images fall outside the card's bounds.
    """
    samples = open_audit_data(config, card)
    images, labels, ids = [], [], []
    for batch in samples.batches():
        images.append(batch.images)
        labels.append(batch.labels)
        ids += batch.ids
    x = torch.cat(images)
    describe = {**samples.describe, "spatial_size": list(x.shape[2:])}
    return AuditData(x, torch.cat(labels), samples.indices, ids, describe)


def load_classifier(config: AuditConfig, device: torch.device) -> nn.Module:
    """The audited classifier in eval mode on ``device``.

    Whatever ``model.path`` names (:func:`medrobust.models.load_model`): a run folder, an ONNX,
    TorchScript, ``.pt2`` or state-dict file, a MONAI bundle, a live module, or
    ``torchvision:NAME`` / ``timm:NAME`` with the local ``model.weights`` (never downloaded).
    ``model.format`` (where the config has it) reads a file whose suffix does not say what it is;
    TorchScript is never inferred from ``.pt``/``.pth``/``.bin``/``.ckpt``.
    """
    from medrobust.models import load_model

    spec = config.model
    opts: dict[str, Any] = {}
    if spec.weights is not None:
        opts["weights"] = spec.weights
    fmt = getattr(spec, "format", None)
    if fmt is not None:
        opts["format"] = fmt
    return load_model(spec.path, card=spec.card, device=device, **opts).eval()


def build_denoiser(spec: DefenseConfig, card: Any, device: torch.device) -> nn.Module:
    """A trained denoiser (run folder) or a registry denoiser with the card's channels and bounds."""
    from medrobust.defenses import create_denoiser, load_denoiser

    if spec.path is not None:
        return load_denoiser(spec.path, device=device).eval()
    try:
        den = create_denoiser(spec.denoiser, in_channels=card.in_channels, bounds=card.bounds, **spec.params)
    except TypeError as exc:
        raise ConfigError(f"defenses[{spec.name}]: bad parameters for {spec.denoiser!r}: {exc}") from None
    return den.to(device).eval()


def build_targets(config: AuditConfig, classifier: nn.Module, device: torch.device) -> dict[str, nn.Module]:
    """``{"bare": classifier, defense name: defend(classifier, denoiser), ...}`` in config order."""
    from medrobust.defenses import defend

    targets: dict[str, nn.Module] = {BARE: classifier}
    for spec in config.defenses:
        targets[spec.name] = defend(classifier, build_denoiser(spec, classifier.card, device)).eval()
    return targets


def describe_target(name: str, model: nn.Module, spec: DefenseConfig | None) -> dict[str, Any]:
    """What results.json records about a target."""
    if spec is None:
        return {"name": name, "kind": "classifier", "uses_bpda": False, "defense": None, "denoiser": None}
    den = model.denoiser  # type: ignore[union-attr]
    try:
        den_config = den.config()
    except (AttributeError, TypeError):
        den_config = {}
    return {
        "name": name,
        "kind": "defended",
        "uses_bpda": bool(getattr(model, "uses_bpda", False)),
        "defense": {k: (str(v) if isinstance(v, Path) else v) for k, v in spec.model_dump().items()},
        "denoiser": {
            "name": getattr(den, "name", type(den).__name__),
            "kind": getattr(den, "kind", None),
            "differentiable": bool(getattr(den, "differentiable", True)),
            "config": den_config,
        },
    }
