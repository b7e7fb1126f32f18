"""SPSA (Uesato et al., ICML 2018) at evaluation grade: per-sample directions, chunked, early stop."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._apgd import final_check
from medrobust.attacks._fuse import inference_copy
from medrobust.attacks._utils import (
    bview,
    conv_weights_channels_last,
    make_result,
    margin,
    to_format,
    use_channels_last,
)
from medrobust.attacks.base import Attack, AttackResult, register_attack
from medrobust.errors import ConfigError
from medrobust.limits import MAX_ATTACK_QUERIES, MAX_ATTACK_STEPS
from medrobust.validation import check_float, check_int

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


_BITS = tuple(1 << i for i in range(8))


def rademacher(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Independent ±1 entries (one direction per leading index), drawn from ``generator``.

    Eight signs come from each random byte (``randint`` over ``uint8``, bits unpacked):
    4-5x cheaper than ``bernoulli_`` per entry, which mattered at 128 directions per
    sample and iteration.
    """
    n = math.prod(int(d) for d in shape)
    raw = torch.randint(0, 256, ((n + 7) // 8,), generator=generator, dtype=torch.uint8, device=like.device)
    bits = torch.tensor(_BITS, dtype=torch.uint8, device=like.device)
    signs = (raw.unsqueeze(1) & bits).ne_(0).view(-1)[:n]
    return signs.to(like.dtype).mul_(2.0).sub_(1.0).view(shape)


@register_attack("spsa")
class SPSA(Attack):
    """Gradient-free L∞ attack: SPSA gradient estimates fed to Adam (Uesato et al., 2018).

    Each iteration estimates, for every sample still being attacked, the gradient of the
    margin loss ``z_y - max_{j != y} z_j`` from ``samples`` antithetic pairs
    ``(L(x + delta v) - L(x - delta v)) / (2 delta) * v`` with independent Rademacher
    directions ``v`` **per sample**, takes an Adam step (per-sample state, lr ``lr``)
    to lower the margin and projects onto the ``eps``-ball and the bounds (the perturbed
    copies themselves are not clamped, as in the reference, so the estimate stays
    symmetric at the bounds). With
    ``early_stop`` a sample leaves the batch once misclassified, so it spends no more
    queries. Perturbed copies are evaluated under ``torch.no_grad`` in chunks of at
    most ``chunk`` images, which bounds memory independently of batch and ``samples``.

    ``queries`` counts every forward evaluation of a sample: 1 clean, 1 at the start
    point, then ``2 * samples + 1`` per iteration while the sample is attacked.

    Args:
        model: Classifier returning logits.
        eps: L∞ budget in image units.
        steps: Iterations (100).
        samples: Antithetic direction pairs per iteration and sample (128).
        delta: Finite-difference step in image units (0.01).
        lr: Adam learning rate in image units (0.01).
        chunk: Maximum number of perturbed images per forward pass (even, >= 2).
        random_start: Start uniformly in the ``eps``-ball (True).
        early_stop: Stop attacking a sample once misclassified (True).
        channels_last: Use ``channels_last`` for 4-D inputs (None: on for conv nets).
        fuse_bn: Query a copy of the model with BatchNorm folded into the preceding
            convolutions (checked to give the same logits; see
            :mod:`medrobust.attacks._fuse`); success is re-checked on the model itself.
        bounds, seed: See :class:`~medrobust.attacks.base.Attack`.
    """

    norm: ClassVar[str | None] = "linf"
    gradient_free: ClassVar[bool] = True
    fast_params: ClassVar[dict[str, Any]] = {"steps": 2, "samples": 4, "chunk": 16}

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: Any = 8 / 255,
        steps: int = 100,
        samples: int = 128,
        delta: Any = 0.01,
        lr: Any = 0.01,
        chunk: int = 128,
        random_start: bool = True,
        early_stop: bool = True,
        channels_last: bool | None = None,
        fuse_bn: bool = True,
        bounds: Any = None,
        seed: int = 0,
        **unused: Any,
    ) -> None:
        super().__init__(model, bounds=bounds, seed=seed, **unused)
        owner = type(self).__name__
        low, high = self.bounds
        self.eps = self.budget(eps, "eps")
        self.steps = check_int(steps, "steps", owner, low=1, high=MAX_ATTACK_STEPS)
        self.samples = check_int(samples, "samples", owner, low=1, high=MAX_ATTACK_QUERIES)
        self.delta = check_float(delta, "delta", owner, low=0.0, high=high - low)
        self.lr = check_float(lr, "lr", owner, low=0.0)
        self.chunk = check_int(chunk, "chunk", owner, low=2)
        for name, value in (("random_start", random_start), ("early_stop", early_stop), ("fuse_bn", fuse_bn)):
            if not isinstance(value, bool):
                raise ConfigError(f"The {name!r} parameter of {owner} must be a bool. Got {value!r}.")
        if channels_last is not None and not isinstance(channels_last, bool):
            raise ConfigError(f"The 'channels_last' parameter of {owner} must be a bool or None.")
        self.random_start = random_start
        self.early_stop = early_stop
        self.channels_last = channels_last
        self.fuse_bn = fuse_bn

    def _estimate_grad(
        self, forward: Any, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, buf: torch.Tensor
    ) -> torch.Tensor:
        """SPSA estimate of the margin gradient at ``x`` (one row per sample), in chunks."""
        n = x.shape[0]
        grad = torch.zeros_like(x)
        pairs_per_chunk = self.chunk // 2
        total = n * self.samples
        for start in range(0, total, pairs_per_chunk):
            stop = min(start + pairs_per_chunk, total)
            p = stop - start
            owner = torch.arange(start, stop, device=x.device) // self.samples
            v = rademacher((p, *x.shape[1:]), generator, x)
            base = x[owner]
            batch = buf[: 2 * p]
            torch.add(base, v, alpha=self.delta, out=batch[:p])
            torch.sub(base, v, alpha=self.delta, out=batch[p:])
            loss = margin(forward(batch), torch.cat((y[owner], y[owner])))
            diff = (loss[:p] - loss[p:]) / (2.0 * self.delta)
            grad.index_add_(0, owner, v.mul_(bview(diff, v)))
        return grad.div_(self.samples)

    @torch.no_grad()
    def _attack(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> AttackResult:
        cl = use_channels_last(self.model, images, self.channels_last)
        query_model, query_desc = self.model, "model as given (fuse_bn=False)"
        if self.fuse_bn:
            query_model, query_desc = inference_copy(self.model, to_format(images[:8], cl))
        with conv_weights_channels_last(query_model, cl and query_model is not self.model):
            return self._run(images, labels, generator, cl, query_model, query_desc)

    def _run(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator,
        cl: bool,
        query_model: nn.Module,
        query_desc: str,
    ) -> AttackResult:
        def forward(z: torch.Tensor) -> torch.Tensor:
            return query_model(to_format(z, cl)).float()

        low, high = self.bounds
        n = images.shape[0]
        queries = torch.ones_like(labels)
        robust = forward(images).argmax(dim=1) == labels
        adv = images.clone()
        idx = robust.nonzero().squeeze(1)
        x, y = images[idx], labels[idx]
        if self.random_start:
            d = torch.empty_like(x).uniform_(-self.eps, self.eps, generator=generator)
        else:
            d = torch.zeros_like(x)
        d = (x + d).clamp(low, high) - x
        m, v2 = torch.zeros_like(x), torch.zeros_like(x)
        rows = min(self.chunk, 2 * self.samples * max(n, 1))
        buf = torch.empty((rows, *images.shape[1:]), dtype=images.dtype, device=images.device)
        fooled_at = torch.full((n,), -1, dtype=torch.long, device=images.device)

        def check(it: int) -> torch.Tensor:
            """Evaluate the current points; record newly fooled samples; return still-robust mask."""
            still = forward(x + d).argmax(dim=1) == y
            queries[idx] += 1
            new = (~still) & (fooled_at[idx] < 0)
            adv[idx[new]] = (x + d)[new]
            fooled_at[idx[new]] = it
            return still

        still = check(0)
        for it in range(1, self.steps + 1):
            if self.early_stop and not bool(still.all()):
                keep = still.nonzero().squeeze(1)
                idx, x, y, d, m, v2 = idx[keep], x[keep], y[keep], d[keep], m[keep], v2[keep]
            if idx.numel() == 0:
                break
            g = self._estimate_grad(forward, x + d, y, generator, buf)
            queries[idx] += 2 * self.samples
            m.mul_(_BETA1).add_(g, alpha=1 - _BETA1)
            v2.mul_(_BETA2).addcmul_(g, g, value=1 - _BETA2)
            denom = (v2 / (1 - _BETA2**it)).sqrt_().add_(_ADAM_EPS)
            d = d - (self.lr / (1 - _BETA1**it)) * m / denom
            d = (x + d.clamp(-self.eps, self.eps)).clamp(low, high) - x
            still = check(it)
        never = fooled_at[idx] < 0
        adv[idx[never]] = (x + d)[never]
        success = final_check(self.logits, adv, labels)
        queries += 1
        info = {
            "loss": "margin",
            "fooled_at_iteration": fooled_at.tolist(),
            "directions": "independent Rademacher per sample",
            "query_model": query_desc,
        }
        return make_result(adv, images, success, queries, info)
