"""Volumetric median filter: a k x k x k median over volumes ``(N, C, X, Y, Z)``.

The 2D ``median`` filters a volume slice by slice when it stands in front of a 3D model; this one
filters across slices too, so a perturbation confined to one slice is outvoted by its
neighbours above and below. Torch, vectorised with ``Tensor.unfold`` over slabs of the first axis
so that the k³ copies of a large volume never sit in memory at once.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from medrobust.defenses.denoisers.base import register_denoiser
from medrobust.defenses.denoisers.median import MedianDenoiser

#: Elements of the unfolded k³ neighbourhoods held at once (about 256 MB of float32).
SLAB_ELEMENTS = 64 * 2**20


def median_filter_3d(u: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-channel k x k x k median with reflect padding; ``(N, C, X, Y, Z)`` -> same shape.

    Reflect padding mirrors without repeating the edge voxel (scipy.ndimage's ``mode="mirror"``);
    sides no longer than ``k // 2`` are replicate-padded instead.
    """
    n, c, sx, sy, sz = u.shape
    k, pad = kernel_size, kernel_size // 2
    if pad == 0:
        return u.clone()
    mode = "reflect" if min(sx, sy, sz) > pad else "replicate"
    padded = F.pad(u.reshape(n * c, 1, sx, sy, sz), (pad,) * 6, mode=mode)[:, 0]
    step = max(1, SLAB_ELEMENTS // max(1, n * c * sy * sz * k**3))
    out = []
    for x0 in range(0, sx, step):
        slab = padded[:, x0 : min(sx, x0 + step) + 2 * pad]
        windows = slab.unfold(1, k, 1).unfold(2, k, 1).unfold(3, k, 1)
        out.append(windows.reshape(*windows.shape[:4], k**3).median(dim=-1).values)
    return torch.cat(out, dim=1).reshape(n, c, sx, sy, sz)


@register_denoiser("median3d")
class Median3DDenoiser(MedianDenoiser):
    """k x k x k median filter over volumes (3D models: segmenters and classifiers of volumes).

    Parameters and gradients as :class:`~medrobust.defenses.denoisers.median.MedianDenoiser`
    (``gradient="bpda"`` by default; ``"exact"`` routes each output's gradient to the voxel that
    was the median); ``kernel_size`` is an odd window side in voxels, 1-7.
    """

    spatial_dims: ClassVar[tuple[int, ...]] = (3,)
    max_kernel: ClassVar[int] = 7

    def _denoise_unit(self, u: torch.Tensor) -> torch.Tensor:
        return median_filter_3d(u, self.kernel_size)
