"""Typed results of a segmentation audit (``results.json``, schema ``medrobust.segmentation-audit/1``).

``results.json`` holds the config, the model card, the data (labels, lesion labels, audited
images), each target's clean metrics, every cell (attack × budget × target × threat) with its
metrics and 95 % intervals (:func:`medrobust.metrics_segmentation.segmentation_summary`: Dice and
HD95 per label, mean foreground Dice, lesion detection, changed predictions) and per-image
values, the gates and the verdict. Each cell's adversarial label maps are saved beside it
(``predictions/<cell>.npz``, with ``predictions/truth.npz`` and ``predictions/clean-<target>.npz``),
so every number can be recomputed from the files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medrobust.errors import ConfigError

SCHEMA = "medrobust.segmentation-audit/1"
#: Fields every finished cell record has.
CELL_FIELDS = ("id", "key", "target", "threat", "attack", "metrics", "clean", "per_image", "cell_fingerprint")


@dataclass
class SegmentationCell:
    """One finished cell.

    Attributes:
        id: File name in ``state/cells``.
        key: The craft it was computed from.
        target: Target name (``bare`` or a defense).
        threat: ``whitebox``, ``graybox`` or ``adaptive``.
        attack: Attack label; ``attack_name`` the registered attack, ``goal`` its goal.
        norm: ``linf`` or ``l2``.
        eps: Budget in image units; ``eps_label`` as written.
        metrics: Under attack: ``dice`` / ``hd95`` per label, ``mean_dice``, ``detection``, ``changed``
            (each ``{"value", "ci", "method", "n"}``).
        clean: The target's clean metrics in the same form.
        per_image: Per image: ``dice``, ``hd95`` (lists per label), ``lesions``, ``detected``,
            ``changed_pixels``.
        seconds: Wall time of the craft and evaluation.
        median_linf: Median L∞ norm of the perturbations (image units).
        queries: Forward passes per image.
        uses_bpda: Whether the attack's gradient went through a BPDA approximation.
        examples: Worst-case examples file (relative to the run folder) or None.
        predictions: Adversarial label maps file (relative to the run folder).
        cell_fingerprint: The cell's key (resume).
    """

    id: str
    key: str
    target: str
    threat: str
    attack: str
    attack_name: str
    goal: str
    norm: str
    eps: float | None
    eps_label: str
    metrics: dict[str, Any]
    clean: dict[str, Any]
    per_image: dict[str, Any]
    seconds: float = 0.0
    median_linf: float | None = None
    queries: int | None = None
    uses_bpda: bool = False
    examples: str | None = None
    predictions: str | None = None
    cell_fingerprint: str | None = None

    @property
    def ident(self) -> str:
        """``target/threat/attack@eps``."""
        return f"{self.target}/{self.threat}/{self.attack}@{self.eps_label}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentationCell:
        """From the JSON form (unknown keys ignored)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SegmentationAuditResults:
    """A segmentation audit's results, as :func:`medrobust.audit` returns them.

    Attributes:
        raw: The results.json dict.
        run_dir: The run folder.
    """

    raw: dict[str, Any]
    run_dir: Path | None = None
    _cells: list[SegmentationCell] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._cells = [SegmentationCell.from_dict(c) for c in self.raw.get("cells", [])]

    @property
    def cell_list(self) -> list[SegmentationCell]:
        """The cells, typed, in report order."""
        return list(self._cells)

    @property
    def cells(self) -> Any:
        """One row per cell (pandas): target, threat, attack, ε, mean Dice with its interval, detection."""
        import pandas as pd

        rows = []
        for c in self._cells:
            md, det = c.metrics.get("mean_dice") or {}, c.metrics.get("detection") or {}
            rows.append(
                {
                    "target": c.target,
                    "threat": c.threat,
                    "attack": c.attack,
                    "eps_label": c.eps_label,
                    "clean_dice": (c.clean.get("mean_dice") or {}).get("value"),
                    "dice": md.get("value"),
                    "dice_ci_low": (md.get("ci") or [None, None])[0],
                    "dice_ci_high": (md.get("ci") or [None, None])[1],
                    "detection": det.get("value"),
                    "changed": (c.metrics.get("changed") or {}).get("value"),
                }
            )
        return pd.DataFrame(rows)

    @property
    def gates_passed(self) -> bool:
        """True when every gate passed (or there are none)."""
        return all(g["passed"] for g in self.raw.get("gates", []))


def load_segmentation_results(run_dir: str | Path) -> SegmentationAuditResults:
    """Read ``run_dir/results.json`` of a segmentation audit.

    Raises:
        ConfigError: when the file is missing, unreadable or of another schema.
    """
    path = Path(run_dir) / "results.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read segmentation audit results ({type(exc).__name__}).") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        got = raw.get("schema") if isinstance(raw, dict) else type(raw).__name__
        raise ConfigError(f"{path}: schema {got!r} is not {SCHEMA!r}.")
    return SegmentationAuditResults(raw, Path(run_dir))
