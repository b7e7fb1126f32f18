"""Wavelet shrinkage denoising (scikit-image), per image on CPU, BPDA gradient."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from medrobust.defenses.denoisers._common import ClassicalDenoiser, apply_per_image
from medrobust.defenses.denoisers.base import register_denoiser
from medrobust.validation import check_choice, check_float


@register_denoiser("wavelet")
class WaveletDenoiser(ClassicalDenoiser):
    """``skimage.restoration.denoise_wavelet`` on ``[0, 1]``-normalised images.

    Args:
        in_channels: Image channels.
        bounds: Intensity interval.
        sigma: Noise standard deviation, bounds-relative; 0 estimates it per image.
        wavelet: PyWavelets wavelet name.
        mode: "soft" or "hard" thresholding.
        method: "BayesShrink" or "VisuShrink".
    """

    fast_params: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        sigma: float = 0.0,
        wavelet: str = "db1",
        mode: str = "soft",
        method: str = "BayesShrink",
        gradient: str = "bpda",
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds, gradient=gradient)
        import pywt

        owner = type(self).__name__
        self.sigma = check_float(sigma, "sigma", owner, low=0.0, high=10.0, low_inclusive=True)
        self.wavelet = check_choice(wavelet, "wavelet", pywt.wavelist(kind="discrete"), owner)
        self.mode = check_choice(mode, "mode", ["soft", "hard"], owner)
        self.method = check_choice(method, "method", ["BayesShrink", "VisuShrink"], owner)

    def _denoise_unit(self, u: torch.Tensor) -> torch.Tensor:
        from skimage.restoration import denoise_wavelet

        return apply_per_image(
            u,
            lambda img, ax: denoise_wavelet(
                img,
                sigma=self.sigma or None,
                wavelet=self.wavelet,
                mode=self.mode,
                method=self.method,
                channel_axis=ax,
                rescale_sigma=True,
            ),
        )

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            **super().config(),
            "sigma": self.sigma,
            "wavelet": self.wavelet,
            "mode": self.mode,
            "method": self.method,
        }
