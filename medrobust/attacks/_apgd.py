"""Auto-PGD core loop (Croce & Hein, ICML 2020), shared by APGD-CE and APGD-T (private).

One run of :func:`apgd_run` is Algorithm 1 of the paper: step size ``2 * eps``,
momentum ``0.75``, and checkpoints after ``p_j`` iterations (``0.22 * N`` first, then
shrinking by ``0.03 * N`` down to ``0.06 * N``) where the step size is halved and the
iterate reset to the best point when the loss oscillated (fewer than ``rho * k``
increases since the last checkpoint) or when neither the step was reduced nor the
best loss improved.

Differences from the reference code, none of which changes which samples are fooled:
intensity bounds are arbitrary ``(low, high)`` (not [0, 1]); randomness comes from an
explicit generator; a sample leaves the batch as soon as it is misclassified (its
first adversarial iterate is kept), so no forward passes are spent on it after that.

With ``eot_iter > 1`` (AutoAttack's ``rand`` version, for randomised targets) every loss,
gradient and logit is the mean over ``eot_iter`` draws of the model's randomness
(:mod:`medrobust.attacks._eot`, batched); as in the reference, the step-size schedule then
runs on the averaged loss. Unlike the reference, which reads the last draw's logits, a sample
counts as fooled when the *mean* logits misclassify it, so one lucky draw does not end its attack.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from medrobust.attacks._eot import eot_loss_and_grad
from medrobust.attacks._utils import bview, flat_norm, project_l2

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _normalize(x: torch.Tensor, norm: str) -> torch.Tensor:
    """Divide each sample by its L∞ or L2 norm (+1e-12), as in the reference."""
    t = x.reshape(x.shape[0], -1).abs().amax(dim=1) if norm == "linf" else flat_norm(x)
    return x / bview(t + 1e-12, x)


def random_start(
    x: torch.Tensor, eps: float, norm: str, bounds: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """APGD's start: ``x + eps * t / ||t||`` (uniform t for L∞, Gaussian t for L2), clamped."""
    if norm == "linf":
        t = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
    else:
        t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + eps * _normalize(t, norm)).clamp(*bounds)


def project(
    z: torch.Tensor, x: torch.Tensor, eps: float, norm: str, bounds: tuple[float, float]
) -> torch.Tensor:
    """Project ``z`` onto the ``eps``-ball around ``x`` and then into ``bounds``."""
    z = torch.minimum(torch.maximum(z, x - eps), x + eps) if norm == "linf" else x + project_l2(z - x, eps)
    return z.clamp(*bounds)


