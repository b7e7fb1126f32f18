"""SPSA (Uesato et al., ICML 2018) at evaluation grade: per-sample directions, chunked, early stop."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.attacks._utils import bview, check_bool, make_result, margin, to_format, use_channels_last
from medrobust.attacks.base import Attack, AttackResult, register_attack
from medrobust.errors import ConfigError
from medrobust.limits import MAX_ATTACK_QUERIES, MAX_ATTACK_STEPS
from medrobust.validation import check_float, check_int

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


_BITS = tuple(1 << i for i in range(8))

#: Direction pairs per random draw. Directions are drawn in blocks of this many pairs
#: whatever the chunk size, so the chunk (chosen from free memory by default) never
#: changes which directions a sample gets.
DRAW_PAIRS = 16

#: CPU: the automatic chunk keeps the largest activation of a chunk within this many bytes.
#: Smaller batches stay in cache: SPSA 2 x 128 on 16 images of ``small_cnn`` (1x64x64, one
#: thread) took about 2 s at chunk 32-128, 3.3 s at 256, 4.1 s at 512 and 4.7 s at 1024-4096.
CPU_WORKING_SET = 16 * 2**20

#: Accelerators: largest automatic chunk.
MAX_AUTO_CHUNK = 8192

#: Fraction of the free memory an automatic chunk may use.
MEMORY_FRACTION = 0.25


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


class Directions:
    """The Rademacher directions of one SPSA iteration, handed out in any chunk sizes.

    Drawn in blocks of :data:`DRAW_PAIRS` pairs (one :func:`rademacher` call each); a block's
    unused rows wait for the next chunk. The sequence therefore depends on the generator
    only, not on how it is split into chunks.
    """

    def __init__(self, shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> None:
        self.shape = shape
        self.generator = generator
        self.like = like
        self.pending: torch.Tensor | None = None

    def take(self, p: int) -> torch.Tensor:
        """The next ``p`` directions, ``(p, *shape)``."""
        parts: list[torch.Tensor] = []
        have = 0
        if self.pending is not None:
            parts.append(self.pending)
            have = self.pending.shape[0]
        while have < p:
            block = rademacher((DRAW_PAIRS, *self.shape), self.generator, self.like)
            parts.append(block)
            have += DRAW_PAIRS
        rows = parts[0] if len(parts) == 1 else torch.cat(parts)
        self.pending = rows[p:] if have > p else None
        return rows[:p]


def free_memory(device: torch.device) -> int:
    """Bytes free for tensors on ``device`` (CUDA: ``mem_get_info``; else available RAM)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


@torch.no_grad()
def activation_bytes(net: nn.Module, probe: torch.Tensor) -> tuple[int, int]:
    """``(largest module output, estimated peak)`` in bytes per image of a no-grad forward.

    Measured with forward hooks on one probe image. The peak counts the largest output four
    times (a layer's input and output, a residual branch, the allocator's slack) plus the
    perturbed input three times (the batch, its direction and the clean rows it is built from).
    """
    largest = 0

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    try:
        net(probe)
    finally:
        for h in handles:
            h.remove()
    per_image = probe[:1].numel() * probe.element_size()
    largest = max(largest, per_image)
    return largest, 4 * largest + 3 * per_image


