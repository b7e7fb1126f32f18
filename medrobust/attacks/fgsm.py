"""FGSM (Goodfellow et al., 2015): one signed-gradient step of size ``eps``.

With ``bounds=(0, 1)``, ``fuse_bn=False`` and ``channels_last=False`` (the parity mode) the
output equals ``torchattacks.FGSM(model, eps)`` bit for bit.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks._utils import check_bool, frozen_params, make_result, to_format, use_channels_last
from medrobust.attacks.base import Attack, AttackResult, register_attack


@register_attack("fgsm")
class FGSM(Attack):
    """Fast gradient sign method on the cross-entropy loss (L∞ budget ``eps``).

    Args:
        model: Classifier returning logits.
        bounds: Intensity interval; defaults to the model card's bounds.
        seed: Unused by the algorithm (deterministic); recorded in results.
        eps: L∞ step and budget in image units.
        channels_last: Memory format for 4-D inputs; ``None`` picks ``channels_last``
            for conv nets.
        fuse_bn: Query a conv-BN folded copy (see :class:`~medrobust.attacks.base.Attack`).
    """

    norm: ClassVar[str | None] = "linf"
    fast_params: ClassVar[dict[str, Any]] = {"eps": 0.03}

    def __init__(
        self,
        model: nn.Module,
        *,
        bounds: Any = None,
        seed: int = 0,
        eps: float = 8 / 255,
        channels_last: bool | None = None,
        **unused: Any,
    ) -> None:
        super().__init__(model, bounds=bounds, seed=seed, **unused)
        owner = type(self).__name__
        self.eps = self.budget(eps, "eps")
        self.channels_last = check_bool(channels_last, "channels_last", owner, allow_none=True)

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> AttackResult:
        low, high = self.bounds
        cl = use_channels_last(self.model, images, self.channels_last)
        x = to_format(images, cl).clone().requires_grad_(True)
        with frozen_params(self.net):
            loss = F.cross_entropy(self.net(x), labels)
            (grad,) = torch.autograd.grad(loss, x)
        adv = torch.clamp(x.detach() + self.eps * grad.sign(), min=low, max=high)
        # 1 forward + backward, 1 forward of the model as given (success, in __call__)
        queries = torch.full_like(labels, 2)
        return make_result(adv, images, None, queries, {"channels_last": cl})
