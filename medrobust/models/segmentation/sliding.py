"""Differentiable sliding-window inference (MONAI ``sliding_window_inference`` under autograd).

MONAI blends the window outputs with in-place additions into an output buffer, which autograd
records, so the gradient of any loss on the blended logits reaches every input voxel that some
window covers: attacks work on volumes larger than one window, with memory bounded by
``sw_batch_size`` windows' activations (plus the input-sized buffers), not by the volume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def sliding_window_logits(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.25,
    sw_batch_size: int = 4,
    mode: str = "gaussian",
) -> torch.Tensor:
    """Logits of ``predictor`` over ``x`` computed window by window and blended.

    Args:
        predictor: Maps ``(B, C, *roi_size)`` windows to logits ``(B, K, *roi_size)``.
        x: Input ``(N, C, *spatial)``; sides smaller than ``roi_size`` are padded (constant 0).
        roi_size: Window size.
        overlap: Fraction of overlap between neighbouring windows.
        sw_batch_size: Windows evaluated per forward.
        mode: Blending, ``"gaussian"`` (centre-weighted) or ``"constant"``.

    Returns:
        Logits ``(N, K, *spatial)``, differentiable with respect to ``x``.
    """
    from monai.inferers import sliding_window_inference

    out = sliding_window_inference(
        x, tuple(int(s) for s in roi_size), int(sw_batch_size), predictor, overlap=float(overlap), mode=mode
    )
    as_tensor = getattr(out, "as_tensor", None)
    return as_tensor() if callable(as_tensor) else out
