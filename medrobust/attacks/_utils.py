"""Shared helpers for attack implementations (not an attack; skipped by auto-import).

Everything here works on plain tensors in image space, per sample, for any number
of channels and spatial dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks._layout import (  # noqa: F401  (re-exported for the attacks)
    conv_weights_channels_last,
    has_conv2d,
    use_channels_last,
)
from medrobust.attacks.base import AttackResult, perturbation_norms


def bview(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample ``values`` (N,) to broadcast against ``like`` (N, ...)."""
    return values.view(-1, *([1] * (like.ndim - 1)))


@contextmanager
def frozen_params(model: nn.Module) -> Iterator[nn.Module]:
    """Turn off ``requires_grad`` on the model's parameters for the block, restore after.

    Attacks only need input gradients; with frozen parameters autograd records no
    weight-gradient bookkeeping at all.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


def to_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Return ``x`` in ``channels_last`` memory format when asked (values unchanged)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def flat_norm(x: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Per-sample ``p``-norm of ``x`` flattened after the batch dimension."""
    return torch.linalg.vector_norm(x.flatten(1), ord=p, dim=1)


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Project each sample of ``delta`` onto the L2 ball of radius ``eps``."""
    norms = flat_norm(delta)
    factor = torch.clamp(eps / norms.clamp_min(1e-12), max=1.0)
    return delta * bview(factor, delta)


def random_l2_ball(
    shape: torch.Size | tuple[int, ...],
    eps: float,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw points uniformly from the L2 ball of radius ``eps`` (one per sample).

    Direction from a normal draw, radius ``eps * u ** (1 / d)`` with ``u ~ U(0, 1)``.
    """
    delta = torch.empty(shape, dtype=dtype, device=device).normal_(generator=generator)
    n = delta.shape[0]
    d = max(math.prod(delta.shape[1:]), 1)  # per-sample dimension (also for an empty batch)
    norms = flat_norm(delta).clamp_min(1e-12)
    u = torch.empty(n, dtype=dtype, device=device).uniform_(0, 1, generator=generator)
    radius = eps * u.pow(1.0 / d)
    return delta * bview(radius / norms, delta)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (float32)."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ``z_y - max_{j != y} z_j`` (negative once misclassified); any K >= 2."""
    logits = logits.float()
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    return true - other


def make_result(
    adv: torch.Tensor,
    images: torch.Tensor,
    success: torch.Tensor | None,
    queries: torch.Tensor,
    info: dict[str, Any] | None = None,
) -> AttackResult:
    """Assemble an :class:`AttackResult` with norms, in the input's dtype and memory layout.

    ``success=None`` where the attack has no view of its own: the confirmation forward of
    :meth:`~medrobust.attacks.base.Attack.__call__` decides it (placeholder ``False`` until then).
    """
    adv = adv.detach().to(images.dtype).contiguous()
    linf, l2 = perturbation_norms(adv, images)
    if success is None:
        success = torch.zeros(adv.shape[0], dtype=torch.bool, device=adv.device)
    return AttackResult(
        adv=adv,
        success=success.detach().bool(),
        linf=linf,
        l2=l2,
        queries=queries.detach().long(),
        info=dict(info or {}),
    )


def check_bool(value: Any, name: str, owner: str, allow_none: bool = False) -> bool | None:
    """Validate a bool parameter (optionally ``None``) with a message naming it."""
    from medrobust.errors import ConfigError

    if isinstance(value, bool) or (allow_none and value is None):
        return value
    kind = "a bool or None" if allow_none else "a bool"
    raise ConfigError(f"The {name!r} parameter of {owner} must be {kind}. Got {value!r}.")
