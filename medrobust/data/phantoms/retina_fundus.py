"""Colour fundus photograph phantom: orange-red disc, optic disc, macula, branching vessels."""

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
from medrobust.data.phantoms.base import PhantomGenerator, register_phantom


def _vessel_tree(
    rng: np.random.Generator, y0: float, x0: float, angle: float, curl: float, length: float, depth: int
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Polylines of a branching vessel starting at ``(y0, x0)``: ``[(ys, xs, depth), ...]``."""
    steps = 10
    step = length / steps
    ys, xs = [y0], [x0]
    out: list[tuple[np.ndarray, np.ndarray, int]] = []
    a = angle
    for k in range(steps):
        a += curl + rng.normal(0.0, 0.12)
        ys.append(ys[-1] + step * np.sin(a))
        xs.append(xs[-1] + step * np.cos(a))
        if depth < 2 and k in (3, 6) and rng.random() < 0.8:
            side = rng.choice([-1.0, 1.0])
            out += _vessel_tree(
                rng, ys[-1], xs[-1], a + side * rng.uniform(0.5, 1.0), curl * 0.5, length * 0.5, depth + 1
            )
    out.append((np.asarray(ys), np.asarray(xs), depth))
    return out


#: Smallest side (pixels) of the simulated camera image; smaller phantoms are downsampled from it.
CAMERA_SIZE = 128


@register_phantom("retina_fundus", "fundus")
class RetinaFundusPhantom(PhantomGenerator):
    """Fundus photograph, RGB: black background, orange-red field of view with vignetting.

    An optic disc (left or right eye), a darker macula, vessel arcades branching from
    the disc. Class ``dr`` (referable DR) adds microaneurysms (tiny dark-red dots), blot
    haemorrhages (larger dark-red spots) and, in most eyes, hard exudates (yellow) around
    the macula.

    The photograph is taken by a camera of at least :data:`CAMERA_SIZE` pixels: a smaller
    phantom is drawn, exposed and given sensor noise at an integer multiple of its size and
    box-averaged down, as a real photograph is downsampled. Findings smaller than a pixel
    then tint it by their area (a microaneurysm all but vanishes at 32 px, as it does in a
    downsampled photograph) instead of landing on or between pixel centres by chance, and
    the sensor noise is averaged like the camera's.
    """

    class_names: ClassVar[tuple[str, ...]] = ("no_dr", "dr")
    positive_class: ClassVar[str | None] = "dr"
    channels: ClassVar[int] = 3
    description: ClassVar[str] = "colour fundus: disc, macula, vessels; dr = microaneurysms and haemorrhages"

    def render(self, rng: np.random.Generator, label: int) -> np.ndarray:
        """Draw one photograph at the camera's resolution and downsample it to ``size``."""
        n = self.size
        k = -(-CAMERA_SIZE // n)  # ceil: the smallest integer multiple of n of at least CAMERA_SIZE
        img, fov = self._photograph(rng, label, n * k)
        if k > 1:
            img = img.reshape(3, n, k, n, k).mean(axis=(2, 4))
            fov = fov.reshape(n, k, n, k).mean(axis=(1, 3))
        return to_uint8(img * fov[None])

    def _photograph(self, rng: np.random.Generator, label: int, s: int) -> tuple[np.ndarray, np.ndarray]:
        """The exposed, noisy photograph ``(3, s, s)`` in ``[0, 1]`` (before masking) and its FOV mask."""
        yy, xx = grid(s)
        u = rng.uniform
        fy, fx, fr = u(-0.04, 0.04), u(-0.04, 0.04), u(0.86, 0.97)
        fov = soft_ellipse(yy, xx, fy, fx, fr, fr, edge=0.02)
        r2 = ((yy - fy) ** 2 + (xx - fx) ** 2) / fr**2
        base = np.array([u(0.72, 0.92), u(0.28, 0.42), u(0.08, 0.18)], dtype=np.float32)
        img = base[:, None, None] * (1.0 - u(0.25, 0.45) * r2)[None]
        img = img * (1.0 + 0.05 * smooth_noise(rng, s, 0.1))[None]
        eye = rng.choice([-1.0, 1.0])  # optic disc on the nasal side
        dy, dx, dr = fy + u(-0.08, 0.08), fx + eye * u(0.38, 0.5), u(0.1, 0.14)
        # Macula: darker, about 2.5 disc diameters temporal to the disc.
        my, mx = dy + u(0.0, 0.08), dx - eye * u(0.45, 0.55)
        img = img * (1.0 - u(0.2, 0.35) * gaussian(yy, xx, my, mx, 0.12))[None]
        # Vessels: four arcades (superior/inferior, temporal/nasal) with branches.
        by_depth: list[list[tuple[np.ndarray, np.ndarray]]] = [[], [], []]
        for vert in (-1.0, 1.0):
            for horiz, length, curl in ((-eye, u(0.9, 1.2), vert * eye * 0.1), (eye, u(0.4, 0.6), 0.0)):
                start = np.arctan2(vert * u(0.6, 1.0), horiz * u(0.4, 1.0))
                for ys, xs, depth in _vessel_tree(rng, dy, dx, start, -curl, length, 0):
                    by_depth[depth].append((ys, xs))
        vessels = np.zeros((s, s), dtype=np.float32)
        for depth, (width, weight) in enumerate(((0.045, 1.0), (0.03, 0.8), (0.02, 0.6))):
            # A vessel thinner than a pixel tints the pixel by the fraction it covers.
            cover = min(1.0, width * s / 2.0)
            vessels = np.maximum(vessels, weight * cover * curve_mask(s, by_depth[depth], width))
        vessel_col = np.array([0.55, 0.35, 0.45], dtype=np.float32)
        img = img * (1.0 - vessels[None] * (1.0 - vessel_col[:, None, None]) * u(0.6, 0.9))
        # Optic disc: yellow-white with a brighter cup.
        disc = soft_ellipse(yy, xx, dy, dx, dr * u(1.0, 1.15), dr, edge=0.02)
        cup = soft_ellipse(yy, xx, dy, dx, dr * 0.5, dr * 0.45, edge=0.03)
        disc_col = np.array([1.0, 0.82, 0.55], dtype=np.float32)
        img = img * (1.0 - 0.75 * disc[None]) + 0.75 * disc[None] * disc_col[:, None, None] * u(0.8, 1.0)
        img = img + 0.1 * cup[None]
        if self.class_names[label] == "dr":
            # Referable (moderate or worse) DR: microaneurysms, blot haemorrhages in several
            # quadrants and, in most eyes, hard exudates (yellow lipid) clustered around the macula.
            def spot() -> tuple[float, float]:
                while True:
                    ly, lx = fy + u(-0.7, 0.7) * fr, fx + u(-0.7, 0.7) * fr
                    if (ly - dy) ** 2 + (lx - dx) ** 2 > (1.5 * dr) ** 2:
                        return ly, lx

            lesions = np.zeros((s, s), dtype=np.float32)
            n_ma, n_hem = int(rng.integers(2, 8)), int(rng.integers(2, 7))
            for k in range(n_ma + n_hem):
                ly, lx = spot()
                rad = u(0.025, 0.04) if k < n_ma else u(0.06, 0.1)
                lesions = np.maximum(lesions, gaussian(yy, xx, ly, lx, rad / 1.5) * u(0.7, 1.0))
            dark_red = np.array([0.45, 0.12, 0.08], dtype=np.float32)
            a = lesions[None] * u(0.6, 0.9)
            img = img * (1.0 - a) + a * dark_red[:, None, None] * img[:1].clip(0.2, 1.0)
            if rng.random() < 0.7:
                exudates = np.zeros((s, s), dtype=np.float32)
                for _ in range(int(rng.integers(3, 10))):
                    t, r = u(0, 2 * np.pi), u(0.08, 0.3)
                    ey, ex = my + r * np.sin(t), mx + r * np.cos(t)
                    exudates = np.maximum(exudates, gaussian(yy, xx, ey, ex, u(0.02, 0.035)) * u(0.6, 1.0))
                yellow = np.array([0.95, 0.85, 0.45], dtype=np.float32)
                a = exudates[None] * u(0.6, 0.9)
                img = img * (1.0 - a) + a * yellow[:, None, None]
        img = blur(img, u(0.004, 0.012), s)
        img = img * u(0.8, 1.15) + rng.normal(0.0, u(0.005, 0.02), img.shape)
        return np.clip(img, 0.0, 1.0).astype(np.float32), fov
