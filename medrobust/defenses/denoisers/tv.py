"""Total-variation denoising (Chambolle, scikit-image), per image on CPU, BPDA gradient."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from medrobust.defenses.denoisers._common import ClassicalDenoiser, apply_per_image
from medrobust.defenses.denoisers.base import register_denoiser
from medrobust.validation import check_float, check_int


@register_denoiser("tv", "total-variation")
class TVDenoiser(ClassicalDenoiser):
    """``skimage.restoration.denoise_tv_chambolle`` on ``[0, 1]``-normalised images.

    Args:
        in_channels: Image channels.
        bounds: Intensity interval.
        weight: Denoising weight, bounds-relative (larger: smoother).
        max_num_iter: Maximum Chambolle iterations.
    """

    fast_params: ClassVar[dict[str, Any]] = {"max_num_iter": 20}

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        weight: float = 0.05,
        max_num_iter: int = 200,
        gradient: str = "bpda",
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds, gradient=gradient)
        owner = type(self).__name__
        self.weight = check_float(weight, "weight", owner, low=0.0, high=10.0)
        self.max_num_iter = check_int(max_num_iter, "max_num_iter", owner, low=1, high=100_000)

    def _denoise_unit(self, u: torch.Tensor) -> torch.Tensor:
        from skimage.restoration import denoise_tv_chambolle

        return apply_per_image(
            u,
            lambda img, ax: denoise_tv_chambolle(
                img, weight=self.weight, max_num_iter=self.max_num_iter, channel_axis=ax
            ),
        )

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {**super().config(), "weight": self.weight, "max_num_iter": self.max_num_iter}
