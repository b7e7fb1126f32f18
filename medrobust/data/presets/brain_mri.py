"""Brain MRI preset (single sequence, 2D slices or 3D volumes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from medrobust.data.presets.base import IMAGE_KEY, Preset, register_preset


@register_preset("brain_mri", "brain-mri", "mri")
class BrainMRI(Preset):
    """Brain MRI: 1 channel, foreground percentile scaling, 2D or 3D.

    * MR intensities have no physical unit and vary per scanner and coil, so the
      1st-99th percentiles of the non-zero (foreground) voxels map to the bounds;
      background air (0) and the brightest 1 % (fat, vessels, contrast) are clipped.
    * Plain resize (axial slices are close to square). A 3-value ``spatial_size``
      resizes ``(C, D, H, W)`` volumes (trilinear / box filter).
    * Augmentation: rotations (±10°), left-right flip (hemispheres are near
      mirror images and the tumour classes are not lateralised), a smooth bias
      field (coil inhomogeneity), gamma jitter and Rician noise (MR magnitude noise).
    """

    modality: ClassVar[str] = "brain_mri"
    channels: ClassVar[int] = 1
    positive_class_hint: ClassVar[str | None] = None
    supports_3d: ClassVar[bool] = True
    notes: ClassVar[tuple[str, ...]] = (
        "RGB converted to grey by luminance",
        "percentiles 1-99 of non-zero voxels -> bounds, clipped",
        "plain resize; 3D volumes with a 3-value spatial_size",
        "augment: rotate ±10°, left-right flip, bias field, gamma, Rician noise",
    )

    def intensity(self) -> list[Callable[..., Any]]:
        """Foreground (non-zero) percentile scaling (1-99)."""
        from medrobust.data.presets._transforms import PercentileScaled

        return [self.scaled(PercentileScaled([IMAGE_KEY], 1.0, 99.0, nonzero=True))]

    def augmentations(self, spatial_dims: int) -> list[Callable[..., Any]]:
        """Rotation, left-right flip, bias field, gamma and Rician noise."""
        from monai.transforms import (
            RandAdjustContrastd,
            RandBiasFieldd,
            RandFlipd,
            RandRicianNoised,
            RandRotated,
        )

        from medrobust.data.presets._transforms import degrees

        k = [IMAGE_KEY]
        # Last spatial axis is left-right (W) for both (H, W) and (D, H, W).
        return [
            RandRotated(k, range_x=degrees(10), prob=0.5, padding_mode="zeros"),
            RandFlipd(k, prob=0.5, spatial_axis=spatial_dims - 1),
            RandBiasFieldd(k, prob=0.3, coeff_range=(0.0, 0.1)),
            RandAdjustContrastd(k, prob=0.5, gamma=(0.8, 1.25)),
            RandRicianNoised(k, prob=0.3, std=0.02),
        ]
