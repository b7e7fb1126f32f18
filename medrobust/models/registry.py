"""Classifier registry: ``create_classifier(name, in_channels, num_classes)`` (timm style).

Each architecture family lives in one small file under :mod:`medrobust.models.archs`
and registers a :class:`ClassifierArch` subclass with :func:`register_classifier`.
``create_classifier`` returns the *bare* network (logits out); wrap it with
:func:`medrobust.models.build_classifier` to attach a model card and normalisation.

Architecture keyword arguments often come from files (a checkpoint's safetensors
metadata, a training YAML), so ``create_classifier`` checks them against the
signature of :meth:`ClassifierArch.build` (names, annotated types) and builds the
network on the ``meta`` device first to count its parameters: a network larger than
:data:`MAX_PARAMETERS` is refused before any memory is allocated.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import nn

from medrobust.errors import ConfigError
from medrobust.limits import MAX_CLASSES
from medrobust.registry import Registry, did_you_mean
from medrobust.validation import check_int

CLASSIFIERS: Registry[type[ClassifierArch]] = Registry("classifier")

#: Most parameters (and buffer values) a classifier may have; 2e9 float32 values are 8 GB.
MAX_PARAMETERS = 2_000_000_000


#: ``@register_classifier("name", *aliases)``: registers the class and sets its ``name``.
register_classifier = CLASSIFIERS.decorator("name")


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

    @classmethod
    def param_types(cls) -> dict[str, Any]:
        """Annotated types of the keyword parameters (``inspect.Parameter.empty`` when unannotated)."""
        try:
            sig = inspect.signature(cls.build, eval_str=True)
        except (NameError, TypeError, SyntaxError):  # an annotation that does not resolve: no type checks
            sig = inspect.signature(cls.build)
            return {
                p.name: inspect.Parameter.empty for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY
            }
        return {p.name: p.annotation for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


def get_classifier_arch(name: str) -> type[ClassifierArch]:
    """Return the registered architecture class for ``name`` (with "did you mean")."""
    return CLASSIFIERS.get(name)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _matches(value: Any, annotation: Any) -> bool | None:
    """Whether ``value`` fits a simple annotation; None when the annotation is not checked."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        results = [_matches(value, a) for a in typing.get_args(annotation)]
        return None if any(r is None for r in results) else any(results)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        )
    if annotation is float:
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    return None


def check_arch_kwargs(name: str, kw: Any) -> dict[str, Any]:
    """Validate architecture keyword arguments against the architecture's signature.

    Args:
        name: Registered architecture name.
        kw: The keyword arguments (from a config, a checkpoint's metadata or a call).

    Returns:
        ``kw`` as a plain dict.

    Raises:
        ConfigError: when ``kw`` is not a mapping, names an unknown parameter (with "did you
            mean") or gives a value of the wrong type for an annotated parameter.
    """
    arch = get_classifier_arch(name)
    owner = f"classifier {arch.name!r}"
    if not isinstance(kw, Mapping):
        raise ConfigError(
            f"The 'arch_kwargs' parameter of {owner} must be a mapping of parameter names to values "
            f"(e.g. {{'width': 16}}). Got {type(kw).__name__} {kw!r:.80}."
        )
    names = arch.param_names()
    types_ = arch.param_types()
    for key, value in kw.items():
        if not isinstance(key, str) or key not in names:
            hint = did_you_mean(str(key), names)
            valid = ", ".join(names) if names else "none"
            raise ConfigError(f"{owner} has no parameter {key!r}.{hint} Valid parameters: {valid}.")
        annotation = types_.get(key, inspect.Parameter.empty)
        if _matches(value, annotation) is False:
            raise ConfigError(
                f"The {key!r} parameter of {owner} must be {_type_name(annotation)}. Got {value!r:.80}."
            )
    return dict(kw)


def count_parameters(name: str, in_channels: int, num_classes: int, spatial_dims: int = 2, **kw: Any) -> int:
    """Parameters plus buffer values of a classifier, counted on the ``meta`` device (no memory used).

    Raises:
        ConfigError: when the network cannot be built with these arguments.
    """
    import torch

    arch = get_classifier_arch(name)
    try:
        with torch.device("meta"):
            net = arch.build(in_channels, num_classes, spatial_dims, **kw)
    except ConfigError:
        raise
    except (RuntimeError, ValueError, TypeError, OverflowError, ZeroDivisionError) as exc:
        raise ConfigError(
            f"classifier {arch.name!r} cannot be built with {kw}: {' '.join(str(exc).split())[:200]}"
        ) from None
    return sum(t.numel() for t in net.parameters()) + sum(t.numel() for t in net.buffers())


def check_network_shape(
    owner: str, in_channels: Any, num_classes: Any, spatial_dims: Any, supported: Sequence[int]
) -> tuple[int, int, int]:
    """Validate a network's input channels, output classes and spatial dimensions.

    Args:
        owner: What the messages name (``"classifier 'small_cnn'"``).
        in_channels: Input channels (>= 1).
        num_classes: Output classes or labels (2 to ``MAX_CLASSES``).
        spatial_dims: 2 or 3, one of ``supported``.
        supported: The spatial dimensions the architecture builds for.

    Returns:
        The three values as ints.

    Raises:
        ConfigError: naming the parameter, what was expected and what came in.
    """
    in_channels = check_int(in_channels, "in_channels", owner, low=1)
    num_classes = check_int(num_classes, "num_classes", owner, low=2, high=MAX_CLASSES)
    spatial_dims = check_int(spatial_dims, "spatial_dims", owner, low=2, high=3)
    if spatial_dims not in supported:
        raise ConfigError(
            f"The 'spatial_dims' parameter of {owner} must be one of {list(supported)}. Got {spatial_dims}."
        )
    return in_channels, num_classes, spatial_dims


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
        ConfigError: for an unknown name, invalid sizes, unknown or mistyped keyword arguments,
            or a network with more than :data:`MAX_PARAMETERS` parameters.
    """
    arch = get_classifier_arch(name)
    owner = f"classifier {arch.name!r}"
    in_channels, num_classes, spatial_dims = check_network_shape(
        owner, in_channels, num_classes, spatial_dims, arch.spatial_dims
    )
    kw = check_arch_kwargs(arch.name, kw)
    n_params = count_parameters(arch.name, in_channels, num_classes, spatial_dims, **kw)
    if n_params > MAX_PARAMETERS:
        raise ConfigError(
            f"{owner} with arch_kwargs {kw} would have {n_params:.3g} parameters; at most "
            f"{MAX_PARAMETERS:.3g} (medrobust.models.registry.MAX_PARAMETERS) are built. "
            "Choose smaller arch_kwargs."
        )
    return arch.build(in_channels, num_classes, spatial_dims, **kw)


def list_classifiers() -> list[str]:
    """Names of all registered classifiers, sorted."""
    return CLASSIFIERS.names()


__all__ = [
    "CLASSIFIERS",
    "MAX_PARAMETERS",
    "ClassifierArch",
    "check_arch_kwargs",
    "count_parameters",
    "create_classifier",
    "get_classifier_arch",
    "list_classifiers",
    "register_classifier",
]
