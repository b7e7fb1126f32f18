"""Chest radiograph preset (PA/AP projection, grey)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from medrobust.data.presets.base import IMAGE_KEY, Preset, register_preset


@register_preset("chest_xray", "cxr", "chest-xray")
class ChestXray(Preset):
    """Chest X-ray: 1 channel, robust percentile scaling, aspect-keeping resize.

    * RGB exports are converted to grey by luminance (BT.601).
    * Intensities: the 0.5th-99.5th percentiles map to the bounds and the rest is
      clipped, which removes burnt-in labels and saturated collimator edges without
      depending on the detector's bit depth (8-bit PNG, 12/16-bit DICOM alike).
    * Resize keeps the aspect ratio and pads with black: squashing a portrait film
      changes the cardiothoracic ratio a reader would judge.
    * Augmentation: small rotations (±7°) and zoom (0.9-1.1), gamma and brightness
      jitter, faint noise. **No left-right flip**: the heart, aortic knob and gastric
      bubble are lateralised, so a mirrored film is an anatomically implausible
      (situs inversus) image. No vertical flip either.
    """

    modality: ClassVar[str] = "chest_xray"
    channels: ClassVar[int] = 1
    positive_class_hint: ClassVar[str | None] = "pneumonia"
    notes: ClassVar[tuple[str, ...]] = (
        "RGB converted to grey by luminance",
        "percentiles 0.5-99.5 -> bounds, clipped",
        "aspect-preserving resize, black padding",
        "augment: rotate ±7°, zoom 0.9-1.1, gamma/brightness jitter, noise; no flips (lateralised anatomy)",
    )

    def intensity(self) -> list[Callable[..., Any]]:
        """Robust percentile scaling (0.5-99.5)."""
        from medrobust.data.presets._transforms import PercentileScaled

        return [self.scaled(PercentileScaled([IMAGE_KEY], 0.5, 99.5))]

    def resize(self, spatial_size: tuple[int, ...]) -> Callable[..., Any]:
        """Aspect-preserving resize with black padding."""
        from medrobust.data.presets._transforms import ResizeKeepAspectd

        return ResizeKeepAspectd([IMAGE_KEY], spatial_size, self.name)

    def augmentations(self, spatial_dims: int) -> list[Callable[..., Any]]:
        """Rotation, zoom, gamma, brightness and noise; no flips."""
        from monai.transforms import (
            RandAdjustContrastd,
            RandGaussianNoised,
            RandRotated,
            RandScaleIntensityd,
            RandZoomd,
        )

        from medrobust.data.presets._transforms import degrees

        k = [IMAGE_KEY]
        return [
            RandRotated(k, range_x=degrees(7), prob=0.5, padding_mode="zeros"),
            RandZoomd(k, prob=0.5, min_zoom=0.9, max_zoom=1.1, padding_mode="constant"),
            RandAdjustContrastd(k, prob=0.5, gamma=(0.8, 1.25)),
            RandScaleIntensityd(k, factors=0.1, prob=0.5),
            RandGaussianNoised(k, prob=0.3, std=0.01),
        ]
