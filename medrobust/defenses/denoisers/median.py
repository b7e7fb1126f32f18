"""Median filter (torch, vectorised over the batch with ``unfold``)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medrobust.defenses.denoisers._common import ClassicalDenoiser
from medrobust.defenses.denoisers.base import register_denoiser
from medrobust.errors import ConfigError
from medrobust.validation import check_int


def median_filter(u: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-channel k x k median with reflect padding; (N, C, H, W) -> same shape."""
    n, c, h, w = u.shape
    pad = kernel_size // 2
    mode = "reflect" if min(h, w) > pad else "replicate"
    padded = F.pad(u, (pad, pad, pad, pad), mode=mode)
    patches = F.unfold(padded.reshape(n * c, 1, h + 2 * pad, w + 2 * pad), kernel_size)
    return patches.median(dim=1).values.reshape(n, c, h, w)


@register_denoiser("median")
class MedianDenoiser(ClassicalDenoiser):
    """k x k median filter.

    Gradient: ``gradient="bpda"`` (default) uses the straight-through identity gradient,
    the usual choice for median filtering in adaptive attacks (Athalye et al., 2018).
    ``gradient="exact"`` differentiates ``torch.median``: the exact almost-everywhere
    gradient, which routes each output's gradient to the single input pixel that was the
    median, so it is sparse and usually a weaker attack signal than BPDA.

    Args:
        in_channels: Image channels (filtered independently).
        bounds: Intensity interval.
        kernel_size: Odd window size in pixels.
        gradient: "bpda" or "exact".
    """

    supports_exact_gradient = True
    fast_params: ClassVar[dict[str, Any]] = {"kernel_size": 3}
    #: Largest window side accepted.
    max_kernel: ClassVar[int] = 15

    def __init__(
        self, in_channels: int = 1, bounds: Any = (0.0, 1.0), kernel_size: int = 3, gradient: str = "bpda"
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds, gradient=gradient)
        owner = type(self).__name__
        self.kernel_size = check_int(kernel_size, "kernel_size", owner, low=1, high=self.max_kernel)
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"The 'kernel_size' parameter of {owner} must be odd. Got {kernel_size!r}.")

    def _denoise_unit(self, u: torch.Tensor) -> torch.Tensor:
        return median_filter(u, self.kernel_size)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {**super().config(), "kernel_size": self.kernel_size}
