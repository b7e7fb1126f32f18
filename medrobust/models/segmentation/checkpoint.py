"""Segmenter run folders: ``model.safetensors`` (architecture in the metadata) + ``card.json``.

The same layout as classifiers (:mod:`medrobust.models.checkpoint`), told apart by the weights'
``format`` metadata (``medrobust-segmenter``) and the card's ``task: segmentation``. Weights are
safetensors only; NaN/inf weights are refused naming the tensor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from medrobust.errors import CheckpointError, ConfigError
from medrobust.models.checkpoint import CARD_NAME, CONFIG_NAME, ENVIRONMENT_NAME, WEIGHTS_NAME, unwrap_model
from medrobust.models.segmentation.card import SegmentationCard
from medrobust.models.segmentation.segmenter import MedicalSegmenter, build_segmenter

FORMAT_TAG = "medrobust-segmenter"


def save_segmenter(
    model: nn.Module,
    run_dir: str | Path,
    config: dict[str, Any] | None = None,
    environment: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors``, ``card.json`` and optionally ``config.yaml``/``environment.json``.

    Raises:
        ConfigError: when ``model`` is not a :class:`MedicalSegmenter` with ``card.arch`` set.
    """
    from safetensors.torch import save_file

    from medrobust.utils.io import atomic_path, atomic_write_json, atomic_write_text

    model = unwrap_model(model)
    if not isinstance(model, MedicalSegmenter) or model.card.arch is None:
        raise ConfigError(
            f"save_segmenter needs a MedicalSegmenter built by build_segmenter. Got {type(model).__name__}."
        )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT_TAG,
        "arch": model.card.arch,
        "arch_kwargs": json.dumps(model.arch_kwargs, sort_keys=True),
    }
    with atomic_path(run_dir / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    model.card.save(run_dir / CARD_NAME)
    if config is not None:
        import yaml

        atomic_write_text(run_dir / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))
    if environment is not None:
        atomic_write_json(run_dir / ENVIRONMENT_NAME, environment)
    return run_dir


def _program_file(path: Path, format: str | None) -> Path | None:
    """The ONNX/TorchScript file ``path`` names (itself, or the one in a weightless folder), or None."""
    from medrobust.models.imports import SUFFIXES
    from medrobust.models.segmentation.exported import PROGRAM_FORMATS

    suffixes = {s for fmt in PROGRAM_FORMATS for s in SUFFIXES[fmt]}
    if path.is_file():
        return path if format is not None or path.suffix.lower() in suffixes else None
    if not path.is_dir() or (path / WEIGHTS_NAME).is_file():
        return None
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if len(found) > 1:
        raise CheckpointError(
            f"{path}: holds several model files {[p.name for p in found[:5]]}; pass the one to load."
        )
    return found[0] if found else None


def segmenter_files(
    path: str | Path, card: Any = None, format: str | None = None
) -> tuple[Path, Path | None]:
    """The model file and the card file :func:`load_segmenter` reads for ``path`` (for provenance hashes).

    A run folder gives ``model.safetensors`` and its ``card.json``; an ONNX/TorchScript segmenter its
    program file and ``card`` when that is a path, else the ``card.json`` beside the program (None when
    the card is an object or absent). Nothing is read but the folder's listing.
    """
    path = Path(path)
    program = _program_file(path, format)
    if program is None:
        weights = path / WEIGHTS_NAME if path.is_dir() else path
        return weights, weights.with_name(CARD_NAME)
    if isinstance(card, (str, Path)):
        return program, Path(card)
    beside = program.with_name(CARD_NAME)
    return program, beside if card is None and beside.is_file() else None


def load_segmenter(
    run_dir: str | Path, card: Any = None, format: str | None = None, **import_opts: Any
) -> MedicalSegmenter:
    """Load a segmenter (in eval mode): a run folder, or an ONNX / TorchScript segmenter.

    ONNX and TorchScript files are programs, read only by suffix (``.onnx``; ``.ts``,
    ``.torchscript``, ``.jit``) or an explicit ``format``
    (:func:`~medrobust.models.segmentation.exported.import_segmenter`): the file itself with ``card``
    or a ``card.json`` beside it, or a folder holding ``card.json`` and one such file (no weights).

    Args:
        run_dir: Run folder, its ``model.safetensors``, a program file or a folder holding one.
        card: The imported segmenter's card (object, dict or path; ``task: segmentation``).
        format: ``"onnx"`` or ``"torchscript"`` whatever the suffix.
        **import_opts: ``tolerance``, ``n_check``, ``check_seed`` of the import check.

    Raises:
        CheckpointError: naming the file when the weights or card are missing, unreadable, not a
            segmenter's, hold NaN/inf, or do not fit the recorded architecture (or the imported
            program fails its import check).
        ConfigError: options given for a run folder, or unknown import options.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from medrobust.models.imports import check_finite_tensors, error_summary, load_state_into
    from medrobust.models.segmentation.exported import IMPORT_OPTIONS, import_segmenter
    from medrobust.registry import did_you_mean

    unknown = sorted(set(import_opts) - set(IMPORT_OPTIONS))
    if unknown:
        raise ConfigError(
            "load_segmenter got unexpected option(s) "
            f"{unknown}.{did_you_mean(unknown[0], list(IMPORT_OPTIONS))} "
            f"Valid options: {list(IMPORT_OPTIONS)}."
        )
    run_dir = Path(run_dir)
    program = _program_file(run_dir, format)
    if program is not None:
        return import_segmenter(program, card, format, **import_opts)
    if run_dir.is_file() and run_dir.suffix.lower() != ".safetensors":
        raise CheckpointError(
            f"{run_dir}: a segmenter is a run folder (model.safetensors + card.json), an .onnx or a .ts "
            f"(.torchscript, .jit) file; got suffix {run_dir.suffix or '(none)'!r}. A program under another "
            "suffix loads only with format='onnx' or 'torchscript' (it runs code: never guessed by content)."
        )
    if card is not None or format is not None or import_opts:
        raise ConfigError(
            f"{run_dir}: a segmenter run folder carries its own card and safetensors weights; card, format "
            "and "
            "import options apply to ONNX/TorchScript files."
        )
    path = run_dir / WEIGHTS_NAME if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise CheckpointError(f"{path}: no segmenter weights (expected {WEIGHTS_NAME} in the run folder).")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {error_summary(exc)}") from None
    if metadata.get("format") != FORMAT_TAG:
        raise CheckpointError(
            f"{path}: not a segmenter checkpoint (metadata format {metadata.get('format')!r}, expected "
            f"{FORMAT_TAG!r}); classifiers load with medrobust.models.load_model."
        )
    card = SegmentationCard.load(path.parent / CARD_NAME)
    try:
        kwargs = json.loads(metadata.get("arch_kwargs", "{}"))
        model = build_segmenter(metadata.get("arch") or card.arch or "", card, **kwargs)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: malformed arch_kwargs metadata: {exc}") from None
    except ConfigError as exc:
        raise CheckpointError(f"{path}: cannot build the recorded segmenter: {exc}") from None
    check_finite_tensors(state, path)
    load_state_into(model, state, path)  # type: ignore[arg-type]  (same backbone/card layout)
    return model.eval()
