"""Label maps from per-pixel logits, fast on CPU."""

from __future__ import annotations

import torch


def label_map(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(1)`` for per-pixel logits ``(N, K, *spatial)``: the label map ``(N, *spatial)``.

    The same values as ``argmax(1)`` (ties go to the lowest label), computed as a contiguous
    reduction over the last axis of a channels-last copy: on CPU ``argmax`` over the strided
    label axis of an ``(N, K, D, H, W)`` tensor is about 6x slower (87 against 14 ms for 2
    labels at 96³), which made it a sizeable share of a 3D attack step.
    """
    if logits.ndim < 3:
        return logits.argmax(1)
    return logits.movedim(1, -1).contiguous().argmax(-1)
