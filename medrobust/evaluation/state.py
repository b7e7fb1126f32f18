"""Resume state of an audit (AutoAttack ``state.py`` style), kept in ``RUN/state/``.

* ``state.json``: schema, the *run fingerprint*, the run-level settings
  (:meth:`AuditConfig.run_inputs`), the provenance of every input (content SHA-256 of the
  model weights and card, each defense's weights/spec/card, and a manifest of the data
  files the audit reads) and the latest resolved config.
* ``cells/<cell-id>.json``: one finished cell each, written atomically as it completes; it
  carries its own ``cell_fingerprint`` (the run fingerprint, the attack's full parameters,
  the budget, target and threat).
* ``computed.log``: one line per cell actually computed by a process (an audit trail:
  a resumed run appends only the cells it had to compute).
* ``shards/<craft-id>/b<batch>.npz``: one finished (craft, batch) piece each (per-sample
  attack results of that batch, :class:`BatchPiece`) with its ``craft_hash``, written
  atomically by whichever rank computed it; a resumed run (sharded or not) reuses a piece
  only when its hash matches, and cells are assembled from the pieces.

Resuming: a run whose run-level inputs changed (settings *or* file contents: new weights in
the same folder, an edited card, other images) is refused with a one-line
:class:`~medrobust.errors.ConfigError` naming what changed, unless ``fresh=True``, which clears
the state. Attacks, budgets and threats may change freely: a finished cell is reused only
when its stored key equals the new one, so unchanged cells are kept, new cells computed and
cells whose attack parameters changed recomputed. A corrupt cell file is recomputed (one
warning naming it); a corrupt ``state.json`` is refused (naming it; ``--fresh`` starts over).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.errors import ConfigError
from medrobust.evaluation.crafting import BatchPiece
from medrobust.run.state import FRESH_HINT, RunState
from medrobust.utils.hashing import FileHasher, manifest_sha256, sha256_json, short
from medrobust.utils.io import atomic_path
from medrobust.utils.logging import get_logger

STATE_SCHEMA = "medrobust.audit-state/2"
#: Fields every finished cell record has (a record without them is treated as unfinished).
CELL_FIELDS = ("id", "key", "target", "threat", "attack", "metrics", "samples", "cell_fingerprint")
log = get_logger("evaluation.state")


def file_entry(hasher: FileHasher, path: Path | None) -> dict[str, Any] | None:
    """``{"path", "sha256", "size"}`` of a file, ``None`` when ``path`` is None or absent."""
    if path is None or not Path(path).is_file():
        return None
    try:
        return hasher.file(path).to_dict()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it to record its hash ({exc.strerror or exc}).") from None


def model_provenance(config: Any, hasher: FileHasher) -> dict[str, Any]:
    """Hashes of the audited model's weights file and its card."""
    from medrobust.models.checkpoint import CARD_NAME, WEIGHTS_NAME
    from medrobust.models.provenance import special_model_provenance

    special = special_model_provenance(config.model, hasher)  # live module, torchvision:/timm:, bundle
    if special is not None:
        return special
    path = Path(config.model.path)
    weights = path / WEIGHTS_NAME if path.is_dir() else path
    card = config.model.card
    if card is None:
        folder = path if path.is_dir() else path.parent
        card = folder / CARD_NAME if (path.is_dir() or path.suffix == ".safetensors") else None
    return {"weights": file_entry(hasher, weights), "card": file_entry(hasher, card)}


def defense_provenance(spec: Any, hasher: FileHasher) -> dict[str, Any]:
    """Hashes of a trained defense's weights, ``denoiser.json`` and card; a registry defense's settings."""
    if spec.path is None:
        settings = {"denoiser": spec.denoiser, "params": spec.params}
        return {"registry": {"path": None, "sha256": sha256_json(settings), "size": None, **settings}}
    from medrobust.defenses.checkpoint import SPEC, WEIGHTS

    path = Path(spec.path)
    if path.is_dir():
        spec_file = path / SPEC
    elif path.name == WEIGHTS:
        spec_file = path.with_name(SPEC)
    else:
        spec_file = path
    return {
        "weights": file_entry(hasher, spec_file.with_name(WEIGHTS)),
        "spec": file_entry(hasher, spec_file),
        "card": file_entry(hasher, spec_file.with_name("card.json")),
    }


