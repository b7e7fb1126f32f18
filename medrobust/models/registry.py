"""Classifier registry: ``create_classifier(name, in_channels, num_classes)`` (timm style).

Each architecture family lives in one small file under :mod:`medrobust.models.archs`
and registers a :class:`ClassifierArch` subclass with :func:`register_classifier`.
``create_classifier`` returns the *bare* network (logits out); wrap it with
:func:`medrobust.models.build_classifier` to attach a model card and normalisation.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import nn

from medrobust.errors import ConfigError
from medrobust.registry import Registry
from medrobust.validation import check_int

CLASSIFIERS: Registry[type[ClassifierArch]] = Registry("classifier")


def register_classifier(name: str, *aliases: str):
    """Class decorator registering a :class:`ClassifierArch` subclass under ``name``."""

    def deco(cls: type[ClassifierArch]) -> type[ClassifierArch]:
        cls.name = name
        return CLASSIFIERS.register(name, *aliases)(cls)

    return deco


class ClassifierArch(ABC):
    """A classifier family: builds a bare ``nn.Module`` mapping images to logits.

    Subclasses implement :meth:`build` with keyword-only extra parameters; those
    parameters are the only keyword arguments ``create_classifier`` accepts.
    """

    name: ClassVar[str] = "classifier"
    #: Spatial dimensionalities the architecture supports.
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    #: Whether ``channels_last`` memory format helps (2D conv nets).
    channels_last: ClassVar[bool] = True
    #: Smallest input side length (pixels) the network accepts.
    min_size: ClassVar[int] = 32
    #: Cheap keyword arguments for tests and smoke runs (e.g. narrower 3D variants).
    test_kwargs: ClassVar[dict[str, Any]] = {}

    @classmethod
    @abstractmethod
    def build(cls, in_channels: int, num_classes: int, spatial_dims: int, **kw: Any) -> nn.Module:
        """Return the network (input ``(N, C, *spatial)``, output logits ``(N, num_classes)``)."""

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the extra keyword parameters :meth:`build` accepts."""
        sig = inspect.signature(cls.build)
        return sorted(p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY)


def get_classifier_arch(name: str) -> type[ClassifierArch]:
    """Return the registered architecture class for ``name`` (with "did you mean")."""
    return CLASSIFIERS.get(name)


def create_classifier(
    name: str, in_channels: int, num_classes: int, spatial_dims: int = 2, **kw: Any
) -> nn.Module:
    """Build a registered classifier network.

    Args:
        name: Registered architecture name (see :func:`list_classifiers`).
        in_channels: Number of input channels (1 for X-ray/CT/MRI, 3 for RGB).
        num_classes: Number of output logits (>= 2).
        spatial_dims: 2 for images, 3 for volumes.
        **kw: Architecture-specific keyword arguments.

    Returns:
        A bare ``nn.Module`` returning logits of shape ``(N, num_classes)``.

    Raises:
        ConfigError: for an unknown name, invalid sizes or unknown keyword arguments.
    """
    arch = get_classifier_arch(name)
    owner = f"classifier {arch.name!r}"
    in_channels = check_int(in_channels, "in_channels", owner, low=1)
    num_classes = check_int(num_classes, "num_classes", owner, low=2)
    spatial_dims = check_int(spatial_dims, "spatial_dims", owner, low=2, high=3)
    if spatial_dims not in arch.spatial_dims:
        raise ConfigError(
            f"The 'spatial_dims' parameter of {owner} must be one of {list(arch.spatial_dims)}. "
            f"Got {spatial_dims}."
        )
    unknown = sorted(set(kw) - set(arch.param_names()))
    if unknown:
        raise ConfigError(
            f"{owner} got unexpected parameter(s) {unknown}. Valid parameters: {arch.param_names()}."
        )
    return arch.build(in_channels, num_classes, spatial_dims, **kw)


def list_classifiers() -> list[str]:
    """Names of all registered classifiers, sorted."""
    return CLASSIFIERS.names()


__all__ = [
    "CLASSIFIERS",
    "ClassifierArch",
    "create_classifier",
    "get_classifier_arch",
    "list_classifiers",
    "register_classifier",
]
