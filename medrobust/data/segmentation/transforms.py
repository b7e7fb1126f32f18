"""Paired MONAI dictionary transforms: the same geometry for image and mask, intensity on the image only.

:func:`segmentation_transform` chains, on ``{"image", "label"}`` dicts:

``check -> channels -> preset intensity (image) -> resize (image: area/linear, mask: nearest)
-> [augment: affine (image bilinear, mask nearest), flips, gamma and noise (image)] -> bounds``

The preset's own intensity steps (:meth:`medrobust.data.presets.base.Preset.intensity`) act on
the ``"image"`` key only, so a mask is never rescaled; every spatial step acts on both keys with
nearest-neighbour interpolation for the mask, so label values stay label values. Importing this
module imports torch and MONAI.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import MapTransform

from medrobust.data.presets._transforms import (
    CheckImaged,
    PresetCompose,
    ToBoundsd,
    ToChannelsd,
    degrees,
)
from medrobust.data.presets.base import Preset, get_preset
from medrobust.errors import DataError
from medrobust.validation import check_int

IMAGE_KEY, LABEL_KEY = "image", "label"
#: Spatial axes each preset may flip during augmentation (lateralised anatomy is never flipped).
FLIP_AXES: dict[str, tuple[int, ...]] = {
    "skin": (0, 1),
    "retina_fundus": (1,),
    "retina_oct": (1,),  # left/right only: a B-scan has a top (vitreous) and a bottom (choroid)
    "brain_mri": (-1,),
}
#: Volumes are read in RAS order, so their left-right axis is the first spatial axis.
FLIP_AXES_3D: dict[str, tuple[int, ...]] = {"brain_mri": (0,)}


def _as_tensor(x: Any) -> torch.Tensor:
    as_tensor = getattr(x, "as_tensor", None)
    return as_tensor() if callable(as_tensor) else torch.as_tensor(np.asarray(x))


def _where(data: Mapping[Hashable, Any]) -> str:
    meta = data.get("meta")
    return str(meta.get("path") or meta.get("id") or "<mask>") if isinstance(meta, Mapping) else "<mask>"


class CheckMaskd(MapTransform):
    """Make the mask an int64 array ``(1, *spatial)`` matching the image's spatial shape.

    Raises:
        DataError: naming the file (from ``meta``) for another shape or non-integer values.
    """

    def __init__(self, keys: Sequence[str], image_key: str = IMAGE_KEY) -> None:
        super().__init__(keys)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply the transform to ``data`` (a copy is returned)."""
        d = dict(data)
        spatial = tuple(np.shape(d[self.image_key])[1:])
        for key in self.key_iterator(d):
            mask = _as_tensor(d[key]).detach().cpu().numpy()
            if mask.ndim == len(spatial):
                mask = mask[None]
            if mask.shape != (1, *spatial):
                raise DataError(
                    _where(d),
                    f"mask shape {tuple(mask.shape)} does not match the image's {(1, *spatial)}",
                )
            if not np.array_equal(np.rint(mask), mask):
                raise DataError(_where(d), "mask holds non-integer values; expected label indices")
            d[key] = mask.astype(np.int64)
        return d


