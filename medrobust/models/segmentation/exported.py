"""Segmenters from elsewhere: ONNX and TorchScript files with a ``task: segmentation`` card.

The classifiers' rules hold (:mod:`medrobust.models.checkpoint`): these files are programs, so they
are read only by suffix (``.onnx``; ``.ts``/``.torchscript``/``.jit``) or an explicit ``format=``,
never recognised from a file's content, and never unpickled. An ONNX graph is converted to torch
with onnx2torch (as for classifiers), so attacks differentiate through it exactly as through a
native network, and the conversion is checked against onnxruntime on random inputs inside the
card's bounds (max |logit difference| at most ``tolerance``). A TorchScript module is differentiable
as it is. Either is run once at import on a random sample: its output must be finite logits
``(N, K, *spatial)`` with K the card's label count.

The card says how to feed the network, as for classifiers: ``bounds``, ``mean``/``std``
(normalisation inside the wrapper), ``input_layout`` (``"NHWC"``: channels-last input *and*
output), ``outputs`` (``"probabilities"`` are turned into clamped log-probabilities), and the
sliding window (``roi_size``). A network with a fixed input size gets ``roi_size`` set to it, so
larger images reach it window by window.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from medrobust.errors import CheckpointError, ConfigError
from medrobust.models.segmentation.card import SegmentationCard
from medrobust.models.segmentation.segmenter import MedicalSegmenter
from medrobust.utils.logging import get_logger

log = get_logger("models.segmentation")

#: Program formats a segmenter is imported from (run folders hold safetensors).
PROGRAM_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
#: Import options (as ``load_model``'s): ONNX tolerance, samples and seed of the import check.
IMPORT_OPTIONS: tuple[str, ...] = ("tolerance", "n_check", "check_seed")


class ImportedSegmenterAdapter(nn.Module):
    """Makes an imported network look like a medrobust segmentation backbone: NCHW in, logits out.

    Args:
        module: The converted ONNX graph or the TorchScript module.
        input_layout: ``"NCHW"`` or ``"NHWC"`` (channels last for input and output, 2D or 3D).
        outputs: ``"logits"``, ``"probabilities"`` (clamped log taken) or ``"log_probabilities"``.
    """

    def __init__(self, module: nn.Module, input_layout: str = "NCHW", outputs: str = "logits") -> None:
        super().__init__()
        self.module = module
        self.input_layout = input_layout
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K, *spatial)`` for normalised ``(N, C, *spatial)`` input."""
        channels_last = self.input_layout == "NHWC"
        out = first_output(self.module(x.permute(0, *range(2, x.dim()), 1) if channels_last else x))
        if channels_last:
            out = out.permute(0, out.dim() - 1, *range(1, out.dim() - 1))
        if self.outputs == "probabilities":
            from medrobust.models.classifier import PROB_CLAMP_MIN

            out = torch.log(out.clamp_min(PROB_CLAMP_MIN))
        return out


def first_output(out: Any) -> Any:
    """The first tensor of a dict or tuple output (the output itself otherwise)."""
    if isinstance(out, dict) and out:
        out = next(iter(out.values()))
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    return out


def segmentation_card(card: Any, path: Path) -> SegmentationCard:
    """The card of an imported segmenter: a :class:`SegmentationCard`, a dict, or a ``card.json`` path.

    Raises:
        CheckpointError: when there is no card, it is unreadable, or it does not say ``task: segmentation``.
    """
    if card is None:
        raise CheckpointError(
            f'{path}: importing a segmenter needs a card with "task": "segmentation", its label names as '
            "class_names, bounds and spatial_size: pass card= (or --card), or put card.json beside the file."
        )
    if isinstance(card, SegmentationCard):
        return card
    if isinstance(card, dict):
        out = SegmentationCard.from_mapping(card, "the 'card' parameter")
        where: object = "the 'card' parameter"
    elif isinstance(card, (str, Path)):
        out = SegmentationCard.load(card)
        where = card
    else:
        raise ConfigError(
            "The 'card' parameter must be a SegmentationCard, a dict or a card.json path. Got "
            f"{type(card).__name__}."
        )
    if "task" not in out.model_fields_set:
        raise CheckpointError(
            f'{where}: the card does not say "task": "segmentation"; a classifier\'s card cannot describe a '
            "segmenter (add the task and the label names as class_names)."
        )
    return cast(SegmentationCard, out)  # from_mapping/load return the class they are called on


