"""Dermoscopy phantom with a mask: the pigmented lesion (1)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from medrobust.data.phantoms._draw import blur, curve_mask, grid, smooth_noise, soft_blob, to_uint8
from medrobust.data.segmentation.phantoms.base import SegmentationPhantom, register_segmentation_phantom

_TONES = np.array(
    [[0.93, 0.78, 0.68], [0.88, 0.69, 0.56], [0.78, 0.57, 0.43], [0.62, 0.44, 0.32]], dtype=np.float32
)
_PIGMENT = np.array([0.42, 0.26, 0.16], dtype=np.float32)


@register_segmentation_phantom("skin", "dermoscopy")
class SkinSegmentationPhantom(SegmentationPhantom):
    """Dermoscopy image, RGB: skin tone and texture, hairs, one irregular pigmented lesion.

    Mask: 0 skin, 1 lesion (where the lesion's soft outline reaches one half). Hairs cross the
    lesion without changing the mask, as in ISIC ground truth.
    """

    preset: ClassVar[str] = "skin"
    label_names: ClassVar[tuple[str, ...]] = ("background", "lesion")
    lesion_labels: ClassVar[tuple[str, ...]] = ("lesion",)
    channels: ClassVar[int] = 3
    description: ClassVar[str] = "dermoscopy; mask: lesion (1)"

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one image and its mask."""
        s = self.size
        yy, xx = grid(s)
        u = rng.uniform
        tone = _TONES[int(rng.integers(0, len(_TONES)))] * u(0.92, 1.08, 3).astype(np.float32)
        img = tone[:, None, None] * (1.0 + 0.04 * smooth_noise(rng, s, 0.05))[None]
        harm = [(2, u(0.0, 0.2), u(0, 6.3)), (3, u(0.0, 0.12), u(0, 6.3))]
        harm += [(int(k), u(0.0, 0.03), u(0, 6.3)) for k in rng.integers(5, 12, 3)]
        lesion = soft_blob(yy, xx, u(-0.2, 0.2), u(-0.2, 0.2), u(0.2, 0.45), harm, edge=u(0.02, 0.05))
        darkness = u(0.5, 0.8)
        pigment = _PIGMENT * u(0.7, 1.2)
        img = img * (1.0 - darkness * lesion[None]) + darkness * lesion[None] * pigment[:, None, None]
        hairs = []
        for _ in range(int(rng.integers(0, 5))):
            t = np.linspace(0.0, 1.0, 8)
            y0, x0, ang, length = u(-1, 1), u(-1, 1), u(0, np.pi), u(0.5, 1.5)
            hairs.append((y0 + length * t * np.sin(ang), x0 + length * t * np.cos(ang)))
        hair = curve_mask(s, hairs, u(0.012, 0.02))
        img = img * (1.0 - 0.8 * hair[None]) + 0.8 * hair[None] * 0.12
        img = blur(img, u(0.004, 0.01), s) * u(0.9, 1.1) + rng.normal(0.0, u(0.005, 0.02), img.shape)
        return to_uint8(img), (lesion >= 0.5).astype(np.uint8)
