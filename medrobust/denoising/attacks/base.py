"""The denoiser-attack contract (denoising-PGD and friends).

A denoiser attack perturbs a *noisy* input ``y = x + n`` by ``δ`` inside a norm ball
so that the denoiser's output error ``‖D(y + δ) − x‖²`` grows. It never needs labels.

Bounds and noisy inputs (the rule used everywhere in :mod:`medrobust.denoising`):

* ``x`` lies in the denoiser's ``bounds``; ``y = x + n`` is **not** clipped (additive
  white Gaussian noise, the model the deep denoisers are trained on), so ``y`` may leave
  ``bounds`` by a few σ.
* ``δ`` is limited by the ball only (``‖δ‖∞ ≤ ε`` or ``‖δ‖₂ ≤ ε``); by default ``y + δ``
  is **not** clamped either, so ``y + δ`` exceeds the range of ``y`` by at most ε.
* Optionally ``clip_range=(low, high)`` clamps ``y + δ`` to an explicit (usually
  extended) interval, e.g. ``(bounds[0] − 3σ, bounds[1] + 3σ)``, and the result is
  projected back into the ε-ball: the budget always holds, and where ``y`` itself lies
  outside ``clip_range`` by more than ε, ``y + δ`` only moves toward it.

Budgets ``eps`` and step sizes ``alpha`` are in **image units** within the bounds, the one
unit of ε shared with the classifier attacks and the audit
(:func:`medrobust.validation.budget_to_image_units`): ``"4/255"`` means 4/255 of the range
``bounds[1] − bounds[0]`` (four grey levels of an 8-bit image), a plain number is already in
image units (HU on a CT card). The same ε therefore gives the same perturbation norm
whether a classifier or a denoiser is attacked.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks.base import eval_mode, plain_tensor
from medrobust.attacks.perturbation import Perturbation
from medrobust.errors import ConfigError
from medrobust.registry import Registry
from medrobust.validation import check_bounds

DENOISER_ATTACKS: Registry[type[DenoiserAttack]] = Registry("denoiser attack")


#: ``@register_denoiser_attack("name", *aliases)``: registers the class and sets its ``name``.
register_denoiser_attack = DENOISER_ATTACKS.decorator("name")


@dataclass
class DenoiserAttackResult:
    """What a denoiser attack returns.

    Attributes:
        delta: The perturbation ``δ`` (same shape as ``y``), intensity units.
        adv: The attacked input ``y + δ``.
        linf: Per-image ``‖δ‖∞`` (intensity units).
        l2: Per-image ``‖δ‖₂`` (intensity units).
        mse_clean: Per-image ``mean((D(y) − x)²)``.
        mse_adv: Per-image ``mean((D(y + δ) − x)²)``.
        queries: Per-image number of denoiser forward passes.
        method: "gradient" (exact autograd), "bpda" (straight-through gradient through
            a non-differentiable denoiser), "spsa" (gradient-free) or "random".
        info: Free-form notes (parameters in absolute units, mean of δ, ...).
    """

    delta: torch.Tensor
    adv: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    mse_clean: torch.Tensor
    mse_adv: torch.Tensor
    queries: torch.Tensor
    method: str
    info: dict[str, Any] = field(default_factory=dict)


def per_image_mse(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, float32, shape (N,)."""
    return (out.float() - x.float()).flatten(1).pow(2).mean(dim=1)


