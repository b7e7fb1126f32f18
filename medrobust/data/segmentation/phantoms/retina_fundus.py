"""Colour fundus phantom with a mask: the optic disc (1)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from medrobust.data.phantoms._draw import (
    blur,
    curve_mask,
    gaussian,
    grid,
    smooth_noise,
    soft_ellipse,
    to_uint8,
)
from medrobust.data.segmentation.phantoms.base import SegmentationPhantom, register_segmentation_phantom


@register_segmentation_phantom("retina_fundus", "fundus")
class FundusSegmentationPhantom(SegmentationPhantom):
    """Fundus photograph, RGB: orange-red field of view, macula, vessels, a bright optic disc.

    Mask: 0 background, 1 optic disc (the structure glaucoma screening segments). The disc is the
    "lesion" label for the detection rate and the "erase" attack: a missed disc is what an
    attacker would aim for.
    """

    preset: ClassVar[str] = "retina_fundus"
    label_names: ClassVar[tuple[str, ...]] = ("background", "optic_disc")
    lesion_labels: ClassVar[tuple[str, ...]] = ("optic_disc",)
    channels: ClassVar[int] = 3
    description: ClassVar[str] = "colour fundus; mask: optic disc (1)"

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one photograph and its mask."""
        s = self.size
        yy, xx = grid(s)
        u = rng.uniform
        fr = u(0.86, 0.97)
        fov = soft_ellipse(yy, xx, 0.0, 0.0, fr, fr, edge=0.02)
        base = np.array([u(0.72, 0.92), u(0.28, 0.42), u(0.08, 0.18)], dtype=np.float32)
        img = base[:, None, None] * (1.0 - u(0.25, 0.45) * (yy**2 + xx**2) / fr**2)[None]
        img = img * (1.0 + 0.05 * smooth_noise(rng, s, 0.1))[None]
        eye = rng.choice([-1.0, 1.0])
        dy, dx, dr = u(-0.1, 0.1), eye * u(0.35, 0.5), u(0.1, 0.15)
        img = img * (1.0 - u(0.2, 0.35) * gaussian(yy, xx, dy + u(0.0, 0.08), dx - eye * 0.5, 0.12))[None]
        lines = []
        for vert in (-1.0, 1.0):
            for horiz in (-eye, eye):
                t = np.linspace(0.0, 1.0, 10)
                a0 = np.arctan2(vert * u(0.6, 1.0), horiz * u(0.4, 1.0))
                a = a0 + np.cumsum(rng.normal(0.0, 0.12, t.size))
                step = u(0.6, 1.0) / t.size
                lines.append((dy + np.cumsum(step * np.sin(a)), dx + np.cumsum(step * np.cos(a))))
        vessels = curve_mask(s, lines, 0.035)
        img = img * (1.0 - vessels[None] * 0.5)
        disc = soft_ellipse(yy, xx, dy, dx, dr * u(1.0, 1.15), dr, edge=0.02)
        disc_col = np.array([1.0, 0.82, 0.55], dtype=np.float32) * u(0.8, 1.0)
        img = img * (1.0 - 0.75 * disc[None]) + 0.75 * disc[None] * disc_col[:, None, None]
        img = blur(img, u(0.004, 0.01), s) * u(0.85, 1.12) + rng.normal(0.0, u(0.005, 0.02), img.shape)
        return to_uint8(img * fov[None]), ((disc * fov) >= 0.5).astype(np.uint8)
