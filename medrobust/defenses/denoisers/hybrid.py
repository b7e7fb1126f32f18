"""Hybrid classical + deep denoiser (the defense proposed by Ning et al., Neurocomputing 2026).

Deep denoisers share one adversarial sample set and are easy to fool; classical ones
(BM3D, median, ...) resist. The hybrid combines the two so an attack must beat both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from medrobust.defenses.denoisers._common import check_images, plain
from medrobust.defenses.denoisers.base import Denoiser, create_denoiser, register_denoiser
from medrobust.errors import ConfigError
from medrobust.validation import check_choice, check_float

MODES = ("classical_then_deep", "deep_then_classical", "blend")


def _child(
    spec: str | Denoiser, params: Mapping[str, Any] | None, role: str, in_channels: int, bounds: Any
) -> Denoiser:
    if isinstance(spec, Denoiser):
        if params:
            raise ConfigError(
                f"HybridDenoiser: pass '{role}_params' only with a denoiser name, not an instance."
            )
        if spec.in_channels != in_channels or tuple(spec.bounds) != tuple(bounds):
            raise ConfigError(
                f"HybridDenoiser: the {role} denoiser has in_channels={spec.in_channels}, "
                f"bounds={spec.bounds}; expected in_channels={in_channels}, bounds={tuple(bounds)}."
            )
        return spec
    if not isinstance(spec, str):
        raise ConfigError(
            f"The {role!r} parameter of HybridDenoiser must be a denoiser name or instance. Got {spec!r}."
        )
    if spec.replace("_", "-").lower() == "hybrid":
        raise ConfigError(f"The {role!r} parameter of HybridDenoiser cannot itself be 'hybrid'.")
    child = create_denoiser(spec, in_channels=in_channels, bounds=bounds, **dict(params or {}))
    if 2 not in child.spatial_dims:
        raise ConfigError(
            f"The {role!r} parameter of HybridDenoiser must name a 2D denoiser; {spec!r} filters "
            f"{'/'.join(f'{d}D' for d in child.spatial_dims)} volumes only."
        )
    return child


@register_denoiser("hybrid")
class HybridDenoiser(Denoiser):
    """A classical denoiser combined with a deep one.

    Modes:
        ``classical_then_deep``: ``deep(classical(x))`` - the classical filter strips the
        high-frequency part of a perturbation before the (fragile) deep denoiser sees it.
        ``deep_then_classical``: ``classical(deep(x))``.
        ``blend``: ``alpha * classical(x) + (1 - alpha) * deep(x)``.

    Gradient: the children's own gradients compose by the chain rule, so when the
    classical child is BPDA the straight-through identity replaces only the classical
    part and the deep part is differentiated exactly. ``differentiable`` is False when
    any child is BPDA.

    Args:
        in_channels: Image channels.
        bounds: Intensity interval.
        classical: Classical denoiser name (built with ``classical_params``) or instance.
        deep: Deep denoiser name (built with ``deep_params``) or instance.
        mode: One of ``classical_then_deep``, ``deep_then_classical``, ``blend``.
        alpha: Weight of the classical output in ``blend`` mode, in [0, 1].
        classical_params: Constructor arguments of the classical child.
        deep_params: Constructor arguments of the deep child.
    """

    kind = "hybrid"
    differentiable = False
    fast_params: ClassVar[dict[str, Any]] = {
        "classical": "median",
        "deep": "dae",
        "deep_params": {"width": 4, "depth": 1},
    }

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        classical: str | Denoiser = "median",
        deep: str | Denoiser = "dae",
        mode: str = "classical_then_deep",
        alpha: float = 0.5,
        classical_params: Mapping[str, Any] | None = None,
        deep_params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds)
        owner = type(self).__name__
        self.mode = check_choice(str(mode).replace("-", "_"), "mode", list(MODES), owner)
        self.alpha = check_float(alpha, "alpha", owner, low=0.0, high=1.0, low_inclusive=True)
        self.classical = _child(classical, classical_params, "classical", self.in_channels, self.bounds)
        self.deep = _child(deep, deep_params, "deep", self.in_channels, self.bounds)
        if self.classical.kind != "classical":
            raise ConfigError(
                f"The 'classical' child of {owner} must be a classical denoiser. "
                f"Got {self.classical.name!r} (kind {self.classical.kind!r})."
            )
        if self.deep.kind != "deep":
            raise ConfigError(
                f"The 'deep' child of {owner} must be a deep denoiser. "
                f"Got {self.deep.name!r} (kind {self.deep.kind!r})."
            )
        self.differentiable = bool(self.classical.differentiable and self.deep.differentiable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise ``x`` (N, C, H, W) in ``bounds``."""
        x = plain(x)
        check_images(x, self)
        if self.mode == "classical_then_deep":
            return self.deep(self.classical(x))
        if self.mode == "deep_then_classical":
            return self.classical(self.deep(x))
        return self.clamp(self.alpha * self.classical(x) + (1.0 - self.alpha) * self.deep(x))

    def config(self) -> dict[str, Any]:
        """Constructor arguments; children are saved as name + parameters."""

        def child(d: Denoiser) -> dict[str, Any]:
            return {k: v for k, v in d.config().items() if k not in ("in_channels", "bounds")}

        return {
            **super().config(),
            "classical": self.classical.name,
            "deep": self.deep.name,
            "mode": self.mode,
            "alpha": self.alpha,
            "classical_params": child(self.classical),
            "deep_params": child(self.deep),
        }
