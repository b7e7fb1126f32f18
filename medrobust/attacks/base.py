"""The attack contract: every attack is one small file implementing :meth:`Attack._attack`.

An attack works in image space inside explicit ``bounds`` (from the model card
unless given), never touches global RNG state (an explicit ``torch.Generator``),
never leaves the model in training mode, and returns an :class:`AttackResult`
with per-sample information so the audit can report honest numbers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._layout import conv_weights_channels_last, use_channels_last
from medrobust.attacks.perturbation import Perturbation
from medrobust.errors import ConfigError
from medrobust.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack")


#: ``@register_attack("name", *aliases)``: registers the class and sets its ``name``.
register_attack = ATTACKS.decorator("name")


@dataclass
class AttackResult:
    """What an attack returns.

    Attributes:
        adv: Adversarial images, same shape/dtype/device as the input, inside the bounds.
        success: Bool per sample: the model's prediction on ``adv`` differs from the label
            (or equals the target for targeted attacks).
        linf: Per-sample L∞ norm of ``adv - images``.
        l2: Per-sample L2 norm of ``adv - images``.
        queries: Per-sample count of model forward evaluations (or iterations; see ``info``).
        info: Free-form notes recorded in results (e.g. "DLR replaced by margin loss, K<4").
    """

    adv: torch.Tensor
    success: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    queries: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


def perturbation_norms(adv: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (L∞, L2) norms of ``adv - images``."""
    delta = (adv - images).detach().flatten(1).float()
    return delta.abs().amax(dim=1), delta.norm(p=2, dim=1)


def plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """Strip MONAI ``MetaTensor`` (about 10 % slower in attack loops) to a plain tensor."""
    as_tensor = getattr(x, "as_tensor", None)
    return as_tensor() if callable(as_tensor) else x


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore each submodule's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


class Attack(Perturbation, ABC):
    """Base class of all classifier attacks.

    Subclasses set ``norm`` ("linf", "l2" or None for minimal-norm attacks; a bounded
    attack stores its budget in ``self.eps``), validate
    their own parameters in ``__init__`` (calling ``super().__init__`` first) and implement
    :meth:`_attack`. Call the attack like a function: ``result = attack(images, labels)``.

    Args:
        model: A classifier returning logits for inputs in image space.
        bounds: Intensity interval ``(low, high)``; defaults to ``model.card.bounds``.
        seed: Seed of the attack's private generator (recorded in results).
        targeted: Not all attacks support it; those that do document the target choice.
    """

    name: ClassVar[str] = "attack"
    minimal: ClassVar[bool] = False

    def __init__(self, model: nn.Module, *, bounds: Any = None, seed: int = 0, **unused: Any) -> None:
        super().__init__(model, bounds=bounds, seed=seed, **unused)
        self.model = model

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Model logits (float32)."""
        return self.model(x).float()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> AttackResult:
        """Attack ``images`` with true ``labels``; returns an :class:`AttackResult`."""
        images = plain_tensor(images).detach()
        labels = plain_tensor(labels).detach().long().view(-1)
        if images.ndim < 3 or images.shape[0] != labels.shape[0]:
            raise ConfigError(
                f"{type(self).__name__} expects images (N, C, ...) and labels (N,). "
                f"Got images {tuple(images.shape)} and labels {tuple(labels.shape)}."
            )
        low, high = self.bounds
        if images.numel() and (images.min() < low - 1e-6 or images.max() > high + 1e-6):
            raise ConfigError(
                f"{type(self).__name__}: images must lie inside bounds [{low:g}, {high:g}]. "
                f"Got values in [{images.min().item():g}, {images.max().item():g}]."
            )
        with eval_mode(self.model):
            with conv_weights_channels_last(self.model, self._feeds_channels_last(images)):
                out = self._attack(images, labels, self.generator(images.device))
            if isinstance(out, AttackResult):
                result = out
                if self.minimal:
                    # Minimal-perturbation attacks stop on the decision boundary, where the
                    # memory layout used while attacking can flip the argmax (seen with HU
                    # bounds): success is what the model as given predicts on the output.
                    with torch.no_grad():
                        result.success = self.logits(result.adv).argmax(dim=1) != labels
            else:
                adv = out.detach().clamp(low, high).to(images.dtype)
                with torch.no_grad():
                    pred = self.logits(adv).argmax(dim=1)
                linf, l2 = perturbation_norms(adv, images)
                result = AttackResult(
                    adv=adv,
                    success=pred != labels,
                    linf=linf,
                    l2=l2,
                    queries=torch.full_like(labels, getattr(self, "steps", 1)),
                )
        return result

    def _feeds_channels_last(self, images: torch.Tensor) -> bool:
        """True when this attack will pass ``channels_last`` inputs to a conv net.

        Attacks opt in with a ``channels_last`` attribute (``None`` = automatic). The
        conv weights are then stored in ``channels_last`` for the call too: a layout
        mismatch costs a re-layout per convolution (PGD on a 1-channel ``small_cnn`` ran
        1.9x faster with matching weights).
        """
        return hasattr(self, "channels_last") and use_channels_last(self.model, images, self.channels_last)

    @abstractmethod
    def _attack(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor | AttackResult:
        """Return adversarial images (or a full :class:`AttackResult`)."""


def create_attack(name: str, model: nn.Module, **params: Any) -> Attack:
    """Build a registered attack by name: ``create_attack("pgd", model, eps=2/255)``."""
    return ATTACKS.get(name)(model, **params)


def list_attacks() -> list[str]:
    """Names of all registered attacks."""
    return ATTACKS.names()