def loss_and_grad(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x_adv: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | None,
    loss_fn: LossFn,
    eot_iter: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, per-sample loss, input gradient of the summed loss), averaged over ``eot_iter`` draws.

    ``eot_iter=1``: one forward + backward.
    """
    return eot_loss_and_grad(logits_fn, x_adv, y, targets, loss_fn, eot_iter)


def apgd_run(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    targets: torch.Tensor | None,
    eps: float,
    norm: str,
    steps: int,
    rho: float,
    bounds: tuple[float, float],
    generator: torch.Generator,
    eot_iter: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run from a random start on every sample of ``x``.

    Args:
        logits_fn: Maps images to float logits (model forward).
        x: Clean images (N, ...).
        y: True labels (N,); success means ``argmax != y``.
        loss_fn: ``loss_fn(logits, y, targets)`` per-sample loss to maximise.
        targets: Target labels for targeted losses, else None.
        eps: Budget in image units.
        norm: "linf" or "l2".
        steps: Iterations (N in the paper).
        rho: Oscillation threshold (0.75 in the paper).
        bounds: Intensity interval.
        generator: Source of the random start.
        eot_iter: Draws of the model's randomness averaged per iterate (1: no EOT).

    Returns:
        ``(adv, fooled, queries)``: the first misclassified iterate per fooled sample (else
        the highest-loss iterate), a bool mask, and forward passes spent per sample
        (``eot_iter`` per iterate).
    """
    n = x.shape[0]
    device = x.device
    n_iter_2 = max(int(0.22 * steps), 1)
    n_iter_min = max(int(0.06 * steps), 1)
    size_decr = max(int(0.03 * steps), 1)

    out_adv = x.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=device)
    queries = torch.zeros(n, dtype=torch.long, device=device)

    # State of the samples still being attacked ("active"), indexed by `idx` into the batch.
    idx = torch.arange(n, device=device)
    xa, ya = x, y
    ta = targets
    x_adv = random_start(x, eps, norm, bounds, generator)
    logits, loss, grad = loss_and_grad(logits_fn, x_adv, ya, ta, loss_fn, eot_iter)
    queries += eot_iter
    x_best = x_adv.clone()
    grad_best = grad.clone()
    loss_best = loss.clone()
    step = torch.full((n,), 2.0 * eps, device=device, dtype=x.dtype)
    x_adv_old = x_adv.clone()
    loss_steps = torch.zeros(steps, n, device=device)
    loss_best_last = loss_best.clone()
    reduced_last = torch.ones(n, device=device)
    k = n_iter_2
    counter = 0

    def retire(pred_wrong: torch.Tensor) -> bool:
        """Record newly fooled samples; return True when any were removed."""
        if not bool(pred_wrong.any()):
            return False
        out_adv[idx[pred_wrong]] = x_adv[pred_wrong]
        fooled[idx[pred_wrong]] = True
        return True

    keep = logits.argmax(dim=1) == ya
    for i in range(steps + 1):
        if retire(~keep):
            sel = keep.nonzero().squeeze(1)
            idx, xa, ya = idx[sel], xa[sel], ya[sel]
            ta = None if ta is None else ta[sel]
            x_adv, x_adv_old, grad = x_adv[sel], x_adv_old[sel], grad[sel]
            x_best, grad_best, loss_best = x_best[sel], grad_best[sel], loss_best[sel]
            step, loss_steps = step[sel], loss_steps[:, sel]
            loss_best_last, reduced_last = loss_best_last[sel], reduced_last[sel]
        if idx.numel() == 0 or i == steps:
            break

        with torch.no_grad():
            grad2 = x_adv - x_adv_old
            x_adv_old = x_adv
            a = 0.75 if i > 0 else 1.0
            s = bview(step, x_adv)
            direction = grad.sign() if norm == "linf" else _normalize(grad, norm)
            z = project(x_adv + s * direction, xa, eps, norm, bounds)
            z = x_adv + (z - x_adv) * a + grad2 * (1 - a)
            x_adv = project(z, xa, eps, norm, bounds)

        logits, loss, grad = loss_and_grad(logits_fn, x_adv, ya, ta, loss_fn, eot_iter)
        queries[idx] += eot_iter
        keep = logits.argmax(dim=1) == ya

        with torch.no_grad():
            loss_steps[i] = loss
            better = loss > loss_best
            x_best[better] = x_adv[better]
            grad_best[better] = grad[better]
            loss_best = torch.where(better, loss, loss_best)

            counter += 1
            if counter == k:
                # Reference check: count increases over the last k steps (indices wrap like
                # Python's, so the first checkpoint compares against an unfilled row of zeros).
                ups = torch.zeros_like(loss_best)
                for c in range(k):
                    ups += (loss_steps[i - c] > loss_steps[i - c - 1]).float()
                osc = (ups <= k * rho).float()
                no_impr = (1.0 - reduced_last) * (loss_best_last >= loss_best).float()
                osc = torch.maximum(osc, no_impr)
                reduced_last = osc.clone()
                loss_best_last = loss_best.clone()
                red = osc > 0
                if bool(red.any()):
                    step = torch.where(red, step / 2.0, step)
                    x_adv = torch.where(bview(red, x_adv), x_best, x_adv)
                    grad = torch.where(bview(red, grad), grad_best, grad)
                k = max(k - size_decr, n_iter_min)
                counter = 0

    # Samples never fooled return their highest-loss point.
    if idx.numel():
        out_adv[idx] = x_best
    return out_adv, fooled, queries


def ranked_targets(logits: torch.Tensor, rank: int) -> torch.Tensor:
    """The class with the ``rank``-th largest logit per sample (rank 2 = runner-up)."""
    return logits.argsort(dim=1, descending=True)[:, rank - 1]
