"""Denoiser checkpoints: ``denoiser.safetensors`` + ``denoiser.json`` (+ ``config.yaml``, ``card.json``).

``denoiser.json`` holds the registry name and the constructor arguments (``Denoiser.config()``),
so loading rebuilds the module through the registry and fills its tensors from safetensors:
nothing is ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medrobust.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch

    from medrobust.defenses.denoisers.base import Denoiser
    from medrobust.models.card import ModelCard

FORMAT = "medrobust-denoiser"
FORMAT_VERSION = 1
WEIGHTS = "denoiser.safetensors"
SPEC = "denoiser.json"


def save_denoiser(
    denoiser: Denoiser,
    run_dir: str | Path,
    config: Any = None,
    card: ModelCard | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a denoiser checkpoint into ``run_dir`` (atomically, file by file).

    Args:
        denoiser: The denoiser to save.
        run_dir: Output folder (created).
        config: Training configuration (pydantic model or dict) written as ``config.yaml``.
        card: Model card of the classifier the denoiser was trained for (``card.json``).
        extra: Extra JSON-safe fields stored in ``denoiser.json`` (e.g. training kind).

    Returns:
        ``run_dir`` as a Path.
    """
    import yaml
    from safetensors.torch import save_model

    from medrobust.utils.io import atomic_path, atomic_write_json, atomic_write_text

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(run / WEIGHTS) as tmp:
        save_model(denoiser, str(tmp))
    spec = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": denoiser.name,
        "kind": denoiser.kind,
        "differentiable": bool(denoiser.differentiable),
        "params": denoiser.config(),
        **(extra or {}),
    }
    atomic_write_json(run / SPEC, spec)
    if config is not None:
        data = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
        atomic_write_text(run / "config.yaml", yaml.safe_dump(data, sort_keys=False))
    if card is not None:
        card.save(run / "card.json")
    return run


def _spec_path(path: Path) -> Path:
    if path.is_dir():
        return path / SPEC
    if path.name == WEIGHTS:
        return path.with_name(SPEC)
    return path


def read_denoiser_spec(path: str | Path) -> dict[str, Any]:
    """Read and validate ``denoiser.json`` (``path`` is the run folder or the file)."""
    spec_path = _spec_path(Path(path))
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{spec_path}: denoiser spec not found (expected {SPEC}).") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{spec_path}: not valid JSON: {exc}") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise CheckpointError(f"{spec_path}: not a medrobust denoiser spec (format != {FORMAT!r}).")
    if spec.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{spec_path}: unsupported denoiser spec version {spec.get('version')!r}.")
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("params"), dict):
        raise CheckpointError(f"{spec_path}: 'name' (str) and 'params' (object) are required.")
    return spec


def load_denoiser(path: str | Path, device: str | torch.device = "cpu") -> Denoiser:
    """Rebuild a denoiser from a checkpoint folder (or its ``denoiser.json``) in eval mode.

    Raises:
        CheckpointError: missing/malformed files, unknown denoiser or mismatching tensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from medrobust.defenses.denoisers import create_denoiser

    spec_path = _spec_path(Path(path))
    spec = read_denoiser_spec(spec_path)
    weights = spec_path.with_name(WEIGHTS)
    try:
        denoiser = create_denoiser(spec["name"], **spec["params"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{spec_path}: cannot rebuild denoiser {spec['name']!r}: {exc}") from None
    if not weights.is_file():
        raise CheckpointError(f"{weights}: denoiser weights not found.")
    try:
        missing, unexpected = load_model(denoiser, str(weights), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{weights}: cannot read weights: {exc}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: weights do not match {spec['name']!r}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}."
        )
    return denoiser.to(device).eval()
