"""Segmentation network registry: ``create_segmenter(name, in_channels, num_classes, spatial_dims)``.

Each network family lives in one small file under :mod:`medrobust.models.segmentation.archs`
and registers a :class:`SegmenterArch` with :func:`register_segmenter`. Keyword arguments often
come from files (safetensors metadata, a YAML config), so they are checked against the
signature of :meth:`SegmenterArch.build` and the network is built on the ``meta`` device first
to count its parameters (more than :data:`~medrobust.models.registry.MAX_PARAMETERS` is refused
before any memory is allocated). MONAI is imported inside ``build`` only.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import nn

from medrobust.errors import ConfigError
from medrobust.models.registry import MAX_PARAMETERS, check_network_shape
from medrobust.registry import Registry, did_you_mean
from medrobust.validation import check_int

SEGMENTERS: Registry[type[SegmenterArch]] = Registry("segmenter")

#: ``@register_segmenter("name", *aliases)``: registers the class and sets its ``name``.
register_segmenter = SEGMENTERS.decorator("name")


class SegmenterArch(ABC):
    """A segmentation network family: builds a bare module mapping images to per-pixel logits.

    Class attributes say what the family needs: ``size_multiple`` (every input side must be a
    multiple of it), ``fixed_size`` (the network is built for one input size, e.g. UNETR's
    ``img_size``; other sizes go through the sliding window), ``requires`` (optional packages).
    """

    name: ClassVar[str] = "segmenter"
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    size_multiple: ClassVar[int] = 1
    #: Smallest side the network takes (its deepest level must keep more than one voxel).
    min_size: ClassVar[int] = 8
    fixed_size: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()
    #: Whether the network can be built on the ``meta`` device to count its parameters first (a
    #: family that cannot must bound its size through its parameters' ranges instead).
    meta_build: ClassVar[bool] = True
    #: Cheap keyword arguments for tests and smoke runs.
    test_kwargs: ClassVar[dict[str, Any]] = {}

    @classmethod
    @abstractmethod
    def build(
        cls, in_channels: int, num_classes: int, spatial_dims: int, spatial_size: Sequence[int], **kw: Any
    ) -> nn.Module:
        """Return the network: ``(N, in_channels, *spatial)`` -> logits ``(N, num_classes, *spatial)``."""

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the extra keyword parameters :meth:`build` accepts."""
        sig = inspect.signature(cls.build)
        return sorted(p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY)

    @classmethod
    def missing_packages(cls) -> list[str]:
        """Optional packages the family needs that are not installed."""
        import importlib.util

        return [p for p in cls.requires if importlib.util.find_spec(p) is None]


def get_segmenter_arch(name: str) -> type[SegmenterArch]:
    """The registered segmentation family ``name`` (with "did you mean")."""
    return SEGMENTERS.get(name)


def check_segmenter_kwargs(name: str, kw: Any) -> dict[str, Any]:
    """Validate keyword arguments against the family's :meth:`SegmenterArch.build` signature.

    Raises:
        ConfigError: when ``kw`` is not a mapping or names an unknown parameter (with "did you mean").
    """
    arch = get_segmenter_arch(name)
    owner = f"segmenter {arch.name!r}"
    if not isinstance(kw, Mapping):
        raise ConfigError(
            f"The 'arch_kwargs' parameter of {owner} must be a mapping. Got {type(kw).__name__}."
        )
    names = arch.param_names()
    for key in kw:
        if not isinstance(key, str) or key not in names:
            raise ConfigError(
                f"{owner} has no parameter {key!r}.{did_you_mean(str(key), names)} "
                f"Valid parameters: {', '.join(names) or 'none'}."
            )
    return dict(kw)


def _checked_size(
    arch: type[SegmenterArch], spatial_size: Sequence[int], spatial_dims: int
) -> tuple[int, ...]:
    owner = f"segmenter {arch.name!r}"
    size = tuple(check_int(s, "spatial_size", owner, low=1) for s in spatial_size)
    if len(size) != spatial_dims:
        raise ConfigError(
            f"The 'spatial_size' parameter of {owner} must have {spatial_dims} values (spatial_dims). "
            f"Got {size}."
        )
    m = arch.size_multiple
    if any(s < arch.min_size for s in size):
        raise ConfigError(
            f"The 'spatial_size' parameter of {owner} must be at least {arch.min_size} per side. "
            f"Got {list(size)}."
        )
    if any(s % m for s in size):
        raise ConfigError(
            f"The 'spatial_size' parameter of {owner} must be multiples of {m} (the network downsamples "
            f"that much). Got {list(size)}."
        )
    return size


def create_segmenter(
    name: str,
    in_channels: int,
    num_classes: int,
    spatial_dims: int = 2,
    spatial_size: Sequence[int] | None = None,
    **kw: Any,
) -> nn.Module:
    """Build a registered segmentation network.

    Args:
        name: Registered name (:func:`list_segmenters`).
        in_channels: Input channels.
        num_classes: Output channels (labels, background included; >= 2).
        spatial_dims: 2 for images, 3 for volumes.
        spatial_size: Input size the network is built for (needed by fixed-size families such as
            UNETR; checked against ``size_multiple``). Default: 64 per axis.
        **kw: Family-specific keyword arguments.

    Raises:
        ConfigError: for an unknown name, invalid sizes or keyword arguments, a missing optional
            package, or a network with more than ``MAX_PARAMETERS`` parameters.
    """
    import torch

    arch = get_segmenter_arch(name)
    owner = f"segmenter {arch.name!r}"
    in_channels, num_classes, spatial_dims = check_network_shape(
        owner, in_channels, num_classes, spatial_dims, arch.spatial_dims
    )
    size = _checked_size(arch, spatial_size or (64,) * spatial_dims, spatial_dims)
    missing = arch.missing_packages()
    if missing:
        raise ConfigError(
            f"{owner} needs the package(s) {', '.join(missing)} (MONAI's transformer blocks import them), "
            f"which are not installed: pip install {' '.join(missing)}, or choose another architecture. "
            f"Got a Python without {', '.join(missing)}."
        )
    kw = check_segmenter_kwargs(arch.name, kw)
    if not arch.meta_build:
        return arch.build(in_channels, num_classes, spatial_dims, size, **kw)
    try:
        with torch.device("meta"):
            n_params = sum(
                p.numel() for p in arch.build(in_channels, num_classes, spatial_dims, size, **kw).parameters()
            )
    except ConfigError:
        raise
    except (RuntimeError, ValueError, TypeError, AssertionError, ZeroDivisionError) as exc:
        raise ConfigError(f"{owner} cannot be built with {kw}: {' '.join(str(exc).split())[:200]}") from None
    if n_params > MAX_PARAMETERS:
        raise ConfigError(
            f"{owner} with arch_kwargs {kw} would have {n_params:.3g} parameters; at most "
            f"{MAX_PARAMETERS:.3g} are built. Choose smaller arch_kwargs."
        )
    return arch.build(in_channels, num_classes, spatial_dims, size, **kw)


def list_segmenters() -> list[str]:
    """Names of all registered segmentation networks, sorted."""
    return SEGMENTERS.names()
