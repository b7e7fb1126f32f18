"""BatchNorm folded into the convolutions: a faster, numerically equivalent copy of a model (no attack here).

Every attack spends nearly all its time in forward (and input-gradient) passes of the model
in eval mode, where a BatchNorm after a convolution is an affine map that can be folded
into the convolution's weights (PGD on ``small_cnn``: BatchNorm was about 21 % of the time).
:func:`inference_copy` traces the model with ``torch.fx``, folds conv-BN pairs into a *copy*
(the caller's model is never changed), moves each max-pool that follows a ReLU before it
(:func:`pool_before_relu`: same values, a quarter of the ReLU work), gives global average
pools a backward that broadcasts the gradient (:func:`broadcast_global_pools`: no full-size
NCHW gradient behind a ``channels_last`` activation), lets 2x2 max-pools skip their indices
when no gradient is taken (:func:`gradient_free_pools`) and checks the copy against the model
on a sample batch before handing it out. Models that cannot be traced
(data-dependent control flow, TorchScript) or whose copy disagrees are used as given, and the
reason is returned for the attack's info.

:func:`folded_model` adds a cache: the audit builds a new attack per batch, and tracing a
ResNet-18 costs about 0.4 s, so the folded copy (and the outcome of its check) is kept per
model, input device/dtype and memory layout, for as long as the model's parameters and
buffers are the same tensors with the same version counters (an optimiser step,
``load_state_dict`` or any in-place change invalidates it). The cache holds one folded copy
per model and layout (the memory of the model's weights) and lets go of it with the model.

Success is never decided on the copy: :meth:`medrobust.attacks.base.Attack.__call__`
re-evaluates the returned images on the model as given.
"""

from __future__ import annotations

import logging
import math
import weakref
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

_RELU_FUNCTIONS = (torch.relu, torch.relu_, torch.nn.functional.relu)

#: Largest |logit difference| accepted between the fused copy and the model, relative
#: to the logits' scale.
REL_TOL = 1e-4

#: model -> {(device, dtype, channels_last): (fingerprint, folded copy or None for the model, description)}
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], tuple[Any, nn.Module | None, str]]] = (
    weakref.WeakKeyDictionary()
)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def relative_difference(ref: torch.Tensor, out: torch.Tensor) -> float:
    """``max |ref - out| / max(max |ref|, 1)``: the check applied to a folded copy's logits."""
    ref, out = ref.detach().float(), out.detach().float()
    scale = ref.abs().max().clamp_min(1.0)
    return float((ref - out).abs().max() / scale)


def _is_relu(node: Any, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules.get(node.target)) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS and len(node.args) == 1
    return node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1


def pool_before_relu(gm: Any) -> int:
    """Rewrite ``maxpool(relu(h))`` as ``relu(maxpool(h))`` in a traced copy; returns how many.

    ReLU is monotone, so both give the same values bit for bit, and the same input gradient
    (the pool picks the same element; a non-positive maximum gets zero gradient either way),
    but the ReLU and its backward then touch a quarter of the elements (2x2 pooling): PGD on
    ``small_cnn`` spends 10-25 % of its time in them. Only where ``h`` and the ReLU each feed
    nothing else (an in-place ReLU's input must not be read elsewhere) and the pool returns no
    indices.
    """
    modules = dict(gm.named_modules())
    pools = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
    done = 0
    for node in list(gm.graph.nodes):
        pool = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(pool, pools) or pool.return_indices or len(node.args) != 1 or node.kwargs:
            continue
        relu = node.args[0]
        if not _is_relu(relu, modules) or len(relu.users) != 1:
            continue
        source = relu.args[0]
        if not hasattr(source, "users") or len(source.users) != 1:
            continue
        node.replace_input_with(relu, source)
        with gm.graph.inserting_after(node):
            after = gm.graph.call_function(torch.relu_, (node,))  # the pool's output is its own
        node.replace_all_uses_with(after, delete_user_cb=lambda user, new=after: user is not new)
        gm.graph.erase_node(relu)
        done += 1
    if done:
        gm.graph.lint()
        gm.recompile()
    return done


