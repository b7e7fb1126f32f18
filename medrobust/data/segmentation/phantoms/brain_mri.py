"""3D brain MRI phantom with a mask: the tumour (1)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy import ndimage

from medrobust.data.phantoms._draw import to_uint8
from medrobust.data.segmentation.phantoms.base import SegmentationPhantom, register_segmentation_phantom


def _grid3(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c, c, indexing="ij")


def _ellipsoid(g: tuple[np.ndarray, ...], centre: tuple[float, ...], radii: tuple[float, ...], edge: float):
    r = np.sqrt(sum(((x - c) / rad) ** 2 for x, c, rad in zip(g, centre, radii, strict=True)))
    return np.clip((1.0 - r) * min(radii) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def _noise3(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((size,) * 3).astype(np.float32), sigma, mode="wrap")
    std = float(field.std())
    return (field - field.mean()) / (std if std > 0 else 1.0)


@register_segmentation_phantom("brain_mri", "brain_mri_3d", "brain3d")
class BrainMRI3DSegmentationPhantom(SegmentationPhantom):
    """T1+C-like brain volume in RAS voxel order: bright scalp fat, skull, brain, ventricles, tumour in 85 %.

    The tumour is an irregular enhancing mass with a darker necrotic core and faint oedema in
    one hemisphere. Mask: 0 background, 1 tumour (enhancing rim and core; oedema excluded).
    """

    preset: ClassVar[str] = "brain_mri"
    label_names: ClassVar[tuple[str, ...]] = ("background", "tumour")
    lesion_labels: ClassVar[tuple[str, ...]] = ("tumour",)
    spatial_dims: ClassVar[int] = 3
    min_size: ClassVar[int] = 16
    max_size: ClassVar[int] = 160
    description: ClassVar[str] = "3D brain MRI volume; mask: tumour (1)"

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one volume and its mask."""
        s = self.size
        g = _grid3(s)
        u = rng.uniform
        centre = (u(-0.05, 0.05), u(-0.05, 0.05), u(-0.05, 0.05))
        radii = (u(0.7, 0.8), u(0.8, 0.9), u(0.7, 0.8))

        def head(scale: float) -> np.ndarray:
            return _ellipsoid(g, centre, tuple(r * scale for r in radii), 0.04)

        brain = head(0.82)
        # Scalp fat is the brightest tissue on T1 (0.95) and a voxel thick even at 32³, so the preset's
        # 99th percentile of the head falls on fat (and tumour), not inside the brain: a thinner, dimmer
        # scalp, blurred by partial volume, let percentile scaling saturate the brain's brightest
        # texture, which then looked like tumour, and flatten the tumour's necrotic core.
        img = 0.95 * head(1.0) - 0.85 * head(0.9) + 0.1 * head(0.85)
        img += (u(0.42, 0.52) + 0.04 * _noise3(rng, s, max(s / 16, 0.7)) - 0.1) * brain
        for side in (-1.0, 1.0):
            vent = _ellipsoid(
                g, (centre[0] + side * 0.1, centre[1], centre[2] + 0.05), (0.06, 0.25, 0.12), 0.04
            )
            img -= u(0.25, 0.35) * vent * brain
        mask = np.zeros((s,) * 3, dtype=np.uint8)
        if rng.random() < 0.85:
            side = rng.choice([-1.0, 1.0])
            tc = (centre[0] + side * u(0.25, 0.4), centre[1] + u(-0.3, 0.3), centre[2] + u(-0.25, 0.25))
            rad = u(0.18, 0.3)
            wobble = 1.0 + 0.15 * _noise3(rng, s, max(s / 10, 0.7))
            r = np.sqrt(sum((x - c) ** 2 for x, c in zip(g, tc, strict=True))) * wobble
            mass = np.clip((rad - r) / 0.04 + 0.5, 0.0, 1.0)
            core = np.clip((rad * u(0.4, 0.6) - r) / 0.04 + 0.5, 0.0, 1.0)
            oedema = np.clip((rad * 1.6 - r) / 0.08 + 0.5, 0.0, 1.0)
            amp = u(0.2, 0.35)
            img += (-0.05 * oedema + amp * mass - (amp * 0.6) * core) * brain
            mask[(mass * brain) >= 0.5] = 1
        img = ndimage.gaussian_filter(np.clip(img, 0.0, 1.0), 0.5) * u(0.85, 1.1)
        sigma = u(0.01, 0.03)
        real = img + rng.normal(0.0, sigma, img.shape)
        imag = rng.normal(0.0, sigma, img.shape)
        return to_uint8(np.sqrt(real**2 + imag**2)), mask
