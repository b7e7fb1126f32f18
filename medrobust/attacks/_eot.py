"""Expectation over Transformation (Athalye, Carlini & Wagner 2018; Athalye et al. 2018), private helper.

A randomised target (noise injection, random resize-and-pad, dropout kept at test time) answers
every query with a fresh draw, so one gradient is a noisy estimate of the direction that fools it
on average. EOT replaces it by the mean over ``eot_iter`` draws:
``grad E_w[L(f_w(x), y)] ≈ 1/n Σ_i grad L(f_{w_i}(x), y)``. AutoAttack's ``rand`` version does
the same inside APGD (``eot_iter=20``).

The draws are batched: the batch is repeated ``r`` times along the batch dimension and sent in
one forward pass (at most :data:`EOT_MAX_BATCH` images per pass, so a large batch costs no more
memory than without EOT); autograd sums the replicas' input gradients. Logits and losses are
averaged over the draws too, so the decision "fooled" read from them is the expected
logits' (robust to one lucky draw).

While attacking, every module declaring ``stochastic = True`` draws from the attack's generator
(:func:`medrobust.defenses.denoisers.randomized.generator_override`), so an attack's output
depends on its seed only, not on how often the model was queried before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import cast

import torch
from torch import nn

#: Largest number of images sent through the model in one EOT forward pass.
EOT_MAX_BATCH = 512
#: Largest accepted number of EOT draws per iterate (``eot_iter`` / ``n_eot``).
MAX_EOT_ITER = 10_000

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def is_stochastic(model: nn.Module) -> bool:
    """True when ``model`` contains a module declaring ``stochastic = True`` (a randomised defense)."""
    from medrobust.defenses.denoisers.randomized import is_stochastic as declared

    return declared(model)


@contextmanager
def attack_randomness(generator: torch.Generator, *models: nn.Module) -> Iterator[None]:
    """Route the randomised modules of ``models`` to the attack's ``generator`` for the block."""
    if not any(is_stochastic(m) for m in models):
        yield
        return
    from medrobust.defenses.denoisers.randomized import generator_override

    with ExitStack() as stack:
        for m in dict.fromkeys(models):  # the folded copy and the model may be the same module
            stack.enter_context(generator_override(m, generator))
        yield


def _repeat(t: torch.Tensor | None, r: int) -> torch.Tensor | None:
    if t is None or r == 1:
        return t
    return t.repeat(r, *([1] * (t.ndim - 1)))


def eot_loss_and_grad(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x_adv: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | None,
    loss_fn: LossFn,
    eot_iter: int = 1,
    max_batch: int = EOT_MAX_BATCH,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean over ``eot_iter`` draws of (logits, per-sample loss, input gradient of the summed loss).

    With ``eot_iter=1`` this is one forward and one backward pass, as without EOT.

    Args:
        logits_fn: Maps images to float logits (one draw of the model's randomness per image).
        x_adv: Current iterates (N, ...).
        y: Labels (N,).
        targets: Target labels (N,) for targeted losses, else None.
        loss_fn: ``loss_fn(logits, y, targets)``, per-sample loss to maximise.
        eot_iter: Number of draws averaged.
        max_batch: Largest number of images per forward pass (replicas per pass
            ``max(1, max_batch // N)``).

    Returns:
        ``(logits, loss, grad)``, each the mean over the draws, detached.
    """
    n = x_adv.shape[0]
    per_pass = max(1, min(eot_iter, max_batch // max(n, 1)))
    logits_sum: torch.Tensor | None = None
    loss_sum = torch.zeros(n, device=x_adv.device)
    grad_sum = torch.zeros_like(x_adv)
    done = 0
    while done < eot_iter:
        r = min(per_pass, eot_iter - done)
        x = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = logits_fn(_repeat(x, r))
            loss = loss_fn(logits, _repeat(y, r), _repeat(targets, r))
            (grad,) = torch.autograd.grad(loss.sum(), x)
        part = logits.detach().view(r, n, logits.shape[-1]).sum(dim=0)
        logits_sum = part if logits_sum is None else logits_sum + part
        loss_sum += loss.detach().view(r, n).sum(dim=0)
        grad_sum += grad.detach()
        done += r
    return cast(torch.Tensor, logits_sum) / eot_iter, loss_sum / eot_iter, grad_sum / eot_iter


@torch.no_grad()
def eot_logits(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eot_iter: int = 1,
    max_batch: int = EOT_MAX_BATCH,
) -> torch.Tensor:
    """Mean logits over ``eot_iter`` draws (no gradient), batched like :func:`eot_loss_and_grad`."""
    n = x.shape[0]
    per_pass = max(1, min(eot_iter, max_batch // max(n, 1)))
    total: torch.Tensor | None = None
    done = 0
    while done < eot_iter:
        r = min(per_pass, eot_iter - done)
        logits = logits_fn(_repeat(x, r)).float()
        part = logits.view(r, n, logits.shape[-1]).sum(dim=0)
        total = part if total is None else total + part
        done += r
    return cast(torch.Tensor, total) / eot_iter
