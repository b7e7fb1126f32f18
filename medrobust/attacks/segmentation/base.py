"""The segmentation-attack contract: perturb images so a segmenter's per-pixel labels go wrong.

A segmentation attack works like a classifier attack (:mod:`medrobust.attacks.base`): image space,
explicit intensity ``bounds`` (the card's unless given), budgets in the one unit of ε
(:func:`medrobust.validation.budget_to_image_units`, through
:meth:`~medrobust.attacks.perturbation.Perturbation.budget`), a private seeded generator, the
model's train/eval mode restored. It differs in what it maximises and what it returns:

* ``goal="untargeted"``: the loss over **all pixels** against the true mask, cross-entropy
  (``loss="ce"``) or one minus the soft Dice of the foreground labels (``loss="dice"``);
* ``goal="erase-lesion"`` (targeted): push the pixels of the lesion labels to the background, i.e.
  maximise minus the cross-entropy (or the soft Dice) towards the background on the true lesion
  pixels only; images without a lesion are left unchanged.

The lesion labels are ``lesion_classes`` (names or mask values), else the model card's
``lesion_classes``, else every label but the background (value 0). Inputs larger than the card's
``roi_size`` reach the network through its differentiable sliding window, so attacks cover whole
volumes. Call an attack like a function: ``result = attack(images, masks)`` with masks
``(N, 1, *spatial)`` or ``(N, *spatial)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks.base import Deferred, eval_mode, perturbation_norms, plain_tensor, while_unchanged
from medrobust.attacks.perturbation import Perturbation
from medrobust.errors import ConfigError
from medrobust.registry import Registry
from medrobust.utils.labels import label_map
from medrobust.validation import check_choice

SEGMENTATION_ATTACKS: Registry[type[SegmentationAttack]] = Registry("segmentation attack")

#: ``@register_segmentation_attack("name", *aliases)``: registers the class and sets its ``name``.
register_segmentation_attack = SEGMENTATION_ATTACKS.decorator("name")

GOALS: tuple[str, ...] = ("untargeted", "erase-lesion")
#: Key under which :meth:`SegmentationAttack._attack` may return, in its info, the label map of the
#: images it returns (from its own last forward), sparing the call one forward pass.
ADV_PRED = "_adv_pred"
LOSSES: tuple[str, ...] = ("ce", "dice")


@dataclass
class SegmentationAttackResult:
    """What a segmentation attack returns.

    Attributes:
        adv: Adversarial images, same shape/dtype/device as the input, inside the bounds.
        clean_pred: Label map of the model as given on the clean images ``(N, *spatial)``,
            computed by one forward (eval mode, no gradients) when first read: the audit has
            the clean label maps already and never reads it. Read it before changing the model.
        adv_pred: Label map on ``adv`` ``(N, *spatial)``.
        linf: Per-image L∞ norm of ``adv - images``.
        l2: Per-image L2 norm of ``adv - images``.
        queries: Per-image count of the attack's model evaluations (forward passes; the deferred
            clean forward is not counted).
        info: Notes recorded with results (goal, loss, lesion labels, budgets in image units).
    """

    adv: torch.Tensor
    clean_pred: Deferred = Deferred()  # type: ignore[assignment]  # noqa: RUF009  (a descriptor)
    adv_pred: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    queries: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> torch.Tensor:
        """Per image, the fraction of pixels whose predicted label changed (reads ``clean_pred``)."""
        if not self.adv_pred.shape[0]:
            return torch.zeros(0)
        return (self.clean_pred != self.adv_pred).flatten(1).float().mean(1)


def soft_dice(probs: torch.Tensor, onehot: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample soft Dice over the classes of ``onehot`` ``(N, K, *spatial)`` (mean over classes)."""
    dims = tuple(range(2, probs.ndim))
    if weight is not None:
        probs, onehot = probs * weight, onehot * weight
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return ((2 * inter + 1e-5) / (denom + 1e-5)).mean(1)


