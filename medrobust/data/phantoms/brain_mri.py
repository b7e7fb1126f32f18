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

        def head(scale: float, edge: float = 0.02) -> np.ndarray:
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
            vent = soft_ellipse(yy, xx, py, px, 0.22 * vsize, 0.055 * vsize, ang - side * 0.25, edge=0.02)
            img -= u(0.3, 0.38) * vent * brain_m

        # Brain-internal polar helper: a point at fraction f of the brain radius along angle t.
        def brain_point(t: float, f: float) -> tuple[float, float]:
            dy, dx = f * 0.84 * ry * np.sin(t), f * 0.84 * rx * np.cos(t)
            return cy + c * dy - sn * dx, cx + sn * dy + c * dx

        name = self.class_names[label]
        if name == "glioma":
            side = rng.choice([-1.0, 1.0])
            t = np.pi / 2 - side * np.pi / 2 + u(-0.9, 0.9)  # lateral hemisphere
            py, px = brain_point(t, u(0.35, 0.6))
            rad = u(0.1, 0.2)
            harm = [(k, u(0.08, 0.22), u(0, 2 * np.pi)) for k in (2, 3, 5)]
            mass = soft_blob(yy, xx, py, px, rad, harm, edge=0.02)
            core = soft_blob(yy, xx, py, px, rad * u(0.45, 0.7), harm, edge=0.02)
            oedema = soft_blob(yy, xx, py, px, rad * u(1.4, 1.9), harm, edge=0.06)
            amp = u(0.15, 0.35)
            img += (-u(0.03, 0.09) * oedema + amp * mass - (amp + u(0.05, 0.15)) * core) * brain_m
        elif name == "meningioma":
            t = u(0, 2 * np.pi)
            py, px = brain_point(t, u(0.88, 0.98))
            rad = u(0.09, 0.16)
            mass = soft_blob(yy, xx, py, px, rad, [(2, u(0, 0.1), u(0, 6.3))], edge=0.02) * skull_in
            img += u(0.2, 0.4) * mass
        elif name == "pituitary":
            py, px = brain_point(np.pi / 2, u(0.45, 0.65))  # +y is inferior (down)
            px += u(-0.03, 0.03)
            rad = u(0.06, 0.11)
            mass = soft_blob(yy, xx, py, px, rad, [(2, u(0, 0.15), u(0, 6.3))], edge=0.015)
            img += u(0.18, 0.38) * mass * brain_m
        # Acquisition: smoothing, bias field, gain, Rician magnitude noise.
        img = blur(np.clip(img, 0.0, 1.0), u(0.005, 0.015), s)
        img = img * (1.0 + u(0.02, 0.07) * smooth_noise(rng, s, 0.6)) * u(0.8, 1.1)
        sigma = u(0.01, 0.03)
        real = img + rng.normal(0.0, sigma, img.shape)
        imag = rng.normal(0.0, sigma, img.shape)
        return to_uint8(np.sqrt(real**2 + imag**2))
