"""Resume state of an audit (AutoAttack ``state.py`` style), kept in ``RUN/state/``.

* ``state.json``: schema, the config fingerprint and the resolved config.
* ``cells/<cell-id>.json``: one finished cell each, written atomically as it completes.
* ``computed.log``: one line per cell actually computed by a process (an audit trail:
  a resumed run appends only the cells it had to compute).
* ``shards/<craft-id>/b<batch>.npz``: one finished (craft, batch) piece each (per-sample
  attack results of that batch, :class:`BatchPiece`), written atomically by whichever
  rank computed it; a resumed run (sharded or not) reuses them instead of attacking
  the batch again, and cells are assembled from the pieces.

Rerunning with the same config skips finished cells (their original timings are
kept); a different config is refused unless ``fresh=True``, which clears the state.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.errors import ConfigError
from medrobust.utils.io import atomic_path, atomic_write_json
from medrobust.utils.logging import get_logger

STATE_SCHEMA = "medrobust.audit-state/1"
PIECE_SCHEMA = "medrobust.audit-piece/1"
log = get_logger("evaluation.state")


def _diff_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _diff_fields(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


class AuditState:
    """The state folder of one audit run.

    Args:
        run_dir: The audit's output folder (the state lives in ``run_dir/state``).
        fingerprint: Hash of the resolved config (:meth:`AuditConfig.fingerprint`).
        config: The resolved config (stored to explain a mismatch).
        fresh: Clear an existing state (and start over) instead of resuming.

    Raises:
        ConfigError: when the folder holds a run of a different config and ``fresh`` is False.
    """

    def __init__(self, run_dir: str | Path, fingerprint: str, config: dict[str, Any], fresh: bool = False):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "state"
        self.cells_dir = self.dir / "cells"
        self.fingerprint = fingerprint
        state_file = self.dir / "state.json"
        if fresh and self.dir.exists():
            shutil.rmtree(self.dir)
        if state_file.exists():
            try:
                old = json.loads(state_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{state_file}: unreadable audit state ({exc}); rerun with --fresh."
                ) from None
            if old.get("fingerprint") != fingerprint:
                changed = _diff_fields(old.get("config", {}), config)
                shown = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
                raise ConfigError(
                    f"{self.run_dir} holds an audit of a different config "
                    f"(fingerprint {str(old.get('fingerprint'))[:12]} vs {fingerprint[:12]}; "
                    f"changed: {shown or 'unknown'}). Rerun with --fresh to discard it, "
                    "or choose another --out folder."
                )
        else:
            self.cells_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(
                state_file, {"schema": STATE_SCHEMA, "fingerprint": fingerprint, "config": config}
            )
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        self.pieces = PieceStore(self.run_dir)

    def path(self, cell_id: str) -> Path:
        """File of a finished cell."""
        return self.cells_dir / f"{cell_id}.json"

    def has(self, cell_id: str) -> bool:
        """Whether ``cell_id`` is finished."""
        return self.path(cell_id).exists()

    def load(self, cell_id: str) -> dict[str, Any]:
        """A finished cell's record."""
        return json.loads(self.path(cell_id).read_text(encoding="utf-8"))

    def save(self, cell_id: str, record: dict[str, Any]) -> None:
        """Persist a finished cell atomically and log that it was computed."""
        atomic_write_json(self.path(cell_id), record)
        with open(self.dir / "computed.log", "a", encoding="utf-8") as fh:
            fh.write(f"{record.get('key', cell_id)}\n")
            fh.flush()
            os.fsync(fh.fileno())

    def finished(self) -> list[str]:
        """Ids of finished cells."""
        return sorted(p.stem for p in self.cells_dir.glob("*.json"))

    def computed_log(self) -> list[str]:
        """Keys of every cell computed in this folder, in order (across resumed runs)."""
        log = self.dir / "computed.log"
        return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


@dataclass
class BatchPiece:
    """The finished attack of one batch of one craft (what a rank persists and sends to rank 0).

    Attributes:
        craft: The craft's key.
        batch: Batch number.
        positions: ``(m,)`` audit positions attacked in this batch (ascending).
        linf: ``(m,)`` L∞ norms of the perturbations.
        l2: ``(m,)`` L2 norms.
        queries: ``(m,)`` model queries per sample.
        pred: Per evaluated target, ``(m,)`` raw predictions on the adversarial examples.
        probs: Per evaluated target, ``(m, K)`` float64 probabilities.
        adv_positions: Positions whose adversarial image is kept (saved examples).
        adv: ``(len(adv_positions), C, *spatial)`` float32 adversarial images.
        params: The attack's parameters (seed left out).
        info: The attack's extra outputs (JSON-able).
        craft_seconds: Time spent attacking the batch.
        eval_seconds: Per evaluated target, time spent predicting on the batch.
    """

    craft: str
    batch: int
    positions: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    queries: np.ndarray
    pred: dict[str, np.ndarray] = field(default_factory=dict)
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    adv_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    adv: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.float32))
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    craft_seconds: float = 0.0
    eval_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        """Evaluated targets, in order."""
        return list(self.pred)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez`` (metadata as a JSON string array, no pickles)."""
        meta = {
            "schema": PIECE_SCHEMA,
            "craft": self.craft,
            "batch": int(self.batch),
            "targets": self.targets,
            "params": self.params,
            "info": self.info,
            "craft_seconds": float(self.craft_seconds),
            "eval_seconds": {k: float(v) for k, v in self.eval_seconds.items()},
        }
        arrays = {
            "meta": np.array(json.dumps(meta)),
            "positions": np.asarray(self.positions, dtype=np.int64),
            "linf": np.asarray(self.linf, dtype=np.float64),
            "l2": np.asarray(self.l2, dtype=np.float64),
            "queries": np.asarray(self.queries, dtype=np.int64),
            "adv_positions": np.asarray(self.adv_positions, dtype=np.int64),
            "adv": np.asarray(self.adv, dtype=np.float32),
        }
        for i, t in enumerate(self.targets):
            arrays[f"pred_{i}"] = np.asarray(self.pred[t], dtype=np.int64)
            arrays[f"probs_{i}"] = np.asarray(self.probs[t], dtype=np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Any) -> BatchPiece:
        """Inverse of :meth:`to_arrays` (``arrays``: a mapping or an open ``NpzFile``)."""
        meta = json.loads(str(arrays["meta"][()]))
        if meta.get("schema") != PIECE_SCHEMA:
            raise ValueError(f"unknown piece schema {meta.get('schema')!r}")
        targets = list(meta["targets"])
        return cls(
            craft=meta["craft"],
            batch=int(meta["batch"]),
            positions=np.asarray(arrays["positions"]),
            linf=np.asarray(arrays["linf"]),
            l2=np.asarray(arrays["l2"]),
            queries=np.asarray(arrays["queries"]),
            pred={t: np.asarray(arrays[f"pred_{i}"]) for i, t in enumerate(targets)},
            probs={t: np.asarray(arrays[f"probs_{i}"]) for i, t in enumerate(targets)},
            adv_positions=np.asarray(arrays["adv_positions"]),
            adv=np.asarray(arrays["adv"]),
            params=meta["params"],
            info=meta["info"],
            craft_seconds=float(meta["craft_seconds"]),
            eval_seconds={k: float(v) for k, v in meta["eval_seconds"].items()},
        )


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

    def load(self, craft_id: str, craft_key: str, batch: int, targets: list[str]) -> BatchPiece | None:
        """A finished piece, or ``None`` when absent or not usable (then it is recomputed)."""
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
            log.warning("ignoring audit piece %s: it belongs to another craft/batch/targets", path)
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
