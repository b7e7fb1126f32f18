"""Differentiable sliding-window inference (MONAI ``sliding_window_inference`` under autograd).

MONAI blends the window outputs with in-place additions into an output buffer, which autograd
records, so the gradient of any loss on the blended logits reaches every input voxel that some
window covers: attacks work on volumes larger than one window.

Memory: under plain autograd every window's activations would stay alive until the backward
pass, so an attack's memory would grow with the number of windows, i.e. with the volume (a 3D
UNet's activations are hundreds of MB per 96³ window). When gradients are recorded and the
input needs more than one batch of windows, each batch of windows runs under activation
checkpointing (:func:`torch.utils.checkpoint.checkpoint`, non-reentrant): the forward keeps only
the window inputs, and the backward recomputes one batch of windows at a time. Peak memory is
then one batch of windows' activations plus input-sized buffers (the input, the window inputs,
the blended logits), not the volume's activations, at the price of one more forward per
window in the backward pass. Gradients are unchanged (the recomputation is the same function;
the networks run in eval mode during attacks). ``benchmarks/segmentation.py`` measures the peak.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


def window_count(spatial: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's scan takes over ``spatial`` (per image)."""
    count = 1
    for size, roi in zip(spatial, roi_size, strict=True):
        roi = min(int(roi), int(size))
        step = max(int(roi * (1.0 - overlap)), 1)
        count *= 1 if size <= roi else math.ceil((size - roi) / step) + 1
    return count


def sliding_window_logits(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.25,
    sw_batch_size: int = 4,
    mode: str = "gaussian",
    checkpoint: bool | None = None,
) -> torch.Tensor:
    """Logits of ``predictor`` over ``x`` computed window by window and blended.

    Args:
        predictor: Maps ``(B, C, *roi_size)`` windows to logits ``(B, K, *roi_size)``.
        x: Input ``(N, C, *spatial)``; sides smaller than ``roi_size`` are padded (constant 0).
        roi_size: Window size.
        overlap: Fraction of overlap between neighbouring windows.
        sw_batch_size: Windows evaluated per forward.
        mode: Blending, ``"gaussian"`` (centre-weighted) or ``"constant"``.
        checkpoint: Recompute each batch of windows in the backward pass instead of keeping its
            activations (see the module docstring). ``None`` (default): when gradients are being
            recorded and the windows take more than one forward.

    Returns:
        Logits ``(N, K, *spatial)``, differentiable with respect to ``x``.
    """
    from monai.inferers import sliding_window_inference

    roi = tuple(int(s) for s in roi_size)
    sw_batch_size = int(sw_batch_size)
    if checkpoint is None:
        windows = x.shape[0] * window_count(x.shape[2:], roi, float(overlap))
        batches = math.ceil(windows / max(sw_batch_size, 1))
        checkpoint = torch.is_grad_enabled() and batches > 1
    run = predictor
    if checkpoint:
        from torch.utils.checkpoint import checkpoint as recompute

        def run(window: torch.Tensor) -> torch.Tensor:
            return recompute(predictor, window, use_reentrant=False)

    out = sliding_window_inference(x, roi, sw_batch_size, run, overlap=float(overlap), mode=mode)
    as_tensor = getattr(out, "as_tensor", None)
    return as_tensor() if callable(as_tensor) else out
