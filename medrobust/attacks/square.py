"""Square Attack (Andriushchenko et al., ECCV 2020): score-based random search, L∞ and L2."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._budget import BudgetAttack
from medrobust.attacks._utils import bview, flat_norm, make_result, margin
from medrobust.attacks.base import AttackResult, register_attack
from medrobust.limits import MAX_ATTACK_QUERIES, MAX_ATTACK_RESTARTS
from medrobust.validation import check_float, check_int

#: (iteration upper bound, divisor of p_init) of the paper's piecewise-constant schedule.
_P_SCHEDULE = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
)


def p_selection(p_init: float, it: int, n_queries: int, rescale: bool) -> float:
    """Fraction of pixels changed at iteration ``it`` (halved at 10, 50, 200, ... iterations)."""
    if rescale:
        it = int(it / n_queries * 10000)
    for upper, div in _P_SCHEDULE:
        if it <= upper:
            return p_init / div
    return p_init / 512


def _signs(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=like.device).to(like.dtype) * 2 - 1


def _window_mask(corner_h: torch.Tensor, corner_w: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """Per-sample (n, 1, h, w) 0/1 mask of the s×s window with the given top-left corners."""
    rows = torch.arange(h, device=corner_h.device)[None, :] - corner_h[:, None]
    cols = torch.arange(w, device=corner_w.device)[None, :] - corner_w[:, None]
    in_r = (rows >= 0) & (rows < s)
    in_c = (cols >= 0) & (cols < s)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None].float()


def _corners(n: int, s: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, max(size - s, 1), (n,), generator=generator, device=device)


def _eta_rectangles(a: int, b: int) -> torch.Tensor:
    """Concentric rectangles with weights 1/(k+1)^2 (the paper's L2 building block), unit norm."""
    delta = torch.zeros(a, b)
    ch, cw = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        delta[max(ch - k, 0) : min(ch - k + 2 * k + 1, a), max(cw - k, 0) : min(cw - k + 2 * k + 1, b)] += (
            1.0 / (k + 1) ** 2
        )
    return delta / delta.norm().clamp_min(1e-12)


def _eta(s: int) -> torch.Tensor:
    """The s×s L2 update pattern: rectangles of opposite sign in the two halves, unit norm."""
    delta = torch.zeros(s, s)
    if s // 2:
        delta[: s // 2] = _eta_rectangles(s // 2, s)
    delta[s // 2 :] = -_eta_rectangles(s - s // 2, s)
    return delta / delta.norm().clamp_min(1e-12)


def _place(
    pattern: torch.Tensor, corner_h: torch.Tensor, corner_w: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """Put per-sample patterns (n, s, s) at the given corners of an (n, 1, h, w) canvas."""
    n, s = pattern.shape[0], pattern.shape[1]
    rows = torch.arange(h, device=pattern.device)[None, :] - corner_h[:, None]
    cols = torch.arange(w, device=pattern.device)[None, :] - corner_w[:, None]
    valid = ((rows >= 0) & (rows < s))[:, :, None] & ((cols >= 0) & (cols < s))[:, None, :]
    picked = pattern[
        torch.arange(n, device=pattern.device)[:, None, None],
        rows.clamp(0, s - 1)[:, :, None],
        cols.clamp(0, s - 1)[:, None, :],
    ]
    return (picked * valid)[:, None]


def _etas(n: int, s: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """``n`` copies of the pattern, each transposed with probability 1/2."""
    base = _eta(s).to(device=like.device, dtype=like.dtype)
    flip = torch.rand(n, generator=generator, device=like.device) > 0.5
    return torch.where(flip[:, None, None], base.t()[None], base[None])


def square_run(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str,
    n_queries: int,
    p_init: float,
    rescale: bool,
    bounds: tuple[float, float],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Square Attack run on the margin loss; returns (adv, fooled, queries per sample).

    Images are treated as (n, C', H, W) over their last two axes (C' folds channels and
    any depth axis). Window positions and signs are drawn per sample, as in the paper.
    """
    shape = x.shape
    n = shape[0]
    h, w = shape[-2], shape[-1]
    xs = x.reshape(n, -1, h, w)
    c = xs.shape[1]
    low, high = bounds

    def loss(z: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return margin(logits_fn(z.reshape((z.shape[0], *shape[1:]))), yy)

    def normalize_l2(d: torch.Tensor) -> torch.Tensor:
        return d / bview(flat_norm(d) + 1e-12, d)

    if norm == "linf":
        x_best = (xs + eps * _signs((n, c, 1, w), generator, xs)).clamp(low, high)
    else:
        s0 = max(min(h, w) // 5, 1)
        delta = torch.zeros_like(xs)
        nh, nw = h // s0, w // s0
        off_h, off_w = (h - nh * s0) // 2, (w - nw * s0) // 2
        for i in range(nh):
            for j in range(nw):
                pat = _etas(n, s0, generator, xs)[:, None]
                r, q = off_h + i * s0, off_w + j * s0
                delta[:, :, r : r + s0, q : q + s0] += pat * _signs((n, c, 1, 1), generator, xs)
        x_best = (xs + eps * normalize_l2(delta)).clamp(low, high)
    with torch.no_grad():
        margin_min = loss(x_best, y)
    queries = torch.ones(n, dtype=torch.long, device=x.device)

    for it in range(n_queries):
        act = (margin_min > 0).nonzero().squeeze(1)
        if act.numel() == 0:
            break
        na = act.numel()
        x_curr, x_best_curr, m_curr = xs[act], x_best[act], margin_min[act]
        p = p_selection(p_init, it, n_queries, rescale)
        side = round(math.sqrt(p * h * w))
        if norm == "linf":
            s = min(max(side, 1), h, w)
            vh = _corners(na, s, h, generator, x.device)
            vw = _corners(na, s, w, generator, x.device)
            mask = _window_mask(vh, vw, s, h, w)
            step = 2.0 * eps * _signs((na, c, 1, 1), generator, xs)
            x_new = x_best_curr + mask * step
            x_new = torch.minimum(torch.maximum(x_new, x_curr - eps), x_curr + eps).clamp(low, high)
        else:
            s = max(side, 3)
            s = s + 1 if s % 2 == 0 else s
            s = min(s, h, w)
            delta = x_best_curr - x_curr
            vh = _corners(na, s, h, generator, x.device)
            vw = _corners(na, s, w, generator, x.device)
            vh2 = _corners(na, s, h, generator, x.device)
            vw2 = _corners(na, s, w, generator, x.device)
            m1 = _window_mask(vh, vw, s, h, w)
            m2 = _window_mask(vh2, vw2, s, h, w)
            norm_w1 = (delta * m1).pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
            norm_img = flat_norm(delta)
            norm_windows = flat_norm(delta * torch.maximum(m1, m2))
            new = _place(_etas(na, s, generator, xs), vh, vw, h, w) * _signs((na, c, 1, 1), generator, xs)
            new = new + delta * m1 / (1e-12 + norm_w1)
            scale = ((eps**2 - norm_img**2).clamp_min(0.0) / c + norm_windows**2).sqrt()
            new = new / (1e-12 + new.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()) * bview(scale, new)
            delta = delta * (1 - m1) * (1 - m2) + new * m1
            x_new = (x_curr + eps * normalize_l2(delta)).clamp(low, high)
        with torch.no_grad():
            m_new = loss(x_new, y[act])
        queries[act] += 1
        improved = m_new < m_curr
        margin_min[act] = torch.where(improved, m_new, m_curr)
        x_best[act] = torch.where(bview(improved, x_new), x_new, x_best_curr)
    return x_best.reshape(shape), margin_min <= 0, queries


@register_attack("square")
class Square(BudgetAttack):
    """Square Attack: gradient-free random search with square-shaped updates (margin loss).

    AutoAttack settings by default: 5000 queries, ``p_init = 0.8``, one restart, the
    schedule of ``p`` by raw iteration count (``rescale_schedule=False``). Works in image
    units for any bounds; the square updates act on the last two (spatial) axes.

    Args:
        queries: Query budget per restart (5000).
        p_init: Initial fraction of pixels changed per update (0.8).
        restarts: Runs; each attacks only samples still classified correctly.
        rescale_schedule: Stretch the ``p`` schedule to ``queries`` (as if 10000).
        eps, norm, channels_last, bounds, seed: See :class:`BudgetAttack`.
    """

    gradient_free: ClassVar[bool] = True
    fast_params: ClassVar[dict[str, Any]] = {"queries": 20}

    def __init__(
        self,
        model: nn.Module,
        *,
        queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        rescale_schedule: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        owner = type(self).__name__
        self.queries = check_int(queries, "queries", owner, low=1, high=MAX_ATTACK_QUERIES)
        self.p_init = check_float(p_init, "p_init", owner, low=0.0, high=1.0)
        self.restarts = check_int(restarts, "restarts", owner, low=1, high=MAX_ATTACK_RESTARTS)
        if not isinstance(rescale_schedule, bool):
            from medrobust.errors import ConfigError

            raise ConfigError(
                f"The 'rescale_schedule' parameter of {owner} must be a bool. Got {rescale_schedule!r}."
            )
        self.rescale_schedule = rescale_schedule

    @torch.no_grad()
    def _attack(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> AttackResult:
        logits_fn = self._logits_fn(images)
        robust = logits_fn(images).argmax(dim=1) == labels
        queries = torch.ones_like(labels)
        adv = images.clone()
        for _ in range(self.restarts):
            todo = robust.nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            a, f, q = square_run(
                logits_fn,
                images[todo],
                labels[todo],
                eps=self.eps,
                norm=self.norm,
                n_queries=self.queries,
                p_init=self.p_init,
                rescale=self.rescale_schedule,
                bounds=self.bounds,
                generator=generator,
            )
            queries[todo] += q
            adv[todo[f]] = a[f]
            robust[todo[f]] = False
        success = ~robust  # our view; __call__ decides on the model as given
        queries += 1
        return make_result(adv, images, success, queries, {"loss": "margin"})