def program_format(path: Path, format: str | None) -> str:
    """``onnx`` or ``torchscript``: the explicit ``format``, else the suffix (the content never decides).

    Raises:
        CheckpointError: a suffix that names no program format.
        ConfigError: a ``format`` that is not one of :data:`PROGRAM_FORMATS`.
    """
    from medrobust.models.imports import SUFFIXES
    from medrobust.validation import check_choice

    if format is not None:
        fmt = str(format).strip().lower().replace("-", "_")
        return check_choice(fmt, "format", PROGRAM_FORMATS, "load_segmenter")
    for fmt in PROGRAM_FORMATS:
        if path.suffix.lower() in SUFFIXES[fmt]:
            return fmt
    known = ", ".join(s for fmt in PROGRAM_FORMATS for s in SUFFIXES[fmt])
    raise CheckpointError(
        f"{path}: a segmenter is a run folder (model.safetensors + card.json) or a program file ({known}); "
        f"got suffix {path.suffix or '(none)'!r}. Pass format='onnx' or 'torchscript' for another suffix."
    )


def _sample(card: SegmentationCard, path: Path, n: int, seed: int, static: list[int | None]) -> torch.Tensor:
    """Random ``(n, C, *spatial)`` input inside the bounds: spatial size from the card, else the model."""
    from medrobust.limits import MAX_IMAGE_PIXELS

    spatial = card.roi_size or card.spatial_size
    dims = static[2:] if card.input_layout == "NCHW" else static[1:-1]
    if spatial is None and len(static) == 2 + card.spatial_dims and all(d is not None for d in dims):
        spatial = tuple(int(d) for d in dims)  # type: ignore[arg-type]
    if spatial is None:
        raise CheckpointError(
            f"{path}: cannot check the imported segmenter without an input size; set spatial_size in the "
            "card."
        )
    if math.prod(spatial) > MAX_IMAGE_PIXELS:
        raise CheckpointError(f"{path}: input size {list(spatial)} is larger than any image medrobust reads.")
    gen = torch.Generator().manual_seed(int(seed))
    low, high = card.bounds
    return low + (high - low) * torch.rand((n, card.network_channels, *spatial), generator=gen)


def _onnxruntime_logits(path: Path, x_model: torch.Tensor, card: SegmentationCard) -> torch.Tensor:
    import onnxruntime as ort

    from medrobust.models.imports import error_summary

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return torch.as_tensor(session.run(None, {name: x_model.numpy()})[0]).float()
    except Exception as exc:  # onnxruntime raises its own exception hierarchy
        raise CheckpointError(
            f"{path}: onnxruntime could not run the segmenter on a {tuple(x_model.shape)} sample "
            "(input_layout "
            f"{card.input_layout!r}): {error_summary(exc)}"
        ) from None


def _check_logits(out: Any, card: SegmentationCard, x: torch.Tensor, path: Path, fmt: str) -> torch.Tensor:
    """Refuse outputs that are not finite ``(N, K, *spatial)`` logits for the card's K labels."""
    want = (x.shape[0], card.num_classes, *x.shape[2:])
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(
            f"{path}: the {fmt} segmenter returns {got} on a {tuple(x.shape)} sample; expected "
            "floating-point "
            f"per-pixel scores {want} for the card's {card.num_classes} labels {card.class_names[:10]} "
            f"(input_layout {card.input_layout!r})."
        )
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(
            f"{path}: the {fmt} segmenter returned NaN/inf on inputs inside the card's bounds "
            f"{list(card.bounds)}."
        )
    return out


