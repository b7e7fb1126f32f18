"""Evaluation predictions collected over a loader: one concatenation and one cross-process gather."""

from __future__ import annotations

import torch
from torch import nn

from medrobust import distributed as dist_utils
from medrobust.models.checkpoint import unwrap_model


def collect_predictions(
    model: nn.Module, logits_list: list[torch.Tensor], labels_list: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per-batch logits and labels (CPU) and gather them from every DDP process.

    Args:
        model: The evaluated classifier (possibly DDP-wrapped); its card sizes an empty result.
        logits_list: Per-batch logits ``(B, K)`` on the CPU.
        labels_list: Per-batch labels ``(B,)`` on the CPU.

    Returns:
        ``(logits (N, K), labels (N,))`` over every process's samples.
    """
    card = getattr(unwrap_model(model), "card", None)
    k = card.num_classes if card is not None else 0
    logits = torch.cat(logits_list) if logits_list else torch.zeros(0, k)
    labels = torch.cat(labels_list) if labels_list else torch.zeros(0, dtype=torch.long)
    if dist_utils.is_distributed():
        logits = dist_utils.all_gather_tensor(logits)
        labels = dist_utils.all_gather_tensor(labels)
    return logits, labels
