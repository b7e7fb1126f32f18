"""Loading what an audit needs: the samples, the classifier and the defended targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medrobust.errors import ConfigError, DataError
from medrobust.evaluation.cells import derive_seed
from medrobust.evaluation.config import BARE, AuditConfig, DataConfig, DefenseConfig


@dataclass
class AuditData:
    """The audited samples, in deterministic order.

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


def _phantom_source(spec: DataConfig) -> Path:
    from medrobust.data import write_phantom

    ph = spec.phantom
    assert ph is not None
    cache = Path(ph.cache_dir or "runs/cache/phantoms") / f"{ph.modality}-n{ph.n}-s{ph.size}-seed{ph.seed}"
    npz = cache / f"{ph.modality}_phantom.npz"
    if not npz.exists():
        out = Path(write_phantom(ph.modality, ph.n, ph.size, "npz", cache, seed=ph.seed))
        if out.is_file():
            npz = out
    return npz


def select_indices(total: int, n_samples: int | None, seed: int) -> list[int]:
    """A seeded, sorted subset of ``range(total)`` (all when ``n_samples`` is None or large)."""
    if n_samples is None or n_samples >= total:
        return list(range(total))
    rng = np.random.default_rng(derive_seed(seed, "samples"))
    return sorted(int(i) for i in rng.choice(total, size=n_samples, replace=False))


def load_audit_data(config: AuditConfig, card: Any) -> AuditData:
    """Open the configured source, apply the preset and load the selected samples.

    Raises:
        DataError: when the split is empty or images fall outside the card's bounds.
    """
    from medrobust.attacks.base import plain_tensor
    from medrobust.data import make_dataset, open_source

    spec = config.data
    path = _phantom_source(spec) if spec.phantom is not None else spec.source
    kwargs: dict[str, Any] = {} if spec.kind is None else {"kind": spec.kind}
    source = open_source(str(path), **kwargs)
    size = spec.size or (list(card.spatial_size) if card.spatial_size else None)
    dataset = make_dataset(
        source,
        split=spec.split,
        preset=spec.preset,
        spatial_size=tuple(size) if size else None,
        on_error=spec.on_error,
    )
    total = len(dataset)
    if total == 0:
        raise DataError(path, f"no samples in split {spec.split!r}")
    indices = select_indices(total, config.n_samples, config.seed)
    images, labels, ids = [], [], []
    for i in indices:
        item = dataset[i]
        images.append(plain_tensor(item["image"]).float())
        labels.append(int(item["label"]))
        meta = item.get("meta") or {}
        ids.append(str(meta.get("id", meta.get("path", i))))
    x = torch.stack(images)
    y = torch.tensor(labels, dtype=torch.int64)
    low, high = card.bounds
    if x.min() < low - 1e-6 or x.max() > high + 1e-6:
        raise DataError(
            path,
            f"preset {spec.preset!r} produced values in [{float(x.min()):g}, {float(x.max()):g}] outside "
            f"the model card's bounds [{low:g}, {high:g}]",
        )
    if x.shape[1] != card.in_channels:
        raise DataError(
            path, f"images have {x.shape[1]} channel(s); the model card expects {card.in_channels}"
        )
    names = list(getattr(source, "class_names", []) or [])
    if names and list(card.class_names) != names:
        raise DataError(
            path, f"source classes {names} differ from the model card's classes {list(card.class_names)}"
        )
    describe = {
        "source": str(path),
        "split": spec.split,
        "preset": spec.preset,
        "spatial_size": list(x.shape[2:]),
        "n_available": total,
    }
    return AuditData(x, y, indices, ids, describe)


def load_classifier(config: AuditConfig, device: torch.device) -> nn.Module:
    """The audited classifier (run folder, ONNX or TorchScript) in eval mode on ``device``."""
    from medrobust.models import load_model

    return load_model(config.model.path, card=config.model.card, device=device).eval()


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
