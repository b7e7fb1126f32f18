"""Crafting the adversarial twins used to train defenses (an attack mix at random budgets)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from torch import nn

from medrobust.validation import (
    budget_to_image_units,
    check_choice,
    check_int,
    is_range_fraction,
    parse_number,
)

#: Attacks usable in a training mix (L-infinity, cheap, deterministic given a seed).
MIX_ATTACKS = ("fgsm", "pgd")


class AttackMixItem(BaseModel):
    """One attack of the training mix.

    Attributes:
        name: "fgsm" or "pgd".
        eps: ``[low, high]`` budget range in the one unit of ε: ``"k/255"`` is k/255 of the
            card's range (``["1/255", "8/255"]``), a number is in image units (HU on a CT card);
            a budget is drawn uniformly per batch.
        steps: PGD steps (ignored by FGSM).
        weight: Relative probability of picking this attack for a batch.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    eps: tuple[float | str, float | str]
    steps: int = 5
    weight: float = 1.0

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> str:
        return check_choice(str(v).strip().lower(), "name", MIX_ATTACKS, "the attack mix")

    @field_validator("eps", mode="before")
    @classmethod
    def _eps(cls, v: Any) -> tuple[float | str, float | str]:
        if isinstance(v, (str, int, float)):
            v = [v, v]
        if not isinstance(v, Sequence) or len(v) != 2:
            raise ValueError(f"eps must be a range [low, high] (fractions like '2/255' accepted). Got {v!r}.")
        lo, hi = (parse_number(e, "eps", "the attack mix") for e in v)
        if not 0.0 < lo <= hi or is_range_fraction(v[0]) != is_range_fraction(v[1]):
            raise ValueError(
                f"eps range must satisfy 0 < low <= high, both written alike ('k/255' or image units). "
                f"Got [{v[0]!r}, {v[1]!r}]."
            )
        return tuple(e.strip() if isinstance(e, str) else float(e) for e in v)  # type: ignore[return-value]

    @model_validator(mode="after")
    def _rest(self) -> AttackMixItem:
        check_int(self.steps, "steps", "the attack mix", low=1, high=1000)
        if not self.weight > 0:
            raise ValueError(f"weight must be > 0. Got {self.weight!r}.")
        return self


def default_mix() -> list[AttackMixItem]:
    """FGSM and 5-step PGD, each with budgets in [1/255, 8/255] of the intensity range."""
    return [
        AttackMixItem(name="fgsm", eps=("1/255", "8/255")),
        AttackMixItem(name="pgd", eps=("1/255", "8/255"), steps=5),
    ]


def craft(
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mix: Sequence[AttackMixItem],
    rng: np.random.Generator,
    bounds: tuple[float, float],
) -> torch.Tensor:
    """Adversarial twins of ``x`` against ``classifier`` with one attack and budget drawn from ``mix``.

    Args:
        classifier: The frozen target classifier (attacks restore its modes).
        x: Clean images in ``bounds``.
        y: Labels.
        mix: The attack mix.
        rng: NumPy generator choosing the attack, the budget and the attack's seed.
        bounds: Intensity interval ("k/255" budgets are k/255 of its width).

    Returns:
        Detached adversarial images, same shape as ``x``.
    """
    from medrobust.attacks import create_attack

    weights = np.array([m.weight for m in mix], dtype=float)
    item = mix[int(rng.choice(len(mix), p=weights / weights.sum()))]
    lo, hi = (budget_to_image_units(e, bounds, "eps", "the attack mix") for e in item.eps)
    eps = float(rng.uniform(lo, hi))
    params: dict[str, Any] = {"eps": eps, "bounds": bounds, "seed": int(rng.integers(0, 2**31 - 1))}
    if item.name == "pgd":
        params["steps"] = item.steps
    return create_attack(item.name, classifier, **params)(x, y).adv.detach()
