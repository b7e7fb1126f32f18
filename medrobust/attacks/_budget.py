"""Base class of the budgeted AutoAttack components (APGD, FAB-T, Square): eps + norm (private)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._utils import to_format, use_channels_last
from medrobust.attacks.base import Attack
from medrobust.errors import ConfigError
from medrobust.validation import check_choice


class BudgetAttack(Attack):
    """An attack with a budget ``eps`` in the L∞ or L2 norm, in image units.

    Args:
        model: Classifier returning logits.
        eps: Budget; for L∞ at most the width of the bounds.
        norm: "linf" or "l2".
        channels_last: Use ``channels_last`` for 4-D inputs (None: on for conv nets).
        bounds, seed: See :class:`~medrobust.attacks.base.Attack`.
    """

    norm: ClassVar[str | None] = "linf"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: Any = 8 / 255,
        norm: str = "linf",
        channels_last: bool | None = None,
        bounds: Any = None,
        seed: int = 0,
        **unused: Any,
    ) -> None:
        super().__init__(model, bounds=bounds, seed=seed, **unused)
        owner = type(self).__name__
        self.norm = check_choice(norm, "norm", ("linf", "l2"), owner)
        self.eps = self.budget(eps, "eps", linf=self.norm == "linf")
        if channels_last is not None and not isinstance(channels_last, bool):
            raise ConfigError(
                f"The 'channels_last' parameter of {owner} must be a bool or None. Got {channels_last!r}."
            )
        self.channels_last = channels_last

    def _logits_fn(self, images: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Model forward (float logits), in ``channels_last`` where it helps."""
        cl = use_channels_last(self.model, images, self.channels_last)
        return lambda x: self.query(to_format(x, cl))
