"""The one perturbation base under classifier attacks and denoiser attacks.

Both kinds perturb images in image space, inside explicit intensity ``bounds`` (from the
model card, or the denoiser's own), with a private seeded generator, and take their budgets
in **one unit**: image units within the bounds, where ``"k/255"`` means k/255 of the bounds'
range (:func:`medrobust.validation.budget_to_image_units`). What differs is the target
(a classifier's decision, a denoiser's output error) and the result; subclasses
(:class:`~medrobust.attacks.base.Attack`, :class:`~medrobust.denoising.attacks.base.DenoiserAttack`)
add those.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.validation import budget_to_image_units, check_bounds, check_float, check_int


def resolve_bounds(module: nn.Module, bounds: Any, owner: str) -> tuple[float, float]:
    """Explicit ``bounds`` if given, else the module's card bounds or its ``bounds``; no silent [0, 1]."""
    if bounds is not None:
        return check_bounds(bounds, "bounds", owner)
    card = getattr(module, "card", None)
    if card is not None and getattr(card, "bounds", None) is not None:
        return check_bounds(card.bounds, "bounds", owner)
    own = getattr(module, "bounds", None)
    if own is not None and not callable(own):
        return check_bounds(own, "bounds", owner)
    raise ConfigError(
        f"{owner} needs intensity bounds: pass bounds=(low, high) or use a model with a card "
        "(medrobust.models.MedicalClassifier). Got a model without a card and bounds=None."
    )


class Perturbation:
    """What every attack shares: module, bounds, seed, parameter validation and the unit of ε.

    Args:
        module: The attacked network (a classifier or a denoiser).
        bounds: Intensity interval ``(low, high)``; defaults to the module's card bounds.
        seed: Seed of the attack's private generator (recorded in results).
    """

    name: ClassVar[str] = "perturbation"
    norm: ClassVar[str | None] = None
    gradient_free: ClassVar[bool] = False
    #: Cheap settings used by the conformance tests and smoke runs (e.g. few steps).
    fast_params: ClassVar[dict[str, Any]] = {}
    #: Name of the constructor's first argument (left out of :meth:`param_names`).
    module_arg: ClassVar[str] = "model"

    def __init__(self, module: nn.Module, *, bounds: Any = None, seed: int = 0, **unused: Any) -> None:
        owner = type(self).__name__
        if unused:
            raise ConfigError(
                f"{owner} got unexpected parameter(s) {sorted(unused)}. "
                f"Valid parameters: {sorted(self.param_names())}."
            )
        if not isinstance(module, nn.Module):
            raise ConfigError(f"The {self.module_arg!r} parameter of {owner} must be a torch.nn.Module.")
        self.bounds = resolve_bounds(module, bounds, owner)
        self.seed = check_int(seed, "seed", owner, low=0, high=2**63 - 1)

    @property
    def width(self) -> float:
        """``bounds[1] − bounds[0]``: what ``"1/1"`` means in image units."""
        return self.bounds[1] - self.bounds[0]

    def budget(self, value: Any, name: str = "eps", linf: bool = True) -> float:
        """A budget or step size in image units (``"k/255"`` → k/255 of the range), validated.

        Args:
            value: The parameter as given (number in image units, or ``"k/255"``).
            name: Parameter name, for messages.
            linf: Cap at the bounds' width (an L∞ budget or step cannot exceed the range).
        """
        owner = type(self).__name__
        units = budget_to_image_units(value, self.bounds, name, owner)
        return check_float(units, name, owner, low=0.0, high=self.width if linf else None)

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the keyword parameters this attack accepts."""
        names: set[str] = set()
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"):
                    names.add(p.name)
        names.discard("module")
        names.discard(cls.module_arg)
        return sorted(names)

    def params(self) -> dict[str, Any]:
        """The attack's resolved parameters (recorded beside results)."""
        return {k: getattr(self, k) for k in self.param_names() if hasattr(self, k)}

    @classmethod
    def check_params(cls, params: dict[str, Any], bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        """Validate ``params`` as the constructor would, without a model (configs call this early).

        Raises:
            ConfigError: naming the first invalid parameter, as the constructor does.
        """
        cls(nn.Identity(), bounds=bounds, **params)

    def generator(self, device: torch.device | str) -> torch.Generator:
        """A fresh generator seeded with ``self.seed`` on ``device`` (same seed, same output)."""
        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed)
        return gen
