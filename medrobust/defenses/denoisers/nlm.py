"""Non-local means (scikit-image), per image on CPU, BPDA gradient."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from medrobust.defenses.denoisers._common import ClassicalDenoiser, apply_per_image
from medrobust.defenses.denoisers.base import register_denoiser
from medrobust.validation import check_float, check_int


@register_denoiser("nlm", "non-local-means")
class NLMDenoiser(ClassicalDenoiser):
    """``skimage.restoration.denoise_nl_means`` on ``[0, 1]``-normalised images.

    Args:
        in_channels: Image channels.
        bounds: Intensity interval.
        h: Filtering strength, bounds-relative (skimage's ``h``).
        patch_size: Patch side in pixels.
        patch_distance: Search radius in pixels.
        sigma: Noise standard deviation, bounds-relative (0: not used).
        fast_mode: skimage's fast mode.
    """

    fast_params: ClassVar[dict[str, Any]] = {"patch_size": 3, "patch_distance": 2}

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        h: float = 0.08,
        patch_size: int = 5,
        patch_distance: int = 6,
        sigma: float = 0.0,
        fast_mode: bool = True,
        gradient: str = "bpda",
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds, gradient=gradient)
        owner = type(self).__name__
        self.h = check_float(h, "h", owner, low=0.0, high=10.0)
        self.patch_size = check_int(patch_size, "patch_size", owner, low=1, high=15)
        self.patch_distance = check_int(patch_distance, "patch_distance", owner, low=1, high=30)
        self.sigma = check_float(sigma, "sigma", owner, low=0.0, high=10.0, low_inclusive=True)
        self.fast_mode = bool(fast_mode)

    def _denoise_unit(self, u: torch.Tensor) -> torch.Tensor:
        from skimage.restoration import denoise_nl_means

        return apply_per_image(
            u,
            lambda img, ax: denoise_nl_means(
                img,
                h=self.h,
                sigma=self.sigma,
                patch_size=self.patch_size,
                patch_distance=self.patch_distance,
                fast_mode=self.fast_mode,
                channel_axis=ax,
            ),
        )

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            **super().config(),
            "h": self.h,
            "patch_size": self.patch_size,
            "patch_distance": self.patch_distance,
            "sigma": self.sigma,
            "fast_mode": self.fast_mode,
        }
