"""Retinal OCT B-scan phantom with a mask: retinal layer bands, the choroid and intraretinal fluid.

The scan is drawn like the classification phantom's (:mod:`medrobust.data.phantoms.retina_oct`,
whose layer table and speckle scale it reuses): eight bands stacked upwards from Bruch's
membrane, so the retina bends with the scan's tilt and curvature and thins into a foveal pit;
multiplicative gamma speckle on top. The mask groups the bands the way layer-segmentation sets
do (Duke DME, RETOUCH, AROI): inner retina (ILM to the outer plexiform layer), outer retina
(outer nuclear layer to the interdigitation zone), RPE, choroid; dark intraretinal cysts (in 60 %
of the scans) are labelled fluid over the layer they lie in.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from medrobust.data.phantoms._draw import blur, grid, smooth_noise, soft_ellipse, to_uint8
from medrobust.data.phantoms.retina_oct import _LAYERS, SPECKLE_SIZE
from medrobust.data.segmentation.phantoms.base import SegmentationPhantom, register_segmentation_phantom

#: Mask value of each of the eight bands of ``_LAYERS`` (NFL ... RPE).
_BAND_LABEL: tuple[int, ...] = (1, 1, 1, 1, 2, 2, 2, 3)
_CHOROID, _FLUID = 4, 5
#: Share of scans with intraretinal cysts.
FLUID_RATE = 0.6


@register_segmentation_phantom("retina_oct", "oct")
class RetinaOCTSegmentationPhantom(SegmentationPhantom):
    """OCT B-scan (grey): vitreous, layered retina with a foveal pit, bright RPE, choroid, speckle.

    Mask: 0 background (vitreous and sclera), 1 inner retina (NFL, GCL-IPL, INL, OPL), 2 outer
    retina (ONL, ellipsoid and interdigitation zones), 3 RPE, 4 choroid, 5 intraretinal fluid (dark
    cysts around the fovea in 60 % of the scans; the lesion label, replacing the layer it lies in).
    Position, tilt, curvature, thickness, pit depth and width, gain and speckle vary per scan.
    """

    preset: ClassVar[str] = "retina_oct"
    label_names: ClassVar[tuple[str, ...]] = (
        "background",
        "inner_retina",
        "outer_retina",
        "rpe",
        "choroid",
        "fluid",
    )
    lesion_labels: ClassVar[tuple[str, ...]] = ("fluid",)
    description: ClassVar[str] = (
        "OCT B-scan; mask: inner retina (1), outer retina (2), RPE (3), choroid (4), intraretinal fluid (5)"
    )

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one B-scan and its mask."""
        s = self.size
        yy, xx = grid(s)
        u = rng.uniform
        x = xx[0]
        fovea = u(-0.2, 0.2)
        pit = np.exp(-((x - fovea) ** 2) / (2 * u(0.12, 0.18) ** 2))
        top = u(-0.45, -0.2) + u(-0.12, 0.12) * x + u(0.0, 0.25) * x**2
        scale = u(0.85, 1.15)
        thick = [scale * (far * (1 - pit) + at_pit * pit) for _, _, far, at_pit in _LAYERS]
        fluid = rng.random() < FLUID_RATE
        if fluid:  # cysts swell the retina around the fovea
            thick[4] = thick[4] + pit * u(0.06, 0.14)
            thick[2] = thick[2] + pit * u(0.02, 0.05)
        bruch = top + 0.4
        ilm = bruch - np.sum(thick, axis=0)
        depth = yy - ilm[None, :]
        edges = np.cumsum([np.zeros_like(x), *thick], axis=0)  # band k: edges[k] <= depth < edges[k+1]
        img = np.full((s, s), 0.05, dtype=np.float32)
        mask = np.zeros((s, s), dtype=np.uint8)
        for k, (_, value, _, _) in enumerate(_LAYERS):
            inside = (depth >= edges[k][None]) & (depth < edges[k + 1][None])
            img[inside] = value
            mask[inside] = _BAND_LABEL[k]
        below = depth - edges[-1][None]
        choroid_depth = u(0.14, 0.22) * scale
        deep = below >= 0
        img = np.where(
            deep, 0.55 * np.exp(-np.clip(below, 0, None) / 0.25) * (1 + 0.3 * smooth_noise(rng, s, 0.04)), img
        ).astype(np.float32)
        mask[deep & (below < choroid_depth)] = _CHOROID
        img[deep & (below >= choroid_depth)] *= 0.45  # the sclera behind the choroid is dimmer
        if fluid:
            retina = (mask == 1) | (mask == 2)
            for _ in range(int(rng.integers(1, 5))):
                cx = fovea + u(-0.25, 0.25)
                col = int(np.clip((cx + 1) / 2 * s, 0, s - 1))
                cy = ilm[col] + edges[2][col] + u(0.25, 0.75) * (edges[5][col] - edges[2][col])
                cyst = soft_ellipse(yy, xx, cy, cx, u(0.05, 0.08), u(0.07, 0.14), edge=0.01)
                img = img * (1.0 - 0.9 * cyst)
                mask[(cyst >= 0.5) & retina] = _FLUID
        img = blur(img, u(0.004, 0.01), s)
        # Speckle as in the classification phantom: one grain per pixel of a SPECKLE_SIZE scan.
        looks = u(3.0, 8.0) * max(1.0, (SPECKLE_SIZE / s) ** 2)
        img = img * rng.gamma(looks, 1.0 / looks, img.shape).astype(np.float32) * u(0.85, 1.1)
        img += rng.normal(0.0, 0.02, img.shape)
        return to_uint8(img), mask
