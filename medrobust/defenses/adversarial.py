"""Crafting the adversarial twins used to train defenses (an attack mix at random budgets).

Two adversaries (``TrainDefenseConfig.adversary``):

* ``graybox`` – the twins are crafted against the bare frozen classifier ``f`` (:func:`craft`);
  the denoiser never sees an attack aimed at itself.
* ``adaptive`` – the twins are crafted end to end against ``f∘D`` with the *current* denoiser
  ``D`` (:func:`craft_adaptive`), regenerated every batch, so ``D`` is trained on the attacks
  an adaptive attacker would run against the deployed pipeline (adversarial training of the
  denoiser, Madry et al. 2018, with the classifier frozen).
"""

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
#: Who the training twins are crafted against: the bare classifier or the current ``f∘D``.
ADVERSARIES = ("adaptive", "graybox")


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


def default_adaptive_mix() -> list[AttackMixItem]:
    """2-step PGD (random start, step 1.25 ε) at 8/255 of the intensity range, through ``f∘D``.

    Few steps with a large step size keep the adaptive training cost near the gray-box one
    (each step is a forward and an input-gradient backward through the denoiser and the
    classifier); the fixed budget is the largest one the audit asks a defense to survive.
    """
    return [AttackMixItem(name="pgd", eps=("8/255", "8/255"), steps=2)]


def craft(
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mix: Sequence[AttackMixItem],
    rng: np.random.Generator,
    bounds: tuple[float, float],
    *,
    fuse_bn: bool = True,
) -> torch.Tensor:
    """Adversarial twins of ``x`` against ``classifier`` with one attack and budget drawn from ``mix``.

    Args:
        classifier: The frozen target (attacks restore its modes); any module returning logits.
        x: Clean images in ``bounds``.
        y: Labels.
        mix: The attack mix.
        rng: NumPy generator choosing the attack, the budget and the attack's seed.
        bounds: Intensity interval ("k/255" budgets are k/255 of its width).
        fuse_bn: Let the attack query a BatchNorm-folded copy (worth it only for a target whose
            weights stay fixed between calls; the copy is rebuilt whenever they change).

    Returns:
        Detached adversarial images, same shape as ``x``.
    """
    from medrobust.attacks import create_attack

    weights = np.array([m.weight for m in mix], dtype=float)
    item = mix[int(rng.choice(len(mix), p=weights / weights.sum()))]
    lo, hi = (budget_to_image_units(e, bounds, "eps", "the attack mix") for e in item.eps)
    eps = float(rng.uniform(lo, hi))
    params: dict[str, Any] = {
        "eps": eps,
        "bounds": bounds,
        "seed": int(rng.integers(0, 2**31 - 1)),
        "fuse_bn": fuse_bn,
    }
    if item.name == "pgd":
        params["steps"] = item.steps
    return create_attack(item.name, classifier, **params)(x, y).adv.detach()


def craft_adaptive(
    denoiser: nn.Module,
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mix: Sequence[AttackMixItem],
    rng: np.random.Generator,
    bounds: tuple[float, float],
) -> torch.Tensor:
    """Adversarial twins of ``x`` crafted end to end through the current denoiser: ``f(D(x'))``.

    The attack differentiates through ``D`` and ``f`` with both in eval mode (their modes are
    restored afterwards) and their parameters frozen for the attack only, so crafting adds no
    weight gradients; the returned images are detached, and the training step that follows
    sends the loss gradients of the adversarial branch into ``D``'s parameters. ``D`` changes
    every batch, so no BatchNorm-folded copy is built.

    Args:
        denoiser: The denoiser being trained (a :class:`~medrobust.defenses.denoisers.base.Denoiser`).
        classifier: The frozen classifier (with a model card).
        x: Clean images in ``bounds``.
        y: Labels.
        mix: The adaptive attack mix (:func:`default_adaptive_mix`).
        rng: NumPy generator choosing the attack, the budget and the attack's seed.
        bounds: Intensity interval.

    Returns:
        Detached adversarial images, same shape as ``x``.
    """
    from medrobust.defenses.defended import defend

    return craft(defend(classifier, denoiser), x, y, mix, rng, bounds, fuse_bn=False)


def ball_noise(
    x: torch.Tensor, eps: float, bounds: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """``x`` plus uniform noise in the L∞ ball of radius ``eps`` (image units), clamped to ``bounds``.

    The twins of the adaptive adversary's warm start (PGD's random start without gradient steps);
    ``generator`` is a CPU generator, so the draw does not depend on the device.
    """
    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x) * 2.0 - 1.0
    return (x + eps * noise).clamp(bounds[0], bounds[1]).detach()


def ramp_scale(done: int, ramp: int) -> float:
    """Factor of a linear ramp: ``done / ramp`` within ``[0, 1]`` (1 when ``ramp`` is 0)."""
    if ramp <= 0:
        return 1.0
    return min(1.0, max(0.0, done / ramp))


def adversary_record(
    adversary: str,
    mix: Sequence[AttackMixItem],
    bounds: tuple[float, float],
    *,
    warmup_epochs: int = 0,
    cls_ramp_epochs: int = 0,
) -> dict[str, Any]:
    """The training adversary as plain values (for ``denoiser.json``, ``summary.json`` and the card notes).

    Args:
        adversary: "adaptive" or "graybox".
        mix: Its attack mix.
        bounds: Intensity interval.
        warmup_epochs: Warm-start epochs before the adaptive adversary is used.
        cls_ramp_epochs: Adversarial epochs over which the classification weight ramps up.

    Returns:
        ``{"adversary", "target", "warmup_epochs", "cls_ramp_epochs", "attacks": [{"name", "eps"
        (as written), "eps_image_units", "steps", "weight"}]}``; ``steps`` is None for FGSM.
    """
    target = (
        "f∘D (current denoiser, regenerated every batch)"
        if adversary == "adaptive"
        else "f (bare classifier)"
    )
    return {
        "adversary": adversary,
        "target": target,
        "warmup_epochs": int(warmup_epochs),
        "cls_ramp_epochs": int(cls_ramp_epochs),
        "attacks": [
            {
                "name": m.name,
                "eps": list(m.eps),
                "eps_image_units": [budget_to_image_units(e, bounds, "eps", "the attack mix") for e in m.eps],
                "steps": m.steps if m.name == "pgd" else None,
                "weight": m.weight,
            }
            for m in mix
        ],
    }


def describe_adversary(record: dict[str, Any]) -> str:
    """One line for the card notes: ``"Trained against an adaptive adversary (PGD-2 at 8/255 ...)."``."""
    parts = []
    for a in record["attacks"]:
        lo, hi = a["eps"]
        budget = f"{lo}" if lo == hi else f"[{lo}, {hi}]"
        parts.append(f"{a['name'].upper()}{'-' + str(a['steps']) if a['steps'] else ''} at eps {budget}")
    text = f"Training adversary: {record['adversary']} ({', '.join(parts)} against {record['target']})"
    if record.get("warmup_epochs"):
        text += (
            f"; the first {record['warmup_epochs']} epoch(s) were a reconstruction warm start (uniform noise "
            "in the eps-ball, no attack, no classification term)"
        )
    if record.get("cls_ramp_epochs"):
        text += (
            f"; the classification weight then ramped up linearly over {record['cls_ramp_epochs']} epoch(s)"
        )
    return text + "."