def data_provenance(config: Any, samples: Any, hasher: FileHasher) -> dict[str, Any]:
    """A manifest of the data files the audited samples are read from.

    The files are the source file itself (an ``.npz``, a CSV manifest: it holds the labels)
    and each audited record's file(s), listed by path relative to the source folder (class
    folder names are labels), size and SHA-256 of the bytes. Phantom data are described by
    their spec (modality, n, size, seed): the generated cache file is rebuilt from it and
    its zip timestamps would differ.
    """
    if config.data.phantom is not None:
        phantom = config.data.phantom.model_dump(mode="json", exclude={"cache_dir"})
        return {
            "kind": "phantom",
            "path": str(samples.path),
            "sha256": manifest_sha256([], {"phantom": phantom}),
            "size": None,
            "n_files": 0,
            "phantom": phantom,
            "files": [],
        }
    ds = samples.dataset
    while not hasattr(ds, "records") and hasattr(ds, "dataset"):
        ds = ds.dataset  # e.g. the image cache wrapping the source dataset
    source = getattr(ds, "source", None)
    root = Path(getattr(source, "root", samples.path))
    files: list[Path] = [root] if root.is_file() else []
    records = getattr(ds, "records", None)
    if records is not None:
        for i in samples.indices:
            rec = records[i]
            if rec.path is not None:
                files.append(Path(rec.path))
            files += [Path(f) for f in rec.files]
    base = root if root.is_dir() else root.parent
    try:
        entries = (
            hasher.manifest(files, base) if records is not None or root.is_file() else hasher.folder(root)
        )
    except OSError as exc:
        raise ConfigError(
            f"{exc.filename or root}: cannot read it to record its hash ({exc.strerror or exc})."
        ) from None
    return {
        "kind": "files",
        "path": str(root),
        "sha256": manifest_sha256(entries),
        "size": int(sum(e["size"] for e in entries)),
        "n_files": len(entries),
        "phantom": None,
        "files": entries,
    }


def audit_provenance(config: Any, samples: Any, hasher: FileHasher | None = None) -> dict[str, Any]:
    """Content hashes of every input of an audit (model, defenses, data); each file is read once.

    Args:
        config: The :class:`~medrobust.evaluation.config.AuditConfig`.
        samples: The opened :class:`~medrobust.evaluation.targets.AuditSamples`.
        hasher: Shared hasher (a file named twice is read once).

    Returns:
        ``{"model": {...}, "defenses": {name: {...}}, "data": {...}}``; every file entry is
        ``{"path", "sha256", "size"}``.
    """
    hasher = hasher or FileHasher()
    return {
        "model": model_provenance(config, hasher),
        "defenses": {d.name: defense_provenance(d, hasher) for d in config.defenses},
        "data": data_provenance(config, samples, hasher),
    }


def _inputs(prov: dict[str, Any]) -> dict[str, tuple[str, str | None, str | None]]:
    """Flat ``{key: (what, path, sha256)}`` of a provenance, in a stable order (model first)."""
    out: dict[str, tuple[str, str | None, str | None]] = {}
    for part, what in (("weights", "the model weights"), ("card", "the model card")):
        entry = (prov.get("model") or {}).get(part)
        out[f"model.{part}"] = (what, entry and entry.get("path"), entry and entry.get("sha256"))
    names = {"weights": "weights", "spec": "denoiser spec", "card": "card", "registry": "settings"}
    for name, parts in (prov.get("defenses") or {}).items():
        for part, entry in (parts or {}).items():
            what = f"the {names.get(part, part)} of defense {name!r}"
            out[f"defenses.{name}.{part}"] = (
                what,
                entry and entry.get("path"),
                entry and entry.get("sha256"),
            )
    data = prov.get("data") or {}
    out["data"] = ("the data", data.get("path"), data.get("sha256"))
    return out


def input_digests(prov: dict[str, Any]) -> dict[str, str | None]:
    """``{input key: sha256}`` of a provenance (what the run fingerprint covers)."""
    return {key: sha for key, (_, _, sha) in _inputs(prov).items()}


def run_fingerprint(run_inputs: dict[str, Any], prov: dict[str, Any]) -> str:
    """SHA-256 of the run-level settings and the content hashes of every input."""
    return sha256_json({"run": run_inputs, "inputs": input_digests(prov)})