class SegmentationAttack(Perturbation, ABC):
    """Base class of attacks on segmenters (see the module docstring).

    Subclasses validate their parameters in ``__init__`` (after ``super().__init__``; budgets through
    :meth:`budget`) and implement :meth:`_attack`, using :meth:`objective` (per-sample value to
    maximise) or :meth:`pixel_objective` (per-pixel, for attacks that weight pixels).

    Args:
        model: A segmenter returning logits ``(N, K, *spatial)`` for image-space input.
        bounds: Intensity interval ``(low, high)``; defaults to ``model.card.bounds``.
        seed: Seed of the attack's private generator.
        goal: ``"untargeted"`` or ``"erase-lesion"``.
        loss: ``"ce"`` (per-pixel cross-entropy) or ``"dice"`` (soft Dice).
        lesion_classes: Lesion labels (names or mask values) for ``"erase-lesion"``; default: the card's.
    """

    name: ClassVar[str] = "segmentation-attack"

    def __init__(
        self,
        model: nn.Module,
        *,
        bounds: Any = None,
        seed: int = 0,
        goal: str = "untargeted",
        loss: str = "ce",
        lesion_classes: Sequence[str | int] | None = None,
        **unused: Any,
    ) -> None:
        super().__init__(model, bounds=bounds, seed=seed, **unused)
        owner = type(self).__name__
        self.model = model
        self.goal = check_choice(goal, "goal", GOALS, owner)
        self.loss = check_choice(loss, "loss", LOSSES, owner)
        if lesion_classes is not None and (isinstance(lesion_classes, (str, bytes)) or not lesion_classes):
            raise ConfigError(
                f"The 'lesion_classes' parameter of {owner} must be a non-empty list of label names or "
                f"values. Got {lesion_classes!r}."
            )
        self.lesion_classes = None if lesion_classes is None else list(lesion_classes)
        self._lesions: list[int] = []

    # -- what is maximised -----------------------------------------------------------------------
    def lesion_indices(self, num_classes: int) -> list[int]:
        """Mask values of the lesion labels (see the module docstring).

        Raises:
            ConfigError: naming a lesion label that is not one of the model's labels.
        """
        card = getattr(self.model, "card", None)
        names = list(getattr(card, "class_names", [])) if card is not None else []
        wanted = self.lesion_classes
        if wanted is None:
            wanted = list(getattr(card, "lesion_classes", []) or []) or list(range(1, num_classes))
        out = []
        for item in wanted:
            if isinstance(item, str) and item in names:
                out.append(names.index(item))
            elif isinstance(item, int) and not isinstance(item, bool) and 0 < item < num_classes:
                out.append(item)
            else:
                raise ConfigError(
                    f"The 'lesion_classes' parameter of {type(self).__name__} must name foreground labels of "
                    f"the model ({names or list(range(1, num_classes))}). Got {item!r}."
                )
        return sorted(set(out))

    def targets(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The label map the attack pushes towards and the pixels it scores (``(N, *spatial)`` each).

        Untargeted: the true labels, every pixel (pushed *away* from them). Erase: background (0)
        on the true lesion pixels, which are the only ones scored.
        """
        if self.goal == "untargeted":
            return labels, torch.ones_like(labels, dtype=torch.bool)
        lesion = torch.zeros_like(labels, dtype=torch.bool)
        for k in self._lesions:
            lesion |= labels == k
        return torch.zeros_like(labels), lesion

    def pixel_objective(
        self, logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel values to maximise ``(N, *spatial)`` and the scored-pixel mask (cross-entropy form)."""
        target, scored = self.targets(labels)
        ce = F.cross_entropy(logits.float(), target, reduction="none")
        return (ce if self.goal == "untargeted" else -ce), scored

    def objective(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample value to maximise ``(N,)``: mean over the scored pixels (0 where none are scored)."""
        target, scored = self.targets(labels)
        w = scored.flatten(1).float()
        count = w.sum(1)
        if self.loss == "dice":
            k = logits.shape[1]
            probs = logits.float().softmax(1)
            onehot = F.one_hot(target, k).movedim(-1, 1).float()
            weight = scored.unsqueeze(1).float()
            if self.goal == "untargeted":
                value = 1.0 - soft_dice(probs[:, 1:], onehot[:, 1:], weight)
            else:
                value = soft_dice(probs[:, :1], onehot[:, :1], weight)  # background on the lesion pixels
            return torch.where(count > 0, value, torch.zeros_like(value))
        per_pixel, _ = self.pixel_objective(logits, labels)
        if self.goal == "untargeted":  # every pixel scored: the plain mean
            return per_pixel.flatten(1).mean(1)
        return (per_pixel.flatten(1) * w).sum(1) / count.clamp_min(1.0)

    def input_gradient(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Gradient of the summed :meth:`objective` with respect to ``images`` (for checks and tests)."""
        labels = self._labels(images, labels)
        self._lesions = self.lesion_indices(self._num_classes(images))
        x = images.detach().clone().requires_grad_(True)
        with eval_mode(self.model):
            (grad,) = torch.autograd.grad(self.objective(self.model(x), labels).sum(), x)
        return grad

    # -- the call ---------------------------------------------------------------------------------
    def _labels(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = plain_tensor(labels).detach()
        if labels.ndim == images.ndim and labels.shape[1] == 1:
            labels = labels[:, 0]
        if images.ndim < 4 or tuple(labels.shape) != (images.shape[0], *images.shape[2:]):
            raise ConfigError(
                f"{type(self).__name__} expects images (N, C, *spatial) and masks (N, 1, *spatial) or "
                f"(N, *spatial). Got images {tuple(images.shape)} and masks {tuple(labels.shape)}."
            )
        return labels.long()

    def _num_classes(self, images: torch.Tensor) -> int:
        card = getattr(self.model, "card", None)
        if card is not None and getattr(card, "class_names", None):
            return len(card.class_names)
        with torch.no_grad():
            return int(self.model(images[:1]).shape[1])

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> SegmentationAttackResult:
        """Attack ``images`` whose true masks are ``labels``; returns a :class:`SegmentationAttackResult`."""
        images = plain_tensor(images).detach()
        labels = self._labels(images, labels)
        low, high = self.bounds
        if images.numel() and (images.min() < low - 1e-6 or images.max() > high + 1e-6):
            raise ConfigError(
                f"{type(self).__name__}: images must lie inside bounds [{low:g}, {high:g}]. "
                f"Got values in [{images.min().item():g}, {images.max().item():g}]."
            )
        k = self._num_classes(images) if images.shape[0] else 2
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ConfigError(
                f"{type(self).__name__}: mask values must lie in 0..{k - 1} (the model's {k} labels). "
                f"Got values in [{int(labels.min())}, {int(labels.max())}]."
            )
        self._lesions = self.lesion_indices(k) if self.goal == "erase-lesion" else []
        from medrobust.attacks._utils import frozen_params

        with eval_mode(self.model), frozen_params(self.model):
            adv, queries, info = self._attack(images, labels, self.generator(images.device))
            adv = adv.detach().clamp(low, high).to(images.dtype).contiguous()
            adv_pred = info.pop(ADV_PRED, None)
            if adv_pred is None:
                with torch.no_grad():
                    adv_pred = label_map(self.model(adv))
                queries += 1
        linf, l2 = perturbation_norms(adv, images)
        n = images.shape[0]
        info = {
            **info,
            "goal": self.goal,
            "loss": self.loss,
            "lesion_classes": list(self._lesions),
            "norm": self.norm,
            "params": self.params(),
        }
        result = SegmentationAttackResult(
            adv=adv,
            clean_pred=None,
            adv_pred=adv_pred,
            linf=linf,
            l2=l2,
            queries=torch.full((n,), int(queries), dtype=torch.long),
            info=info,
        )
        Deferred.defer(result, "clean_pred", self._clean_labels(images))
        return result

    def _clean_labels(self, images: torch.Tensor) -> Callable[[], torch.Tensor]:
        """The clean label map for later: one forward in eval mode, refusing a model changed since."""

        def clean() -> torch.Tensor:
            with eval_mode(self.model), torch.no_grad():
                return label_map(self.model(images))

        return while_unchanged(
            self.model,
            clean,
            f"{type(self).__name__}: SegmentationAttackResult.clean_pred",
            "it is one forward of the model as given",
        )

    @abstractmethod
    def _attack(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, int, dict[str, Any]]:
        """Return ``(adversarial images, forward passes used, info)``; query :attr:`model`.

        ``info[ADV_PRED]``, when given, is the model's label map of the returned images (from the
        attack's own forwards); the call then skips the forward that would compute it.
        """


def create_segmentation_attack(name: str, model: nn.Module, **params: Any) -> SegmentationAttack:
    """Build a registered segmentation attack: ``create_segmentation_attack("pgd", seg, eps="8/255")``."""
    return SEGMENTATION_ATTACKS.get(name)(model, **params)


def list_segmentation_attacks() -> list[str]:
    """Names of all registered segmentation attacks."""
    return SEGMENTATION_ATTACKS.names()
