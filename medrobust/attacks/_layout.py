"""Memory layout of a model's convolution weights during an attack (no attack here).

Kept apart from :mod:`medrobust.attacks._utils` so that the base class can use it
without an import cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def conv_weights_channels_last(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Store the model's 4-D conv weights in ``channels_last`` for the block, restore after.

    Values never change, only strides. With an NCHW weight and a ``channels_last``
    input, oneDNN re-lays out the weight on every call; converting it once made a
    forward pass of ``small_cnn`` 1.75x faster on CPU. Used by every attack that feeds
    ``channels_last`` inputs to the model as given (see
    :meth:`medrobust.attacks.base.Attack.__call__`; a BatchNorm-folded copy keeps its own
    weights in ``channels_last`` instead); each weight gets back its original memory layout
    (the same ``Parameter`` objects, so optimisers holding them are unaffected).
    """
    if not enabled:
        yield model
        return
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.ndim == 4]
    saved = [(m.weight, m.weight.data) for m in convs]
    for m in convs:
        # empty_like + copy_ forces the canonical channels_last strides even where the
        # layout is ambiguous (1 input channel), which .contiguous() would leave as is.
        data = m.weight.data
        m.weight.data = torch.empty_like(data, memory_format=torch.channels_last).copy_(data)
    try:
        yield model
    finally:
        for weight, data in saved:
            weight.data = data


def has_conv2d(model: nn.Module) -> bool:
    """True when ``model`` contains a 2-D convolution (where ``channels_last`` can help)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def use_channels_last(model: nn.Module, images: torch.Tensor, option: bool | None) -> bool:
    """Resolve a ``channels_last`` option: ``None`` means "on for 4-D inputs to conv nets".

    ``channels_last`` measured 1.2-1.4x faster for conv nets on CPU (benchmarks/README.md).
    """
    if images.ndim != 4:
        return False
    return has_conv2d(model) if option is None else bool(option)
