"""Gaussian noise injection before denoising: a randomised defense (and the sampler of denoised smoothing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from medrobust.defenses.denoisers.base import Denoiser, register_denoiser
from medrobust.defenses.denoisers.randomized import RandomizedDenoiser
from medrobust.errors import ConfigError
from medrobust.validation import budget_to_image_units, check_float


@register_denoiser("noise-injection", "gaussian-noise-injection")
class NoiseInjection(RandomizedDenoiser):
    """``inner(clip(x + sigma * N(0, I)))``: fresh Gaussian noise at every call, then the inner denoiser.

    With a denoiser trained for ``sigma`` as ``inner`` this is the base classifier's input of
    denoised smoothing (Salman et al. 2020); alone it is a randomised input transform
    (in the spirit of Random Self-Ensemble, Liu et al. 2018). Gradients pass through the noise
    (it is additive), so gradient attacks need EOT, not BPDA.

    Args:
        in_channels: Image channels.
        bounds: Intensity interval.
        sigma: Noise standard deviation in the one unit of ε: image units within ``bounds``, or
            ``"k/255"`` for k/255 of the bounds' range (:func:`medrobust.validation.budget_to_image_units`).
        clip: Clamp the noisy image to ``bounds`` before the inner denoiser (as the ``dae``
            objective's training saw it). Without an inner denoiser the output is always clamped.
        inner, inner_params, seed: See :class:`~medrobust.defenses.denoisers.randomized.RandomizedDenoiser`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        sigma: Any = "25/255",
        clip: bool = True,
        inner: str | Denoiser | None = None,
        inner_params: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            in_channels=in_channels, bounds=bounds, inner=inner, inner_params=inner_params, seed=seed
        )
        owner = type(self).__name__
        units = budget_to_image_units(sigma, self.bounds, "sigma", owner)
        self.sigma = check_float(units, "sigma", owner, low=0.0, high=None)
        if not isinstance(clip, bool):
            raise ConfigError(f"The 'clip' parameter of {owner} must be a bool. Got {clip!r}.")
        self.clip = clip

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x + self.sigma * self.randn(tuple(x.shape), x)
        return noisy if not self.clip else self.clamp(noisy)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (``sigma`` in image units)."""
        return {**super().config(), "sigma": self.sigma, "clip": self.clip}