def import_segmenter(
    path: str | Path,
    card: Any = None,
    format: str | None = None,
    *,
    tolerance: float = 1e-4,
    n_check: int = 2,
    check_seed: int = 0,
) -> MedicalSegmenter:
    """Import an ONNX or TorchScript segmenter as a :class:`MedicalSegmenter` (in eval mode, on CPU).

    Args:
        path: The ``.onnx`` / ``.ts`` (``.torchscript``, ``.jit``) file.
        card: Its :class:`SegmentationCard` (object, dict or ``card.json`` path; default: ``card.json``
            beside the file).
        format: ``"onnx"`` or ``"torchscript"`` whatever the suffix (None: from the suffix).
        tolerance: Largest max |logit difference| between the torch conversion and onnxruntime.
        n_check: Random samples of the import check.
        check_seed: Seed of those samples.

    Raises:
        CheckpointError: no or a non-segmentation card, an unreadable or unconvertible file, outputs
            that are not ``(N, K, *spatial)`` finite logits, or a conversion that disagrees with onnxruntime.
        ConfigError: an unknown ``format`` or an out-of-range option.
    """
    from medrobust.models.checkpoint import CARD_NAME
    from medrobust.models.imports import check_finite_tensors, error_summary
    from medrobust.validation import check_float, check_int

    path = Path(path)
    tolerance = check_float(tolerance, "tolerance", "import_segmenter", low=0.0, high=None)
    n_check = check_int(n_check, "n_check", "import_segmenter", low=1, high=64)
    check_seed = check_int(check_seed, "check_seed", "import_segmenter", low=0, high=2**63 - 1)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    fmt = program_format(path, format)
    beside = path.with_name(CARD_NAME)
    seg_card = segmentation_card(card if card is not None else (beside if beside.is_file() else None), path)
    notes: list[str] = []
    if fmt == "onnx":
        from medrobust.models.checkpoint import onnx_to_torch

        module, _, static, notes = onnx_to_torch(path)
    else:
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except (
            Exception
        ) as exc:  # torch.jit.load raises RuntimeError, ValueError and the archive's own errors
            raise CheckpointError(f"{path}: not a loadable TorchScript file: {error_summary(exc)}") from None
        static = []
    module.eval()
    check_finite_tensors(module.state_dict(), path)
    x = _sample(seg_card, path, n_check, check_seed, static)
    adapter = ImportedSegmenterAdapter(module, seg_card.input_layout, seg_card.outputs)
    name = "ONNX" if fmt == "onnx" else "TorchScript"
    with torch.no_grad():
        try:
            out = adapter(x)
        except Exception as exc:  # imported programs raise anything; say what was fed
            raise CheckpointError(
                f"{path}: the {name} segmenter failed on a {tuple(x.shape)} sample (input_layout "
                f"{seg_card.input_layout!r}, in_channels {seg_card.network_channels}): {error_summary(exc)}"
            ) from None
    _check_logits(out, seg_card, x, path, name)
    update: dict[str, Any] = {"source": str(path)}
    if fmt == "onnx":
        x_model = x.permute(0, *range(2, x.dim()), 1).contiguous() if seg_card.input_layout == "NHWC" else x
        ref = _onnxruntime_logits(path, x_model, seg_card)
        with torch.no_grad():
            mine = first_output(module(x_model)).float()
        if tuple(ref.shape) != tuple(mine.shape):
            raise CheckpointError(
                f"{path}: onnxruntime returns shape {tuple(ref.shape)} but the torch conversion "
                f"{tuple(mine.shape)}."
            )
        diff = float((mine - ref).abs().max())
        if not diff <= tolerance:
            raise CheckpointError(
                f"{path}: the torch conversion disagrees with onnxruntime: max |output difference| "
                f"{diff:.3g} > "
                f"tolerance {tolerance:g}."
            )
        notes.append(
            f"Imported from ONNX file {path.name} via onnx2torch; max |output difference| against "
            "onnxruntime on "
            f"{n_check} random inputs within bounds {tuple(seg_card.bounds)}: {diff:.3g} (tolerance "
            f"{tolerance:g})."
        )
        fixed = static[2:] if seg_card.input_layout == "NCHW" else static[1:-1]
        if seg_card.roi_size is None and fixed and all(d is not None for d in fixed):
            update["roi_size"] = tuple(int(d) for d in fixed)  # type: ignore[arg-type]
    else:
        notes.append(f"Imported from TorchScript file {path.name}.")
    log.info("%s: %s", path, notes[-1])
    update["notes"] = [*seg_card.notes, *notes]
    model = MedicalSegmenter(adapter, seg_card.model_copy(update=update))
    model.import_info = {"format": fmt}
    return model.eval()
