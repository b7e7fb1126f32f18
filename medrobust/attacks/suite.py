"""Run a list of attacks with early stopping: each attack sees only still-robust points.

>>> result = run_suite(model, [create_attack("apgd-ce", model, eps=eps),
...                            create_attack("square", model, eps=eps)], images, labels)  # doctest: +SKIP
>>> result.robust_accuracy  # {"clean": 0.93, "apgd-ce": 0.41, "square": 0.40}       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medrobust.attacks.base import Attack, eval_mode, perturbation_norms, plain_tensor
from medrobust.errors import ConfigError
from medrobust.validation import check_int


@dataclass
class SuiteResult:
    """Worst case over a suite of attacks, per sample.

    Attributes:
        adv: Per sample the first successful adversarial (else the clean image).
        clean_correct: Clean prediction equals the label (computed once).
        success: Some attack fooled a clean-correct sample.
        robust: ``clean_correct & ~success``.
        fooled_by: Per sample index into ``attack_names`` of the first attack that fooled
            it; ``-1`` when none did (or the sample was misclassified clean).
        attack_names: Names of the attacks in order (``name#i`` when a name repeats).
        linf, l2: Norms of ``adv - images`` (0 where no attack succeeded).
        queries: Forward evaluations spent per sample, summed over the attacks run on it.
        robust_accuracy: ``{"clean": acc, name: robust accuracy after that stage, ...}``.
        info: Per attack, the ``info`` dicts of its result batches.
    """

    adv: torch.Tensor
    clean_correct: torch.Tensor
    success: torch.Tensor
    robust: torch.Tensor
    fooled_by: torch.Tensor
    attack_names: list[str]
    linf: torch.Tensor
    l2: torch.Tensor
    queries: torch.Tensor
    robust_accuracy: dict[str, float]
    info: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _names(attacks: Sequence[Attack]) -> list[str]:
    out: list[str] = []
    for i, atk in enumerate(attacks):
        name = getattr(atk, "name", type(atk).__name__)
        out.append(name if name not in out else f"{name}#{i}")
    return out


def run_suite(
    model: nn.Module,
    attacks: Sequence[Attack],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 64,
) -> SuiteResult:
    """Run ``attacks`` in order, handing only still-robust points to the next one.

    Clean predictions are computed once; misclassified points are never attacked.
    A point counts as fooled by the first attack whose result reports ``success``.

    Args:
        model: The classifier all ``attacks`` were built for.
        attacks: Attack instances, run in order.
        images: Inputs (N, C, ...) inside the attacks' bounds.
        labels: True labels (N,).
        batch_size: Points per attack call.

    Returns:
        A :class:`SuiteResult`.
    """
    if not attacks:
        raise ConfigError("The 'attacks' parameter of run_suite must list at least one attack. Got [].")
    for atk in attacks:
        if not isinstance(atk, Attack):
            raise ConfigError(f"run_suite expects Attack instances. Got {type(atk).__name__}.")
        if atk.model is not model:
            raise ConfigError(f"run_suite: attack {atk.name!r} was built for a different model.")
    batch_size = check_int(batch_size, "batch_size", "run_suite", low=1)
    images = plain_tensor(images).detach()
    labels = plain_tensor(labels).detach().long().view(-1)
    n = images.shape[0]
    if labels.shape[0] != n:
        raise ConfigError(f"run_suite: got {n} images and {labels.shape[0]} labels.")

    with eval_mode(model), torch.no_grad():
        preds = torch.cat([model(images[i : i + batch_size]).argmax(dim=1) for i in range(0, n, batch_size)])
    clean_correct = preds == labels
    names = _names(attacks)
    adv = images.clone()
    success = torch.zeros(n, dtype=torch.bool, device=images.device)
    fooled_by = torch.full((n,), -1, dtype=torch.long, device=images.device)
    queries = torch.zeros(n, dtype=torch.long, device=images.device)
    acc: dict[str, float] = {"clean": clean_correct.float().mean().item() if n else 0.0}
    info: dict[str, list[dict[str, Any]]] = {}

    for k, (name, atk) in enumerate(zip(names, attacks, strict=True)):
        todo = (clean_correct & ~success).nonzero().squeeze(1)
        info[name] = []
        for i in range(0, todo.numel(), batch_size):
            idx = todo[i : i + batch_size]
            res = atk(images[idx], labels[idx])
            queries[idx] += res.queries.to(queries.device)
            hit = idx[res.success.to(idx.device)]
            adv[hit] = res.adv[res.success].to(adv.dtype)
            success[hit] = True
            fooled_by[hit] = k
            info[name].append(res.info)
        acc[name] = (clean_correct & ~success).float().mean().item() if n else 0.0

    linf, l2 = perturbation_norms(adv, images)
    return SuiteResult(
        adv=adv,
        clean_correct=clean_correct,
        success=success,
        robust=clean_correct & ~success,
        fooled_by=fooled_by,
        attack_names=names,
        linf=linf,
        l2=l2,
        queries=queries,
        robust_accuracy=acc,
        info=info,
    )
