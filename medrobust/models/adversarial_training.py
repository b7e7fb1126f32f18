"""Adversarial training of the classifier itself: PGD-AT and TRADES, as a step of the one loop.

The baselines a denoiser defense must be compared with (``medrobust train classifier
--adversarial pgd|trades --eps 8/255``):

* **PGD-AT** (Madry et al., ICLR 2018): minimise the (class-weighted) cross-entropy on
  ``x' = PGD_ε(x)``, the L∞ PGD of :mod:`medrobust.attacks.pgd` (random start, ``steps``
  steps of size ``alpha``, default ``2.5 ε / steps``) on the model as it is now.
* **TRADES** (Zhang et al., ICML 2019): minimise ``CE(f(x), y) + β · KL(f(x) ‖ f(x'))`` where
  ``x'`` maximises the same KL inside the ε-ball (start ``x + 0.001·N(0, 1)``, ``steps`` sign-
  gradient steps of size ``alpha``), β = ``trades_beta`` (6 in the paper).

Both craft ``x'`` with the model in eval mode (BatchNorm uses its running statistics and
does not update them while crafting; dropout off) and its parameters frozen, on the bare
module, never through a ``DistributedDataParallel`` wrapper: under torchrun every rank crafts
for its own batch, and only the training forward/backward goes through DDP, so gradients are
synchronised exactly once per step. ε is in the one unit (image units within the card's bounds;
``"k/255"`` is k/255 of the bounds' range, converted by
:func:`medrobust.validation.budget_to_image_units`). Randomness (PGD's random start, TRADES'
initial noise) comes from the epoch's NumPy generator in :class:`~medrobust.run.loop.EpochContext`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medrobust.errors import ConfigError
from medrobust.validation import budget_to_image_units, check_float, check_int

#: Adversarial-training methods (``--adversarial``); "none" is standard training.
ADVERSARIAL_METHODS = ("none", "pgd", "trades")
#: TRADES' initial noise, as in the authors' code (0.001 × N(0, 1) in [0, 1] units).
TRADES_INIT_STD = 0.001


@dataclass(frozen=True)
class AdversarialTraining:
    """A resolved adversarial-training recipe (budgets already in image units).

    Attributes:
        method: "pgd" or "trades".
        eps: L∞ budget in image units.
        steps: Inner-maximisation steps.
        alpha: Step size in image units.
        beta: TRADES' weight of the KL term (unused by PGD-AT).
        bounds: Intensity interval of the images.
        eps_text: The budget as the config wrote it (recorded on the card).
    """

    method: str
    eps: float
    steps: int
    alpha: float
    beta: float
    bounds: tuple[float, float]
    eps_text: str

    @classmethod
    def resolve(
        cls,
        method: str,
        eps: Any,
        steps: Any,
        alpha: Any,
        beta: Any,
        bounds: tuple[float, float],
    ) -> AdversarialTraining:
        """Validate the recipe and convert the budgets with the card's ``bounds``.

        Raises:
            ConfigError: naming the parameter (``--eps``, ``--adv-steps``...) when a value is invalid.
        """
        if method not in ADVERSARIAL_METHODS[1:]:
            raise ConfigError(
                f"The 'adversarial' parameter (--adversarial) must be one of {list(ADVERSARIAL_METHODS)}. "
                f"Got {method!r}."
            )
        low, high = (float(b) for b in bounds)
        owner = f"{method.upper()} adversarial training (--eps)"
        value = budget_to_image_units(eps, (low, high), "adv_eps", owner)
        check_float(value, "adv_eps", owner, low=0.0, high=high - low)
        n = check_int(steps, "adv_steps", "adversarial training (--adv-steps)", low=1, high=1000)
        step = 2.5 * value / n if alpha is None else budget_to_image_units(alpha, (low, high), "adv_alpha")
        check_float(step, "adv_alpha", "adversarial training", low=0.0, high=high - low)
        b = check_float(beta, "trades_beta", "TRADES (--trades-beta)", low=0.0)
        return cls(method, value, n, step, b, (low, high), str(eps))

    def record(self) -> dict[str, Any]:
        """The recipe as plain values (``summary.json``, card notes)."""
        return {
            "method": self.method,
            "eps": self.eps_text,
            "eps_image_units": self.eps,
            "steps": self.steps,
            "alpha_image_units": self.alpha,
            "trades_beta": self.beta if self.method == "trades" else None,
            "crafted_in": "eval mode (BatchNorm running statistics), parameters frozen, per rank",
        }

    def describe(self) -> str:
        """One line for the card's notes."""
        name = (
            "PGD-AT (Madry et al. 2018)"
            if self.method == "pgd"
            else f"TRADES (Zhang et al. 2019, β={self.beta:g})"
        )
        return (
            f"Adversarially trained: {name}, L∞ eps {self.eps_text} (= {self.eps:.6g} image units), "
            f"{self.steps} steps of {self.alpha:.6g}."
        )

    # ---------------------------------------------------------------------------- crafting
    def craft(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
        """Adversarial examples for training, crafted on the bare ``model`` in eval mode.

        Args:
            model: The classifier being trained (not its DDP wrapper).
            images: Clean images in ``bounds``.
            labels: Labels.
            seed: Seed of the random start.

        Returns:
            Detached images in the ε-ball around ``images`` and inside ``bounds``.
        """
        if self.method == "pgd":
            from medrobust.attacks import create_attack

            attack = create_attack(
                "pgd",
                model,
                eps=self.eps,
                alpha=self.alpha,
                steps=self.steps,
                bounds=self.bounds,
                seed=seed,
                fuse_bn=False,  # the weights change every step: no folded copy to reuse
            )
            return attack(images, labels).adv.detach()
        return self._trades_adversary(model, images, seed)

    def _trades_adversary(self, model: nn.Module, images: torch.Tensor, seed: int) -> torch.Tensor:
        from medrobust.attacks.base import eval_mode

        low, high = self.bounds
        x = images.detach()
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x)
        adv = (x + TRADES_INIT_STD * (high - low) * noise).clamp(low, high)
        params = [p for p in model.parameters() if p.requires_grad]
        with eval_mode(model):
            for p in params:
                p.requires_grad_(False)
            try:
                with torch.no_grad():
                    p_clean = F.softmax(model(x).float(), dim=1)
                for _ in range(self.steps):
                    adv.requires_grad_(True)
                    loss = F.kl_div(F.log_softmax(model(adv).float(), dim=1), p_clean, reduction="sum")
                    (grad,) = torch.autograd.grad(loss, adv)
                    adv = adv.detach() + self.alpha * grad.sign()
                    adv = torch.min(torch.max(adv, x - self.eps), x + self.eps).clamp(low, high)
            finally:
                for p in params:
                    p.requires_grad_(True)
        return adv.detach()

    # ---------------------------------------------------------------------------- the loss
    def loss(
        self,
        net: nn.Module,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        criterion: nn.Module,
        rng: np.random.Generator,
        channels_last: bool = False,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The adversarial-training loss of one batch (the loop runs the backward pass).

        Args:
            net: What the training forward goes through (the DDP wrapper under torchrun).
            model: The bare classifier (adversarial examples are crafted on it).
            images: Clean images.
            labels: Labels.
            criterion: The (class-weighted) cross-entropy of standard training.
            rng: The epoch's NumPy generator (seeds of the random starts).
            channels_last: Feed ``channels_last`` tensors.

        Returns:
            The loss and per-batch means: ``accuracy`` (clean for TRADES, on ``x'`` for PGD-AT,
            the accuracy the loss is about) and ``adv_accuracy`` (on ``x'``).
        """
        seed = int(rng.integers(0, 2**31 - 1))
        adv = self.craft(model, images, labels, seed)
        if channels_last:
            adv = adv.contiguous(memory_format=torch.channels_last)
        n = max(int(labels.shape[0]), 1)
        if self.method == "pgd":
            logits_adv = net(adv).float()
            loss = criterion(logits_adv, labels)
            adv_acc = float((logits_adv.argmax(1) == labels).sum()) / n
            return loss, {"accuracy": adv_acc, "adv_accuracy": adv_acc}
        # TRADES: one forward of the clean and the adversarial batch together, so a DDP step
        # synchronises once and BatchNorm sees the pair (the authors' code runs two forwards).
        logits = net(torch.cat([images, adv])).float()
        logits_clean, logits_adv = logits[: labels.shape[0]], logits[labels.shape[0] :]
        natural = criterion(logits_clean, labels)
        robust = F.kl_div(
            F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean"
        )
        values = {
            "accuracy": float((logits_clean.argmax(1) == labels).sum()) / n,
            "adv_accuracy": float((logits_adv.argmax(1) == labels).sum()) / n,
        }
        return natural + self.beta * robust, values


@torch.no_grad()
def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).float().cpu()


def predict_robust(
    recipe: AdversarialTraining,
    model: nn.Module,
    loader: Any,
    device: torch.device,
    channels_last: bool = False,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits on PGD examples (the recipe's ε, steps and step size) over ``loader``, and labels.

    The validation score of adversarial training (robust overfitting: Rice et al. 2020 keep the
    epoch with the best robust validation accuracy). Gathered from all ranks when distributed.
    """
    from medrobust.models.predictions import collect_predictions

    pgd = AdversarialTraining(
        "pgd", recipe.eps, recipe.steps, recipe.alpha, recipe.beta, recipe.bounds, recipe.eps_text
    )
    was_training = model.training
    model.eval()
    logits_list, labels_list = [], []
    for i, (images, labels) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        adv = pgd.craft(model, images, labels, seed + i)
        logits_list.append(_forward(model, adv))
        labels_list.append(labels.cpu())
    model.train(was_training)
    return collect_predictions(model, logits_list, labels_list)
