"""Clean images for denoiser training and the study: phantoms, user data, or a synthetic smoke set.

A :class:`DenoisingData` spec is YAML-friendly and resolves to clean float32 images
``(N, C, H, W)`` inside ``bounds`` (from the preset for user data and phantoms, default
``(0, 1)``), split into a training and a test part. Noise is never added here: the
trainer and the study add ``y = x + n`` themselves with explicit generators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medrobust.errors import ConfigError


class DenoisingData(BaseModel):
    """Where clean images come from.

    Attributes:
        kind: "phantom" (``medrobust.data.phantoms``), "source" (a path understood by
            ``medrobust.data.open_source``) or "synthetic" (smooth random shapes; a
            dependency-free smoke set for tests).
        modality: Phantom modality (e.g. "brain_mri", "chest_xray") for ``kind="phantom"``.
        path: Data path for ``kind="source"``.
        preset: Preset for ``kind="source"`` (default: the phantom's modality if it is a
            preset name, else none: images are rescaled from uint8).
        n: Number of images to generate / read (all splits together).
        size: Image side in pixels.
        channels: Channels for ``kind="synthetic"``.
        test_fraction: Fraction held out for testing when the data has no "test" split.
        seed: Seed of generation / splitting.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["phantom", "source", "synthetic"] = "phantom"
    modality: str = "brain_mri"
    path: str | None = None
    preset: str | None = None
    n: int = Field(default=120, ge=4)
    size: int = Field(default=64, ge=8, le=1024)
    channels: int = Field(default=1, ge=1, le=4)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = Field(default=0, ge=0)

    @field_validator("modality")
    @classmethod
    def _modality(cls, v: str) -> str:
        return v.strip().lower().replace("-", "_")

    @model_validator(mode="after")
    def _check(self) -> DenoisingData:
        if self.kind == "source" and not self.path:
            raise ValueError("data.kind 'source' needs data.path (a folder, CSV, NPZ, DICOM or NIfTI path).")
        return self

    def describe(self) -> str:
        """One-line human description."""
        if self.kind == "source":
            return f"{self.path} (preset {self.preset}), {self.n} images at {self.size}px"
        if self.kind == "phantom":
            return f"phantom {self.modality}, {self.n} images at {self.size}px, seed {self.seed}"
        return f"synthetic shapes, {self.n} images at {self.size}px, seed {self.seed}"


@dataclass
class CleanImages:
    """Clean images split into train and test, with their intensity bounds."""

    train: object  # torch.Tensor (N, C, H, W)
    test: object  # torch.Tensor (M, C, H, W)
    bounds: tuple[float, float]
    description: str

    @property
    def in_channels(self) -> int:
        """Image channels."""
        return int(self.train.shape[1])  # type: ignore[attr-defined]


def synthetic_images(n: int, size: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Smooth random shapes in [0, 1]: a bright disc, ellipses and a gradient, float32 (N, C, H, W)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    out = np.empty((n, channels, size, size), dtype=np.float32)
    for i in range(n):
        img = 0.15 + 0.2 * (rng.uniform() * xx + rng.uniform() * yy)
        for _ in range(int(rng.integers(2, 6))):
            cx, cy = rng.uniform(0.15, 0.85, size=2)
            ax, ay = rng.uniform(0.05, 0.3, size=2)
            mask = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
            img = np.where(mask, rng.uniform(0.2, 0.9), img)
        for c in range(channels):
            out[i, c] = np.clip(img * rng.uniform(0.85, 1.0), 0.0, 1.0)
    return out


def _split(images: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from medrobust.run.seeds import derive_seed

    order = np.random.default_rng(derive_seed(seed, "split")).permutation(images.shape[0])
    n_test = max(1, round(images.shape[0] * test_fraction))
    return images[order[n_test:]], images[order[:n_test]]


def _preset_bounds(name: str | None) -> tuple[float, float]:
    if not name:
        return (0.0, 1.0)
    from medrobust.data.presets import get_preset

    return tuple(float(b) for b in get_preset(name).bounds)  # type: ignore[return-value]


def load_clean_images(spec: DenoisingData) -> CleanImages:
    """Resolve ``spec`` to clean train/test tensors inside their bounds.

    Raises:
        ConfigError: when the phantom modality is unknown or the data module is missing.
        DataError: (from the data layer) when a file cannot be read.
    """
    import torch

    if spec.kind == "synthetic":
        train, test = _split(
            synthetic_images(spec.n, spec.size, spec.channels, spec.seed), spec.test_fraction, spec.seed
        )
        bounds = (0.0, 1.0)
    elif spec.kind == "phantom":
        try:
            from medrobust.data.phantoms import make_phantom
        except ImportError as exc:
            raise ConfigError(f"data.kind 'phantom' needs medrobust.data.phantoms ({exc}).") from None
        ph = make_phantom(spec.modality, spec.n, size=spec.size, seed=spec.seed)
        preset = spec.preset or ph.modality
        try:
            bounds = _preset_bounds(preset)
        except ConfigError:
            bounds = (0.0, 1.0)
        low, high = bounds
        images = ph.images.astype(np.float32) / 255.0 * (high - low) + low
        is_test = np.asarray(ph.splits) == "test"
        if is_test.any() and (~is_test).any():
            train, test = images[~is_test], images[is_test]
        else:
            train, test = _split(images, spec.test_fraction, spec.seed)
    else:
        from medrobust.data import load_arrays, make_dataset, open_source

        source = open_source(spec.path)
        size = (spec.size, spec.size)
        bounds = _preset_bounds(spec.preset)
        splits = source.splits()
        if "test" in splits:
            tr_splits = [s for s in splits if s != "test"]
            parts = [
                load_arrays(
                    make_dataset(source, split=s, preset=spec.preset, spatial_size=size), limit=spec.n
                )[0]
                for s in tr_splits
            ]
            train_t = torch.cat(parts)[: spec.n]
            test_t = load_arrays(
                make_dataset(source, split="test", preset=spec.preset, spatial_size=size),
                limit=max(1, round(spec.n * spec.test_fraction)),
            )[0]
            train, test = train_t.numpy(), test_t.numpy()
        else:
            images = load_arrays(make_dataset(source, preset=spec.preset, spatial_size=size), limit=spec.n)[0]
            train, test = _split(images.numpy(), spec.test_fraction, spec.seed)
    return CleanImages(
        train=torch.from_numpy(np.ascontiguousarray(train, dtype=np.float32)),
        test=torch.from_numpy(np.ascontiguousarray(test, dtype=np.float32)),
        bounds=(float(bounds[0]), float(bounds[1])),
        description=spec.describe(),
    )
