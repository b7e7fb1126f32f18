"""Colour fundus photograph preset."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, ClassVar

from medrobust.data.presets.base import IMAGE_KEY, Preset, register_preset

#: A cropped field of view filling at least this fraction of the output side is padded, not upsampled.
PAD_FILL = 0.85


class PadFieldOfViewd:
    """Pad a cropped field of view slightly smaller than the output with black, then resize.

    Acts only on an image whose four corner pixels are black (the field-of-view crop masked
    them) and whose sides are each between ``fill`` times the output side and the output
    side: it is padded, centred, with zeros (black background) to the output size, so the
    following resize leaves it as it is. Any other image goes to ``resize`` unchanged.

    Args:
        resize: The resize transform applied afterwards.
        spatial_size: Output size ``(H, W)``.
        fill: Smallest fraction of the output side padded instead of upsampled.
    """

    def __init__(
        self, resize: Callable[..., Any], spatial_size: tuple[int, ...], fill: float = PAD_FILL
    ) -> None:
        self.resize = resize
        self.spatial_size = tuple(int(v) for v in spatial_size)
        self.fill = fill

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        """Pad the image of ``data`` where it applies, then resize."""
        import numpy as np

        d = dict(data)
        img = d.get(IMAGE_KEY)
        if isinstance(img, np.ndarray) and img.ndim == 3 and len(self.spatial_size) == 2:
            shape = img.shape[1:]
            near = all(self.fill * t <= s <= t for s, t in zip(shape, self.spatial_size, strict=True))
            if near and shape != self.spatial_size and not img[:, [0, 0, -1, -1], [0, -1, 0, -1]].any():
                pad = [(0, 0)] + [
                    ((t - s) // 2, t - s - (t - s) // 2)
                    for s, t in zip(shape, self.spatial_size, strict=True)
                ]
                d[IMAGE_KEY] = np.pad(img, pad)
        return self.resize(d)


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
    * Plain resize (the crop is square), except that a cropped field of view only slightly
      smaller than the output (at least :data:`PAD_FILL` of its side) is padded with black
      to the output size instead of upsampled: rescaling by less than 1.18x adds no detail
      but blurs pixel-sized findings (exudates, haemorrhages of a 32 px photograph) by up
      to half a pixel, for the sake of a border of a few pixels.
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
        "a cropped FOV of at least 85% of the output side is padded black, not upsampled",
        "augment: rotate ±15°, left-right flip, brightness/contrast jitter",
    )

    def intensity(self) -> list[Callable[..., Any]]:
        """Photo scaling then field-of-view crop."""
        from medrobust.data.presets._transforms import FundusFOVCropd, PhotoScaled

        return [self.scaled(PhotoScaled([IMAGE_KEY])), FundusFOVCropd([IMAGE_KEY])]

    def resize(self, spatial_size: tuple[int, ...]) -> Callable[..., Any]:
        """Plain resize; a cropped field of view nearly the output size is padded instead."""
        return PadFieldOfViewd(super().resize(spatial_size), spatial_size)

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
