"""Randomised denoisers: the contract of a defense whose forward pass draws random numbers.

A randomised defense (noise injection, random resize-and-pad, dropout kept at test time)
gives a different output at every call. Single-pass gradients of such a target are noisy, so
an honest adaptive evaluation attacks it with Expectation over Transformation (EOT: the
gradient averaged over many draws; ``eot-pgd``, ``apgd-ce``/``apgd-dlr`` with ``eot_iter``,
``AutoAttack(version="rand")``). This module holds what every randomised module shares:

* ``stochastic = True`` on the class, so the audit and the attacks can tell a randomised target
  from a deterministic one without running it (:func:`is_stochastic`);
* its own random stream: with ``seed`` set, a private ``torch.Generator`` per device seeded with
  it (runs are reproducible: the same seed gives the same sequence of draws); with ``seed=None``
  the global torch RNG;
* :func:`generator_override`: an attack (or the smoothing sampler) routes every randomised module of
  a model to *its* generator for a block, so its results depend on its own seed only, not on
  how often the model was called before.

Each registered randomised denoiser is one small file (``noise_injection.py``,
``random_resize_pad.py``) and may wrap an inner denoiser (e.g. a trained DAE) that runs after
the random transform.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.defenses.denoisers._common import check_images, plain
from medrobust.defenses.denoisers.base import Denoiser, create_denoiser
from medrobust.errors import ConfigError
from medrobust.validation import check_int

__all__ = ["RandomizedDenoiser", "generator_override", "is_stochastic", "stochastic_modules"]


def stochastic_modules(model: nn.Module) -> list[nn.Module]:
    """The submodules of ``model`` (itself included) that declare ``stochastic = True``."""
    return [m for m in model.modules() if getattr(m, "stochastic", False) is True]


def is_stochastic(model: nn.Module) -> bool:
    """True when ``model`` contains a module declaring ``stochastic = True`` (a randomised defense).

    This reads the declaration only; :mod:`medrobust.evaluation.flags` also checks empirically
    (two forward passes) for undeclared randomness such as dropout left on in ``eval()``.
    """
    return bool(stochastic_modules(model))


@contextmanager
def generator_override(model: nn.Module, generator: torch.Generator | None) -> Iterator[nn.Module]:
    """Make every randomised module of ``model`` draw from ``generator`` for the block.

    ``None`` leaves the modules' own streams in place. Modules are restored afterwards even
    when the block raises.
    """
    mods = [m for m in stochastic_modules(model) if isinstance(m, RandomizedDenoiser)]
    saved = [m._override for m in mods]
    if generator is not None:
        for m in mods:
            m._override = generator
    try:
        yield model
    finally:
        for m, old in zip(mods, saved, strict=True):
            m._override = old


def _inner(
    spec: str | Denoiser | None, params: Mapping[str, Any] | None, owner: str, in_channels: int, bounds: Any
) -> Denoiser | None:
    """The wrapped denoiser: None (identity), a registered name built with ``params``, or an instance."""
    if spec is None:
        if params:
            raise ConfigError(f"The 'inner_params' parameter of {owner} needs 'inner'. Got inner=None.")
        return None
    if isinstance(spec, Denoiser):
        if params:
            raise ConfigError(f"{owner}: pass 'inner_params' only with a denoiser name, not an instance.")
        if spec.in_channels != in_channels or tuple(spec.bounds) != tuple(bounds):
            raise ConfigError(
                f"{owner}: the inner denoiser has in_channels={spec.in_channels}, bounds={spec.bounds}; "
                f"expected in_channels={in_channels}, bounds={tuple(bounds)}."
            )
        return spec
    if not isinstance(spec, str):
        raise ConfigError(
            f"The 'inner' parameter of {owner} must be a denoiser name, instance or None. Got {spec!r}."
        )
    return create_denoiser(spec, in_channels=in_channels, bounds=bounds, **dict(params or {}))


class RandomizedDenoiser(Denoiser):
    """Base of randomised denoisers: a random transform, then an optional inner denoiser.

    Subclasses implement :meth:`_transform` (images in ``bounds`` → randomly transformed images,
    drawing only through :meth:`randn` / :meth:`rand`); the output of the module is clamped to
    ``bounds`` (by the inner denoiser when there is one). ``differentiable``
    follows the inner denoiser (the transforms shipped are differentiable).

    Args:
        in_channels: Image channels.
        bounds: Intensity interval of inputs and outputs.
        inner: Denoiser applied after the random transform: a registered name (built with
            ``inner_params``), an instance (e.g. a trained DAE from ``load_denoiser``) or None.
        inner_params: Constructor arguments of a named inner denoiser.
        seed: Seed of the private random stream (reproducible runs); None: the global torch RNG.
    """

    kind = "hybrid"
    differentiable = True
    #: Every forward pass draws random numbers: attacks need EOT, the audit flags it.
    stochastic: ClassVar[bool] = True
    fast_params: ClassVar[dict[str, Any]] = {"seed": 0}

    def __init__(
        self,
        in_channels: int = 1,
        bounds: Any = (0.0, 1.0),
        inner: str | Denoiser | None = None,
        inner_params: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(in_channels=in_channels, bounds=bounds)
        owner = type(self).__name__
        self.seed = None if seed is None else check_int(seed, "seed", owner, low=0, high=2**63 - 1)
        self.inner = _inner(inner, inner_params, owner, self.in_channels, self.bounds)
        if self.inner is not None:
            self.differentiable = bool(self.inner.differentiable)
        self._generators: dict[str, torch.Generator] = {}
        self._override: torch.Generator | None = None

    # -- randomness ---------------------------------------------------------------------------
    def reseed(self, seed: int | None) -> None:
        """Restart the private stream from ``seed`` (None: use the global torch RNG from now on)."""
        owner = type(self).__name__
        self.seed = None if seed is None else check_int(seed, "seed", owner, low=0, high=2**63 - 1)
        self._generators.clear()

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self._override is not None:
            return self._override
        if self.seed is None:
            return None
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._generators[key] = gen
        return gen

    def _draw(self, kind: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        gen = self._generator(like.device)
        device = like.device if gen is None else gen.device
        fn = torch.randn if kind == "normal" else torch.rand
        out = fn(shape, generator=gen, device=device, dtype=torch.float32)
        return out.to(device=like.device, dtype=like.dtype)

    def randn(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Standard normal draws of ``shape`` on ``like``'s device and dtype, from this module's stream."""
        return self._draw("normal", tuple(shape), like)

    def rand(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) draws of ``shape`` on ``like``'s device and dtype, from this module's stream."""
        return self._draw("uniform", tuple(shape), like)

    # -- forward --------------------------------------------------------------------------------
    def _transform(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Randomly transform ``x`` (N, C, H, W) in ``bounds``, then apply the inner denoiser."""
        x = plain(x)
        check_images(x, self)
        out = self._transform(x)
        # The inner denoiser sees the transform's output as is; the module's output is in bounds.
        return self.clamp(out) if self.inner is None else self.inner(out)

    def config(self) -> dict[str, Any]:
        """Constructor arguments; the inner denoiser is saved as name + parameters."""
        cfg: dict[str, Any] = {**super().config(), "seed": self.seed}
        if self.inner is not None:
            cfg["inner"] = self.inner.name
            cfg["inner_params"] = {
                k: v for k, v in self.inner.config().items() if k not in ("in_channels", "bounds")
            }
        return cfg
