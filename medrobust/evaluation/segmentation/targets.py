"""What a segmentation audit attacks: the segmenter, and ``denoiser → segmenter`` pipelines.

:func:`medrobust.defenses.defend` builds ``denoiser → classifier``; :class:`DefendedSegmenter` is
its segmentation twin: it carries the segmenter's card (bounds, labels, sliding window), so every
segmentation attack and metric treats the pipeline like the bare segmenter, and an adaptive
attack differentiates through the denoiser (a BPDA straight-through gradient for classical
filters, marked by ``uses_bpda``). A volumetric denoiser (``median3d``) filters a volume whole; a
2D one in front of a 3D segmenter filters every axial slice of the volume
(:func:`medrobust.defenses.defended.denoise_axial_slices`), and results say which.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.errors import ConfigError

#: Name of the undefended target.
BARE = "bare"


class DefendedSegmenter(nn.Module):
    """A segmenter behind a denoiser: ``logits = segmenter(denoiser(x))``.

    Args:
        segmenter: A :class:`~medrobust.models.segmentation.MedicalSegmenter` (has a ``card``).
        denoiser: A medrobust :class:`~medrobust.defenses.denoisers.base.Denoiser` with the card's
            channels and bounds.

    Raises:
        ConfigError: when the segmenter has no card or the denoiser's channels or bounds differ.
    """

    def __init__(self, segmenter: nn.Module, denoiser: nn.Module) -> None:
        super().__init__()
        from medrobust.defenses.defended import check_pairing

        card = getattr(segmenter, "card", None)
        if card is None or getattr(card, "task", None) != "segmentation":
            raise ConfigError(
                "DefendedSegmenter needs a segmenter with a segmentation card (load_segmenter). "
                f"Got {type(segmenter).__name__}."
            )
        #: A 2D denoiser in front of a 3D segmenter filters each axial slice.
        self.slicewise = check_pairing(denoiser, card, "DefendedSegmenter")
        self.segmenter = segmenter
        self.denoiser = denoiser
        self.card = card

    @property
    def uses_bpda(self) -> bool:
        """True when gradients through the denoiser are straight-through (BPDA) approximations."""
        return not bool(getattr(self.denoiser, "differentiable", True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel (per-voxel) logits of the segmenter on the denoised images (volumes: slice by slice)."""
        if self.slicewise and x.ndim == 5:
            from medrobust.defenses.defended import denoise_axial_slices

            return self.segmenter(denoise_axial_slices(self.denoiser, x))
        return self.segmenter(self.denoiser(x))


def card_task(model_path: Any, card_path: Any = None) -> str | None:
    """The ``task`` of a model's ``card.json`` (``classification`` if it has none; None if unreadable).

    The card is ``card_path`` when given, else ``card.json`` in the run folder (or beside a
    weights file). Nothing but the JSON is read.
    """
    from medrobust.limits import MAX_CONFIG_BYTES
    from medrobust.models.checkpoint import CARD_NAME

    if card_path is not None:
        path = Path(str(card_path))
    elif model_path is None:
        return None
    else:
        model = Path(str(model_path))
        path = model / CARD_NAME if model.is_dir() else model.with_name(CARD_NAME)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:  # the model loader refuses it, naming the file
            return None
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None  # unreadable: the model loader says why, naming the file
    if not isinstance(card, dict):
        return None
    return str(card.get("task") or "classification")


def load_audited_segmenter(model: Any, device: torch.device) -> nn.Module:
    """The audited segmenter (a run folder, or an ONNX/TorchScript segmenter with its card) in eval mode.

    Raises:
        ConfigError: naming 'model.path' when the model is not a segmenter (a classifier's card).
        CheckpointError: naming the file for unreadable weights or card.
    """
    from medrobust.models.segmentation import load_segmenter

    task = card_task(model.path, model.card)
    if task is not None and task != "segmentation":
        raise ConfigError(
            f"The 'task' of the audit config is 'segmentation', but 'model.path' {str(model.path)!r} has a "
            f"{task} card; give a segmenter run folder (medrobust train segmenter) or drop 'task'."
        )
    if model.weights is not None:
        raise ConfigError(
            "The 'model.weights' of a segmentation audit does not apply: give a segmenter run folder or "
            f"an ONNX/TorchScript file with its card. Got {model.model_dump(mode='json')}."
        )
    return load_segmenter(model.path, card=model.card, format=model.format).to(device).eval()


def build_segmentation_targets(
    config: Any, segmenter: nn.Module, device: torch.device
) -> dict[str, nn.Module]:
    """``{"bare": segmenter, defense name: DefendedSegmenter(segmenter, denoiser), ...}`` in config order."""
    from medrobust.evaluation.targets import build_denoiser

    targets: dict[str, nn.Module] = {BARE: segmenter}
    for spec in config.defenses:
        denoiser = build_denoiser(spec, segmenter.card, device)  # type: ignore[arg-type]
        targets[spec.name] = DefendedSegmenter(segmenter, denoiser).to(device).eval()
    return targets


def _applied(model: nn.Module) -> str:
    """How the denoiser meets the images: per axial slice, whole volume or whole image."""
    if getattr(model, "slicewise", False):
        return "per axial slice"
    return "whole volume" if int(getattr(model.card, "spatial_dims", 2)) == 3 else "whole image"


def describe_segmentation_target(name: str, model: nn.Module, spec: Any) -> dict[str, Any]:
    """What results.json records about a target."""
    if spec is None:
        return {"name": name, "kind": "segmenter", "uses_bpda": False, "defense": None}
    den = model.denoiser  # type: ignore[union-attr]
    return {
        "name": name,
        "kind": "defended",
        "uses_bpda": bool(getattr(model, "uses_bpda", False)),
        "applied": _applied(model),
        "defense": json.loads(spec.model_dump_json()),
        "denoiser": {
            "name": getattr(den, "name", type(den).__name__),
            "differentiable": bool(getattr(den, "differentiable", True)),
            "stochastic": bool(getattr(den, "stochastic", False)),
        },
    }