def _resize_image(img: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(img.shape[1:]) == size:
        return img
    if all(s <= t for s, t in zip(size, img.shape[1:], strict=True)):
        return F.interpolate(img[None], size=size, mode="area")[0]
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(img[None], size=size, mode=mode, align_corners=False)[0]


class PairResized(MapTransform):
    """Resize the image (box filter shrinking, linear growing) and the mask (nearest) to ``spatial_size``."""

    def __init__(self, spatial_size: Sequence[int]) -> None:
        super().__init__([IMAGE_KEY, LABEL_KEY])
        self.spatial_size = tuple(int(s) for s in spatial_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply the transform to ``data`` (a copy is returned)."""
        d = dict(data)
        img = _as_tensor(d[IMAGE_KEY]).float()
        if img.ndim - 1 != len(self.spatial_size):
            raise DataError(
                _where(d),
                f"image {tuple(img.shape)} has {img.ndim - 1} spatial dims; spatial_size is "
                f"{self.spatial_size}",
            )
        d[IMAGE_KEY] = _resize_image(img, self.spatial_size)
        if LABEL_KEY in d:
            mask = _as_tensor(d[LABEL_KEY]).float()
            if tuple(mask.shape[1:]) != self.spatial_size:
                mask = F.interpolate(mask[None], size=self.spatial_size, mode="nearest-exact")[0]
            d[LABEL_KEY] = mask
        return d


class MaskToTensord(MapTransform):
    """Emit the mask as a contiguous int64 tensor ``(1, *spatial)`` (values rounded after resampling)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply the transform to ``data`` (a copy is returned)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.round(_as_tensor(d[key]).detach().float()).to(torch.int64).contiguous()
        return d


def augmentations(preset: Preset, spatial_dims: int) -> list[Any]:
    """Paired random transforms: affine on both keys (mask nearest), preset flips, image-only intensity."""
    from monai.transforms import RandAdjustContrastd, RandAffined, RandFlipd, RandGaussianNoised

    both = [IMAGE_KEY, LABEL_KEY]
    rotate = (degrees(10),) if spatial_dims == 2 else (degrees(10),) * 3
    steps: list[Any] = [
        RandAffined(
            both,
            prob=0.5,
            rotate_range=rotate,
            scale_range=(0.1,) * spatial_dims,
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        )
    ]
    for axis in (FLIP_AXES_3D if spatial_dims == 3 else FLIP_AXES).get(preset.name, ()):
        steps.append(RandFlipd(both, prob=0.5, spatial_axis=axis % spatial_dims))
    steps += [
        RandAdjustContrastd([IMAGE_KEY], prob=0.3, gamma=(0.8, 1.25)),
        RandGaussianNoised([IMAGE_KEY], prob=0.3, std=0.01),
    ]
    return steps


def segmentation_transform(
    preset: str | Preset,
    spatial_size: Sequence[int] | None = None,
    augment: bool = False,
    seed: int = 0,
    spatial_dims: int | None = None,
) -> PresetCompose:
    """The paired pipeline for ``{"image", "label"}`` dicts (see the module docstring).

    Args:
        preset: Modality preset (name or object): channels, intensity scaling and bounds.
        spatial_size: Output size; None keeps each image's own size.
        augment: Add the paired training augmentations (seeded by ``seed``).
        seed: Seed of the random transforms (``Compose.set_random_state``).
        spatial_dims: 2 or 3; default ``len(spatial_size)``, else 2.

    Returns:
        A Compose mapping ``{"image": (C, ...), "label": (1, ...)}`` to ``{"image": float32 tensor
        inside the preset's bounds, "label": int64 tensor}``.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    owner = f"segmentation transform ({preset.name})"
    size = (
        None
        if spatial_size is None
        else tuple(check_int(s, "spatial_size", owner, low=1) for s in spatial_size)
    )
    dims = spatial_dims if spatial_dims is not None else (len(size) if size is not None else 2)
    dims = check_int(dims, "spatial_dims", owner, low=2, high=3)
    steps: list[Any] = [
        CheckImaged([IMAGE_KEY], spatial_dims=dims, preset=preset.name),
        CheckMaskd([LABEL_KEY]),
        ToChannelsd([IMAGE_KEY], channels=preset.channels, preset=preset.name),
        # Spatial steps of the preset (the fundus field-of-view crop) crop the mask with the image.
        *(t.pairing(LABEL_KEY) if hasattr(t, "pairing") else t for t in preset.intensity()),
    ]
    if size is not None:
        steps.append(PairResized(size))
    if augment:
        steps += augmentations(preset, dims)
    steps += [ToBoundsd([IMAGE_KEY], preset.bounds), MaskToTensord([LABEL_KEY])]
    compose = PresetCompose(steps)
    compose.set_random_state(seed=check_int(seed, "seed", owner, low=0, high=2**32 - 1))
    return compose