class DenoiserAttack(Perturbation, ABC):
    """Base class of attacks on denoisers (the :class:`~medrobust.attacks.perturbation.Perturbation` base).

    Subclasses set ``norm`` ("linf" or "l2"), validate their parameters in ``__init__``
    (after ``super().__init__``; budgets through :meth:`budget`) and implement
    :meth:`_attack`. Call the attack like a function: ``result = attack(x, y)`` with clean
    ``x`` and noisy ``y``.

    Args:
        denoiser: A :class:`~medrobust.defenses.denoisers.base.Denoiser` (or any module
            mapping images to images; then pass ``bounds``).
        bounds: Intensity interval of clean images; defaults to ``denoiser.bounds``.
        clip_range: Optional ``(low, high)`` clamp applied to ``y + δ`` (see module doc).
        seed: Seed of the attack's private generator.
    """

    name: ClassVar[str] = "denoiser-attack"
    norm: ClassVar[str] = "linf"
    module_arg: ClassVar[str] = "denoiser"

    def __init__(
        self, denoiser: nn.Module, *, bounds: Any = None, clip_range: Any = None, seed: int = 0, **unused: Any
    ) -> None:
        super().__init__(denoiser, bounds=bounds, seed=seed, **unused)
        self.denoiser = denoiser
        owner = type(self).__name__
        self.clip_range = None if clip_range is None else check_bounds(clip_range, "clip_range", owner)

    @property
    def method(self) -> str:
        """How gradients are obtained: "gradient", "bpda", "spsa" or "random"."""
        return "gradient" if getattr(self.denoiser, "differentiable", True) else "bpda"

    def loss(self, y_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-image squared output error ``‖D(y + δ) − x‖²`` (N,)."""
        return (self.denoiser(y_adv).float() - x.float()).flatten(1).pow(2).sum(dim=1)

    def project_ball(self, delta: torch.Tensor) -> torch.Tensor:
        """Project ``δ`` onto the attack's ε-ball (``self.eps`` in image units, ``self.norm``)."""
        eps = float(getattr(self, "eps", math.inf))
        if self.norm == "l2":
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (delta.ndim - 1)))
            return delta * (eps / norms).clamp(max=1.0)
        return delta.clamp(-eps, eps)

    def apply(self, y: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``y + δ``; with ``clip_range``, clamped to it and then projected back into the ε-ball.

        The budget always wins: where ``y`` itself lies outside ``clip_range`` by more than ε,
        ``y + δ`` moves toward the range by at most ε instead of reaching it.
        """
        if self.clip_range is None:
            return y + delta
        return y + self.project_ball((y + delta).clamp(*self.clip_range) - y)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, score: bool = True) -> DenoiserAttackResult:
        """Attack noisy ``y`` whose clean image is ``x``; returns a :class:`DenoiserAttackResult`.

        Args:
            x: Clean images (N, C, ...) inside ``bounds``.
            y: Noisy images ``x + n`` (not clipped).
            score: Also compute ``mse_clean`` / ``mse_adv`` (two extra forward passes);
                when False they are NaN (callers that score outputs themselves).
        """
        x = plain_tensor(x).detach()
        y = plain_tensor(y).detach()
        owner = type(self).__name__
        if x.shape != y.shape or x.ndim < 3:
            raise ConfigError(
                f"{owner} expects clean x and noisy y of the same shape (N, C, ...). "
                f"Got {tuple(x.shape)} and {tuple(y.shape)}."
            )
        low, high = self.bounds
        if x.numel() and (x.min() < low - 1e-6 or x.max() > high + 1e-6):
            raise ConfigError(
                f"{owner}: clean images must lie inside bounds [{low:g}, {high:g}]. "
                f"Got values in [{x.min().item():g}, {x.max().item():g}]."
            )
        gen = self.generator(y.device)
        with eval_mode(self.denoiser):
            delta, queries, info = self._attack(x, y, gen)
            delta = delta.detach()
            adv = self.apply(y, delta).detach()
            delta = adv - y
            if score:
                with torch.no_grad():
                    mse_clean = per_image_mse(self.denoiser(y), x)
                    mse_adv = per_image_mse(self.denoiser(adv), x)
            else:
                mse_clean = mse_adv = torch.full((x.shape[0],), float("nan"))
        flat = delta.flatten(1).float()
        info = {**info, "params": self.params(), "norm": self.norm, "range": self.width}
        return DenoiserAttackResult(
            delta=delta,
            adv=adv,
            linf=flat.abs().amax(dim=1),
            l2=flat.norm(dim=1),
            mse_clean=mse_clean,
            mse_adv=mse_adv,
            queries=torch.full((x.shape[0],), int(queries) + (2 if score else 0), dtype=torch.long),
            method=info.pop("method", self.method),
            info=info,
        )

    def ascend(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        delta: torch.Tensor,
        steps: int,
        step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """Gradient ascent on :meth:`loss` from ``delta``; the δ with the largest loss per image.

        Args:
            x: Clean images.
            y: Noisy images.
            delta: Starting perturbation.
            steps: Number of gradient steps (``steps + 1`` forward passes: the last iterate is scored).
            step: ``step(delta, grad) -> new delta`` (the norm's update and projection), under no_grad.

        Returns:
            The best δ seen over all iterates, per image.
        """
        best = delta.clone()
        best_loss = torch.full((y.shape[0],), -float("inf"), device=y.device)
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = self.loss(self.apply(y, delta), x)
            (grad,) = torch.autograd.grad(loss.sum(), delta)
            with torch.no_grad():
                better = loss.detach() > best_loss
                best[better] = delta.detach()[better]
                best_loss = torch.where(better, loss.detach(), best_loss)
                delta = step(delta.detach(), grad)
        with torch.no_grad():
            better = self.loss(self.apply(y, delta), x) > best_loss
            best[better] = delta[better]
        return best

    @abstractmethod
    def _attack(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        """Return ``(δ, forward passes used, info)``."""


def create_denoiser_attack(name: str, denoiser: nn.Module, **params: Any) -> DenoiserAttack:
    """Build a registered denoiser attack: ``create_denoiser_attack("denoise-pgd", d, eps=4/255)``."""
    return DENOISER_ATTACKS.get(name)(denoiser, **params)


def list_denoiser_attacks() -> list[str]:
    """Names of all registered denoiser attacks."""
    return DENOISER_ATTACKS.names()
