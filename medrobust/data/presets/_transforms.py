"""MONAI dictionary transforms used by the modality presets.

Imported only when a preset builds its pipeline (it pulls in torch and MONAI).
Every transform here acts on the ``"image"`` key of a MONAI-style dict and leaves
the other keys (``"label"``, ``"meta"``, ...) untouched. Between
:class:`ToUnitRanged` / :class:`PercentileScaled` and :class:`ToBoundsd` the image
lives in the internal unit interval ``[0, 1]`` (0 = black), so zero padding from
rotations means "black" whatever the preset's final bounds are.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose, MapTransform

from medrobust.errors import ConfigError, DataError, MedrobustError

#: ITU-R BT.601 luma weights used to turn RGB into grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _as_array(img: Any) -> np.ndarray:
    """A float32 numpy copy of ``img`` (numpy array, torch tensor or MONAI MetaTensor)."""
    if isinstance(img, torch.Tensor):
        as_tensor = getattr(img, "as_tensor", None)
        t = as_tensor() if callable(as_tensor) else img
        return t.detach().cpu().numpy().astype(np.float32, copy=True)
    return np.array(img, dtype=np.float32, copy=True)


class PresetCompose(Compose):
    """A MONAI ``Compose`` that re-raises medrobust's own errors unwrapped.

    MONAI wraps any exception of a transform in ``RuntimeError("applying transform
    ...")``; a :class:`~medrobust.errors.DataError` naming the file is more useful to
    the caller (and the CLI prints it as one line), so it is re-raised as is.
    """

    def __call__(self, input_: Any, *args: Any, **kwargs: Any) -> Any:
        """Apply the transforms; unwrap a medrobust error from MONAI's ``RuntimeError``."""
        try:
            return super().__call__(input_, *args, **kwargs)
        except RuntimeError as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, MedrobustError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None


def _where(data: Mapping[Hashable, Any]) -> str:
    """A file name to put in error messages (from ``meta``) or a placeholder."""
    meta = data.get("meta")
    if isinstance(meta, Mapping):
        for key in ("path", "filename", "id"):
            if meta.get(key):
                return str(meta[key])
    return "<image>"


class CheckImaged(MapTransform):
    """Validate and convert the image to a float32 ``(C, *spatial)`` numpy array.

    A 2D array without a channel axis is accepted as one channel only when
    ``spatial_dims == 2`` and the array is 2D. Non-finite pixels raise
    :class:`~medrobust.errors.DataError` naming the file (from ``meta['path']``).

    Args:
        keys: Keys to check.
        spatial_dims: Expected number of spatial dimensions (2 or 3).
        preset: Preset name used in messages.
    """

    def __init__(self, keys: Sequence[str], spatial_dims: int, preset: str) -> None:
        super().__init__(keys)
        self.spatial_dims = spatial_dims
        self.preset = preset

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = _as_array(d[key])
            if img.ndim == 2 and self.spatial_dims == 2:
                img = img[None]
            if img.ndim != self.spatial_dims + 1:
                want = "(C, H, W)" if self.spatial_dims == 2 else "(C, D, H, W)"
                hint = (
                    " For a 3D volume pass a 3-value spatial_size (presets that support 3D only)."
                    if img.ndim == 4 and self.spatial_dims == 2
                    else ""
                )
                raise DataError(
                    _where(d),
                    f"preset {self.preset!r} expects an image {want}. Got shape {tuple(img.shape)}.{hint}",
                )
            if img.size == 0:
                raise DataError(_where(d), f"preset {self.preset!r} got an empty image {tuple(img.shape)}.")
            if not np.isfinite(img).all():
                bad = int((~np.isfinite(img)).sum())
                raise DataError(_where(d), f"image has {bad} NaN/Inf pixel(s); preset {self.preset!r}.")
            d[key] = img
        return d


class ToChannelsd(MapTransform):
    """Convert the channel count: 3 (or 4, RGBA) -> 1 by luminance, 1 -> 3 by repetition.

    Args:
        keys: Keys to convert.
        channels: Target channel count (1 or 3).
        preset: Preset name used in messages.
    """

    def __init__(self, keys: Sequence[str], channels: int, preset: str) -> None:
        super().__init__(keys)
        self.channels = channels
        self.preset = preset

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            c = img.shape[0]
            if c == 4:  # RGBA: drop alpha
                img, c = img[:3], 3
            if c == self.channels:
                pass
            elif c == 3 and self.channels == 1:
                w = np.asarray(LUMA_WEIGHTS, dtype=np.float32).reshape((3,) + (1,) * (img.ndim - 1))
                img = (img * w).sum(axis=0, keepdims=True, dtype=np.float32)
            elif c == 1 and self.channels == 3:
                img = np.repeat(img, 3, axis=0)
            else:
                raise DataError(
                    _where(d),
                    f"preset {self.preset!r} needs {self.channels} channel(s) and can convert from 1, 3 "
                    f"or 4 (RGBA). Got {c} channels (shape {tuple(img.shape)}).",
                )
            d[key] = np.ascontiguousarray(img, dtype=np.float32)
        return d


class PercentileScaled(MapTransform):
    """Map the ``[lower, upper]`` percentiles of the image to ``[0, 1]`` and clip.

    Percentiles are taken jointly over all channels (colour relations are kept).
    With ``nonzero=True`` only voxels different from zero enter the percentiles
    (foreground of skull-stripped or zero-background MRI); zero voxels map below
    0 and are clipped to 0. A constant image maps to 0.

    Args:
        keys: Keys to scale.
        lower: Lower percentile in [0, 100).
        upper: Upper percentile in (lower, 100].
        nonzero: Use only non-zero voxels for the percentiles.
    """

    def __init__(self, keys: Sequence[str], lower: float, upper: float, nonzero: bool = False) -> None:
        super().__init__(keys)
        if not 0.0 <= lower < upper <= 100.0:
            raise ConfigError(f"Percentiles must satisfy 0 <= lower < upper <= 100. Got ({lower}, {upper}).")
        self.lower, self.upper, self.nonzero = lower, upper, nonzero

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            values = img[:, np.any(img != 0, axis=0)] if self.nonzero else img
            if values.size == 0:
                d[key] = np.zeros_like(img, dtype=np.float32)
                continue
            lo, hi = np.percentile(values, [self.lower, self.upper])
            # Constant (foreground) intensities: anything above lo is "bright".
            out = (img - lo) / (hi - lo) if hi > lo else (img > lo).astype(np.float32)
            d[key] = np.clip(out, 0.0, 1.0).astype(np.float32)
        return d


class PhotoScaled(MapTransform):
    """Scale a photograph to ``[0, 1]``: ``/255`` for 8-bit data, percentiles otherwise.

    Colour photographs (fundus, dermoscopy) are stored as 8-bit RGB; dividing by
    255 keeps the camera's exposure and colour balance. Data outside ``[0, 255]``
    (16-bit or float exports) fall back to joint-channel percentile scaling
    (0, 99.9) so the result is still inside ``[0, 1]``.

    Args:
        keys: Keys to scale.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.min() >= 0.0 and img.max() <= 255.0:
                out = img / 255.0
            else:
                lo, hi = np.percentile(img, [0.0, 99.9])
                out = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
            d[key] = np.clip(out, 0.0, 1.0).astype(np.float32)
        return d


class RangeScaled(MapTransform):
    """Map the fixed native interval ``[low, high]`` to ``[0, 1]`` and clip (``scaling="range"``).

    The same mapping for every image (a CT window in HU, the full range of a 12-bit detector),
    unlike the percentile scalings, which adapt to each image.

    Args:
        keys: Keys to scale.
        low: Native value mapped to 0.
        high: Native value mapped to 1 (``> low``).
    """

    def __init__(self, keys: Sequence[str], low: float, high: float) -> None:
        super().__init__(keys)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ConfigError(f"The value range must be finite with low < high. Got ({low}, {high}).")
        self.low, self.high = float(low), float(high)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            out = (d[key] - self.low) / (self.high - self.low)
            d[key] = np.clip(out, 0.0, 1.0).astype(np.float32)
        return d


class MinMaxScaled(MapTransform):
    """Map each image's own minimum and maximum to ``[0, 1]`` (``scaling="minmax"``); constant -> 0.

    Args:
        keys: Keys to scale.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            lo, hi = float(img.min()), float(img.max())
            out = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
            d[key] = np.clip(out, 0.0, 1.0).astype(np.float32)
        return d


def fov_box(
    img: np.ndarray, threshold: float = 0.15, min_fraction: float = 0.02
) -> tuple[int, int, int] | None:
    """Find the circular field of view of a fundus photograph.

    The FOV is the bright disc on a dark background. Pixels whose brightest channel
    exceeds ``threshold`` times the image's 99th percentile are "inside"; rows and
    columns where more than ``min_fraction`` of the pixels are inside bound the disc
    (isolated bright specks are ignored).

    Args:
        img: ``(C, H, W)`` image in ``[0, 1]``.
        threshold: Fraction of the 99th percentile separating background from FOV.
        min_fraction: Fraction of a row/column that must be inside to count.

    Returns:
        ``(centre_row, centre_col, side)`` of the disc's bounding square in pixels,
        or ``None`` when there is no dark border (nothing to crop) or no bright disc.
    """
    lum = img.max(axis=0)
    hi = float(np.percentile(lum, 99.0))
    if hi <= 0.0:
        return None
    inside = lum > threshold * hi
    if inside.mean() > 0.97:
        return None
    _h, _w = inside.shape
    rows = np.flatnonzero(inside.mean(axis=1) > min_fraction)
    cols = np.flatnonzero(inside.mean(axis=0) > min_fraction)
    if rows.size < 2 or cols.size < 2:
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # The disc may be clipped at the top/bottom of the frame: the wider extent is its diameter.
    side = int(max(r1 - r0, c1 - c0))
    return (r0 + r1) // 2, (c0 + c1) // 2, side


class FundusFOVCropd(MapTransform):
    """Crop a fundus photograph to the bounding square of its circular FOV and mask outside it.

    Works on ``[0, 1]`` images (after :class:`PhotoScaled`); pixels outside the
    circle are set to 0 (black). Images without a dark border are left unchanged.
    ``label_keys`` (masks of a segmentation pair) get the same crop, with background (0)
    outside the field of view, so image and mask stay aligned.

    Args:
        keys: Keys to crop; the field of view is found on each of them.
        threshold: See :func:`fov_box`.
        label_keys: Masks cropped with the box found on the first of ``keys``.
    """

    def __init__(self, keys: Sequence[str], threshold: float = 0.15, label_keys: Sequence[str] = ()) -> None:
        super().__init__(keys)
        self.threshold = threshold
        self.label_keys = tuple(label_keys)

    def pairing(self, label_key: str) -> FundusFOVCropd:
        """The same crop, applied to the mask ``label_key`` too (segmentation pipelines)."""
        return FundusFOVCropd(self.keys, self.threshold, (*self.label_keys, label_key))

    @staticmethod
    def _crop(img: Any, box: tuple[int, int, int], dtype: Any) -> np.ndarray:
        cr, cc, side = box
        arr = np.asarray(img)
        c, h, w = arr.shape
        out = np.zeros((c, side, side), dtype=dtype)
        top, left = cr - side // 2, cc - side // 2
        sr0, sr1 = max(top, 0), min(top + side, h)
        sc0, sc1 = max(left, 0), min(left + side, w)
        out[:, sr0 - top : sr1 - top, sc0 - left : sc1 - left] = arr[:, sr0:sr1, sc0:sc1]
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
        centre = (side - 1) / 2.0
        radius = side / 2.0
        out *= ((yy - centre) ** 2 + (xx - centre) ** 2 <= radius**2)[None].astype(dtype)
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        first: tuple[int, int, int] | None = None
        for i, key in enumerate(self.key_iterator(d)):
            box = fov_box(d[key], self.threshold)
            if i == 0:
                first = box
            if box is not None:
                d[key] = self._crop(d[key], box, np.float32)
        for key in self.label_keys:
            if first is not None and key in d:
                mask = np.asarray(_label_array(d[key]))
                d[key] = self._crop(mask, first, mask.dtype)
        return d


def _label_array(x: Any) -> np.ndarray:
    as_tensor = getattr(x, "as_tensor", None)
    t = as_tensor() if callable(as_tensor) else x
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _interp_mode(ndim_spatial: int) -> str:
    return "bilinear" if ndim_spatial == 2 else "trilinear"


def _resize(img: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize a ``(C, *spatial)`` tensor; box-filter (area) when shrinking, linear when growing.

    Both are convex combinations of input pixels, so the output stays inside the
    input's range (no overshoot that would leave the bounds).
    """
    size = tuple(int(s) for s in size)
    if tuple(img.shape[1:]) == size:
        return img
    x = img[None]
    if all(s <= t for s, t in zip(size, img.shape[1:], strict=True)):
        out = F.interpolate(x, size=size, mode="area")
    else:
        out = F.interpolate(x, size=size, mode=_interp_mode(len(size)), align_corners=False)
    return out[0]


class Resized(MapTransform):
    """Resize to ``spatial_size`` (aspect ratio not kept), returning a plain tensor.

    Args:
        keys: Keys to resize.
        spatial_size: Target size, 2 values (H, W) or 3 values (D, H, W).
        preset: Preset name used in messages.
    """

    def __init__(self, keys: Sequence[str], spatial_size: Sequence[int], preset: str) -> None:
        super().__init__(keys)
        self.spatial_size = tuple(spatial_size)
        self.preset = preset

    def _target(self, shape: Sequence[int]) -> tuple[int, ...]:
        return self.spatial_size

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key], dtype=torch.float32)
            if img.ndim - 1 != len(self.spatial_size):
                raise DataError(
                    _where(d),
                    f"preset {self.preset!r} got an image with {img.ndim - 1} spatial dims "
                    f"{tuple(img.shape)} but spatial_size {self.spatial_size}.",
                )
            d[key] = self._resize_one(img)
        return d

    def _resize_one(self, img: torch.Tensor) -> torch.Tensor:
        return _resize(img, self.spatial_size)


class ResizeKeepAspectd(Resized):
    """Resize to fit inside ``spatial_size`` keeping the aspect ratio, then pad with black (0).

    The image is centred; padding uses 0, i.e. black in the internal unit range.
    """

    def _resize_one(self, img: torch.Tensor) -> torch.Tensor:
        shape = img.shape[1:]
        scale = min(t / s for t, s in zip(self.spatial_size, shape, strict=True))
        inner = [max(1, min(t, round(s * scale))) for t, s in zip(self.spatial_size, shape, strict=True)]
        out = _resize(img, inner)
        pad: list[int] = []
        for t, s in reversed(list(zip(self.spatial_size, inner, strict=True))):
            before = (t - s) // 2
            pad += [before, t - s - before]
        if any(pad):
            out = F.pad(out, pad, mode="constant", value=0.0)
        return out


class ToBoundsd(MapTransform):
    """Map the internal ``[0, 1]`` range to ``bounds``, clip, and emit a plain float32 tensor.

    Args:
        keys: Keys to convert.
        bounds: Final intensity interval ``(low, high)``.
    """

    def __init__(self, keys: Sequence[str], bounds: tuple[float, float]) -> None:
        super().__init__(keys)
        self.low, self.high = float(bounds[0]), float(bounds[1])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            as_tensor = getattr(img, "as_tensor", None)
            t = as_tensor() if callable(as_tensor) else torch.as_tensor(img)
            t = t.detach().to(torch.float32).clamp(0.0, 1.0)
            if (self.low, self.high) != (0.0, 1.0):
                t = (t * (self.high - self.low) + self.low).clamp(self.low, self.high)
            d[key] = t.contiguous()
        return d


def degrees(angle: float) -> float:
    """Degrees to radians (MONAI rotation ranges are in radians)."""
    return angle * math.pi / 180.0
