"""APGD-DLR: untargeted Auto-PGD on the DLR loss (Croce & Hein, ICML 2020), any K >= 2, with optional EOT."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from medrobust.attacks._apgd import LossFn
from medrobust.attacks._utils import margin
from medrobust.attacks.apgd_ce import APGDCE
from medrobust.attacks.base import register_attack

#: Note recorded in ``AttackResult.info`` when the DLR loss is replaced (K < 3).
DLR_MARGIN_NOTE = "untargeted DLR loss needs K >= 3 classes (3rd largest logit); replaced by the margin loss"


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Untargeted DLR loss to maximise: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` (K >= 3)."""
    logits = logits.float()
    top = logits.topk(3, dim=1).values
    return -margin(logits, labels) / (top[:, 0] - top[:, 2] + 1e-12)


@register_attack("apgd-dlr")
class APGDDLR(APGDCE):
    """Auto-PGD on the untargeted DLR loss (the second attack of AutoAttack's ``rand`` version).

    DLR is invariant to shifting and rescaling the logits, so it does not suffer from the
    saturated cross-entropy of over-confident models. It needs the third-largest logit; for
    ``K = 2`` the margin loss ``max_{i != y} z_i - z_y`` is used and ``info["notes"]`` says so.

    Args:
        eps, norm, steps, restarts, rho, eot_iter, channels_last, bounds, seed: As in
            :class:`~medrobust.attacks.apgd_ce.APGDCE`.
    """

    fast_params: ClassVar[dict[str, Any]] = {"steps": 3}
    loss_name: ClassVar[str] = "dlr"

    def _loss(self, num_classes: int) -> tuple[str, LossFn, list[str]]:
        """DLR for ``K >= 3``, else the margin loss (with a note)."""
        if num_classes >= 3:
            return "dlr", lambda z, y, t: dlr_loss(z, y), []
        return "margin", lambda z, y, t: -margin(z, y), [f"K={num_classes}: {DLR_MARGIN_NOTE}"]
