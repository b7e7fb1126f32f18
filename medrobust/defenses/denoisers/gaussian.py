"""Gaussian blur as a fixed depthwise convolution (differentiable)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medrobust.defenses.denoisers._common import ClassicalDenoiser
from medrobust.defenses.denoisers.base import register_denoiser
from medrobust.validation import check_float


@register_denoiser("gaussian")
class GaussianDenoiser(ClassicalDenoiser):
    """Separable Gaussian blur with reflect padding; exact gradient by default.

    Args:
        in_channels: Image channels (blurred independently).
        bounds: Intensity interval.
        sigma: Standard deviation in pixels.
        truncate: Kernel radius in sigmas (radius = ceil(truncate * sigma)).
        gradient: "exact" (default, it is a linear filter) or "bpda".
    """

    differentiable = True
    supports_exact_gradient = True
    fast_params: ClassVar[dict[str, Any]] = {"sigma": 1.0}

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        sigma: float = 1.0,
        truncate: float = 3.0,
        gradient: str = "exact",
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds, gradient=gradient)
        owner = type(self).__name__
        self.sigma = check_float(sigma, "sigma", owner, low=0.0, high=20.0)
        self.truncate = check_float(truncate, "truncate", owner, low=0.0, high=10.0)
        radius = max(1, math.ceil(self.truncate * self.sigma))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / self.sigma) ** 2)
        self.register_buffer("kernel", k / k.sum(), persistent=False)

    def _denoise_unit(self, u: torch.Tensor) -> torch.Tensor:
        n, c, h, w = u.shape
        k = self.kernel.to(u.dtype)
        r = k.numel() // 2
        x = u.reshape(n * c, 1, h, w)
        mode = "reflect" if min(h, w) > r else "replicate"
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
        return x.reshape(n, c, h, w)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {**super().config(), "sigma": self.sigma, "truncate": self.truncate}
