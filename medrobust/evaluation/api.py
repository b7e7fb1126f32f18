"""Python API for notebooks: ``medrobust.audit(...)`` and ``medrobust.load_results(run_dir)``.

>>> import medrobust
>>> res = medrobust.audit("pipelines/demo.yaml", out="runs/nb", n_samples=16)   # doctest: +SKIP
>>> res.cells[["target", "threat", "attack", "eps_label", "robust_accuracy"]]  # doctest: +SKIP
>>> res.samples.query("success")                                               # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medrobust.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from medrobust.evaluation.config import AuditConfig


@dataclass
class AuditResults:
    """An audit's results with pandas views.

    Attributes:
        raw: The results.json dict (schema ``medrobust.audit/1``).
        run_dir: The run folder (None when built from a dict).
    """

    raw: dict[str, Any]
    run_dir: Path | None = None

    @property
    def cells(self) -> pd.DataFrame:
        """One row per cell: target, threat, attack, ε, metrics, seconds."""
        import pandas as pd

        from medrobust.reporting.tables import cell_rows

        return pd.DataFrame(cell_rows(self.raw))

    @property
    def samples(self) -> pd.DataFrame:
        """One row per (cell, sample): label, clean/adversarial predictions, success, norms, queries."""
        import pandas as pd

        from medrobust.reporting.tables import sample_rows

        return pd.DataFrame(sample_rows(self.raw))

    @property
    def flags(self) -> pd.DataFrame:
        """One row per sanity flag."""
        import pandas as pd

        return pd.DataFrame(
            self.raw["flags"],
            columns=["id", "severity", "message", "target", "threat", "attack", "eps_label", "doc"],
        )

    @property
    def gates_passed(self) -> bool:
        """True when every gate passed (or there are none)."""
        return all(g["passed"] for g in self.raw.get("gates", []))

    def figures(self) -> list[dict[str, Any]]:
        """The report's matplotlib figures (needs ``run_dir`` for the gallery)."""
        from medrobust.reporting.plots import report_figures

        return report_figures(self.raw, self.run_dir or Path("."))


def load_results(run_dir: str | Path) -> AuditResults:
    """Read ``run_dir/results.json`` (or a results.json path).

    Raises:
        ConfigError: when the file is missing or has another schema.
    """
    from medrobust.evaluation.runner import SCHEMA

    path = Path(run_dir)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise ConfigError(f"no audit results at {str(path)!r} (run `medrobust audit` first).")
    raw = json.loads(path.read_text(encoding="utf-8"))
    if raw.get("schema") != SCHEMA:
        raise ConfigError(f"{path}: schema {raw.get('schema')!r} is not {SCHEMA!r}.")
    return AuditResults(raw, path.parent)


def audit(
    config: str | Path | dict[str, Any] | AuditConfig,
    out: str | Path = "runs/audit",
    *,
    fresh: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> AuditResults:
    """Run (or resume) an audit and return its results.

    Args:
        config: A YAML path, a config dict or an :class:`AuditConfig`.
        out: Run folder.
        fresh: Discard a previous run state in ``out``.
        progress: Show a progress bar.
        **overrides: Top-level config fields to override (e.g. ``n_samples=16``).
    """
    from medrobust.evaluation.config import AuditConfig, config_from_dict, load_config, merge_overrides
    from medrobust.evaluation.runner import run_audit

    if isinstance(config, AuditConfig):
        cfg = config_from_dict(merge_overrides(config.resolved(), overrides)) if overrides else config
    elif isinstance(config, dict):
        cfg = config_from_dict(merge_overrides(config, overrides))
    else:
        cfg = load_config(config, overrides)
    results = run_audit(cfg, out, fresh=fresh, progress=progress)
    return AuditResults(results, Path(out))
