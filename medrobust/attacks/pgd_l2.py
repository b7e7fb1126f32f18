"""PGD with an L2 budget, torchattacks' ``PGDL2`` step inside card bounds.

Without random start (``random_start=False``), with ``bounds=(0, 1)``, ``fuse_bn=False`` and
``channels_last=False`` (the parity mode) the output equals ``torchattacks.PGDL2`` bit for bit. The random
start differs on purpose: torchattacks draws the radius as ``eps * u`` (points crowd
near the centre in high dimension); here it is uniform in the ball, ``eps * u ** (1/d)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._utils import bview, random_l2_ball
from medrobust.attacks.base import register_attack
from medrobust.attacks.pgd import PGD


@register_attack("pgd-l2")
class PGDL2(PGD):
    """Projected gradient descent on the cross-entropy loss, L2 ball.

    Steps move ``alpha`` along the L2-normalised gradient, then project onto the ball
    of radius ``eps`` and clamp to the bounds. Parameters as :class:`PGD`, with ``eps``
    and ``alpha`` as L2 lengths in image units (default ``alpha = 2.5 * eps / steps``).
    """

    norm: ClassVar[str | None] = "l2"
    fast_params: ClassVar[dict[str, Any]] = {"eps": 0.5, "steps": 3}

    def __init__(
        self,
        model: nn.Module,
        *,
        bounds: Any = None,
        seed: int = 0,
        eps: float = 0.5,
        alpha: float | None = None,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        channels_last: bool | None = None,
        **unused: Any,
    ) -> None:
        super().__init__(
            model,
            bounds=bounds,
            seed=seed,
            eps=eps,
            alpha=alpha,
            steps=steps,
            random_start=random_start,
            restarts=restarts,
            channels_last=channels_last,
            **unused,
        )

    def _start(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        low, high = self.bounds
        delta = random_l2_ball(images.shape, self.eps, generator, dtype=images.dtype, device=images.device)
        return torch.clamp(images + delta, min=low, max=high)

    def _box(self, images: torch.Tensor) -> None:
        """No per-pixel box for an L2 ball (the projection below is per sample)."""
        return None

    def _step(
        self, adv: torch.Tensor, grad: torch.Tensor, images: torch.Tensor, box: object = None
    ) -> torch.Tensor:
        # Same arithmetic as torchattacks.PGDL2 (for bit-identical results).
        low, high = self.bounds
        grad_norms = torch.norm(grad.flatten(1), p=2, dim=1) + 1e-10
        adv = adv + self.alpha * (grad / bview(grad_norms, grad))
        delta = adv - images
        delta_norms = torch.norm(delta.flatten(1), p=2, dim=1)
        factor = torch.min(self.eps / delta_norms, torch.ones_like(delta_norms))
        return torch.clamp(images + delta * bview(factor, delta), min=low, max=high)
