"""A faster, numerically equivalent copy of a model for forward-only queries (no attack here).

Gradient-free attacks (SPSA) spend nearly all their time in forward passes of the
model in eval mode, where a BatchNorm after a convolution is an affine map that can be
folded into the convolution's weights. :func:`inference_copy` traces the model with
``torch.fx``, folds conv-BN pairs into a *copy* (the caller's model is never changed)
and checks the copy against the model on a sample batch before handing it out. Models
that cannot be traced (data-dependent control flow, TorchScript) or whose copy
disagrees are used as given, and the reason is returned for the attack's info.
Success is always re-checked on the model itself.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Largest |logit difference| accepted between the fused copy and the model, relative
#: to the logits' scale.
REL_TOL = 1e-4


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def inference_copy(model: nn.Module, sample: torch.Tensor) -> tuple[nn.Module, str]:
    """Return ``(module to query, description)`` for forward-only queries of ``model``.

    Args:
        model: The classifier, already in eval mode.
        sample: A batch of inputs used to check that the copy gives the same logits.

    Returns:
        The conv-BN-fused copy when tracing and fusing worked and its logits match the
        model's within :data:`REL_TOL`; otherwise ``model`` itself. The description says
        which, and why.
    """
    if model.training:
        return model, "model as given (in training mode)"
    if not _has_batchnorm(model):
        return model, "model as given (no BatchNorm to fold)"
    if isinstance(model, torch.jit.ScriptModule):
        return model, "model as given (TorchScript)"
    from torch.fx.experimental.optimization import fuse

    try:
        fused = fuse(model, inplace=False)
    except (torch.fx.proxy.TraceError, TypeError, RuntimeError, AttributeError, NotImplementedError) as exc:
        log.debug("conv-BN folding skipped: %s: %s", type(exc).__name__, exc)
        return model, f"model as given (not traceable: {type(exc).__name__})"
    fused.eval()
    ref, out = model(sample).float(), fused(sample).float()
    scale = ref.abs().max().clamp_min(1.0)
    diff = (ref - out).abs().max() / scale
    if not torch.isfinite(diff) or diff > REL_TOL:
        return model, f"model as given (folded copy differed by {float(diff):.2e})"
    return fused, f"conv-BN folded copy (max relative logit difference {float(diff):.1e})"
