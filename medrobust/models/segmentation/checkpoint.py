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


def load_segmenter(run_dir: str | Path) -> MedicalSegmenter:
    """Load a segmenter run folder (in eval mode).

    Raises:
        CheckpointError: naming the file when the weights or card are missing, unreadable, not a
            segmenter's, hold NaN/inf, or do not fit the recorded architecture.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from medrobust.models.imports import check_finite_tensors, error_summary, load_state_into

    run_dir = Path(run_dir)
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
