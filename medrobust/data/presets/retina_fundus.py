"""Colour fundus photograph preset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from medrobust.data.presets.base import IMAGE_KEY, Preset, register_preset


@register_preset("retina_fundus", "fundus", "retina-fundus")
class RetinaFundus(Preset):
    """Fundus photograph: 3 channels, circular field-of-view crop, 8-bit scaling.

    * Grey images are repeated to 3 channels.
    * 8-bit data are divided by 255 (keeps the camera's colour balance, which carries
      the red/dark-red contrast of haemorrhages); other ranges use joint-channel
      percentiles.
    * The bright circular field of view is detected on the dark background, the image
      is cropped to its bounding square (a disc clipped at the top/bottom is padded
      back to a square) and everything outside the circle is set to black, so camera
      borders of different sizes do not become a shortcut feature.
    * Plain resize (the crop is square).
    * Augmentation: rotations (±15°; the FOV is circular), left-right flip (left and
      right eyes are mirror images), brightness/contrast jitter. No vertical flip
      (superior/inferior arcades differ).
    """

    modality: ClassVar[str] = "retina_fundus"
    channels: ClassVar[int] = 3
    positive_class_hint: ClassVar[str | None] = "dr"
    notes: ClassVar[tuple[str, ...]] = (
        "grey repeated to 3 channels",
        "8-bit /255 (else joint percentiles 0-99.9)",
        "circular FOV crop to the bounding square, outside masked black",
        "augment: rotate ±15°, left-right flip, brightness/contrast jitter",
    )

    def intensity(self) -> list[Callable[..., Any]]:
        """Photo scaling then field-of-view crop."""
        from medrobust.data.presets._transforms import FundusFOVCropd, PhotoScaled

        return [self.scaled(PhotoScaled([IMAGE_KEY])), FundusFOVCropd([IMAGE_KEY])]

    def augmentations(self, spatial_dims: int) -> list[Callable[..., Any]]:
        """Rotation, left-right flip, brightness and contrast."""
        from monai.transforms import RandAdjustContrastd, RandFlipd, RandRotated, RandScaleIntensityd

        from medrobust.data.presets._transforms import degrees

        k = [IMAGE_KEY]
        return [
            RandRotated(k, range_x=degrees(15), prob=0.5, padding_mode="zeros"),
            RandFlipd(k, prob=0.5, spatial_axis=1),
            RandScaleIntensityd(k, factors=0.1, prob=0.5),
            RandAdjustContrastd(k, prob=0.5, gamma=(0.85, 1.2)),
        ]
