"""DeepFool (Moosavi-Dezfooli et al., 2016), batched over images, L2 and L∞.

All images of a batch step together: one forward per step on the samples not yet
fooled, then the gradients of ``z_k - z_y`` for the candidate classes ``k`` (every
class when K ≤ ``candidates``, else the ``candidates - 1`` classes with the highest
clean logits, as in the original's ``num_classes=10``), from one backward pass vectorised
over the classes on accelerators or one backward per class on CPU (:func:`class_gradients`).
Each sample leaves the batch as soon as it is fooled. As in the original, the accumulated
step is applied with overshoot, ``adv = clip(x + (1 + overshoot) · r_total)``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._utils import (
    bview,
    check_bool,
    frozen_params,
    make_result,
    to_format,
    use_channels_last,
)
from medrobust.attacks.base import Attack, AttackResult, register_attack
from medrobust.limits import MAX_ATTACK_STEPS, MAX_CLASSES
from medrobust.validation import check_choice, check_float, check_int

log = logging.getLogger(__name__)

#: Cost of one input-gradient backward pass relative to one forward (``small_cnn`` on CPU,
#: measured 1.3-1.6): when more than ``1 / (BACKWARD_PER_FORWARD * (K' - 1))`` of a step's
#: samples turn out fooled, the kept ones are evaluated again alone rather than taking
#: ``K' - 1`` gradients of samples whose gradients are not needed.
BACKWARD_PER_FORWARD = 1.5


@register_attack("deepfool")
class DeepFool(Attack):
    """Minimal-perturbation DeepFool for any number of classes ≥ 2.

    Samples that are misclassified from the start are returned unchanged with
    ``success=True`` and zero norm. Samples not fooled within ``steps`` return their last
    iterate with ``success=False``. ``queries`` counts forward passes per sample (the
    success forward on the returned images included); each step also computes
    ``min(K, candidates) - 1`` input gradients (see ``batched_gradients``).

    Args:
        model: Classifier returning logits.
        bounds: Intensity interval; defaults to the model card's bounds.
        seed: Unused (deterministic); recorded in results.
        steps: Maximum DeepFool iterations.
        overshoot: Overshoot factor applied to the accumulated perturbation.
        norm: ``"l2"`` or ``"linf"`` (the L∞ variant uses the L1 dual norm of gradients).
        candidates: Number of classes considered (true class included).
        channels_last: Memory format for 4-D inputs; ``None`` picks ``channels_last``
            for conv nets.
        batched_gradients: Compute the class gradients of a step in one backward pass
            vectorised over the classes (True) or in one backward pass per class (False).
            Both give the same gradients (bit for bit in our tests). ``None`` (default):
            vectorised on accelerators, per class on CPU, where the vectorised pass measured
            slower (autograd's batching rules for ReLU and max-pool backward copy more than
            they save with one thread; benchmarks/README.md).
        fuse_bn: Query a conv-BN folded copy (see :class:`~medrobust.attacks.base.Attack`).
    """

    norm: ClassVar[str | None] = None  # minimal attack; the variant is in ``self.p``
    minimal: ClassVar[bool] = True
    fast_params: ClassVar[dict[str, Any]] = {"steps": 5}

    def __init__(
        self,
        model: nn.Module,
        *,
        bounds: Any = None,
        seed: int = 0,
        steps: int = 50,
        overshoot: float = 0.02,
        norm: str = "l2",
        candidates: int = 10,
        channels_last: bool | None = None,
        batched_gradients: bool | None = None,
        **unused: Any,
    ) -> None:
        super().__init__(model, bounds=bounds, seed=seed, **unused)
        owner = type(self).__name__
        self.steps = check_int(steps, "steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.overshoot = check_float(overshoot, "overshoot", owner, low=0.0, high=None, low_inclusive=True)
        self.p = check_choice(norm, "norm", ("l2", "linf"), owner)
        self.candidates = check_int(candidates, "candidates", owner, low=2, high=MAX_CLASSES)
        self.channels_last = check_bool(channels_last, "channels_last", owner, allow_none=True)
        self.batched_gradients = check_bool(batched_gradients, "batched_gradients", owner, allow_none=True)

    def params(self) -> dict[str, Any]:
        """Resolved parameters (``norm`` is the chosen variant)."""
        out = super().params()
        out["norm"] = self.p
        return out

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> AttackResult:
        low, high = self.bounds
        cl = use_channels_last(self.model, images, self.channels_last)
        x = to_format(images, cl)
        n = x.shape[0]
        dev = x.device
        adv = x.clone()
        r_tot = torch.zeros_like(x)
        success = torch.zeros(n, dtype=torch.bool, device=dev)
        queries = torch.ones(n, dtype=torch.long, device=dev)  # the success forward of __call__
        active = torch.arange(n, device=dev)
        cand: torch.Tensor | None = None
        l2 = self.p == "l2"
        net = self.net
        batched = self.batched_gradients
        if batched is None:
            batched = dev.type != "cpu"

        with frozen_params(net):
            for step in range(self.steps + 1):
                xa = adv[active].requires_grad_(True)
                logits = net(xa).float()
                ya = labels[active]
                queries[active] += 1
                if cand is None:  # first step: all samples, clean logits
                    kk = min(self.candidates, logits.shape[1])
                    others = logits.detach().scatter(1, labels[:, None], float("-inf"))
                    top = others.topk(kk - 1, dim=1).indices
                    cand = torch.cat([labels[:, None], top], dim=1)
                fooled = logits.detach().argmax(dim=1) != ya
                success[active[fooled]] = True
                n_fooled = int(fooled.sum())
                n_keep = fooled.shape[0] - n_fooled
                if step == self.steps or n_keep == 0:
                    break
                keep: torch.Tensor | None = None  # rows of the graph to use (None: all)
                if n_fooled:
                    if n_fooled * (kk - 1) * BACKWARD_PER_FORWARD > n_keep:
                        # The class gradients of the samples just fooled would be thrown away:
                        # cheaper to evaluate the kept points again, alone (not a new query).
                        del logits
                        active = active[~fooled]
                        xa = adv[active].requires_grad_(True)
                        logits = net(xa).float()
                    else:
                        keep = ~fooled
                zc = logits.gather(1, cand[active])
                fdiff = zc[:, 1:] - zc[:, :1]  # (na, kk-1): z_k - z_y
                fd = fdiff.detach().abs()
                grads, batched = class_gradients(fdiff, xa, batched)
                del logits, zc, fdiff  # the graph goes before the next step's forward
                with torch.no_grad():
                    if keep is not None:
                        fd, grads, active = fd[keep], grads[keep], active[keep]
                    Wf = grads.flatten(2)  # (nk, kk-1, d)
                    wn = Wf.norm(dim=2) if l2 else Wf.abs().sum(dim=2)
                    dist = fd / (wn + 1e-8)
                    best = dist.argmin(dim=1)
                    rows = torch.arange(grads.shape[0], device=dev)
                    w_best = grads[rows, best]
                    step_len = dist[rows, best] + 1e-4
                    if l2:
                        r = bview(step_len / (wn[rows, best] + 1e-8), w_best) * w_best
                    else:
                        r = bview(step_len, w_best) * w_best.sign()
                    r_tot[active] += r
                    adv[active] = torch.clamp(x[active] + (1.0 + self.overshoot) * r_tot[active], low, high)
        info = {
            "channels_last": cl,
            "norm": self.p,
            "candidates": int(cand.shape[1]) if cand is not None else 0,
            "class_gradients": "one batched backward" if batched else "one backward per class",
        }
        return make_result(adv, images, success, queries, info)


def class_gradients(fdiff: torch.Tensor, x: torch.Tensor, batched: bool = True) -> tuple[torch.Tensor, bool]:
    """Input gradients of every column of ``fdiff`` (N, M), per sample: ``(N, M, *x.shape[1:])``.

    With ``batched`` the M vector-Jacobian products come from **one** backward pass over the
    graph, vectorised over the M one-hot output cotangents (``is_grads_batched``: autograd's
    ``vmap`` over the backward), instead of M passes with ``retain_graph``. Samples must be
    independent of each other in the model (eval mode). Falls back to one pass per column
    where the backward cannot be vectorised (an op without a batching rule, or out of
    memory: the vectorised pass holds M gradients of every activation at once).

    Returns:
        The gradients and whether the batched pass was used.
    """
    m = fdiff.shape[1]
    if batched and m > 1:
        eye = torch.eye(m, dtype=fdiff.dtype, device=fdiff.device)
        cotangents = eye[:, None, :].expand(m, fdiff.shape[0], m)
        try:
            # retain_graph: the fallback below still needs the graph if this pass fails midway
            (g,) = torch.autograd.grad(
                fdiff, x, grad_outputs=cotangents, is_grads_batched=True, retain_graph=True
            )
            return g.transpose(0, 1), True
        except RuntimeError as exc:  # an op without a batching rule for its backward
            log.debug("DeepFool: batched class gradients unavailable (%s); one backward per class", exc)
    grads = [torch.autograd.grad(fdiff[:, j].sum(), x, retain_graph=j < m - 1)[0] for j in range(m)]
    return torch.stack(grads, dim=1), False