def auto_chunk(net: nn.Module, probe: torch.Tensor, needed: int) -> int:
    """Perturbed images per forward, from free memory (and, on CPU, the cache).

    At most what :data:`MEMORY_FRACTION` of the free memory holds (psutil's available RAM;
    ``torch.cuda.mem_get_info`` on CUDA); on CPU also at most :data:`CPU_WORKING_SET` of
    largest activation, elsewhere at most :data:`MAX_AUTO_CHUNK`. Rounded down to a power of
    two (small fluctuations of free memory do not change it), at least 2, and never more than
    ``needed`` (rounded up to even).
    """
    largest, per_image = activation_bytes(net, probe[:1])
    fits = int(MEMORY_FRACTION * free_memory(probe.device)) // per_image
    cap = CPU_WORKING_SET // largest if probe.device.type == "cpu" else MAX_AUTO_CHUNK
    chunk = 2 ** int(math.log2(max(min(fits, cap), 2)))
    return max(2, min(chunk, needed + needed % 2))


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
    most ``chunk`` images, which bounds memory independently of batch and ``samples``:
    each chunk is built directly in the queried layout (``channels_last`` for conv nets),
    both signs of its pairs in one forward of the BatchNorm-folded model.

    ``queries`` counts every forward evaluation of a sample: 1 clean, 1 at the start
    point, then ``2 * samples + 1`` per iteration while the sample is attacked.

    Args:
        model: Classifier returning logits.
        eps: L∞ budget in image units.
        steps: Iterations (100).
        samples: Antithetic direction pairs per iteration and sample (128).
        delta: Finite-difference step in image units (0.01).
        lr: Adam learning rate in image units (0.01).
        chunk: Perturbed images per forward pass (even, >= 2); ``None`` (default) picks a
            power of two that a quarter of the free memory holds (psutil, or
            ``torch.cuda.mem_get_info``), on CPU also small enough to stay in cache (see
            :func:`auto_chunk`). Results do not depend on it: directions are drawn in fixed
            blocks of pairs.
        random_start: Start uniformly in the ``eps``-ball (True).
        early_stop: Stop attacking a sample once misclassified (True).
        channels_last: Use ``channels_last`` for 4-D inputs (None: on for conv nets).
        fuse_bn: Query a copy of the model with BatchNorm folded into the preceding
            convolutions (see :class:`~medrobust.attacks.base.Attack`); success is
            decided on the model as given.
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
        chunk: int | None = None,
        random_start: bool = True,
        early_stop: bool = True,
        channels_last: bool | None = None,
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
        self.chunk = None if chunk is None else check_int(chunk, "chunk", owner, low=2)
        for name, value in (("random_start", random_start), ("early_stop", early_stop)):
            if not isinstance(value, bool):
                raise ConfigError(f"The {name!r} parameter of {owner} must be a bool. Got {value!r}.")
        self.random_start = random_start
        self.early_stop = early_stop
        self.channels_last = check_bool(channels_last, "channels_last", owner, allow_none=True)

    def _estimate_grad(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        directions: Directions,
        buf: torch.Tensor,
    ) -> torch.Tensor:
        """SPSA estimate of the margin gradient at ``x`` (one row per sample), in chunks.

        ``buf`` (chunk rows, in the queried layout) receives ``x + delta v`` in its first
        half and ``x - delta v`` in its second: one forward per chunk.
        """
        n = x.shape[0]
        grad = torch.zeros_like(x)
        pairs_per_chunk = buf.shape[0] // 2
        total = n * self.samples
        for start in range(0, total, pairs_per_chunk):
            stop = min(start + pairs_per_chunk, total)
            p = stop - start
            owner = torch.arange(start, stop, device=x.device) // self.samples
            v = directions.take(p)
            base = x[owner]
            batch = buf[: 2 * p]
            torch.add(base, v, alpha=self.delta, out=batch[:p])
            torch.sub(base, v, alpha=self.delta, out=batch[p:])
            loss = margin(self.query(batch), torch.cat((y[owner], y[owner])))
            diff = (loss[:p] - loss[p:]) / (2.0 * self.delta)
            grad.index_add_(0, owner, v.mul_(bview(diff, v)))
        return grad.div_(self.samples)

    @torch.no_grad()
    def _attack(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> AttackResult:
        cl = use_channels_last(self.model, images, self.channels_last)
        fmt = torch.channels_last if cl else torch.contiguous_format

        def forward(z: torch.Tensor) -> torch.Tensor:
            return self.query(to_format(z, cl))

        low, high = self.bounds
        n = images.shape[0]
        queries = torch.ones_like(labels)
        robust = forward(images).argmax(dim=1) == labels
        adv = images.clone()
        idx = robust.nonzero().squeeze(1)
        x, y = to_format(images[idx], cl), labels[idx]
        if self.random_start:
            d = torch.empty_like(x).uniform_(-self.eps, self.eps, generator=generator)
        else:
            d = torch.zeros_like(x)
        d = (x + d).clamp(low, high) - x
        m, v2 = torch.zeros_like(x), torch.zeros_like(x)
        needed = 2 * self.samples * max(idx.numel(), 1)
        if self.chunk is None:
            chunk = auto_chunk(self.net, to_format(images[:1], cl), needed) if idx.numel() else 2
        else:
            chunk = self.chunk
        rows = min(chunk - chunk % 2, needed)
        buf = torch.empty((rows, *images.shape[1:]), dtype=images.dtype, device=images.device)
        buf = buf.contiguous(memory_format=fmt)
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
            directions = Directions(tuple(x.shape[1:]), generator, x)
            g = self._estimate_grad(x + d, y, directions, buf)
            queries[idx] += 2 * self.samples
            m.mul_(_BETA1).add_(g, alpha=1 - _BETA1)
            v2.mul_(_BETA2).addcmul_(g, g, value=1 - _BETA2)
            denom = (v2 / (1 - _BETA2**it)).sqrt_().add_(_ADAM_EPS)
            d = d - (self.lr / (1 - _BETA1**it)) * m / denom
            d = (x + d.clamp(-self.eps, self.eps)).clamp(low, high) - x
            still = check(it)
        never = fooled_at[idx] < 0
        adv[idx[never]] = (x + d)[never]
        success = ~robust | (fooled_at >= 0)  # our view; __call__ decides on the model as given
        queries += 1  # the success forward of __call__
        info = {
            "loss": "margin",
            "fooled_at_iteration": fooled_at.tolist(),
            "directions": "independent Rademacher per sample",
            "chunk": int(rows),
            "channels_last": cl,
        }
        return make_result(adv, images, success, queries, info)
