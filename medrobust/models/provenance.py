"""Content hashes of models that are not one weights file: live modules, library models, MONAI bundles.

The audit's provenance (``medrobust.evaluation.state.model_provenance``) records
``{"weights": {path, sha256, size}, "card": {path, sha256, size}}`` for the audited model.
:func:`special_model_provenance` gives that record for the model spellings whose weights are
not a single file at ``model.path``, and ``None`` for the others (run folders, ONNX,
TorchScript, ``.pt2`` and state-dict files, hashed as files by the audit itself):

* ``module:<digest>`` (a live module): the SHA-256 of its state dict (names, dtypes, shapes,
  bytes in sorted name order) and of its card's JSON;
* ``torchvision:NAME`` / ``timm:NAME``: the weights file, with the model name folded into
  the digest (the same file under another architecture is another model), and the card file;
* a MONAI bundle: one digest over the files that define the network (``configs/metadata.json``,
  ``configs/inference.*``, ``models/model.pt``, ``models/model.ts``) and the card in use
  (the given one, ``card.json`` in the bundle, else the metadata).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medrobust.errors import ConfigError
from medrobust.utils.hashing import FileHasher, manifest_sha256


def _entry(hasher: FileHasher, path: Path | None) -> dict[str, Any] | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        return hasher.file(path).to_dict()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it to record its hash ({exc.strerror or exc}).") from None


def special_model_provenance(model_config: Any, hasher: FileHasher) -> dict[str, Any] | None:
    """The provenance record of a live module, library model or MONAI bundle; None for a plain file.

    Args:
        model_config: The audit's ``model`` section (``path``, ``card``, optional ``weights``).
        hasher: The audit's shared :class:`~medrobust.utils.hashing.FileHasher`.

    Returns:
        ``{"weights": entry, "card": entry}`` (entries ``{"path", "sha256", "size"}`` or None),
        or None when ``model_config.path`` is an ordinary model file or run folder.

    Raises:
        CheckpointError: a ``module:`` name with no module registered in this process.
        ConfigError: a file that cannot be read.
    """
    from medrobust.models.bundle import INFERENCE_NAMES, METADATA, TORCHSCRIPT, WEIGHTS, is_bundle
    from medrobust.models.hub import parse_model_spec

    path = str(model_config.path)
    card = getattr(model_config, "card", None)
    spec = parse_model_spec(path)
    if spec is not None and spec[0] == "module":
        from medrobust.models.live import live_provenance

        return live_provenance(path)
    if spec is not None:
        weights = getattr(model_config, "weights", None)
        entry = _entry(hasher, Path(weights)) if weights is not None else None
        if entry is not None:
            entry = {**entry, "sha256": manifest_sha256([], {"model": path, "weights": entry["sha256"]})}
        return {"weights": entry, "card": _entry(hasher, Path(card) if card is not None else None)}
    folder = Path(path)
    if not is_bundle(folder):
        return None
    parts = [folder / METADATA, folder / WEIGHTS, folder / TORCHSCRIPT]
    parts += [folder / "configs" / name for name in INFERENCE_NAMES]
    files = [p for p in parts if p.is_file()]
    try:
        entries = hasher.manifest(files, folder)
    except OSError as exc:
        raise ConfigError(
            f"{exc.filename or folder}: cannot read it to record its hash ({exc.strerror or exc})."
        ) from None
    weights_entry = {
        "path": str(folder),
        "sha256": manifest_sha256(entries),
        "size": int(sum(e["size"] for e in entries)),
    }
    card_file = Path(card) if card is not None else folder / "card.json"
    if not card_file.is_file():
        card_file = folder / METADATA
    return {"weights": weights_entry, "card": _entry(hasher, card_file)}


__all__ = ["special_model_provenance"]
