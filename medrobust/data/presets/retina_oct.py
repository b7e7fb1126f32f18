"""Retinal OCT B-scan preset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from medrobust.data.presets.base import IMAGE_KEY, Preset, register_preset


@register_preset("retina_oct", "oct", "retina-oct")
class RetinaOCT(Preset):
    """OCT B-scan: 1 channel, percentile scaling, plain resize.

    * RGB exports are converted to grey by luminance.
    * The 1st-99.5th percentiles map to the bounds (speckle makes the extremes
      unreliable; the bright RPE band sits near the top percentile).
    * Plain resize, as in the usual OCT classification set-ups (B-scans are wide and
      the classes are defined by layer shape, which survives anisotropic scaling).
    * Augmentation: left-right flip (nasal/temporal mirror), small rotations (±5°),
      contrast jitter and speckle-like noise. No vertical flip: the retinal layer
      order (vitreous on top, choroid below) is fixed.
    """

    modality: ClassVar[str] = "retina_oct"
    channels: ClassVar[int] = 1
    positive_class_hint: ClassVar[str | None] = None
    notes: ClassVar[tuple[str, ...]] = (
        "RGB converted to grey by luminance",
        "percentiles 1-99.5 -> bounds, clipped",
        "plain resize",
        "augment: left-right flip, rotate ±5°, gamma, noise; no vertical flip",
    )

    def intensity(self) -> list[Callable[..., Any]]:
        """Percentile scaling (1-99.5)."""
        from medrobust.data.presets._transforms import PercentileScaled

        return [self.scaled(PercentileScaled([IMAGE_KEY], 1.0, 99.5))]

    def augmentations(self, spatial_dims: int) -> list[Callable[..., Any]]:
        """Left-right flip, small rotation, gamma and noise."""
        from monai.transforms import RandAdjustContrastd, RandFlipd, RandGaussianNoised, RandRotated

        from medrobust.data.presets._transforms import degrees

        k = [IMAGE_KEY]
        return [
            RandFlipd(k, prob=0.5, spatial_axis=1),
            RandRotated(k, range_x=degrees(5), prob=0.5, padding_mode="zeros"),
            RandAdjustContrastd(k, prob=0.5, gamma=(0.8, 1.25)),
            RandGaussianNoised(k, prob=0.3, std=0.02),
        ]
