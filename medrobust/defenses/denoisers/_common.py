"""Helpers shared by the denoiser modules (not a registered component).

Every denoiser works internally on images mapped to ``[0, 1]``: inputs in arbitrary
``bounds`` (e.g. Hounsfield units) are normalised with ``(x - low) / (high - low)``,
denoised, and mapped back, so hyper-parameters such as an intensity sigma are in
*bounds-relative* units and identical for every modality.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medrobust.defenses.denoisers.base import Denoiser, bpda
from medrobust.errors import ConfigError
from medrobust.validation import check_choice


def to_unit(x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Map ``x`` from ``bounds`` to ``[0, 1]``."""
    low, high = bounds
    if low == 0.0 and high == 1.0:
        return x
    return (x - low) / (high - low)


def from_unit(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    """Map ``u`` from ``[0, 1]`` back to ``bounds``."""
    low, high = bounds
    if low == 0.0 and high == 1.0:
        return u
    return u * (high - low) + low


def check_images(x: torch.Tensor, denoiser: Denoiser) -> None:
    """Raise a :class:`ConfigError` unless ``x`` is a batch the denoiser filters, with the right channels.

    2D denoisers take ``(N, C, H, W)`` images, volumetric ones ``(N, C, X, Y, Z)`` volumes
    (``denoiser.spatial_dims``).
    """
    dims = tuple(getattr(denoiser, "spatial_dims", (2,)))
    if x.ndim - 2 not in dims or x.shape[1] != denoiser.in_channels:
        c = denoiser.in_channels
        wanted = " or ".join(
            f"2D images (N, {c}, H, W)" if d == 2 else f"3D volumes (N, {c}, X, Y, Z)" for d in dims
        )
        raise ConfigError(
            f"{type(denoiser).__name__} expects {wanted}. Got a tensor of shape {tuple(x.shape)}."
        )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad H and W up to a multiple of ``multiple``; returns the padded tensor and (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def plain(x: torch.Tensor) -> torch.Tensor:
    """Strip a MONAI ``MetaTensor`` (denoisers return plain tensors)."""
    as_tensor = getattr(x, "as_tensor", None)
    return as_tensor() if callable(as_tensor) else x


class DeepDenoiser(Denoiser):
    """A learned denoiser working on ``[0, 1]``-normalised images.

    Subclasses implement :meth:`_forward_unit` (``[0, 1]`` in, ``[0, 1]`` out). The
    output-range choice (sigmoid head or clamp) is the subclass's and is documented there.
    """

    kind = "deep"
    differentiable = True

    def _forward_unit(self, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` (N, C, H, W) in ``bounds``; returns the same shape inside ``bounds``."""
        x = plain(x)
        check_images(x, self)
        out = from_unit(self._forward_unit(to_unit(x, self.bounds)), self.bounds)
        return self.clamp(out)


class ClassicalDenoiser(Denoiser):
    """A hand-crafted filter with a straight-through (BPDA) gradient unless it is differentiable.

    Subclasses implement :meth:`_denoise_unit` on ``[0, 1]`` images. Filters written in
    torch may be built with ``gradient="exact"`` (autograd through the filter) or
    ``gradient="bpda"`` (identity gradient); numpy/skimage filters are always BPDA.
    """

    kind = "classical"
    differentiable = False
    #: Whether ``_denoise_unit`` is written in torch and can be differentiated.
    supports_exact_gradient: bool = False

    def __init__(self, in_channels: int = 1, bounds: Any = (0.0, 1.0), gradient: str | None = None) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds)
        owner = type(self).__name__
        if gradient is None:
            gradient = "exact" if type(self).differentiable else "bpda"
        choices = ["exact", "bpda"] if self.supports_exact_gradient else ["bpda"]
        self.gradient = check_choice(gradient, "gradient", choices, owner)
        # Instance-level flag: the same filter class can be used either way.
        self.differentiable = self.gradient == "exact"

    def _denoise_unit(self, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Filter ``x`` (N, C, H, W) in ``bounds``; BPDA gradient when not differentiable."""
        x = plain(x)
        check_images(x, self)
        if self.differentiable:
            return self.clamp(from_unit(self._denoise_unit(to_unit(x, self.bounds)), self.bounds))
        with torch.no_grad():
            out = self.clamp(from_unit(self._denoise_unit(to_unit(x.detach(), self.bounds)), self.bounds))
        return bpda(x, out)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (including ``gradient`` for torch filters)."""
        cfg = super().config()
        if self.supports_exact_gradient:
            cfg["gradient"] = self.gradient
        return cfg


def apply_per_image(u: torch.Tensor, fn: Callable[[np.ndarray, int | None], np.ndarray]) -> torch.Tensor:
    """Run a numpy filter image by image on CPU.

    Args:
        u: ``[0, 1]`` images (N, C, H, W).
        fn: ``fn(image, channel_axis)`` where ``image`` is (H, W) for one channel (``channel_axis``
            None) or (H, W, C) otherwise (``channel_axis`` -1); returns an array of the same shape.
    """
    arr = u.detach().to("cpu", torch.float64).numpy()
    out = np.empty_like(arr)
    for i in range(arr.shape[0]):
        if arr.shape[1] == 1:
            out[i, 0] = fn(arr[i, 0], None)
        else:
            out[i] = np.moveaxis(fn(np.moveaxis(arr[i], 0, -1), -1), -1, 0)
    return torch.from_numpy(out).to(device=u.device, dtype=u.dtype)
