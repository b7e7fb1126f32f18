"""``MedicalClassifier``: a network plus its model card, with normalisation inside.

Attacks and audits call the classifier on images in *image space* (inside
``card.bounds``, layout ``(N, C, *spatial)``) and always get logits back. The
normalisation (``card.mean``/``card.std``) is a layer of the model, so gradients
flow through it and no caller ever normalises by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medrobust.errors import ConfigError
from medrobust.models.card import ModelCard
from medrobust.models.registry import create_classifier, get_classifier_arch

#: Smallest probability used when converting probability outputs to log-probabilities.
PROB_CLAMP_MIN = 1e-12


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean/std as buffers; identity when both are None.

    Args:
        mean: One value or one per channel (None: 0).
        std: One value or one per channel (None: 1).
        spatial_dims: 2 or 3 (shapes the broadcast buffers).
    """

    def __init__(
        self, mean: Sequence[float] | None, std: Sequence[float] | None, spatial_dims: int = 2
    ) -> None:
        super().__init__()
        self.identity = mean is None and std is None
        shape = (1, -1) + (1,) * spatial_dims
        m = torch.tensor(list(mean) if mean is not None else [0.0], dtype=torch.float32).reshape(shape)
        s = torch.tensor(list(std) if std is not None else [1.0], dtype=torch.float32).reshape(shape)
        self.register_buffer("mean", m)
        self.register_buffer("std", s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (``(N, C, *spatial)``)."""
        if self.identity:
            return x
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return (
            "identity"
            if self.identity
            else f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
        )


class ImportedModelAdapter(nn.Module):
    """Makes a third-party model look like a medrobust backbone: NCHW in, logits out.

    Args:
        module: The imported network (converted ONNX graph or TorchScript module).
        input_layout: The layout the imported network expects ("NCHW" or "NHWC";
            channels-last for volumes is "NHWC" too, i.e. ``(N, D, H, W, C)``).
        outputs: What the network returns: "logits", "probabilities" (wrapped to
            clamped log-probabilities) or "log_probabilities" (used as logits).
    """

    def __init__(self, module: nn.Module, input_layout: str = "NCHW", outputs: str = "logits") -> None:
        super().__init__()
        if input_layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"The 'input_layout' parameter must be 'NCHW' or 'NHWC'. Got {input_layout!r}.")
        if outputs not in ("logits", "probabilities", "log_probabilities"):
            raise ConfigError(
                "The 'outputs' parameter must be 'logits', 'probabilities' or 'log_probabilities'. "
                f"Got {outputs!r}."
            )
        self.module = module
        self.input_layout = input_layout
        self.outputs = outputs

    def to_model_layout(self, x: torch.Tensor) -> torch.Tensor:
        """Permute ``(N, C, *spatial)`` into the layout the imported network expects."""
        if self.input_layout == "NHWC":
            return x.permute(0, *range(2, x.dim()), 1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (or log-probabilities) ``(N, num_classes)`` for NCHW input."""
        out = self.module(self.to_model_layout(x))
        if isinstance(out, dict):
            out = next(iter(out.values()))
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.dim() > 2:
            out = out.flatten(1)
        if self.outputs == "probabilities":
            out = torch.log(out.clamp_min(PROB_CLAMP_MIN))
        return out


class MedicalClassifier(nn.Module):
    """A classifier as deployed: normalisation layer + backbone, described by a model card.

    Args:
        backbone: Network mapping normalised inputs to logits.
        card: The :class:`~medrobust.models.card.ModelCard` (bounds, classes, mean/std...).
        arch_kwargs: Keyword arguments the backbone was built with (saved in checkpoints).

    Example:
        >>> card = ModelCard(in_channels=1, class_names=["normal", "pneumonia"])
        >>> model = build_classifier("small_cnn", card)
        >>> model(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 2])
    """

    __jit_unused_properties__ = ["num_classes"]  # noqa: RUF012  (TorchScript: the card is Python-only)

    def __init__(
        self, backbone: nn.Module, card: ModelCard, arch_kwargs: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        if not isinstance(card, ModelCard):
            raise ConfigError(f"The 'card' parameter must be a ModelCard. Got {type(card).__name__}.")
        self.card = card
        self.arch_kwargs = dict(arch_kwargs or {})
        self.normalize = Normalize(card.mean, card.std, card.spatial_dims)
        self.backbone = backbone
        #: Facts about how the model was loaded (e.g. ONNX vs onnxruntime max |logit diff|).
        self.import_info: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for image-space input ``(N, C, *spatial)``."""
        return self.backbone(self.normalize(x))

    @property
    def num_classes(self) -> int:
        """Number of classes (from the card)."""
        return self.card.num_classes


def build_classifier(arch: str, card: ModelCard, **kw: Any) -> MedicalClassifier:
    """Create a registered network sized by ``card`` and wrap it as a :class:`MedicalClassifier`.

    Args:
        arch: Registered classifier name (``list_classifiers()``).
        card: Model card; ``in_channels``, ``class_names`` and ``spatial_dims`` size the network.
            A card without ``arch`` gets the canonical name filled in (copy).
        **kw: Architecture keyword arguments (e.g. ``width`` for ``small_cnn``).
    """
    arch_cls = get_classifier_arch(arch)
    backbone = create_classifier(arch_cls.name, card.in_channels, card.num_classes, card.spatial_dims, **kw)
    if card.arch != arch_cls.name:
        card = card.model_copy(update={"arch": arch_cls.name})
    return MedicalClassifier(backbone, card, arch_kwargs=kw)


def wrap_imported(module: nn.Module, card: ModelCard) -> MedicalClassifier:
    """Wrap an imported network so it takes NCHW image-space input and returns logits.

    A network declared to output probabilities is wrapped to return clamped
    log-probabilities and a note saying so is appended to ``card.notes``.
    """
    notes = list(card.notes)
    if card.outputs == "probabilities":
        note = (
            "The model outputs probabilities; medrobust wraps it to return log-probabilities "
            f"(log of probabilities clamped at {PROB_CLAMP_MIN:g}) used as logits by attacks and metrics."
        )
        if note not in notes:
            notes.append(note)
    elif card.outputs == "log_probabilities":
        note = "The model outputs log-probabilities; medrobust uses them as logits."
        if note not in notes:
            notes.append(note)
    if card.input_layout == "NHWC":
        note = (
            "The model expects channels-last (NHWC) input; medrobust permutes NCHW input inside the wrapper."
        )
        if note not in notes:
            notes.append(note)
    card = card.model_copy(update={"notes": notes})
    adapter = ImportedModelAdapter(module, card.input_layout, card.outputs)
    return MedicalClassifier(adapter, card)
