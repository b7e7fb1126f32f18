"""The denoiser contract shared by deep, classical and hybrid denoisers.

A denoiser maps images in ``bounds`` to images of the same shape in ``bounds``.
Deep denoisers are differentiable. Classical ones (median, NLM, BM3D, ...) are not:
their forward pass uses :func:`bpda`, a straight-through (identity) gradient, so
adaptive attacks can still run end-to-end; ``differentiable = False`` marks them and
results must say "BPDA" whenever such a gradient was used.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.registry import Registry
from medrobust.validation import check_bounds, check_int

DENOISERS: Registry[type[Denoiser]] = Registry("denoiser")


#: ``@register_denoiser("name", *aliases)``: registers the class and sets its ``name``.
register_denoiser = DENOISERS.decorator("name")


def bpda(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Backward Pass Differentiable Approximation: value ``y``, gradient of the identity in ``x``."""
    return x + (y.to(x.dtype) - x).detach()


class Denoiser(nn.Module):
    """Base class for all denoisers.

    Args:
        in_channels: Number of image channels (1 for X-ray/MRI/OCT, 3 for fundus/dermoscopy).
        bounds: Intensity interval of inputs and outputs.

    Class attributes:
        kind: "deep", "classical" or "hybrid".
        differentiable: False when the forward pass uses a BPDA (straight-through) gradient.
        stochastic: True when the output is random (noise injection, random resize-pad): attacks
            on it need Expectation over Transformation (``eot-pgd``, APGD with ``eot_iter``).
        fast_params: Cheap constructor settings for conformance tests and smoke runs.
        spatial_dims: The image dimensionalities it filters: ``(2,)`` for 2D images
            ``(N, C, H, W)`` (every denoiser but the volumetric ones), ``(3,)`` for volumes
            ``(N, C, X, Y, Z)``. A 2D denoiser in front of a 3D model filters each axial slice
            (:func:`medrobust.defenses.defended.denoise_axial_slices`).
    """

    name: ClassVar[str] = "denoiser"
    kind: ClassVar[str] = "deep"
    differentiable: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    fast_params: ClassVar[dict[str, Any]] = {}
    spatial_dims: ClassVar[tuple[int, ...]] = (2,)

    def __init__(self, in_channels: int = 1, bounds: Any = (0.0, 1.0)) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", type(self).__name__, low=1)
        self.bounds = check_bounds(bounds, "bounds", type(self).__name__)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp to the denoiser's bounds."""
        return x.clamp(self.bounds[0], self.bounds[1])

    def config(self) -> dict[str, Any]:
        """Constructor arguments needed to rebuild this denoiser (saved in checkpoints)."""
        return {"in_channels": self.in_channels, "bounds": list(self.bounds)}


def create_denoiser(name: str, in_channels: int = 1, bounds: Any = (0.0, 1.0), **params: Any) -> Denoiser:
    """Build a registered denoiser: ``create_denoiser("dncnn", in_channels=1, depth=17)``."""
    return DENOISERS.get(name)(in_channels=in_channels, bounds=bounds, **params)


def list_denoisers() -> list[str]:
    """Names of all registered denoisers."""
    return DENOISERS.names()