class _BroadcastMean(torch.autograd.Function):
    """Mean over trailing dims whose backward *expands* the gradient instead of materialising it.

    ``adaptive_avg_pool2d(x, 1)`` and ``x.mean(dims)`` both hand back a full-size gradient in
    NCHW whatever ``x``'s layout: behind a ``channels_last`` activation the next backward op
    (the last ReLU's ``threshold_backward``) then mixes layouts, runs unvectorised, branches on
    the data and cost 1-2 ms per backward on ``small_cnn`` (64 images), more at PGD's later
    iterates than at its start. The expanded gradient has no layout of its own.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        ctx.shape = x.shape
        ctx.count = math.prod(x.shape[d] for d in dims)
        return x.mean(dims, keepdim=True)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return (grad / ctx.count).expand(ctx.shape), None


class GlobalAvgPool(nn.Module):
    """``AdaptiveAvgPool{1,2,3}d(1)`` with a broadcasting backward (:class:`_BroadcastMean`)."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.dims = tuple(range(-spatial_dims, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the last ``spatial_dims`` dimensions, kept as size 1."""
        return _BroadcastMean.apply(x, self.dims)


_GLOBAL_POOLS = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}
_GLOBAL_POOL_FUNCTIONS = {
    torch.nn.functional.adaptive_avg_pool1d: 1,
    torch.nn.functional.adaptive_avg_pool2d: 2,
    torch.nn.functional.adaptive_avg_pool3d: 3,
}


def _all_ones(size: Any) -> bool:
    if isinstance(size, int):
        return size == 1
    return isinstance(size, (tuple, list)) and len(size) > 0 and all(s == 1 for s in size)


def broadcast_global_pools(gm: Any) -> int:
    """Replace global average pools (output size 1) by :class:`GlobalAvgPool`; returns how many.

    Modules (``nn.AdaptiveAvgPool2d(1)``, torchvision's ResNet) and calls
    (``F.adaptive_avg_pool2d(x, (1, 1))``, torchvision's DenseNet). The same mean (equal logits
    in our tests, within the fold check's tolerance in any case); only the backward changes.
    """
    modules = dict(gm.named_modules())
    done = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            dims = _GLOBAL_POOLS.get(type(modules.get(node.target)))  # type: ignore[arg-type]
            if dims is None or not _all_ones(modules[node.target].output_size):
                continue
        elif node.op == "call_function" and node.target in _GLOBAL_POOL_FUNCTIONS:
            dims = _GLOBAL_POOL_FUNCTIONS[node.target]
            size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
            if not _all_ones(size):
                continue
        else:
            continue
        name = f"medrobust_global_pool_{done}"
        gm.add_submodule(name, GlobalAvgPool(dims))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        if node.op == "call_module" and not any(
            n.op == "call_module" and n.target == node.target for n in gm.graph.nodes
        ):
            gm.delete_submodule(node.target)
        done += 1
    if done:
        gm.graph.lint()
        gm.recompile()
    return done


