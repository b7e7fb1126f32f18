"""Small drawing helpers shared by the phantom generators.

Coordinates are normalised: ``y`` (down) and ``x`` (right) run over ``[-1, 1]``
across the image, so a phantom looks the same at any pixel size. Lengths given to
the helpers are in the same units (1.0 = half the image width).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)`` in ``[-1, 1]``, float32 ``(size, size)``."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return yy, xx


def _rotated(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = yy - cy, xx - cx
    if angle == 0.0:
        return dy, dx
    c, s = np.cos(angle), np.sin(angle)
    return c * dy - s * dx, s * dy + c * dx


def soft_ellipse(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    angle: float = 0.0,
    edge: float = 0.02,
) -> np.ndarray:
    """An ellipse mask in ``[0, 1]`` with a linear edge ``edge`` wide (normalised units)."""
    dy, dx = _rotated(yy, xx, cy, cx, angle)
    r = np.sqrt((dy / ry) ** 2 + (dx / rx) ** 2)
    return np.clip((1.0 - r) * min(ry, rx) / max(edge, 1e-6) + 0.5, 0.0, 1.0).astype(np.float32)


def soft_blob(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    radius: float,
    harmonics: Sequence[tuple[int, float, float]] = (),
    edge: float = 0.02,
    stretch: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """A star-shaped blob: radius ``radius * (1 + sum a_k cos(k theta + phi_k))``, soft edge.

    Args:
        yy: Row coordinates from :func:`grid`.
        xx: Column coordinates from :func:`grid`.
        cy: Centre row.
        cx: Centre column.
        radius: Mean radius.
        harmonics: ``(k, amplitude, phase)`` triples shaping the border.
        edge: Width of the soft border.
        stretch: ``(sy, sx)`` axis scaling (an oval).
    """
    dy, dx = (yy - cy) / stretch[0], (xx - cx) / stretch[1]
    theta = np.arctan2(dy, dx)
    rad = np.full_like(theta, radius)
    for k, amp, phase in harmonics:
        rad = rad * (1.0 + amp * np.cos(k * theta + phase))
    r = np.sqrt(dy**2 + dx**2)
    return np.clip((rad - r) / max(edge, 1e-6) + 0.5, 0.0, 1.0).astype(np.float32)


def gaussian(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, sigma: float) -> np.ndarray:
    """An isotropic Gaussian bump with peak 1."""
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2.0 * sigma**2)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise with correlation length ``scale`` (normalised units).

    Large correlation lengths are drawn on a coarse grid and upsampled (linear), so
    the cost does not grow with ``scale``.

    Args:
        rng: Generator to draw from.
        size: Image size in pixels.
        scale: Correlation length (1.0 = half the image).
    """
    sigma = max(scale * size / 2.0, 0.5)
    if sigma <= 3.0:
        white = rng.standard_normal((size, size)).astype(np.float32)
        field = ndimage.gaussian_filter(white, sigma, mode="wrap")
    else:
        small = max(int(np.ceil(size * 2.0 / sigma)), 4)
        coarse = rng.standard_normal((small, small)).astype(np.float32)
        coarse = ndimage.gaussian_filter(coarse, sigma * small / size, mode="wrap")
        field = ndimage.zoom(coarse, size / small, order=1, mode="grid-wrap", grid_mode=True)
        field = field[:size, :size]
    field = field - field.mean()
    std = float(field.std())
    return (field / std if std > 0 else field).astype(np.float32)


def splat(size: int, ys: np.ndarray, xs: np.ndarray, weights: np.ndarray | float = 1.0) -> np.ndarray:
    """Add point masses at normalised ``(ys, xs)`` to an image (bilinear), for curves and dots."""
    img = np.zeros((size, size), dtype=np.float32)
    py = (np.asarray(ys, dtype=np.float64) + 1.0) / 2.0 * size - 0.5
    px = (np.asarray(xs, dtype=np.float64) + 1.0) / 2.0 * size - 0.5
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), py.shape)
    y0, x0 = np.floor(py).astype(int), np.floor(px).astype(int)
    fy, fx = py - y0, px - x0
    for dy, dx, ww in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yi, xi = y0 + dy, x0 + dx
        ok = (yi >= 0) & (yi < size) & (xi >= 0) & (xi < size)
        np.add.at(img, (yi[ok], xi[ok]), (w * ww)[ok])
    return img


def curve_mask(size: int, lines: Sequence[tuple[np.ndarray, np.ndarray]], width: float) -> np.ndarray:
    """A soft mask in ``[0, 1]`` of polylines ``[(ys, xs), ...]``, each about ``width`` wide.

    The polylines are resampled at half-pixel steps, splatted and blurred once.
    """
    step = 1.0 / size  # half a pixel in normalised units
    pts_y: list[np.ndarray] = []
    pts_x: list[np.ndarray] = []
    for ys_in, xs_in in lines:
        ys, xs = np.asarray(ys_in, dtype=np.float64), np.asarray(xs_in, dtype=np.float64)
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(ys), np.diff(xs)))])
        t = np.append(np.arange(0.0, arc[-1], step), arc[-1])
        pts_y.append(np.interp(t, arc, ys))
        pts_x.append(np.interp(t, arc, xs))
    if not pts_y:
        return np.zeros((size, size), dtype=np.float32)
    line = splat(size, np.concatenate(pts_y), np.concatenate(pts_x), 0.5)
    sigma_px = max(width * size / 4.0, 0.5)
    blurred = ndimage.gaussian_filter(line, sigma_px)
    # A line of unit density blurred by a Gaussian peaks at 1 / (sqrt(2 pi) sigma).
    return np.clip(blurred * np.sqrt(2 * np.pi) * sigma_px, 0.0, 1.0).astype(np.float32)


def blur(img: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """Gaussian blur with ``sigma`` in normalised units (per channel for ``(C, H, W)``)."""
    s = max(sigma * size / 2.0, 0.0)
    if s < 0.3:
        return img
    sig = s if img.ndim == 2 else (0.0, s, s)
    return ndimage.gaussian_filter(img, sig)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in ``[0, 1]`` (values outside clipped) to uint8 with rounding."""
    return np.clip(np.rint(np.asarray(img, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
