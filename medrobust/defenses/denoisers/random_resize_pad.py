"""Random resizing and padding (Xie et al., ICLR 2018): a randomised input transform."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from medrobust.defenses.denoisers._common import from_unit, to_unit
from medrobust.defenses.denoisers.base import Denoiser, register_denoiser
from medrobust.defenses.denoisers.randomized import RandomizedDenoiser
from medrobust.errors import ConfigError
from medrobust.validation import check_float


@register_denoiser("random-resize-pad", "resize-pad")
class RandomResizePad(RandomizedDenoiser):
    """Shrink each image by a random factor, place it at a random offset, pad with the low bound.

    Per sample and per call, a scale ``s ~ U[scale_min, scale_max]`` and an offset keeping the
    shrunk image inside the frame are drawn; the image is resampled bilinearly (Xie et al.
    resize a 299-pixel image to a random size below 331 and pad it to 331; here the output
    keeps the input's size so the classifier is unchanged, and bilinear resampling keeps the
    transform differentiable: gradient attacks need EOT, not BPDA). The border is filled with
    the bounds' low value (black).

    Args:
        in_channels: Image channels.
        bounds: Intensity interval.
        scale_min: Smallest scale factor, in (0, 1].
        scale_max: Largest scale factor, in [scale_min, 1].
        inner, inner_params, seed: See :class:`~medrobust.defenses.denoisers.randomized.RandomizedDenoiser`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        scale_min: float = 0.85,
        scale_max: float = 1.0,
        inner: str | Denoiser | None = None,
        inner_params: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            in_channels=in_channels, bounds=bounds, inner=inner, inner_params=inner_params, seed=seed
        )
        owner = type(self).__name__
        self.scale_min = check_float(scale_min, "scale_min", owner, low=0.0, high=1.0)
        self.scale_max = check_float(scale_max, "scale_max", owner, low=0.0, high=1.0)
        if self.scale_max < self.scale_min:
            raise ConfigError(
                f"The 'scale_max' parameter of {owner} must be at least scale_min={self.scale_min:g}. "
                f"Got {scale_max!r}."
            )

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        draws = self.rand((n, 3), x)
        scale = self.scale_min + (self.scale_max - self.scale_min) * draws[:, 0]
        # Centre offsets in normalised coordinates keep [t - s, t + s] inside [-1, 1].
        shift = (2 * draws[:, 1:] - 1) * (1 - scale)[:, None]
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
        theta[:, :, 2] = -shift / scale[:, None]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        u = F.grid_sample(
            to_unit(x, self.bounds), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return from_unit(u, self.bounds)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {**super().config(), "scale_min": self.scale_min, "scale_max": self.scale_max}
