"""Bilateral filter in torch (vectorised with ``unfold``)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medrobust.defenses.denoisers._common import ClassicalDenoiser
from medrobust.defenses.denoisers.base import register_denoiser
from medrobust.errors import ConfigError
from medrobust.validation import check_float, check_int


@register_denoiser("bilateral")
class BilateralDenoiser(ClassicalDenoiser):
    """Edge-preserving bilateral filter (spatial x range Gaussian weights).

    The range distance is the Euclidean distance over channels of the ``[0, 1]``-normalised
    image, so ``sigma_color`` is bounds-relative. The filter is smooth, so autograd gives
    an exact gradient (default); ``gradient="bpda"`` switches to the identity gradient.
    Note that ``sigma_color`` << 1 makes the gradient steep and an attack's landscape rough.

    Args:
        in_channels: Image channels.
        bounds: Intensity interval.
        kernel_size: Odd window size in pixels.
        sigma_spatial: Spatial standard deviation in pixels.
        sigma_color: Range standard deviation, bounds-relative.
        gradient: "exact" or "bpda".
    """

    differentiable = True
    supports_exact_gradient = True
    fast_params: ClassVar[dict[str, Any]] = {"kernel_size": 3}

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        kernel_size: int = 5,
        sigma_spatial: float = 1.5,
        sigma_color: float = 0.1,
        gradient: str = "exact",
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds, gradient=gradient)
        owner = type(self).__name__
        self.kernel_size = check_int(kernel_size, "kernel_size", owner, low=1, high=15)
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"The 'kernel_size' parameter of {owner} must be odd. Got {kernel_size!r}.")
        self.sigma_spatial = check_float(sigma_spatial, "sigma_spatial", owner, low=0.0, high=20.0)
        self.sigma_color = check_float(sigma_color, "sigma_color", owner, low=0.0, high=10.0)
        r = self.kernel_size // 2
        yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
        spatial = torch.exp(-(yy**2 + xx**2) / (2 * self.sigma_spatial**2)).flatten()
        self.register_buffer("spatial", spatial, persistent=False)

    def _denoise_unit(self, u: torch.Tensor) -> torch.Tensor:
        n, c, h, w = u.shape
        k, r = self.kernel_size, self.kernel_size // 2
        mode = "reflect" if min(h, w) > r else "replicate"
        patches = F.unfold(F.pad(u, (r, r, r, r), mode=mode), k).view(n, c, k * k, h * w)
        center = u.reshape(n, c, 1, h * w)
        dist2 = ((patches - center) ** 2).sum(dim=1, keepdim=True)
        weights = torch.exp(-dist2 / (2 * self.sigma_color**2)) * self.spatial.to(u.dtype).view(1, 1, -1, 1)
        out = (weights * patches).sum(dim=2) / weights.sum(dim=2)
        return out.view(n, c, h, w)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            **super().config(),
            "kernel_size": self.kernel_size,
            "sigma_spatial": self.sigma_spatial,
            "sigma_color": self.sigma_color,
        }
