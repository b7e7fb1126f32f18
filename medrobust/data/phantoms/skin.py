"""Dermoscopy phantom: skin background with hairs and a pigmented lesion, benign or irregular."""

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
from medrobust.data.phantoms.base import PhantomGenerator, register_phantom

# Skin tones (RGB, light to dark) and lesion pigments.
_TONES = np.array(
    [[0.93, 0.78, 0.68], [0.88, 0.69, 0.56], [0.78, 0.57, 0.43], [0.62, 0.44, 0.32], [0.45, 0.30, 0.22]],
    dtype=np.float32,
)
_BROWN = np.array([0.42, 0.26, 0.16], dtype=np.float32)
#: Colours of a melanoma's variegation: black, blue-white veil, red, white (regression).
_VARIEGATION = np.array(
    [[0.10, 0.07, 0.06], [0.52, 0.60, 0.74], [0.68, 0.24, 0.22], [0.86, 0.81, 0.77]], dtype=np.float32
)


@register_phantom("skin", "dermoscopy")
class SkinPhantom(PhantomGenerator):
    """Dermoscopy image, RGB: skin tone, texture, hairs, optional dark scope vignette, one lesion.

    ``benign``: near-round, symmetric, smooth border, uniform brown. ``malignant``:
    asymmetric, irregular (notched) border, colour variegation (black, blue-grey,
    red, tan). The two overlap: mildly irregular benign lesions and subtle
    malignant ones; lesion size and skin tone do not depend on the class.
    """

    class_names: ClassVar[tuple[str, ...]] = ("benign", "malignant")
    positive_class: ClassVar[str | None] = "malignant"
    channels: ClassVar[int] = 3
    description: ClassVar[str] = (
        "dermoscopy lesion; malignant = asymmetric, irregular border, colour variegation"
    )

    def render(self, rng: np.random.Generator, label: int) -> np.ndarray:
        """Draw one dermoscopy image."""
        s = self.size
        yy, xx = grid(s)
        u = rng.uniform
        tone = _TONES[int(rng.integers(0, len(_TONES)))] * u(0.92, 1.08, 3).astype(np.float32)
        img = tone[:, None, None] * (1.0 + 0.04 * smooth_noise(rng, s, 0.05))[None]
        img = img * (1.0 + u(-0.08, 0.08) * yy + u(-0.08, 0.08) * xx)[None]
        cy, cx = u(-0.15, 0.15), u(-0.15, 0.15)
        radius = u(0.25, 0.45)
        malignant = self.class_names[label] == "malignant"
        asym = u(0.12, 0.28) if malignant else u(0.0, 0.08)
        rough = u(0.02, 0.05) if malignant else u(0.0, 0.015)
        harm = [(2, asym, u(0, 6.3)), (3, asym * u(0.3, 0.8), u(0, 6.3))]
        harm += [(int(k), rough, u(0, 6.3)) for k in rng.integers(5, 14, 4)]
        stretch = (u(0.85, 1.0), 1.0) if rng.random() < 0.5 else (1.0, u(0.85, 1.0))
        lesion = soft_blob(yy, xx, cy, cx, radius, harm, edge=u(0.02, 0.06), stretch=stretch)
        pigment = _BROWN * u(0.7, 1.25)
        darkness = u(0.55, 0.85)
        img = img * (1.0 - darkness * lesion[None]) + darkness * lesion[None] * pigment[:, None, None]
        # Symmetric darker centre (benign and malignant alike).
        centre = soft_ellipse(yy, xx, cy, cx, radius * 0.5, radius * 0.5, edge=0.1)
        img = img * (1.0 - u(0.0, 0.2) * centre * lesion)[None]
        if malignant:
            # Colour variegation: two to four of black, blue-white veil, red and white, in patches
            # covering a good part of the lesion.
            for k in rng.permutation(len(_VARIEGATION))[: int(rng.integers(2, 5))]:
                blotch = np.clip(smooth_noise(rng, s, u(0.06, 0.12)) - u(0.0, 0.5), 0.0, 1.0) * lesion
                a = blotch[None] * u(0.5, 0.85)
                img = img * (1.0 - a) + a * _VARIEGATION[k][:, None, None]
        # Hairs (both classes).
        hairs = []
        for _ in range(int(rng.integers(0, 7))):
            t = np.linspace(0.0, 1.0, 8)
            y0, x0, ang = u(-1, 1), u(-1, 1), u(0, np.pi)
            length = u(0.5, 1.5)
            bend = u(-0.3, 0.3)
            hairs.append((y0 + length * t * np.sin(ang) + bend * t**2, x0 + length * t * np.cos(ang)))
        width = u(0.012, 0.025)
        # A hair thinner than a pixel darkens the pixel by the fraction it covers (a downsampled photo).
        hair = curve_mask(s, hairs, width) * min(1.0, width * s / 2.0)
        img = img * (1.0 - 0.8 * hair[None]) + 0.8 * hair[None] * 0.12
        if rng.random() < 0.4:  # dermatoscope's dark circular border
            img = img * soft_ellipse(yy, xx, 0.0, 0.0, u(1.0, 1.25), u(1.0, 1.25), edge=0.08)[None]
        img = blur(img, u(0.004, 0.012), s)
        img = img * u(0.85, 1.12) + rng.normal(0.0, u(0.005, 0.02), img.shape)
        return to_uint8(img)
