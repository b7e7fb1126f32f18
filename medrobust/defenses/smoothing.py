"""Denoised smoothing (Salman et al. 2020) on randomized smoothing (Cohen et al. 2019): a certified target.

``g(x) = argmax_c P(f(D(x + δ)) = c)``, ``δ ~ N(0, σ² I)``, with ``f`` a frozen classifier and ``D``
an optional denoiser trained for ``σ`` (the ``dae`` objective with ``noise_sigma = σ``, a
Siamese-DAE, any medrobust denoiser; without one this is plain randomized smoothing, which needs
a classifier trained with Gaussian noise). :meth:`SmoothedClassifier.certify` returns, per
image, the prediction and an L2 radius inside which ``g``'s prediction provably does not change
(with probability at least ``1 - α`` over the sampling); :meth:`SmoothedClassifier.predict` the
prediction alone. Both abstain when the counts do not support an answer
(:mod:`medrobust.defenses.certify`).

σ and radii are in the one unit of ε: image units within the card's bounds; ``"k/255"`` means
k/255 of the bounds' range (:func:`medrobust.validation.budget_to_image_units`). The noisy image
is clamped to the bounds before ``D`` (as the ``dae`` objective trains it): a fixed function of
``x + δ``, so part of the base classifier, and the certificate is unaffected.

Noise samples are batched: each image is repeated to fill ``batch_size`` rows per forward pass.
All randomness (the smoothing noise and any randomised module inside ``D``) comes from one
generator seeded per call, so a result depends on the seed and the images only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from medrobust.defenses.certify import (
    ABSTAIN,
    Certificate,
    certify_counts,
    check_counts_settings,
    predict_counts,
)
from medrobust.defenses.denoisers.base import Denoiser
from medrobust.defenses.denoisers.randomized import generator_override
from medrobust.errors import ConfigError
from medrobust.validation import budget_to_image_units, check_float, check_int

__all__ = ["ABSTAIN", "Certificate", "SmoothedClassifier", "smooth"]


class SmoothedClassifier(nn.Module):
    """A classifier (optionally behind a denoiser) smoothed by Gaussian noise.

    Called like a module, it returns the base pipeline's logits on **one** noisy draw,
    ``f(D(clip(x + δ)))``: a randomised target (``stochastic = True``) that attacks must
    meet with EOT (``eot-pgd``, ``AutoAttack(version="rand")``). The certified quantities come
    from :meth:`certify` and :meth:`predict`.

    Args:
        classifier: A classifier with a model card (``load_model``); frozen here.
        sigma: Noise standard deviation in image units, or ``"k/255"`` of the card's range.
        denoiser: Optional :class:`~medrobust.defenses.denoisers.base.Denoiser` with the card's
            channels and bounds (e.g. ``load_denoiser`` of a DAE trained at this σ).
        seed: Default seed of the sampling generator.
        batch_size: Rows per forward pass while sampling (noise draws of several images share one).
    """

    stochastic: ClassVar[bool] = True

    def __init__(
        self,
        classifier: nn.Module,
        sigma: Any,
        denoiser: Denoiser | None = None,
        *,
        seed: int = 0,
        batch_size: int = 400,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        card = getattr(classifier, "card", None)
        if card is None:
            raise ConfigError(
                f"{owner} needs a classifier with a model card (load_model(...)). "
                "Got a module without a 'card' attribute."
            )
        if denoiser is not None:
            from medrobust.defenses.defended import DefendedClassifier

            DefendedClassifier(classifier, denoiser)  # same checks as defend(): channels and bounds
        self.classifier = classifier
        self.denoiser = denoiser
        self.card = card
        self.bounds = (float(card.bounds[0]), float(card.bounds[1]))
        units = budget_to_image_units(sigma, self.bounds, "sigma", owner)
        self.sigma = check_float(units, "sigma", owner, low=0.0)
        self.seed = check_int(seed, "seed", owner, low=0, high=2**63 - 1)
        self.batch_size = check_int(batch_size, "batch_size", owner, low=1, high=1_000_000)

    # -- the base classifier on noisy inputs ------------------------------------------------------
    def base_logits(self, noisy: torch.Tensor) -> torch.Tensor:
        """``f(D(clip(z)))`` for already-noised images ``z``."""
        z = noisy.clamp(*self.bounds)
        if self.denoiser is not None:
            z = self.denoiser(z)
        return self.classifier(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the base pipeline on one noisy draw (global torch RNG, or randomised modules' own)."""
        return self.base_logits(x + self.sigma * torch.randn_like(x))

    def generator(self, device: torch.device | str, seed: int | None = None) -> torch.Generator:
        """A fresh sampling generator on ``device`` seeded with ``seed`` (default: this module's)."""
        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed if seed is None else check_int(seed, "seed", type(self).__name__, low=0))
        return gen

    @torch.no_grad()
    def sample_counts(self, x: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
        """Per-class counts (N, K) of the base classifier's predictions on ``num`` noise draws per image."""
        num = check_int(num, "num", type(self).__name__, low=1)
        n = x.shape[0]
        k = self.card.num_classes
        counts = torch.zeros(n, k, dtype=torch.long, device=x.device)
        if n == 0:
            return counts
        per_pass = max(1, self.batch_size // n)
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            with generator_override(self, generator):
                done = 0
                while done < num:
                    r = min(per_pass, num - done)
                    batch = x.repeat(r, *([1] * (x.ndim - 1)))
                    noise = torch.randn(batch.shape, generator=generator, device=generator.device)
                    pred = self.base_logits(batch + self.sigma * noise.to(batch)).argmax(dim=1)
                    counts += nn.functional.one_hot(pred.view(r, n), k).sum(dim=0)
                    done += r
        finally:
            for m, was_training in modes:
                m.training = was_training
        return counts

    # -- Cohen et al.'s PREDICT and CERTIFY --------------------------------------------------------
    def predict(
        self, x: torch.Tensor, n: int = 1000, alpha: float = 0.001, seed: int | None = None
    ) -> torch.Tensor:
        """Smoothed predictions (N,), :data:`ABSTAIN` (-1) where the top two counts are not told apart."""
        _, n, alpha = check_counts_settings(1, n, alpha, type(self).__name__)
        counts = self.sample_counts(x, n, self.generator(x.device, seed))
        return torch.tensor([predict_counts(c, alpha) for c in counts.tolist()], dtype=torch.long)

    def certify(
        self, x: torch.Tensor, n0: int = 100, n: int = 1000, alpha: float = 0.001, seed: int | None = None
    ) -> list[Certificate]:
        """CERTIFY each image of ``x``: ``n0`` draws pick the class, ``n`` more bound its probability.

        Args:
            x: Images (N, C, ...) inside the card's bounds.
            n0: Selection samples per image (100 in Cohen et al.).
            n: Estimation samples per image (100 000 in Cohen et al.; the radius grows with n).
            alpha: Failure probability of each certificate.
            seed: Seed of this call's sampling (default: the module's ``seed``).

        Returns:
            One :class:`~medrobust.defenses.certify.Certificate` per image (radius in image units).
        """
        n0, n, alpha = check_counts_settings(n0, n, alpha, type(self).__name__)
        gen = self.generator(x.device, seed)
        counts0 = self.sample_counts(x, n0, gen)
        counts = self.sample_counts(x, n, gen)
        return [
            certify_counts(c0, c, self.sigma, alpha)
            for c0, c in zip(counts0.tolist(), counts.tolist(), strict=True)
        ]


def smooth(
    classifier: nn.Module, sigma: Any, denoiser: Denoiser | None = None, **kwargs: Any
) -> SmoothedClassifier:
    """Denoised smoothing of ``classifier`` (behind ``denoiser`` when given) at noise level ``sigma``.

    Example:
        >>> g = smooth(load_model("runs/cxr"), 0.25, load_denoiser("runs/dae-s025"))  # doctest: +SKIP
        >>> certificates = g.certify(images, n0=100, n=1000, alpha=0.001)            # doctest: +SKIP
    """
    return SmoothedClassifier(classifier, sigma, denoiser, **kwargs)
