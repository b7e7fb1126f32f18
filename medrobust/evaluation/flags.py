"""Sanity flags (AutoAttack- and Carlini-style checks), each a small registered check.

Model checks look at a target on one batch before attacking (gradients, randomness,
probability outputs); results checks look at the finished cells (a black-box attack
beating white-box ones, robust accuracy rising with ε, an unbounded attack short of
0 %, budget violations, BPDA notes); audit checks look at the whole results (degenerate
targets: constant predictions, chance-level accuracy, a class never recognised, a costly
defense, a target the attack makes *more* accurate, too few or missing-class samples,
under-powered gradient-free attacks). Every flag links to its section of
``docs/flags.md``, which says what it means and what to do.

Levels: ``error`` (the target's numbers are not evidence of robustness; every gate on it
fails), ``warning`` (a number may be too optimistic) and ``info``.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from medrobust.evaluation.results import (
    AuditDocument,
    Cell,
    Flag,
    TargetInfo,
    as_cells,
    as_document,
    as_flags,
)
from medrobust.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

DOC = "docs/flags.md"
#: Robust accuracy an unbounded (minimal-norm) attack may leave before it is flagged.
UNBOUNDED_TOLERANCE = 0.05
#: Flag levels, most severe first.
SEVERITIES = ("error", "warning", "info")
#: Defaults of the thresholds of the audit checks (``checks:`` in the audit config).
CHECK_DEFAULTS: dict[str, float] = {
    "chance_margin": 0.10,
    "max_defense_cost": 0.05,
    "min_samples": 30,
    "gradient_free_ratio": 0.5,
}


class FlagCheck:
    """Base class of a sanity check. Subclasses implement one of the two hooks."""

    id: ClassVar[str] = "flag"
    severity: ClassVar[str] = "warning"
    title: ClassVar[str] = ""
    #: One or two sentences: why it matters and what to do (shown in the report's flag reference).
    advice: ClassVar[str] = ""

    def flag(self, message: str, severity: str | None = None, **where: Any) -> Flag:
        """Build a :class:`Flag` of this check (``severity`` overrides the check's level)."""
        return Flag(self.id, severity or self.severity, message, doc=f"{DOC}#{self.id}", **where)

    def check_model(
        self, target: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> list[Flag]:
        """Inspect a target on one batch (before attacking)."""
        return []

    def check_results(self, cells: Sequence[Cell], targets: Sequence[TargetInfo]) -> list[Flag]:
        """Inspect finished cells (records; :func:`run_results_checks` reads dicts into them)."""
        return []

    def check_audit(self, results: AuditDocument | Mapping[str, Any]) -> list[Flag]:
        """Inspect the whole results (data, targets with clean metrics, cells, config)."""
        return []


FLAG_CHECKS: Registry[type[FlagCheck]] = Registry("flag")


#: ``@register_flag("name")``: registers the check and sets its ``id``.
register_flag = FLAG_CHECKS.decorator("id")


#: Input-gradient norm below which a sample's gradient counts as useless (``gradient-masking``).
TINY_GRADIENT = 1e-12


def is_randomised(model: nn.Module, images: torch.Tensor) -> bool:
    """Whether ``model`` is randomised: it declares ``stochastic`` or two passes on ``images`` differ."""
    import torch

    from medrobust.attacks.base import eval_mode
    from medrobust.defenses.denoisers.randomized import is_stochastic

    if is_stochastic(model):
        return True
    if not len(images):
        return False
    with torch.no_grad(), eval_mode(model):
        a = model(images).float()
        b = model(images).float()
    return float((a - b).abs().max()) > 1e-5 * max(float(a.abs().max()), 1.0)


def input_gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Any:
    """Per-sample L2 norm of the cross-entropy loss's input gradient through ``model`` (NaN if non-finite).

    Returns:
        ``(N,)`` float64 numpy array.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from medrobust.attacks.base import eval_mode

    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), eval_mode(model):
        loss = F.cross_entropy(model(x).float(), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    flat = grad.detach().flatten(1).double()
    norms = flat.norm(dim=1)
    norms[~torch.isfinite(flat).all(dim=1)] = float("nan")
    return norms.cpu().numpy().astype(np.float64)


def gradient_summary(norms: Any) -> dict[str, Any]:
    """The useless-gradient check of one target: counts of tiny (< 1e-12) and non-finite input gradients."""
    import numpy as np

    norms = np.asarray(norms, dtype=np.float64)
    nonfinite = ~np.isfinite(norms)
    tiny = np.isfinite(norms) & (norms < TINY_GRADIENT)
    n = int(norms.size)
    bad = int((tiny | nonfinite).sum())
    return {
        "n": n,
        "n_tiny": int(tiny.sum()),
        "n_nonfinite": int(nonfinite.sum()),
        "fraction": bad / n if n else 0.0,
        "median_norm": float(np.median(norms[np.isfinite(norms)])) if (~nonfinite).any() else None,
    }


def uses_eot(cell: Cell) -> bool:
    """Whether a cell's attack used EOT (recorded ``eot``, else read from its name and parameters)."""
    if cell.eot is not None:
        return bool(cell.eot)
    params = cell.params or {}
    if cell.attack_name == "eot-pgd":
        return True
    if cell.attack_name == "autoattack":
        return params.get("version") == "rand"
    try:
        return int(params.get("eot_iter") or 1) > 1
    except (TypeError, ValueError):
        return False


def _where(cell: Cell) -> dict[str, Any]:
    return {"target": cell.target, "threat": cell.threat, "attack": cell.attack, "eps_label": cell.eps_label}


def _ra(cell: Cell) -> float:
    return cell.robust_accuracy


# -- model checks ------------------------------------------------------------------------------
@register_flag("zero-or-nan-gradients")
class ZeroGradients(FlagCheck):
    """Input gradients of the loss are zero or NaN for some samples (masked gradients)."""

    title = "Zero or NaN input gradients"
    advice = (
        "Gradient-based attacks make no progress where gradients vanish, so robust accuracy looks high "
        "(gradient masking). Check that the model returns logits, compare with SPSA/Square, use BPDA for "
        "non-differentiable steps."
    )

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
    advice = (
        "Randomised outputs make single-pass gradients noisy and results irreproducible. Attack with "
        "Expectation over Transformation and report averaged predictions, or remove the randomness."
    )

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
    advice = (
        "Cross-entropy on probabilities gives vanishing gradients, so attacks look weak. Declare "
        "outputs: probabilities in the model card."
    )

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
    advice = (
        "With gradients, white-box attacks should be at least as strong: the gradients are likely masked. "
        "Trust the per-sample worst case; investigate with BPDA/EOT, more steps or other losses."
    )

    def check_results(self, cells, targets):  # noqa: D102
        groups: dict[tuple, list[Cell]] = defaultdict(list)
        for c in cells:
            groups[(c.target, c.threat, c.norm, c.eps_label)].append(c)
        out = []
        for group in groups.values():
            white = [c for c in group if not c.gradient_free]
            black = [c for c in group if c.gradient_free]
            if not white or not black:
                continue
            best_white = min(white, key=_ra)
            for c in black:
                if _ra(c) < _ra(best_white) - 1e-9:
                    out.append(
                        self.flag(
                            f"{c.attack} (gradient-free) reaches robust accuracy {_ra(c):.3f} < "
                            f"{_ra(best_white):.3f} of the best gradient attack ({best_white.attack}): "
                            "gradients are likely masked or obfuscated.",
                            **_where(c),
                        )
                    )
        return out


@register_flag("robust-accuracy-rises-with-eps")
class RisesWithEps(FlagCheck):
    """Robust accuracy is higher at a larger budget for the same attack and target."""

    title = "Robust accuracy rises with ε"
    advice = (
        "A larger ball contains the smaller one: the attack has not converged or its gradients are "
        "unreliable. Increase steps/restarts or use APGD/AutoAttack."
    )

    def check_results(self, cells, targets):  # noqa: D102
        groups: dict[tuple, list[Cell]] = defaultdict(list)
        for c in cells:
            groups[(c.target, c.threat, c.attack)].append(c)
        out = []
        for group in groups.values():
            ordered = sorted(group, key=lambda c: math.inf if c.eps is None else c.eps)
            for small, large in itertools.pairwise(ordered):
                if _ra(large) > _ra(small) + 1e-9:
                    out.append(
                        self.flag(
                            f"robust accuracy {_ra(large):.3f} at ε={large.eps_label} exceeds "
                            f"{_ra(small):.3f} at ε={small.eps_label}: the attack is not converging "
                            "(more steps/restarts) or gradients are unreliable.",
                            **_where(large),
                        )
                    )
        return out


@register_flag("unbounded-attack-not-zero")
class UnboundedNotZero(FlagCheck):
    """An unbounded minimal-norm attack (CW, DeepFool) leaves robust accuracy above 5 % (not graybox)."""

    title = "Unbounded attack short of 0 %"
    advice = (
        "Without a budget every input can be moved across the boundary; raise the attack's steps or "
        "constants, or suspect gradient masking."
    )

    def check_results(self, cells, targets):  # noqa: D102
        out = []
        for c in cells:
            # graybox cells transfer examples crafted on another model: not reaching 0 % is expected
            if c.minimal and c.eps is None and c.threat != "graybox" and _ra(c) > UNBOUNDED_TOLERANCE:
                out.append(
                    self.flag(
                        f"{c.attack} with an unbounded budget leaves robust accuracy {_ra(c):.3f} "
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
    advice = "The attack implementation is wrong (projection or clamping); its numbers cannot be trusted."

    def check_results(self, cells, targets):  # noqa: D102
        out = []
        for c in cells:
            n = int(c.n_over_budget or 0)
            if not c.minimal and n:
                out.append(
                    self.flag(
                        f"{n} adversarial example(s) exceed ε={c.eps_label} ({c.norm}) and were "
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
    advice = (
        "The denoiser's gradient was replaced by the identity (straight-through), the standard attack on "
        "non-differentiable defenses; adaptive results are an upper bound on robustness."
    )

    def check_results(self, cells, targets):  # noqa: D102
        out = []
        for t in targets:
            if t.uses_bpda and any(c.target == t.name and c.threat == "adaptive" for c in cells):
                out.append(
                    self.flag(
                        f"{t.name}: the denoiser is not differentiable; adaptive attacks used BPDA "
                        "(identity gradient through the denoiser).",
                        target=t.name,
                        threat="adaptive",
                    )
                )
        return out


@register_flag("stochastic-without-eot")
class StochasticWithoutEOT(FlagCheck):
    """A randomised target was attacked with gradients but without EOT at some budget."""

    severity = "error"
    title = "Randomised target attacked without EOT"
    advice = (
        "Single-draw gradients of a randomised defense point nowhere in particular, so gradient attacks "
        "without Expectation over Transformation overestimate its robustness (Athalye et al. 2018). "
        "Error (every gate on the target fails) when no gradient attack at a budget used EOT; info when "
        "another attack at that budget did. Set eot: auto, or add eot-pgd / autoattack version rand."
    )

    def check_results(self, cells, targets):  # noqa: D102
        randomised = {t.name for t in targets if t.stochastic}
        groups: dict[tuple, list[Cell]] = defaultdict(list)
        for c in cells:
            # cells whose examples were crafted on the randomised target itself
            if c.target in randomised and c.craft_on == c.target and not c.gradient_free:
                groups[(c.target, c.norm, c.eps_label)].append(c)
        out = []
        for group in groups.values():
            with_eot = [c.attack for c in group if uses_eot(c)]
            for c in group:
                if uses_eot(c):
                    continue
                if with_eot:
                    out.append(
                        self.flag(
                            f"{c.target} is randomised and {c.attack} attacked it without EOT; "
                            f"{', '.join(with_eot)} used EOT at this budget (the worst case includes it).",
                            severity="info",
                            **_where(c),
                        )
                    )
                else:
                    out.append(
                        self.flag(
                            f"{c.target} is randomised and {c.attack} attacked it without EOT, as did every "
                            f"gradient attack at ε={c.eps_label}: robustness is overestimated. Set eot: auto "
                            "or add eot-pgd / autoattack (version rand).",
                            **_where(c),
                        )
                    )
        return out


@register_flag("gradient-masking")
class GradientMasking(FlagCheck):
    """Some audited samples have useless input gradients through a target (norm < 1e-12 or non-finite)."""

    title = "Useless input gradients"
    advice = (
        "Gradient attacks cannot move these samples, so their robustness is not measured by them "
        "(gradient masking: quantisation, saturated softmax, non-differentiable steps). Trust the "
        "per-sample worst case with gradient-free attacks (Square, SPSA) and BPDA/EOT."
    )

    def check_results(self, cells, targets):  # noqa: D102
        out = []
        for t in targets:
            check = t.gradient_check or {}
            n = int(check.get("n") or 0)
            bad = int(check.get("n_tiny") or 0) + int(check.get("n_nonfinite") or 0)
            if n and bad:
                out.append(
                    self.flag(
                        f"{t.name}: {bad} of {n} audited samples ({bad / n:.1%}) have an input gradient "
                        f"through the target with norm < {TINY_GRADIENT:g} ({check.get('n_tiny', 0)}) or "
                        f"non-finite ({check.get('n_nonfinite', 0)}); gradient attacks are blind on them.",
                        target=t.name,
                    )
                )
        return out


# -- audit checks: degenerate targets and under-powered evidence ---------------------------------
def check_setting(results: AuditDocument | Mapping[str, Any], name: str) -> float:
    """Threshold ``name`` of the audit checks: the config's ``checks`` or :data:`CHECK_DEFAULTS`."""
    value = as_document(results).checks.get(name)
    return float(CHECK_DEFAULTS[name] if value is None else value)


def per_sample(values: Sequence[Any] | None, labels: Sequence[int]) -> list[Any] | None:
    """``values`` when there is one per audited sample (same length as ``labels``, not empty), else None.

    Clean and adversarial predictions are compared with the labels sample by sample; a record
    without them, or from another set of samples, is not checked.
    """
    values = list(values or [])
    return values if values and len(values) == len(labels) else None


def _chance(results: AuditDocument, target: TargetInfo):
    from medrobust.evaluation.degenerate import assess_chance
    from medrobust.evaluation.statistics import resampler_for

    labels = results.data.labels
    preds = per_sample(target.clean.pred, labels)
    if preds is None:
        return None
    return assess_chance(
        labels,
        preds,
        len(results.data.class_names),
        check_setting(results, "chance_margin"),
        resampler=resampler_for(results),
    )


@register_flag("constant-predictions")
class ConstantPredictions(FlagCheck):
    """A target predicts one class for every clean sample although several classes are present."""

    severity = "error"
    title = "Constant predictions"
    advice = (
        "The target ignores its input (e.g. a collapsed denoiser), so no attack can flip it and its "
        "robust accuracy is just the share of that class. Its numbers are not evidence of robustness; "
        "every gate on it fails. Retrain the defense or model."
    )

    def check_audit(self, results):  # noqa: D102
        results = as_document(results)
        names = results.data.class_names
        out = []
        for t in results.targets:
            a = _chance(results, t)
            if a is not None and a.constant:
                only = int(t.clean.pred[0])
                out.append(
                    self.flag(
                        f"{t.name}: predicts {names[only]!r} for all {a.n} clean images "
                        f"({a.classes_present} classes present); its robust accuracy is that class's share, "
                        "not robustness.",
                        target=t.name,
                    )
                )
        return out


@register_flag("smoothed-constant-predictions")
class SmoothedConstantPredictions(FlagCheck):
    """A smoothed (certified) target predicts one class for every sample it does not abstain on."""

    severity = "error"
    title = "Smoothed target predicts one class"
    advice = (
        "Under the smoothing noise the target (the classifier, or the denoiser in front of it) sees only "
        "noise and answers with one class, so its certified accuracy is that class's share, not "
        "robustness. Every certified gate on it fails; its other cells are not affected. Train the base "
        "classifier with noise augmentation (--noise-sigma) or put a denoiser trained for this sigma in "
        "front."
    )

    def check_audit(self, results):  # noqa: D102
        results = as_document(results)
        names = results.data.class_names
        out, seen = [], set()
        for c in results.certified or []:
            only = c.only_class
            if only is None or c.target in seen:
                continue
            seen.add(c.target)
            name = names[only] if 0 <= only < len(names) else str(only)
            where = "every sample" if not c.n_abstained else "every sample it does not abstain on"
            noise = "Gaussian noise" if c.sigma is None else f"Gaussian noise sigma {c.sigma:g}"
            out.append(
                self.flag(
                    f"{c.target}: smoothed with {noise}, it predicts {name!r} for {where} although the "
                    "labels hold several classes; its certified accuracy is that class's share, not "
                    "robustness.",
                    target=c.target,
                    threat="certified",
                )
            )
        return out


@register_flag("chance-level")
class ChanceLevel(FlagCheck):
    """Clean (balanced) accuracy at or near chance."""

    severity = "error"
    title = "Clean accuracy at chance level"
    advice = (
        "Error when the upper 95 % bound of clean balanced accuracy is at most chance (1/K) plus the "
        "margin, or that of accuracy at most the majority-class share plus the margin: the target has "
        "not learned the task, and every gate on it fails. Warning when only the point estimate is "
        "that close (too few samples to tell)."
    )

    def check_audit(self, results):  # noqa: D102
        results = as_document(results)
        out = []
        for t in results.targets:
            a = _chance(results, t)
            if a is None or a.constant:
                continue  # constant-predictions says it already
            margin = check_setting(results, "chance_margin")
            if a.at_chance:
                out.append(
                    self.flag(
                        f"{t.name}: clean accuracy is at chance level ({a.describe()}; margin "
                        f"{margin:.0%}); robust accuracy on it is not evidence of robustness.",
                        target=t.name,
                    )
                )
            elif a.near_chance:
                out.append(
                    self.flag(
                        f"{t.name}: clean accuracy within {margin:.0%} of chance ({a.describe()}); "
                        f"with {a.n} samples it may be at chance.",
                        severity="warning",
                        target=t.name,
                    )
                )
        return out


@register_flag("class-never-recognised")
class ClassNeverRecognised(FlagCheck):
    """A class present in the audited samples has clean sensitivity (recall) 0 on a target."""

    title = "A class is never recognised"
    advice = (
        "The target never predicts this class correctly on clean images (e.g. it misses every "
        "diseased image); robust accuracy cannot drop for those samples and hides the failure. "
        "Check the model on that class before reading robustness numbers."
    )

    def check_audit(self, results):  # noqa: D102
        results = as_document(results)
        names = results.data.class_names
        labels = results.data.labels
        out = []
        for t in results.targets:
            preds = per_sample(t.clean.pred, labels)
            if preds is None or len(set(preds)) <= 1:
                continue  # constant predictions are flagged as such
            for c, name in enumerate(names):
                idx = [i for i, y in enumerate(labels) if y == c]
                if idx and not any(preds[i] == c for i in idx):
                    out.append(
                        self.flag(
                            f"{t.name}: clean sensitivity of class {name!r} is 0 (0 of {len(idx)} "
                            "recognised).",
                            target=t.name,
                        )
                    )
        return out


@register_flag("defense-cost")
class DefenseCost(FlagCheck):
    """A defense costs more than ``checks.max_defense_cost`` of clean accuracy vs the bare model."""

    title = "Defense costs clean accuracy"
    advice = (
        "The defended model is less accurate on clean images than the bare model by more than the "
        "allowed cost (checks.max_defense_cost, default 5 points): robustness bought with clinical "
        "accuracy. Report both, or retrain the defense."
    )

    def check_audit(self, results):  # noqa: D102
        results = as_document(results)
        bare = results.bare
        limit = check_setting(results, "max_defense_cost")
        if bare is None or bare.clean.accuracy is None:
            return []
        ref = float(bare.clean.accuracy)
        out = []
        for t in results.targets:
            acc = t.clean.accuracy
            if t is bare or acc is None:
                continue
            cost = ref - float(acc)
            if cost > limit + 1e-12:
                out.append(
                    self.flag(
                        f"{t.name}: clean accuracy {float(acc):.3f} is {cost * 100:.1f} points below the "
                        f"bare model's {ref:.3f} (allowed: {limit * 100:.0f}).",
                        target=t.name,
                    )
                )
        return out


@register_flag("robust-above-clean")
class RobustAboveClean(FlagCheck):
    """A defended target is right more often on adversarial inputs than on clean ones."""

    title = "More accurate under attack than clean"
    advice = (
        "An attack should not help: the target's answers hardly depend on the input, or the "
        "examples were not aimed at it (gray-box transfer). The reported robust accuracy "
        "(worst of clean and adversarial per sample) hides it; check the target's clean behaviour."
    )

    def check_audit(self, results):  # noqa: D102
        results = as_document(results)
        labels = results.data.labels
        n = len(labels)
        clean = {t.name: t.clean.accuracy for t in results.targets}
        kinds = {t.name: t.kind for t in results.targets}
        out = []
        for c in results.cells:
            if kinds.get(c.target) != "defended" or clean.get(c.target) is None:
                continue
            raw = per_sample(c.samples.adv_raw_pred, labels)
            if raw is None:
                continue
            raw_acc = sum(int(p == y) for p, y in zip(raw, labels, strict=True)) / n
            tol = max(2.0 / n, 0.02)
            if raw_acc > float(clean[c.target]) + tol:
                out.append(
                    self.flag(
                        f"accuracy on the adversarial inputs {raw_acc:.3f} exceeds the clean accuracy "
                        f"{float(clean[c.target]):.3f}: the attack makes this target more accurate.",
                        **_where(c),
                    )
                )
        return out


@register_flag("small-sample")
class SmallSample(FlagCheck):
    """Fewer audited samples than ``checks.min_samples`` (default 30)."""

    title = "Too few audited samples"
    advice = (
        "Every rate is uncertain by ± (half-width of its 95 % interval): about ±18 points at 30 "
        "samples, ±10 at 97, ±5 at 385. Audit more samples (n_samples, or the whole folder)."
    )

    def check_audit(self, results):  # noqa: D102
        from medrobust.evaluation.statistics import samples_for_half_width, wilson_half_width

        results = as_document(results)
        n = len(results.data.labels)
        limit = int(check_setting(results, "min_samples"))
        if n >= limit:
            return []
        hw = wilson_half_width(n) if n else math.nan
        return [
            self.flag(
                f"only {n} sample(s) audited (< {limit}): a rate near 0.5 is uncertain by about "
                f"±{hw * 100:.0f} points; ±10 points needs {samples_for_half_width(0.10)} samples."
            )
        ]


@register_flag("missing-class")
class MissingClass(FlagCheck):
    """A class of the model card has no sample in the audited split."""

    title = "A class is missing from the audited samples"
    advice = (
        "Nothing is known about the model's robustness on that class (e.g. the diseased class). "
        "Audit a split that contains every class (data.split: all, or more samples)."
    )

    def check_audit(self, results):  # noqa: D102
        results = as_document(results)
        names = results.data.class_names
        present = set(results.data.labels)
        missing = [name for c, name in enumerate(names) if c not in present]
        if not missing:
            return []
        split = results.data.split
        return [
            self.flag(
                f"class(es) {missing} have no sample among the {len(results.data.labels)} audited "
                f"(split {split!r}); robustness on them is not measured."
            )
        ]


@register_flag("gradient-free-underpowered")
class GradientFreeUnderpowered(FlagCheck):
    """On the bare model, a gradient-free attack fools far fewer samples than FGSM at the same budget."""

    title = "Gradient-free attack under-powered"
    advice = (
        "With too few queries or iterations, SPSA/Square find fewer adversarial examples than one "
        "gradient step on an undefended model: their numbers (also on defended targets) are not "
        "evidence of robustness. Raise their steps/queries."
    )

    def check_audit(self, results):  # noqa: D102
        results = as_document(results)
        ratio = check_setting(results, "gradient_free_ratio")
        bare = [c for c in results.cells if c.threat == "whitebox" and c.eps is not None]
        out = []
        for c in bare:
            if not c.gradient_free:
                continue
            refs = [
                r
                for r in bare
                if not r.gradient_free
                and not r.minimal
                and r.norm == c.norm
                and r.eps_label == c.eps_label
                and r.target == c.target
            ]
            if not refs:
                continue
            fgsm = [r for r in refs if r.attack_name == "fgsm"]
            ref = fgsm[0] if fgsm else min(refs, key=lambda r: int(r.metrics.n_fooled or 0))
            k_ref = int(ref.metrics.n_fooled or 0)
            k = int(c.metrics.n_fooled or 0)
            if k_ref >= 4 and k < ratio * k_ref:
                out.append(
                    self.flag(
                        f"{c.attack} fools {k} sample(s), {ref.attack} {k_ref} at the same budget on "
                        f"the undefended model (< {ratio:.0%}): the gradient-free attack is under-powered.",
                        **_where(c),
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
    cells: Sequence[Cell | Mapping[str, Any]], targets: Sequence[TargetInfo | Mapping[str, Any]]
) -> list[Flag]:
    """Run every registered results check on finished cells."""
    records = as_cells(cells)
    infos = [TargetInfo.from_dict(t) for t in targets]
    out: list[Flag] = []
    for name in FLAG_CHECKS.names():
        out += FLAG_CHECKS.get(name)().check_results(records, infos)
    return out


def run_audit_checks(results: AuditDocument | Mapping[str, Any]) -> list[Flag]:
    """Run every registered audit check on the results (after intervals are added)."""
    doc = as_document(results)
    out: list[Flag] = []
    for name in FLAG_CHECKS.names():
        out += FLAG_CHECKS.get(name)().check_audit(doc)
    return out


def error_targets(flags: Sequence[Flag | Mapping[str, Any]]) -> dict[tuple[str, str | None], list[str]]:
    """``{(target, threat): [error-level flag ids]}``.

    ``threat`` is ``None`` for a flag on the whole target (every cell of it), else the one threat
    the flag is about (e.g. ``"certified"``: the smoothed target, not the target as attacked).
    Flags without a target apply to no single target.
    """
    out: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for f in as_flags(flags):
        if f.severity == "error" and f.target:
            out[(f.target, f.threat or None)].append(f.id)
    return dict(out)
