"""Chest radiograph phantom with a mask: lung fields (1) and a pulmonary nodule (2)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from medrobust.data.phantoms._draw import (
    blur,
    curve_mask,
    grid,
    smooth_noise,
    soft_blob,
    soft_ellipse,
    to_uint8,
)
from medrobust.data.segmentation.phantoms.base import SegmentationPhantom, register_segmentation_phantom


@register_segmentation_phantom("chest_xray", "cxr")
class ChestXraySegmentationPhantom(SegmentationPhantom):
    """PA chest film, grey: body, heart, ribs, two lung fields; a nodule in 85 % of the films.

    Mask: 0 background, 1 lung (the air-filled fields, heart shadow excluded), 2 nodule (a round,
    denser blob inside one lung; it replaces the lung label where it lies).
    """

    preset: ClassVar[str] = "chest_xray"
    label_names: ClassVar[tuple[str, ...]] = ("background", "lung", "nodule")
    lesion_labels: ClassVar[tuple[str, ...]] = ("nodule",)
    description: ClassVar[str] = "PA chest X-ray; mask: lung fields (1), nodule (2)"

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one film and its mask."""
        s = self.size
        yy, xx = grid(s)
        u = rng.uniform
        img = np.full((s, s), 0.06, dtype=np.float32)
        img += 0.45 * soft_ellipse(
            yy, xx, 0.15 + u(-0.05, 0.05), u(-0.04, 0.04), 1.05, u(0.82, 0.95), edge=0.08
        )
        lung_cy = u(-0.12, 0.0)
        lungs = np.zeros_like(img)
        fields = []
        for side in (-1.0, 1.0):
            field = (lung_cy + u(-0.03, 0.03), side * u(0.32, 0.42), u(0.5, 0.62), u(0.22, 0.29))
            fields.append(field)
            lungs = np.maximum(lungs, soft_ellipse(yy, xx, *field, side * u(0.0, 0.15), edge=0.04))
        heart = soft_ellipse(yy, xx, u(0.22, 0.32), u(0.06, 0.14), u(0.22, 0.3), u(0.2, 0.27), edge=0.04)
        air = lungs * (1.0 - heart)
        img -= u(0.25, 0.33) * air
        ribs = []
        xs_line = np.linspace(0.05, 0.75, 12)
        for side in (-1.0, 1.0):
            for k in range(int(rng.integers(7, 10))):
                y0 = lung_cy - 0.55 + k * u(0.11, 0.14)
                ribs.append((y0 + u(0.35, 0.5) * (xs_line - 0.05) ** 1.5, side * xs_line))
        img += u(0.04, 0.08) * curve_mask(s, ribs, u(0.025, 0.04)) * np.clip(air + 0.3, 0.0, 1.0)
        img += 0.02 * smooth_noise(rng, s, 0.04) * air
        mask = (air >= 0.5).astype(np.uint8)
        if rng.random() < 0.85:
            cy, cx, ry, rx = fields[int(rng.integers(0, 2))]
            oy, ox = cy + u(-0.5, 0.5) * ry, cx + u(-0.4, 0.4) * rx
            harm = [(k, u(0.0, 0.12), u(0, 2 * np.pi)) for k in (2, 3)]
            nodule = soft_blob(yy, xx, oy, ox, u(0.1, 0.18), harm, edge=0.02)
            img += u(0.2, 0.35) * nodule
            mask[nodule >= 0.5] = 2
        img = blur(img, u(0.005, 0.015), s)
        img = np.clip(img, 0.0, 1.0) ** u(0.85, 1.2) * u(0.85, 1.15) + u(-0.04, 0.04)
        img += rng.normal(0.0, u(0.01, 0.03), img.shape).astype(np.float32)
        return to_uint8(img), mask