def _data_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Which data file changed, was added or removed (for the refusal message)."""
    root = Path(str(new.get("path") or old.get("path") or ""))
    base = root if not root.suffix else root.parent
    before = {e["path"]: e for e in old.get("files") or [] if isinstance(e, dict) and "path" in e}
    after = {e["path"]: e for e in new.get("files") or []}
    for rel in sorted(set(before) & set(after)):
        if before[rel].get("sha256") != after[rel]["sha256"]:
            return f"{base / rel} sha256 {short(before[rel].get('sha256'))} → {short(after[rel]['sha256'])}"
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    parts = []
    if added:
        parts.append(f"{len(added)} file(s) now read that were not, e.g. {base / added[0]}")
    if removed:
        parts.append(f"{len(removed)} file(s) no longer read, e.g. {base / removed[0]}")
    if old.get("phantom") != new.get("phantom"):
        parts.append("phantom spec changed")
    detail = "; ".join(parts) or "manifest"
    return f"{root}: {detail}; manifest sha256 {short(old.get('sha256'))} → {short(new.get('sha256'))}"


def describe_input_change(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """``"the model weights changed since this audit began (PATH sha256 a… → b…)"`` or ``None``."""
    before, after = _inputs(old), _inputs(new)
    for key in list(after) + [k for k in before if k not in after]:
        what, path, sha = after.get(key) or before[key]
        old_sha = before.get(key, (None, None, None))[2]
        if old_sha == sha and key in before and key in after:
            continue
        if key == "data":
            detail = _data_change(old.get("data") or {}, new.get("data") or {})
        else:
            path = path or before.get(key, (None, None, None))[1]
            detail = f"{path} sha256 {short(old_sha)} → {short(sha if key in after else None)}"
        return f"{what} changed since this audit began ({detail})"
    return None


# -- the state folder ------------------------------------------------------------------------------
class AuditState(RunState):
    """The state folder of one audit run: the kernel's :class:`~medrobust.run.state.RunState` with cells.

    Args:
        run_dir: The audit's output folder (the state lives in ``run_dir/state``).
        fingerprint: The run fingerprint (:func:`run_fingerprint`).
        run_inputs: The run-level settings (:meth:`AuditConfig.run_inputs`), stored to explain a mismatch.
        provenance: The inputs' hashes (:func:`audit_provenance`), stored to explain a mismatch.
        config: The resolved config (stored for reference; the latest run's).
        fresh: Clear an existing state (and start over) instead of resuming.

    Raises:
        ConfigError: when ``state.json`` is unreadable, or the folder holds a run whose
            run-level settings or input files differ and ``fresh`` is False (the message
            names what changed and says ``--fresh``).
    """

    schema = STATE_SCHEMA
    what = "audit"
    units = "cells"
    unit_fields = CELL_FIELDS
    key_field = "cell_fingerprint"

    def __init__(
        self,
        run_dir: str | Path,
        fingerprint: str,
        run_inputs: dict[str, Any],
        provenance: dict[str, Any],
        config: dict[str, Any],
        fresh: bool = False,
    ) -> None:
        super().__init__(run_dir, fingerprint, run_inputs, provenance, {"config": config}, fresh)
        self.cells_dir = self.units_dir
        self.provenance = provenance
        self.pieces = PieceStore(self.run_dir)

    @classmethod
    def config_mismatch(cls, run_dir: Path, changed: list[str]) -> str:
        """Changed run-level settings (attacks, budgets and threats may change; these may not)."""
        shown = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
        return (
            f"{run_dir} holds an audit of a different config (changed: {shown}; attacks, budgets and "
            f"threats may change on resume, these may not); {FRESH_HINT}."
        )

    def describe_input_change(self, old: dict[str, Any], new: dict[str, Any]) -> str | None:
        """Which input file changed (weights, card, a defense, a data file), with its hashes."""
        return describe_input_change(old, new)

    def _usable(self, record: Any, path: Path) -> bool:
        if not super()._usable(record, path):
            return False
        if not isinstance(record["metrics"], dict) or not isinstance(record["samples"], dict):
            log.warning("%s: not a finished audit cell (metrics/samples not objects); recomputing it", path)
            return False
        return True


class PieceStore:
    """Finished (craft, batch) pieces under ``run_dir/state/shards`` (any rank may write its own).

    Args:
        run_dir: The audit's output folder.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir) / "state" / "shards"

    def path(self, craft_id: str, batch: int) -> Path:
        """File of one piece."""
        return self.dir / craft_id / f"b{int(batch):06d}.npz"

    def save(self, craft_id: str, piece: BatchPiece) -> Path:
        """Persist ``piece`` atomically (a killed rank leaves no partial file)."""
        path = self.path(craft_id, piece.batch)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **piece.to_arrays())
            fh.flush()
            os.fsync(fh.fileno())
        return path

    def load(
        self, craft_id: str, craft_key: str, batch: int, targets: list[str], craft_hash: str | None = None
    ) -> BatchPiece | None:
        """A finished piece, or ``None`` when absent or not usable (then it is recomputed).

        Args:
            craft_id: The craft's folder name.
            craft_key: The craft's key (must match the piece's).
            batch: Batch number.
            targets: Evaluated targets (must match the piece's, in order).
            craft_hash: When given, the piece's ``craft_hash`` must equal it (a piece of the
                same craft key crafted with other attack parameters or inputs is recomputed).
        """
        path = self.path(craft_id, batch)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                piece = BatchPiece.from_arrays(z)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("ignoring unreadable audit piece %s (%s); recomputing it", path, exc)
            return None
        if piece.craft != craft_key or piece.batch != int(batch) or piece.targets != list(targets):
            log.info("ignoring audit piece %s: it belongs to another craft/batch/targets", path)
            return None
        if craft_hash is not None and piece.craft_hash != craft_hash:
            log.info("ignoring audit piece %s: its attack settings or inputs changed; recomputing it", path)
            return None
        return piece

    def finished(self, craft_id: str) -> list[int]:
        """Batch numbers with a piece on disk for a craft."""
        folder = self.dir / craft_id
        if not folder.is_dir():
            return []
        out = []
        for p in folder.glob("b*.npz"):
            if p.stem[1:].isdigit():
                out.append(int(p.stem[1:]))
        return sorted(out)
