"""Brain MRI phantom: axial contrast-enhanced T1-like slice with skull, brain and ventricles."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from medrobust.data.phantoms._draw import blur, grid, smooth_noise, soft_blob, soft_ellipse, to_uint8
from medrobust.data.phantoms.base import PhantomGenerator, register_phantom


@register_phantom("brain_mri")
class BrainMRIPhantom(PhantomGenerator):
    """Axial slice: scalp (bright fat), skull (dark), CSF rim, grey/white texture, ventricles.

    Classes differ by tumour location and appearance:

    * ``glioma``: intra-axial, irregular mass in one hemisphere with a bright rim,
      darker necrotic centre and surrounding oedema;
    * ``meningioma``: extra-axial, round, homogeneously enhancing, attached to the
      inner table of the skull (dural-based) anywhere on the convexity;
    * ``pituitary``: small round enhancing mass in the midline, inferiorly (sellar region);
    * ``no_tumor``: none of these.

    Head size/shape/position, ventricle size, bias field, gain and Rician noise vary,
    and tumour size and contrast span faint to obvious.
    """

    class_names: ClassVar[tuple[str, ...]] = ("no_tumor", "glioma", "meningioma", "pituitary")
    positive_class: ClassVar[str | None] = None
    channels: ClassVar[int] = 1
    description: ClassVar[str] = (
        "axial T1+C-like brain slice; glioma (intra-axial irregular), meningioma (extra-axial, dural), "
        "pituitary (sellar midline-inferior)"
    )

    def render(self, rng: np.random.Generator, label: int) -> np.ndarray:
        """Draw one slice."""
        s = self.size
        yy, xx = grid(s)
        u = rng.uniform
        cy, cx = u(-0.05, 0.05), u(-0.05, 0.05)
        ry, rx = u(0.8, 0.9), u(0.64, 0.74)
        ang = u(-0.12, 0.12)

        # Edges at least about a pixel wide: a small image is a downsampled scan, not an aliased one.
        edge = max(0.02, 1.5 / s)

        def head(scale: float) -> np.ndarray:
            return soft_ellipse(yy, xx, cy, cx, ry * scale, rx * scale, ang, edge=edge)

        outer, skull_out, skull_in, brain_m = head(1.0), head(0.94), head(0.87), head(0.84)
        img = 0.75 * outer  # scalp fat (bright on T1)
        img -= 0.63 * skull_out  # cortical bone: dark
        img += 0.12 * skull_in  # CSF rim
        tissue = u(0.45, 0.55) + 0.04 * smooth_noise(rng, s, 0.08) + 0.03 * smooth_noise(rng, s, 0.02)
        img += (tissue - 0.12) * brain_m
        # Lateral ventricles (CSF: dark), frontal horns diverging, size varies with "age".
        vsize = u(0.7, 1.3)
        c, sn = np.cos(ang), np.sin(ang)
        for side in (-1.0, 1.0):
            vy, vx = -0.05 * vsize, side * 0.09 * vsize
            py, px = cy + c * vy - sn * vx, cx + sn * vy + c * vx
            vent = soft_ellipse(yy, xx, py, px, 0.22 * vsize, 0.055 * vsize, ang - side * 0.25, edge=edge)
            img -= u(0.3, 0.38) * vent * brain_m

        # Brain-internal polar helper: a point at fraction f of the brain radius along angle t.
        def brain_point(t: float, f: float) -> tuple[float, float]:
            dy, dx = f * 0.84 * ry * np.sin(t), f * 0.84 * rx * np.cos(t)
            return cy + c * dy - sn * dx, cx + sn * dy + c * dx

        name = self.class_names[label]
        if name == "glioma":
            # High-grade glioma: a large intra-axial mass with a thick, irregular enhancing rim, a dark
            # necrotic core and a hypointense rim of oedema around it.
            side = rng.choice([-1.0, 1.0])
            t = np.pi / 2 - side * np.pi / 2 + u(-0.9, 0.9)  # lateral hemisphere
            py, px = brain_point(t, u(0.3, 0.55))
            rad = u(0.16, 0.26)
            harm = [(k, u(0.08, 0.2), u(0, 2 * np.pi)) for k in (2, 3, 5)]
            mass = soft_blob(yy, xx, py, px, rad, harm, edge=edge)
            core = soft_blob(yy, xx, py, px, rad * u(0.4, 0.6), harm, edge=edge)
            oedema = soft_blob(yy, xx, py, px, rad * u(1.35, 1.7), harm, edge=0.06)
            amp = u(0.28, 0.42)
            img += (-u(0.06, 0.12) * oedema + amp * mass - (amp + u(0.12, 0.22)) * core) * brain_m
        elif name == "meningioma":
            # Extra-axial, dural-based: a round, homogeneously and intensely enhancing mass with a
            # broad base on the inner table of the skull anywhere on the convexity.
            t = u(0, 2 * np.pi)
            py, px = brain_point(t, u(0.9, 1.0))
            rad = u(0.18, 0.27)
            mass = soft_blob(yy, xx, py, px, rad, [(2, u(0, 0.1), u(0, 6.3))], edge=edge) * skull_in
            img = img * (1.0 - mass) + u(0.8, 0.95) * mass  # displaces the CSF rim and cortex
        elif name == "pituitary":
            # Pituitary macroadenoma: a homogeneously enhancing midline mass, inferiorly, whose sellar
            # part and upward (suprasellar) extension are waisted at the diaphragma sellae ("snowman").
            py, px = brain_point(np.pi / 2, u(0.45, 0.6))  # +y is inferior (down)
            px += u(-0.03, 0.03)
            rad = u(0.12, 0.16)
            up = rad * u(0.6, 0.85)
            mass = np.maximum(
                soft_blob(yy, xx, py, px, rad, [(2, u(0, 0.15), u(0, 6.3))], edge=edge),
                soft_blob(yy, xx, py - rad - up * u(0.5, 0.8), px + u(-0.02, 0.02), up, edge=edge),
            )
            mass = mass * brain_m
            img = img * (1.0 - mass) + u(0.75, 0.9) * mass
        # Acquisition: smoothing, bias field, gain, Rician magnitude noise.
        img = blur(np.clip(img, 0.0, 1.0), u(0.005, 0.015), s)
        img = img * (1.0 + u(0.02, 0.07) * smooth_noise(rng, s, 0.6)) * u(0.8, 1.1)
        sigma = u(0.01, 0.03)
        real = img + rng.normal(0.0, sigma, img.shape)
        imag = rng.normal(0.0, sigma, img.shape)
        return to_uint8(np.sqrt(real**2 + imag**2))
