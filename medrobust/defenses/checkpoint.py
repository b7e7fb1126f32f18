"""Denoiser checkpoints: ``denoiser.safetensors`` + ``denoiser.json`` (+ ``config.yaml``, ``card.json``).

``denoiser.json`` holds the registry name and the constructor arguments (``Denoiser.config()``),
so loading rebuilds the module through the registry and fills its tensors from safetensors:
nothing is ever unpickled. The spec is size-checked (the network is first built on the ``meta``
device and refused above :data:`medrobust.models.registry.MAX_PARAMETERS` parameters) and
weights holding NaN or inf are refused, naming the first offending tensor.
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
#: Largest ``denoiser.json`` read (bytes).
MAX_SPEC_BYTES = 1_000_000


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
    if path.is_dir() and path.name != SPEC:
        return path / SPEC
    if path.name == WEIGHTS:
        return path.with_name(SPEC)
    return path


def read_denoiser_spec(path: str | Path) -> dict[str, Any]:
    """Read and validate ``denoiser.json`` (``path`` is the run folder or the file).

    Raises:
        CheckpointError: naming the file when it is missing, a folder, too large, not UTF-8,
            not JSON, not a medrobust denoiser spec, or lacks ``name``/``params``.
    """
    spec_path = _spec_path(Path(path))
    if spec_path.is_dir():
        raise CheckpointError(f"{spec_path}: the denoiser spec must be a JSON file, but this is a folder.")
    try:
        size = spec_path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise CheckpointError(
                f"{spec_path}: the denoiser spec is {size} bytes; specs of at most {MAX_SPEC_BYTES} bytes "
                "are read."
            )
        raw = spec_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{spec_path}: denoiser spec not found (expected {SPEC}).") from None
    except OSError as exc:
        raise CheckpointError(f"{spec_path}: cannot read the denoiser spec: {exc.strerror or exc}") from None
    try:
        spec = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(
            f"{spec_path}: the denoiser spec must be UTF-8 JSON; byte {exc.start} is "
            f"{raw[exc.start : exc.start + 1]!r}."
        ) from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{spec_path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from None
    except RecursionError:
        raise CheckpointError(f"{spec_path}: the denoiser spec is nested too deeply.") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise CheckpointError(f"{spec_path}: not a medrobust denoiser spec (format != {FORMAT!r}).")
    if spec.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{spec_path}: unsupported denoiser spec version {spec.get('version')!r}.")
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("params"), dict):
        raise CheckpointError(f"{spec_path}: 'name' (str) and 'params' (object) are required.")
    return spec


def _check_size(name: str, params: dict[str, Any], spec_path: Path) -> None:
    """Build the denoiser on the meta device and refuse more than ``MAX_PARAMETERS`` parameters.

    A constructor that cannot run on the meta device (it computes with tensor values) is
    left to the real build, which reports its own errors.
    """
    import torch

    from medrobust.defenses.denoisers import create_denoiser
    from medrobust.models.registry import MAX_PARAMETERS

    try:
        with torch.device("meta"):
            probe = create_denoiser(name, **params)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{spec_path}: cannot rebuild denoiser {name!r}: {exc}") from None
    except (RuntimeError, ValueError, NotImplementedError, OverflowError):
        return
    n_params = sum(t.numel() for t in probe.parameters()) + sum(t.numel() for t in probe.buffers())
    if n_params > MAX_PARAMETERS:
        raise CheckpointError(
            f"{spec_path}: denoiser {name!r} with these params would have {n_params:.3g} parameters; at most "
            f"{MAX_PARAMETERS:.3g} (medrobust.models.registry.MAX_PARAMETERS) are built."
        )


def load_denoiser(path: str | Path, device: str | torch.device = "cpu") -> Denoiser:
    """Rebuild a denoiser from a checkpoint folder (or its ``denoiser.json``) in eval mode.

    Raises:
        CheckpointError: missing/malformed files, unknown denoiser, an oversized network,
            mismatching tensors, or weights holding NaN/inf.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from medrobust.defenses.denoisers import create_denoiser
    from medrobust.models.checkpoint import check_finite_tensors

    spec_path = _spec_path(Path(path))
    spec = read_denoiser_spec(spec_path)
    weights = spec_path.with_name(WEIGHTS)
    _check_size(spec["name"], spec["params"], spec_path)
    try:
        denoiser = create_denoiser(spec["name"], **spec["params"])
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{spec_path}: cannot rebuild denoiser {spec['name']!r}: {exc}") from None
    if not weights.is_file():
        raise CheckpointError(f"{weights}: denoiser weights not found.")
    try:
        missing, unexpected = load_model(denoiser, str(weights), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{weights}: cannot read weights: {first}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: weights do not match {spec['name']!r}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}."
        )
    check_finite_tensors(denoiser.state_dict(), weights, "denoiser weights")
    return denoiser.to(device).eval()
