"""Per-sample losses used by APGD, APGD-T, Square and SPSA (private helper module).

All losses take float logits ``(N, K)`` and return one value per sample. They work
for any number of classes ``K >= 2`` except :func:`dlr_targeted`, which needs the
fourth-largest logit (``K >= 4``); :func:`targeted_loss` picks the substitute.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from medrobust.attacks._utils import ce_loss, margin

__all__ = ["ce_loss", "dlr_targeted", "margin", "margin_targeted", "targeted_loss"]

#: Note recorded in ``AttackResult.info`` when the DLR loss is replaced (K < 4).
DLR_SUBSTITUTE_NOTE = (
    "targeted DLR loss needs K >= 4 classes (3rd and 4th largest logits); "
    "replaced by the targeted margin (CW) loss z_t - z_y"
)


def _pick(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, index[:, None]).squeeze(1)


def margin_targeted(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted margin (CW) loss ``z_t - z_y`` to maximise; defined for every ``K >= 2``."""
    logits = logits.float()
    return _pick(logits, targets) - _pick(logits, labels)


def dlr_targeted(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss of Croce & Hein (2020) to maximise (needs ``K >= 4``).

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` with ``z_pi`` the sorted logits.
    """
    logits = logits.float()
    top = logits.topk(4, dim=1).values
    scale = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12
    return (_pick(logits, targets) - _pick(logits, labels)) / scale


def targeted_loss(
    num_classes: int,
) -> tuple[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The targeted loss used by APGD-T for ``num_classes``: ("dlr", fn) or ("margin", fn)."""
    if num_classes >= 4:
        return "dlr-targeted", dlr_targeted
    return "margin-targeted", margin_targeted
