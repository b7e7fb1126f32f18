"""Dermoscopy / clinical skin photograph preset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from medrobust.data.presets.base import IMAGE_KEY, Preset, register_preset


@register_preset("skin", "dermoscopy", "derm")
class Skin(Preset):
    """Skin lesion photograph: 3 channels, 8-bit scaling, plain resize.

    * Grey images are repeated to 3 channels.
    * 8-bit data are divided by 255 (colour variegation is a diagnostic feature, so
      no per-channel normalisation); other ranges use joint-channel percentiles.
    * Plain resize (dermoscopy crops are near square).
    * Augmentation: flips on both axes and 90° rotations (a lesion has no canonical
      orientation), small brightness/contrast jitter.
    """

    modality: ClassVar[str] = "skin"
    channels: ClassVar[int] = 3
    positive_class_hint: ClassVar[str | None] = "malignant"
    notes: ClassVar[tuple[str, ...]] = (
        "grey repeated to 3 channels",
        "8-bit /255 (else joint percentiles 0-99.9), colour relations kept",
        "plain resize",
        "augment: flips (both axes), 90° rotations, brightness/contrast jitter",
    )

    def intensity(self) -> list[Callable[..., Any]]:
        """Photo scaling."""
        from medrobust.data.presets._transforms import PhotoScaled

        return [self.scaled(PhotoScaled([IMAGE_KEY]))]

    def augmentations(self, spatial_dims: int) -> list[Callable[..., Any]]:
        """Flips, 90° rotations, brightness and contrast."""
        from monai.transforms import RandAdjustContrastd, RandFlipd, RandRotate90d, RandScaleIntensityd

        k = [IMAGE_KEY]
        return [
            RandFlipd(k, prob=0.5, spatial_axis=0),
            RandFlipd(k, prob=0.5, spatial_axis=1),
            RandRotate90d(k, prob=0.5, max_k=3),
            RandScaleIntensityd(k, factors=0.1, prob=0.5),
            RandAdjustContrastd(k, prob=0.5, gamma=(0.85, 1.2)),
        ]
