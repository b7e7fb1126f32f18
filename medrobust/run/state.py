"""The one resumable-state scheme (AutoAttack ``state.py`` style), in ``RUN/state/``.

* ``state.json``: the schema, the run *fingerprint* (of everything that changes every unit:
  settings and the content hashes of the inputs), the settings and inputs themselves (to say
  what changed), the creation time and free ``extra`` data (e.g. the resolved config).
* ``<units>/<unit-id>.json``: one finished unit of work each (an audit cell, a study
  measurement), written atomically as it completes, carrying the key it was computed for;
  a unit is reused only when its stored key equals the expected one.
* ``computed.log``: one line per unit actually computed, across resumed runs.

A run whose settings or inputs changed is refused with one :class:`~medrobust.errors.ConfigError`
naming what changed (``fresh=True`` clears the state first); a corrupt unit file is recomputed
after one warning naming it; a corrupt ``state.json`` is refused naming it.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from medrobust.errors import ConfigError
from medrobust.utils.io import atomic_write_json
from medrobust.utils.logging import get_logger

log = get_logger("run.state")
FRESH_HINT = "rerun with --fresh to discard the old results, or use another --out"


def diff_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the leaves that differ between two JSON-like values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += diff_fields(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


class RunState:
    """The state folder of one resumable run.

    Subclasses set ``schema``, ``what`` ("audit", "denoiser study"), ``units`` (folder name of
    the unit files) and ``unit_fields`` (keys a finished unit record must have; it must also
    hold ``key_field``), and may override :meth:`describe_input_change`.

    Args:
        run_dir: The run's output folder (the state lives in ``run_dir/state``).
        fingerprint: Hash of ``settings`` and the inputs' content hashes.
        settings: Run-level settings, stored to explain a mismatch.
        inputs: Input provenance (paths, sizes, sha256), stored to explain a mismatch.
        extra: More data stored in ``state.json`` (e.g. the resolved config).
        fresh: Clear an existing state (and start over) instead of resuming.
    """

    schema: ClassVar[str] = "medrobust.run-state/1"
    what: ClassVar[str] = "run"
    units: ClassVar[str] = "units"
    unit_fields: ClassVar[tuple[str, ...]] = ()
    key_field: ClassVar[str] = "unit_key"

    def __init__(
        self,
        run_dir: str | Path,
        fingerprint: str,
        settings: dict[str, Any],
        inputs: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        fresh: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "state"
        self.units_dir = self.dir / self.units
        self.fingerprint = fingerprint
        self.inputs = inputs or {}
        self._expected: dict[str, str] = {}
        self._status: dict[str, bool] = {}
        state_file = self.dir / "state.json"
        if fresh and self.dir.is_dir() and not self.dir.is_symlink():
            shutil.rmtree(self.dir)
        elif fresh and (self.dir.exists() or self.dir.is_symlink()):
            self.dir.unlink()
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        if state_file.exists():
            old = self.read_state(state_file)
            if old["fingerprint"] != fingerprint:
                raise ConfigError(self._mismatch(old, settings, self.inputs))
            created = str(old.get("created", created))
        self.units_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "schema": self.schema,
            "fingerprint": fingerprint,
            "created": created,
            "run": settings,
            "provenance": self.inputs,
        }
        atomic_write_json(state_file, {**record, **(extra or {})})

    # -- state.json ----------------------------------------------------------------------------
    @classmethod
    def read_state(cls, state_file: Path) -> dict[str, Any]:
        """Read and check ``state.json``; every problem is one line naming it and ``--fresh``."""
        try:
            old = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else f"not valid UTF-8 JSON: {exc}"
            msg = f"{state_file}: unreadable {cls.what} state ({reason}); {FRESH_HINT}."
            raise ConfigError(msg) from None
        if not isinstance(old, dict):
            raise ConfigError(
                f"{state_file}: not {cls.what} state (expected a JSON object, got {type(old).__name__}); "
                f"{FRESH_HINT}."
            )
        if old.get("schema") != cls.schema:
            raise ConfigError(
                f"{state_file}: {cls.what} state of schema {old.get('schema')!r}, expected {cls.schema!r} "
                f"(written by another medrobust version); {FRESH_HINT}."
            )
        if not isinstance(old.get("fingerprint"), str) or not isinstance(old.get("run"), dict):
            raise ConfigError(
                f"{state_file}: {cls.what} state without a fingerprint or run settings; {FRESH_HINT}."
            )
        return old

    @classmethod
    def config_mismatch(cls, run_dir: Path, changed: list[str]) -> str:
        """The message for changed run-level settings."""
        shown = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
        return f"{run_dir} holds {cls.what} results of a different config (changed: {shown}); {FRESH_HINT}."

    @classmethod
    def precheck(cls, run_dir: str | Path, settings: dict[str, Any]) -> None:
        """Refuse early, before anything is loaded: a corrupt ``state.json`` or changed settings."""
        state_file = Path(run_dir) / "state" / "state.json"
        if not state_file.exists():
            return
        changed = diff_fields(cls.read_state(state_file)["run"], settings)
        if changed:
            raise ConfigError(cls.config_mismatch(Path(run_dir), changed))

    def describe_input_change(self, old: dict[str, Any], new: dict[str, Any]) -> str | None:
        """What changed between two input provenances, in words (None when it cannot tell)."""
        changed = diff_fields(old, new)
        return f"its inputs changed ({', '.join(changed[:4])})" if changed else None

    def _mismatch(self, old: dict[str, Any], settings: dict[str, Any], inputs: dict[str, Any]) -> str:
        changed = diff_fields(old["run"], settings)
        if changed:
            return self.config_mismatch(self.run_dir, changed)
        what = self.describe_input_change(old.get("provenance") or {}, inputs)
        if what:
            return f"{self.run_dir}: {what}; {FRESH_HINT}."
        return (
            f"{self.run_dir} holds {self.what} results whose inputs differ (fingerprint "
            f"{old['fingerprint'][:12]} vs {self.fingerprint[:12]}); {FRESH_HINT}."
        )

    # -- units ---------------------------------------------------------------------------------
    def expect(self, keys: dict[str, str]) -> None:
        """Set each planned unit's key: ``{unit id: key}``; a stored unit counts only with that key."""
        self._expected = dict(keys)
        self._status = {}

    def path(self, unit_id: str) -> Path:
        """File of a finished unit (ids may contain ``/`` for sub-folders)."""
        return self.units_dir / f"{unit_id}.json"

    def _usable(self, record: Any, path: Path) -> bool:
        """Whether a record read from ``path`` is a finished unit (override to check more)."""
        missing = [k for k in self.unit_fields if not isinstance(record, dict) or k not in record]
        if missing:
            log.warning("%s: not a finished %s unit (missing %s); recomputing it", path, self.what, missing)
            return False
        return True

    def _check(self, unit_id: str) -> bool:
        path = self.path(unit_id)
        if not path.exists():
            return False
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("%s: unreadable %s unit (%s); recomputing it", path, self.what, type(exc).__name__)
            return False
        if not self._usable(record, path):
            return False
        expected = self._expected.get(unit_id)
        if expected is not None and record.get(self.key_field) != expected:
            log.info("%s %s: its settings changed since it was computed; recomputing it", self.what, unit_id)
            return False
        return True

    def has(self, unit_id: str) -> bool:
        """Whether ``unit_id`` is finished: readable, complete and of the expected key (checked once)."""
        if unit_id not in self._status:
            self._status[unit_id] = self._check(unit_id)
        return self._status[unit_id]

    def load(self, unit_id: str) -> dict[str, Any]:
        """A finished unit's record."""
        return json.loads(self.path(unit_id).read_text(encoding="utf-8"))

    def save(self, unit_id: str, record: dict[str, Any], log_key: str | None = None) -> None:
        """Log that a unit was computed, then persist it atomically.

        In that order, the log never misses a computation: a process killed between the two leaves
        a logged unit without its file, which the next run recomputes and logs again (it was
        computed twice), and a unit file on disk always has its log line.
        """
        with open(self.dir / "computed.log", "a", encoding="utf-8") as fh:
            fh.write(f"{log_key or record.get('key', unit_id)}\n")
            fh.flush()
            os.fsync(fh.fileno())
        atomic_write_json(self.path(unit_id), record)
        self._status[unit_id] = True

    def load_or_compute(self, unit_id: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored unit when finished, else ``compute()`` saved as it (the resumable-step idiom)."""
        if self.has(unit_id):
            return self.load(unit_id)
        record = compute()
        self.save(unit_id, record)
        return record

    def finished(self) -> list[str]:
        """Ids of units with a file on disk (not checked; see :meth:`has`)."""
        return sorted(
            str(p.relative_to(self.units_dir).with_suffix(""))
            for p in self.units_dir.rglob("*.json")
            if not p.name.startswith(".")
        )

    def computed_log(self) -> list[str]:
        """Keys of every unit computed in this folder, in order (across resumed runs)."""
        path = self.dir / "computed.log"
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []
