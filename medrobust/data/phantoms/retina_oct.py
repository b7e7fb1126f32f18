"""Retinal OCT B-scan phantom: layered retina with foveal pit, RPE and choroid, speckle."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from medrobust.data.phantoms._draw import blur, grid, smooth_noise, soft_ellipse, to_uint8
from medrobust.data.phantoms.base import PhantomGenerator, register_phantom

# (name, reflectivity, thickness away from the fovea, thickness at the foveal centre)
_LAYERS: tuple[tuple[str, float, float, float], ...] = (
    ("nfl", 0.70, 0.05, 0.0),
    ("gcl_ipl", 0.45, 0.09, 0.01),
    ("inl", 0.22, 0.04, 0.01),
    ("opl", 0.50, 0.025, 0.015),
    ("onl", 0.18, 0.10, 0.14),
    ("ez", 0.75, 0.015, 0.015),
    ("iz", 0.30, 0.015, 0.015),
    ("rpe", 0.95, 0.03, 0.03),
)


#: Side in pixels at which one speckle grain fills one pixel (smaller images average several grains).
SPECKLE_SIZE = 224


def _dome(x: np.ndarray, centre: float, half_width: float, height: float) -> np.ndarray:
    t = np.clip(1.0 - ((x - centre) / half_width) ** 2, 0.0, None)
    return height * np.sqrt(t)


@register_phantom("retina_oct", "oct")
class RetinaOCTPhantom(PhantomGenerator):
    """OCT B-scan (grey): vitreous, eight retinal bands, foveal pit, bright RPE, choroid.

    Classes (as in the usual OCT sets):

    * ``cnv``: a dome-shaped RPE elevation (pigment epithelial detachment) with
      sub-retinal fluid (dark) above it;
    * ``dme``: retinal thickening with dark intraretinal cysts;
    * ``drusen``: several small RPE bumps with medium reflectivity beneath;
    * ``normal``.

    Retinal position, tilt, thickness, pit depth, gain and speckle vary per image.
    """

    class_names: ClassVar[tuple[str, ...]] = ("normal", "cnv", "dme", "drusen")
    positive_class: ClassVar[str | None] = None
    channels: ClassVar[int] = 1
    description: ClassVar[str] = "OCT B-scan layers; cnv (PED + fluid), dme (cysts), drusen (RPE bumps)"

    def render(self, rng: np.random.Generator, label: int) -> np.ndarray:
        """Draw one B-scan."""
        s = self.size
        yy, xx = grid(s)
        u = rng.uniform
        x = xx[0]
        name = self.class_names[label]
        fovea = u(-0.2, 0.2)
        pit = np.exp(-((x - fovea) ** 2) / (2 * u(0.12, 0.18) ** 2))
        top = u(-0.45, -0.2) + u(-0.12, 0.12) * x + u(0.0, 0.25) * x**2
        scale = u(0.85, 1.15)
        thick = [scale * (t_far * (1 - pit) + t_pit * pit) for _, _, t_far, t_pit in _LAYERS]
        values = [v for _, v, _, _ in _LAYERS]
        lift = np.zeros_like(x)  # RPE elevation (sub-RPE space)
        sub_value = 0.05
        fluid = np.zeros_like(x)  # sub-retinal fluid above the RPE
        if name == "cnv":
            c, w = fovea + u(-0.15, 0.15), u(0.18, 0.35)
            lift = _dome(x, c, w, u(0.1, 0.2))
            sub_value = u(0.35, 0.6)
            fluid = _dome(x, c + u(-0.05, 0.05), w * u(0.9, 1.4), u(0.03, 0.08))
        elif name == "drusen":
            for _ in range(int(rng.integers(3, 8))):
                lift = np.maximum(lift, _dome(x, fovea + u(-0.6, 0.6), u(0.06, 0.14), u(0.04, 0.08)))
            sub_value = u(0.45, 0.7)
        elif name == "dme":
            thick[4] = thick[4] + pit * u(0.1, 0.2)  # ONL swelling at the fovea
            thick[2] = thick[2] + pit * u(0.02, 0.05)
        # Bruch's membrane is the smooth reference; everything above it stacks upwards,
        # so a thin fovea is a pit and an elevated RPE pushes the retina up.
        bruch = top + 0.4
        ilm = bruch - (lift + fluid + np.sum(thick, axis=0))
        img = np.full((s, s), 0.05, dtype=np.float32)
        depth = yy - ilm[None, :]
        edges = np.cumsum([np.zeros_like(x), *thick[:7]], axis=0)  # down to the top of the RPE
        for k in range(7):
            inside = (depth >= edges[k][None]) & (depth < edges[k + 1][None])
            img[inside] = values[k]
        cursor = edges[7]
        if fluid.any():
            inside = (depth >= cursor[None]) & (depth < (cursor + fluid)[None])
            img[inside] = 0.04
            cursor = cursor + fluid
        rpe_end = cursor + thick[7]
        img[(depth >= cursor[None]) & (depth < rpe_end[None])] = values[7]
        sub_end = rpe_end + lift
        img[(depth >= rpe_end[None]) & (depth < sub_end[None])] = sub_value
        below = depth - sub_end[None]
        choroid = np.where(
            below >= 0,
            0.5 * np.exp(-np.clip(below, 0, None) / 0.25) * (1 + 0.3 * smooth_noise(rng, s, 0.04)),
            0,
        )
        img = np.where(below >= 0, choroid, img).astype(np.float32)
        if name == "dme":
            for _ in range(int(rng.integers(2, 6))):
                cxp = fovea + u(-0.25, 0.25)
                col = int(np.clip((cxp + 1) / 2 * s, 0, s - 1))
                cyp = ilm[col] + edges[2][col] + u(0.2, 0.8) * (edges[5][col] - edges[2][col])
                cyst = soft_ellipse(yy, xx, cyp, cxp, u(0.04, 0.08), u(0.05, 0.11), edge=0.01)
                img = img * (1.0 - 0.85 * cyst)
        img = blur(img, u(0.005, 0.012), s)
        # Speckle (multiplicative, gamma distributed with k looks) and gain. The speckle grain is
        # fixed in the eye, about one pixel of a SPECKLE_SIZE-pixel scan: a smaller image's pixel
        # averages (SPECKLE_SIZE / size)^2 grains, as a downsampled scan does, so its speckle is milder.
        k = u(3.0, 8.0) * max(1.0, (SPECKLE_SIZE / s) ** 2)
        img = img * rng.gamma(k, 1.0 / k, img.shape).astype(np.float32) * u(0.8, 1.15)
        img += rng.normal(0.0, 0.02, img.shape)
        return to_uint8(img)
