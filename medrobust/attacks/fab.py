"""FAB-T: the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), L∞ and L2."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._apgd import ranked_targets
from medrobust.attacks._budget import BudgetAttack
from medrobust.attacks._losses import margin_targeted
from medrobust.attacks._utils import bview, flat_norm, frozen_params, make_result
from medrobust.attacks.base import AttackResult, register_attack
from medrobust.limits import MAX_ATTACK_RESTARTS, MAX_ATTACK_STEPS, MAX_CLASSES
from medrobust.validation import check_float, check_int


def _norm(x: torch.Tensor, norm: str) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).abs().amax(dim=1) if norm == "linf" else flat_norm(x)


def project_on_hyperplane(
    t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str, bounds: tuple[float, float]
) -> torch.Tensor:
    """Minimal-norm step ``d`` with ``w·(t + d) = b`` and ``t + d`` inside ``bounds`` (per row).

    For a step length ``lam`` the best reachable change of ``w·d`` is the piecewise-linear,
    increasing ``h(lam) = sum_i sigma_i * min(lam, beta_i)`` (L∞: ``beta_i`` = room to the
    box in the helpful direction, ``sigma_i = |w_i|``; L2: ``d_i ∝ w_i`` so ``beta_i =
    room_i / |w_i|``, ``sigma_i = w_i²``). The smallest ``lam`` with ``h(lam) = |w·t - b|``
    is found from the sorted breakpoints; if the box makes the plane unreachable the
    step goes to the box corner that gets closest.

    Args:
        t: Points (m, D).
        w: Hyperplane normals (m, D).
        b: Offsets (m,).
        norm: "linf" or "l2".
        bounds: Box ``(low, high)``.

    Returns:
        The steps ``d`` (m, D).
    """
    low, high = bounds
    c = (w * t).sum(dim=1) - b
    sgn = torch.where(c > 0, -1.0, 1.0).to(w.dtype)
    wp = w * sgn[:, None]  # need wp·d = |c|
    need = c.abs()
    aw = wp.abs()
    active = aw > 0
    room = torch.where(wp > 0, high - t, t - low).clamp_min(0.0)
    if norm == "linf":
        beta, sigma = room, aw
    else:
        beta, sigma = room / aw.clamp_min(1e-30), aw * aw
    beta = torch.where(active, beta, torch.zeros_like(beta))
    order = beta.argsort(dim=1)
    beta_s, sigma_s = beta.gather(1, order), sigma.gather(1, order)
    cum_v = (beta_s * sigma_s).cumsum(dim=1)
    cum_s = sigma_s.cumsum(dim=1)
    total = cum_s[:, -1]
    reach = cum_v + beta_s * (total[:, None] - cum_s)  # h at each breakpoint
    k = (reach < need[:, None]).sum(dim=1)
    prev = (k - 1).clamp_min(0)[:, None]
    prev_v = torch.where(k > 0, cum_v.gather(1, prev).squeeze(1), torch.zeros_like(need))
    prev_s = torch.where(k > 0, cum_s.gather(1, prev).squeeze(1), torch.zeros_like(need))
    lam = (need - prev_v) / (total - prev_s).clamp_min(1e-30)
    lam = torch.where(k < t.shape[1], lam, torch.full_like(lam, math.inf))
    step = lam[:, None] if norm == "linf" else lam[:, None] * aw
    mag = torch.minimum(torch.nan_to_num(step, nan=0.0, posinf=math.inf), room)
    return torch.where(active, mag * torch.sign(wp), torch.zeros_like(mag))


def fab_targeted_run(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor,
    *,
    norm: str,
    steps: int,
    eps: float,
    alpha_max: float,
    eta: float,
    beta: float,
    bounds: tuple[float, float],
    random_start: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One FAB-T run; returns (smallest adversarial found, its norm or inf, queries per sample)."""
    n = x.shape[0]
    x0 = x.reshape(n, -1)
    x1 = x.clone()
    if random_start:
        if norm == "linf":
            r = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        else:
            r = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x1 = (x + 0.5 * eps * r / bview(_norm(r, norm).clamp_min(1e-12), r)).clamp(*bounds)
    best = x.clone()
    res = torch.full((n,), math.inf, device=x.device)
    for _ in range(steps):
        xg = x1.detach().requires_grad_(True)
        with torch.enable_grad():
            df = margin_targeted(logits_fn(xg), y, targets)  # z_t - z_y, negative while robust
            (dg,) = torch.autograd.grad(df.sum(), xg)
        with torch.no_grad():
            w = dg.reshape(n, -1)
            x1f = x1.reshape(n, -1)
            b = -df.detach() + (w * x1f).sum(dim=1)
            d = project_on_hyperplane(
                torch.cat((x1f, x0)), torch.cat((w, w)), torch.cat((b, b)), norm, bounds
            )
            d1, d2 = d[:n], d[n:]
            a1, a2 = _norm(d1, norm).clamp_min(1e-8), _norm(d2, norm).clamp_min(1e-8)
            alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)[:, None]
            x1f = ((x1f + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha).clamp(*bounds)
            x1 = x1f.reshape(x.shape)
            is_adv = logits_fn(x1).argmax(dim=1) != y
            dist = _norm(x1 - x, norm)
            better = is_adv & (dist < res)
            best[better] = x1[better]
            res = torch.where(better, dist, res)
            x1 = torch.where(bview(is_adv, x1), x + (x1 - x) * beta, x1)
    return best, res, torch.full((n,), 2 * steps, dtype=torch.long, device=x.device)


@register_attack("fab")
class FAB(BudgetAttack):
    """FAB-T, the targeted FAB attack of AutoAttack (minimal-norm, reported within ``eps``).

    For each of the ``min(n_target_classes, K - 1)`` runner-up classes of the clean logits
    (9 in AutoAttack) FAB walks to the linearised decision boundary between the true and
    the target class with the minimal-norm projection (inside the intensity box), biased
    towards the clean image, and keeps the smallest adversarial found. Works for K = 2
    (one target). As in AutoAttack's ``perturb`` a sample counts as fooled only when
    that perturbation is within ``eps``; ``info["min_norm"]`` holds the smallest
    adversarial norm found per sample (None when none was found), also beyond ``eps``.

    Args:
        steps: Iterations per target (100 in AutoAttack).
        n_target_classes: Upper bound on the number of targets (9).
        restarts: Runs per target; runs after the first start at a random point at
            ``eps / 2`` (1 in AutoAttack).
        alpha_max, eta, beta: Step bias bound (0.1), overshoot (1.05), backward step (0.9).
        eps, norm, channels_last, bounds, seed: See :class:`BudgetAttack`.
    """

    minimal: ClassVar[bool] = True
    fast_params: ClassVar[dict[str, Any]] = {"steps": 3, "n_target_classes": 2}

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        owner = type(self).__name__
        self.steps = check_int(steps, "steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.restarts = check_int(restarts, "restarts", owner, low=1, high=MAX_ATTACK_RESTARTS)
        self.n_target_classes = check_int(
            n_target_classes, "n_target_classes", owner, low=1, high=MAX_CLASSES
        )
        self.alpha_max = check_float(alpha_max, "alpha_max", owner, low=0.0, high=1.0, low_inclusive=True)
        self.eta = check_float(eta, "eta", owner, low=0.0)
        self.beta = check_float(beta, "beta", owner, low=0.0, high=1.0)

    def _attack(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> AttackResult:
        logits_fn = self._logits_fn(images)
        with torch.no_grad():
            clean = logits_fn(images)
        n_targets = min(self.n_target_classes, clean.shape[1] - 1)
        robust = clean.argmax(dim=1) == labels
        queries = torch.ones_like(labels)
        best = images.clone()
        best_norm = torch.full(labels.shape, math.inf, device=images.device)
        with frozen_params(self.net):
            for rank in range(2, n_targets + 2):
                for restart in range(self.restarts):
                    todo = robust.nonzero().squeeze(1)
                    if todo.numel() == 0:
                        break
                    targets = ranked_targets(clean[todo], rank)
                    queries[todo] += 1
                    a, r, q = fab_targeted_run(
                        logits_fn,
                        images[todo],
                        labels[todo],
                        targets,
                        norm=self.norm,
                        steps=self.steps,
                        eps=self.eps,
                        alpha_max=self.alpha_max,
                        eta=self.eta,
                        beta=self.beta,
                        bounds=self.bounds,
                        random_start=restart > 0,
                        generator=generator,
                    )
                    queries[todo] += q
                    better = r < best_norm[todo]
                    best[todo[better]] = a[better]
                    best_norm[todo[better]] = r[better]
                    robust[todo[r <= self.eps]] = False
        within = best_norm <= self.eps
        adv = torch.where(bview(within, images), best, images)
        success = ~robust  # our view; __call__ decides on the model as given
        queries += 1
        info = {
            "n_target_classes": n_targets,
            "min_norm": [None if math.isinf(v) else v for v in best_norm.tolist()],
        }
        return make_result(adv, images, success, queries, info)
