"""Chest radiograph phantom: body, mediastinum, heart, two lung fields, ribs; +/- focal opacities."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from medrobust.data.phantoms._draw import (
    blur,
    curve_mask,
    gaussian,
    grid,
    smooth_noise,
    soft_blob,
    soft_ellipse,
    to_uint8,
)
from medrobust.data.phantoms.base import PhantomGenerator, register_phantom


@register_phantom("chest_xray")
class ChestXrayPhantom(PhantomGenerator):
    """PA chest film, grey, bright = dense (bone, soft tissue), dark = air (lungs).

    Class "pneumonia" adds one to three patchy, low-contrast opacities inside a lung
    field. Amplitude, size, patient build, exposure (gain, offset, gamma) and noise
    vary per image, so faint opacities are hard to see and global brightness is no cue.
    """

    class_names: ClassVar[tuple[str, ...]] = ("normal", "pneumonia")
    positive_class: ClassVar[str | None] = "pneumonia"
    channels: ClassVar[int] = 1
    description: ClassVar[str] = "PA chest X-ray: lungs, heart, ribs; pneumonia = focal patchy opacities"

    def render(self, rng: np.random.Generator, label: int) -> np.ndarray:
        """Draw one film."""
        s = self.size
        yy, xx = grid(s)
        u = rng.uniform
        img = np.full((s, s), 0.06, dtype=np.float32)
        body = soft_ellipse(yy, xx, 0.15 + u(-0.05, 0.05), u(-0.04, 0.04), 1.05, u(0.82, 0.95), edge=0.08)
        img += 0.45 * body
        # Lungs: patient's right lung is on the image left.
        lung_cy = u(-0.12, 0.0)
        lungs = np.zeros_like(img)
        lung_params = []
        for side in (-1.0, 1.0):
            cy = lung_cy + u(-0.03, 0.03)
            cx = side * u(0.32, 0.42)
            ry, rx = u(0.5, 0.62), u(0.22, 0.29)
            ang = side * u(0.0, 0.15)
            lung_params.append((cy, cx, ry, rx))
            lungs = np.maximum(lungs, soft_ellipse(yy, xx, cy, cx, ry, rx, ang, edge=0.05))
        # Heart (image right = patient's left): soft tissue that hides the medial lung.
        heart = soft_ellipse(yy, xx, u(0.22, 0.32), u(0.06, 0.14), u(0.22, 0.3), u(0.2, 0.27), edge=0.06)
        air = lungs * (1.0 - 0.85 * heart)
        img -= u(0.25, 0.33) * air
        # Mediastinum / spine band.
        img += 0.08 * soft_ellipse(yy, xx, -0.2, u(-0.03, 0.03), 0.8, u(0.08, 0.12), edge=0.04)
        # Ribs: posterior arcs curving down laterally, visible mainly over the lungs.
        n_ribs = int(rng.integers(7, 10))
        spacing = u(0.11, 0.14)
        y_top = lung_cy - 0.55 + u(-0.04, 0.04)
        xs_line = np.linspace(0.05, 0.75, 12)
        rib_lines = []
        for side in (-1.0, 1.0):
            for k in range(n_ribs):
                y0 = y_top + k * spacing
                rib_lines.append((y0 + u(0.35, 0.5) * (xs_line - 0.05) ** 1.5, side * xs_line))
        ribs = curve_mask(s, rib_lines, u(0.025, 0.04))
        img += u(0.05, 0.09) * ribs * np.clip(air + 0.3 * body, 0.0, 1.0)
        # Clavicles.
        clav = []
        for side in (-1.0, 1.0):
            cx_line = side * np.linspace(0.08, 0.6, 8)
            clav.append((lung_cy - 0.62 + u(-0.03, 0.03) - 0.12 * np.abs(cx_line), cx_line))
        img += 0.08 * curve_mask(s, clav, 0.05)
        # Vascular/lung markings (both classes): fine texture and hilar blobs.
        img += 0.02 * smooth_noise(rng, s, 0.04) * air
        for side in (-1.0, 1.0):
            img += (
                u(0.03, 0.06) * gaussian(yy, xx, lung_cy + u(-0.05, 0.1), side * u(0.15, 0.22), 0.06) * lungs
            )
        if self.class_names[label] == "pneumonia":
            # Consolidation: patchy, irregular airspace opacities confined to the lung fields.
            patchy = 0.6 + 0.4 * np.clip(smooth_noise(rng, s, 0.04) * 0.5 + 0.5, 0.0, 1.0)
            for _ in range(int(rng.integers(1, 3))):
                cy, cx, ry, rx = lung_params[int(rng.integers(0, 2))]
                oy = cy + u(-0.55, 0.55) * ry
                ox = cx + u(-0.5, 0.5) * rx
                harm = [(k, u(0.05, 0.25), u(0, 2 * np.pi)) for k in (2, 3, 4)]
                blob = soft_blob(yy, xx, oy, ox, u(0.1, 0.2), harm, edge=u(0.02, 0.06))
                img += u(0.15, 0.35) * blob * patchy * air
        # Exposure, detector blur and noise.
        img = blur(img, u(0.005, 0.02), s)
        img = np.clip(img, 0.0, 1.0) ** u(0.8, 1.25)
        img = img * u(0.8, 1.2) + u(-0.06, 0.06)
        img += rng.normal(0.0, u(0.01, 0.035), img.shape).astype(np.float32)
        return to_uint8(img)
