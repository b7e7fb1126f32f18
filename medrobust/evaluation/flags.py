"""Sanity flags (AutoAttack- and Carlini-style checks), each a small registered check.

Model checks look at a target on one batch before attacking (gradients, randomness,
probability outputs); results checks look at the finished cells (a black-box attack
beating white-box ones, robust accuracy rising with ε, an unbounded attack short of
0 %, budget violations, BPDA notes). Every flag links to its section of
``docs/flags.md``, which says what it means and what to do.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from medrobust.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

DOC = "docs/flags.md"
#: Robust accuracy an unbounded (minimal-norm) attack may leave before it is flagged.
UNBOUNDED_TOLERANCE = 0.05


@dataclass
class Flag:
    """One raised flag."""

    id: str
    severity: str
    message: str
    target: str | None = None
    threat: str | None = None
    attack: str | None = None
    eps_label: str | None = None
    doc: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored in results.json ``flags``."""
        return asdict(self)


class FlagCheck:
    """Base class of a sanity check. Subclasses implement one of the two hooks."""

    id: ClassVar[str] = "flag"
    severity: ClassVar[str] = "warning"
    title: ClassVar[str] = ""

    def flag(self, message: str, **where: Any) -> Flag:
        """Build a :class:`Flag` of this check."""
        return Flag(self.id, self.severity, message, doc=f"{DOC}#{self.id}", **where)

    def check_model(
        self, target: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> list[Flag]:
        """Inspect a target on one batch (before attacking)."""
        return []

    def check_results(
        self, cells: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
    ) -> list[Flag]:
        """Inspect finished cells."""
        return []


FLAG_CHECKS: Registry[type[FlagCheck]] = Registry("flag")


def register_flag(name: str):
    """Class decorator registering a :class:`FlagCheck` under ``name`` (also its ``id``)."""

    def deco(cls: type[FlagCheck]) -> type[FlagCheck]:
        cls.id = name
        return FLAG_CHECKS.register(name)(cls)

    return deco


def _where(cell: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "target": cell["target"],
        "threat": cell["threat"],
        "attack": cell["attack"],
        "eps_label": cell["eps_label"],
    }


def _ra(cell: Mapping[str, Any]) -> float:
    value = cell["metrics"].get("robust_accuracy")
    return math.nan if value is None else float(value)


# -- model checks ------------------------------------------------------------------------------
@register_flag("zero-or-nan-gradients")
class ZeroGradients(FlagCheck):
    """Input gradients of the loss are zero or NaN for some samples (masked gradients)."""

    title = "Zero or NaN input gradients"

    def check_model(self, target, model, images, labels):  # noqa: D102
        import torch
        import torch.nn.functional as F

        from medrobust.attacks.base import eval_mode

        x = images.detach().clone().requires_grad_(True)
        with eval_mode(model):
            loss = F.cross_entropy(model(x).float(), labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
        flat = grad.flatten(1)
        nan = int((~torch.isfinite(flat)).any(dim=1).sum())
        zero = int((flat.abs().amax(dim=1) == 0).sum())
        if nan or zero:
            return [
                self.flag(
                    f"{target}: input gradients are NaN/inf for {nan} and exactly zero for {zero} of "
                    f"{len(labels)} samples; gradient-based attacks may be blind here.",
                    target=target,
                )
            ]
        return []


@register_flag("stochastic-model")
class StochasticModel(FlagCheck):
    """Two forward passes on the same input give different logits (randomised defense)."""

    title = "Stochastic model"

    def check_model(self, target, model, images, labels):  # noqa: D102
        import torch

        from medrobust.attacks.base import eval_mode

        with torch.no_grad(), eval_mode(model):
            a = model(images).float()
            b = model(images).float()
        diff = float((a - b).abs().max())
        scale = float(a.abs().max()) + 1e-12
        if diff > 1e-5 * max(scale, 1.0):
            return [
                self.flag(
                    f"{target}: two passes on the same input differ by up to {diff:.3g} in the logits; "
                    "attack it with Expectation over Transformation, and report averaged predictions.",
                    target=target,
                )
            ]
        return []


@register_flag("probability-outputs")
class ProbabilityOutputs(FlagCheck):
    """The model's outputs look like probabilities (rows in [0, 1] summing to 1), not logits."""

    title = "Outputs look like probabilities"

    def check_model(self, target, model, images, labels):  # noqa: D102
        import torch

        from medrobust.attacks.base import eval_mode

        with torch.no_grad(), eval_mode(model):
            out = model(images).float()
        if bool(((out >= 0) & (out <= 1)).all()) and bool(
            torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-3)
        ):
            return [
                self.flag(
                    f"{target}: outputs are in [0, 1] and sum to 1 per row (probabilities, not logits); "
                    "cross-entropy on them gives weak gradients. Declare outputs: probabilities in "
                    "the model card.",
                    target=target,
                )
            ]
        return []


# -- results checks ----------------------------------------------------------------------------
@register_flag("blackbox-beats-whitebox")
class BlackBoxBeatsWhiteBox(FlagCheck):
    """A gradient-free attack gets lower robust accuracy than every gradient attack (same cell)."""

    title = "Black-box attack beats white-box attacks"

    def check_results(self, cells, targets):  # noqa: D102
        groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
        for c in cells:
            groups[(c["target"], c["threat"], c["norm"], c["eps_label"])].append(c)
        out = []
        for group in groups.values():
            white = [c for c in group if not c.get("gradient_free")]
            black = [c for c in group if c.get("gradient_free")]
            if not white or not black:
                continue
            best_white = min(white, key=_ra)
            for c in black:
                if _ra(c) < _ra(best_white) - 1e-9:
                    out.append(
                        self.flag(
                            f"{c['attack']} (gradient-free) reaches robust accuracy {_ra(c):.3f} < "
                            f"{_ra(best_white):.3f} of the best gradient attack ({best_white['attack']}): "
                            "gradients are likely masked or obfuscated.",
                            **_where(c),
                        )
                    )
        return out


@register_flag("robust-accuracy-rises-with-eps")
class RisesWithEps(FlagCheck):
    """Robust accuracy is higher at a larger budget for the same attack and target."""

    title = "Robust accuracy rises with ε"

    def check_results(self, cells, targets):  # noqa: D102
        groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
        for c in cells:
            groups[(c["target"], c["threat"], c["attack"])].append(c)
        out = []
        for group in groups.values():
            ordered = sorted(group, key=lambda c: math.inf if c["eps"] is None else c["eps"])
            for small, large in itertools.pairwise(ordered):
                if _ra(large) > _ra(small) + 1e-9:
                    out.append(
                        self.flag(
                            f"robust accuracy {_ra(large):.3f} at ε={large['eps_label']} exceeds "
                            f"{_ra(small):.3f} at ε={small['eps_label']}: the attack is not converging "
                            "(more steps/restarts) or gradients are unreliable.",
                            **_where(large),
                        )
                    )
        return out


@register_flag("unbounded-attack-not-zero")
class UnboundedNotZero(FlagCheck):
    """An unbounded minimal-norm attack (CW, DeepFool) leaves robust accuracy above 5 % (not graybox)."""

    title = "Unbounded attack short of 0 %"

    def check_results(self, cells, targets):  # noqa: D102
        out = []
        for c in cells:
            # graybox cells transfer examples crafted on another model: not reaching 0 % is expected
            if (
                c.get("minimal")
                and c["eps"] is None
                and c["threat"] != "graybox"
                and _ra(c) > UNBOUNDED_TOLERANCE
            ):
                out.append(
                    self.flag(
                        f"{c['attack']} with an unbounded budget leaves robust accuracy {_ra(c):.3f} "
                        f"(> {UNBOUNDED_TOLERANCE:.0%}); an unbounded attack should reach 0 %: increase "
                        "its steps/constants, or suspect gradient masking.",
                        **_where(c),
                    )
                )
        return out


@register_flag("budget-violation")
class BudgetViolation(FlagCheck):
    """A bounded attack returned perturbations larger than its budget (not counted)."""

    title = "Perturbation over budget"

    def check_results(self, cells, targets):  # noqa: D102
        out = []
        for c in cells:
            n = int(c.get("n_over_budget") or 0)
            if not c.get("minimal") and n:
                out.append(
                    self.flag(
                        f"{n} adversarial example(s) exceed ε={c['eps_label']} ({c['norm']}) and were "
                        "counted as not attacked: the attack implementation is wrong.",
                        **_where(c),
                    )
                )
        return out


@register_flag("bpda-used")
class BPDAUsed(FlagCheck):
    """Adaptive attacks used BPDA (straight-through gradients) for a non-differentiable denoiser."""

    severity = "info"
    title = "BPDA used"

    def check_results(self, cells, targets):  # noqa: D102
        out = []
        for t in targets:
            if t.get("uses_bpda") and any(
                c["target"] == t["name"] and c["threat"] == "adaptive" for c in cells
            ):
                out.append(
                    self.flag(
                        f"{t['name']}: the denoiser is not differentiable; adaptive attacks used BPDA "
                        "(identity gradient through the denoiser).",
                        target=t["name"],
                        threat="adaptive",
                    )
                )
        return out


def run_model_checks(target: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[Flag]:
    """Run every registered model check on one batch of ``target``."""
    out: list[Flag] = []
    for name in FLAG_CHECKS.names():
        out += FLAG_CHECKS.get(name)().check_model(target, model, images, labels)
    return out


def run_results_checks(
    cells: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
) -> list[Flag]:
    """Run every registered results check on finished cells."""
    out: list[Flag] = []
    for name in FLAG_CHECKS.names():
        out += FLAG_CHECKS.get(name)().check_results(cells, targets)
    return out