class GradientFreeMaxPool2d(nn.MaxPool2d):
    """A 2x2, stride-2 max-pool that skips its indices where no gradient is taken.

    ``max_pool2d`` always computes the argmax indices on CPU; without autograd (SPSA, Square,
    any ``no_grad`` query) on a ``channels_last`` input the pool is three elementwise maxima of
    the four strided views instead (the same values: a maximum is exact): 1.6x faster on the
    first pool of ``small_cnn`` (256 images, 8 channels, 64x64). With autograd, or any other
    input, it is :class:`torch.nn.MaxPool2d`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Max-pool ``x`` (N, C, H, W)."""
        if (
            (x.requires_grad and torch.is_grad_enabled())
            or x.ndim != 4
            or not x.is_contiguous(memory_format=torch.channels_last)
        ):
            return super().forward(x)
        h, w = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2  # floor mode drops an odd last row/column
        v = x.permute(0, 2, 3, 1)[:, :h, :w].unflatten(1, (h // 2, 2)).unflatten(3, (w // 2, 2))
        out = torch.maximum(v[:, :, 0, :, 0], v[:, :, 0, :, 1])
        torch.maximum(out, v[:, :, 1, :, 0], out=out)
        torch.maximum(out, v[:, :, 1, :, 1], out=out)
        return out.permute(0, 3, 1, 2)  # channels_last, like max_pool2d's output


def _is_plain_2x2(pool: nn.Module) -> bool:
    def pair(v: Any) -> tuple[Any, ...]:
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (
        type(pool) is nn.MaxPool2d
        and pair(pool.kernel_size) == (2, 2)
        and pair(pool.stride) == (2, 2)
        and pair(pool.padding) == (0, 0)
        and pair(pool.dilation) == (1, 1)
        and not pool.ceil_mode
        and not pool.return_indices
    )


def gradient_free_pools(gm: nn.Module) -> int:
    """Swap every plain 2x2 ``nn.MaxPool2d`` of ``gm`` for :class:`GradientFreeMaxPool2d`."""
    done = 0
    for name, pool in list(gm.named_modules()):
        if name and _is_plain_2x2(pool):
            parent_name, _, child = name.rpartition(".")
            parent = gm.get_submodule(parent_name) if parent_name else gm
            setattr(parent, child, GradientFreeMaxPool2d(2))
            done += 1
    return done


@torch.no_grad()
def inference_copy(model: nn.Module, sample: torch.Tensor) -> tuple[nn.Module, str]:
    """Return ``(module to query, description)`` for queries of ``model`` (no cache).

    Args:
        model: The classifier, already in eval mode.
        sample: A batch of inputs used to check that the copy gives the same logits.

    Returns:
        The conv-BN-fused copy (parameters frozen) when tracing and fusing worked and its
        logits match the model's within :data:`REL_TOL`; otherwise ``model`` itself. The
        description says which, and why.
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
    except Exception as exc:  # tracing runs arbitrary model code: anything can fail there
        log.debug("conv-BN folding skipped: %s: %s", type(exc).__name__, exc)
        return model, f"model as given (not traceable: {type(exc).__name__})"
    fused.eval()
    moved = pool_before_relu(fused)
    broadcast_global_pools(fused)
    gradient_free_pools(fused)
    for p in fused.parameters():
        p.requires_grad_(False)
    try:
        out = fused(sample)
    except Exception as exc:  # a traced graph that does not run on real inputs
        log.debug("conv-BN folded copy failed on the sample: %s: %s", type(exc).__name__, exc)
        return model, f"model as given (folded copy failed: {type(exc).__name__})"
    diff = relative_difference(model(sample), out)
    if not math.isfinite(diff) or diff > REL_TOL:
        return model, f"model as given (folded copy differed by {diff:.2e})"
    pooled = f"; {moved} max-pool(s) moved before their ReLU" if moved else ""
    return fused, f"conv-BN folded copy (max relative logit difference {diff:.1e}{pooled})"


def model_state(model: nn.Module) -> tuple[Any, ...] | None:
    """The identity of the model's state: every parameter and buffer's storage and version.

    The detached views keep the storages alive while cached, so an address seen here cannot
    be reused by another tensor. ``None`` when a tensor has no version counter (created under
    ``torch.inference_mode``): such models are folded afresh on every call.
    """
    try:
        tensors = [*model.parameters(), *model.buffers()]
        states = [(t.detach(), t.data_ptr(), t._version, t.shape) for t in tensors]
        return (*states, tuple(map(id, model.modules())))
    except RuntimeError:
        return None


def same_state(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """True when two :func:`model_state` records describe the same tensors, unchanged."""
    if len(a) != len(b) or a[-1] != b[-1]:
        return False
    return all(x[1:] == y[1:] for x, y in zip(a[:-1], b[:-1], strict=True))


def _to_channels_last(module: nn.Module) -> None:
    """Store a folded copy's 4-D conv weights in canonical ``channels_last`` strides, once."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.weight.ndim == 4:
            data = m.weight.data
            m.weight.data = torch.empty_like(data, memory_format=torch.channels_last).copy_(data)


@torch.no_grad()
def folded_model(model: nn.Module, sample: torch.Tensor, channels_last: bool) -> tuple[nn.Module, str]:
    """The module an attack queries: the cached conv-BN folded copy of ``model`` when valid.

    Args:
        model: The classifier, in eval mode (callers fold only models given in eval mode).
        sample: A few inputs in the layout the attack uses, for the logit check.
        channels_last: Store the copy's conv weights in ``channels_last`` (the attack feeds
            ``channels_last`` inputs); the copy is the attack's own, so this is done once.

    Returns:
        ``(module, description)`` as :func:`inference_copy`; cached per model state.
    """
    key = (sample.device, sample.dtype, bool(channels_last))
    fingerprint = model_state(model)
    try:
        entries = _CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable
        entries = {}
    hit = entries.get(key)
    if hit is not None and fingerprint is not None and same_state(hit[0], fingerprint):
        return (model if hit[1] is None else hit[1]), hit[2]
    net, desc = inference_copy(model, sample)
    if net is not model and channels_last:
        _to_channels_last(net)
    if fingerprint is not None:
        # never the model itself in its own entry: the weak key would never die
        entries[key] = (fingerprint, None if net is model else net, desc)
    return net, desc


def clear_cache() -> None:
    """Forget every folded copy (tests; or to release their memory early)."""
    _CACHE.clear()
