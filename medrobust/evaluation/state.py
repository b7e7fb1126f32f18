"""Resume state of an audit (AutoAttack ``state.py`` style), kept in ``RUN/state/``.

* ``state.json``: schema, the config fingerprint and the resolved config.
* ``cells/<cell-id>.json``: one finished cell each, written atomically as it completes.
* ``computed.log``: one line per cell actually computed by a process (an audit trail:
  a resumed run appends only the cells it had to compute).

Rerunning with the same config skips finished cells (their original timings are
kept); a different config is refused unless ``fresh=True``, which clears the state.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from medrobust.errors import ConfigError
from medrobust.utils.io import atomic_write_json

STATE_SCHEMA = "medrobust.audit-state/1"


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
