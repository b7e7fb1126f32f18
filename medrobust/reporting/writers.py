"""Write an audit's outputs from its results dict (Jinja2 templates under ``templates/``)."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from medrobust.reporting.tables import CELL_COLUMNS, METRIC_COLUMNS, cell_rows, fmt
from medrobust.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

TEMPLATES = Path(__file__).parent / "templates"


def _env(autoescape: bool):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    return env


def results_csv(results: Mapping[str, Any]) -> str:
    """One row per cell (identification columns, then metrics)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*CELL_COLUMNS, *METRIC_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for row in cell_rows(results):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def summary(results: Mapping[str, Any]) -> dict[str, Any]:
    """Robust accuracy pivot: per norm, rows target · threat · attack, columns budgets.

    Also a ``worst`` row per target · threat: the minimum over attacks at each budget.
    """
    out: dict[str, Any] = {}
    for norm in ("linf", "l2"):
        cells = [c for c in results["cells"] if c["norm"] == norm]
        if not cells:
            continue
        labels = []
        for c in sorted(cells, key=lambda c: float("inf") if c["eps"] is None else c["eps"]):
            if c["eps_label"] not in labels:
                labels.append(c["eps_label"])
        rows = []
        for target, threat in dict.fromkeys((c["target"], c["threat"]) for c in cells):
            group = [c for c in cells if c["target"] == target and c["threat"] == threat]
            clean = group[0]["metrics"]["clean_accuracy"]
            worst: dict[str, float] = {}
            for attack in dict.fromkeys(c["attack"] for c in group):
                values = {
                    c["eps_label"]: c["metrics"]["robust_accuracy"] for c in group if c["attack"] == attack
                }
                for k, v in values.items():
                    if v is not None:
                        worst[k] = min(worst.get(k, v), v)
                rows.append(
                    {
                        "target": target,
                        "threat": threat,
                        "attack": attack,
                        "clean": clean,
                        "values": values,
                        "worst": False,
                    }
                )
            rows.append(
                {
                    "target": target,
                    "threat": threat,
                    "attack": "worst case",
                    "clean": clean,
                    "values": worst,
                    "worst": True,
                }
            )
        out[norm] = {"labels": labels, "rows": rows}
    return out


def _context(results: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    env_file = run_dir / "environment.json"
    environment = json.loads(env_file.read_text(encoding="utf-8")) if env_file.exists() else {}
    attack_params: dict[str, Any] = {}
    for c in results["cells"]:
        attack_params.setdefault(
            c["attack"],
            {
                "name": c["attack_name"],
                "norm": c["norm"],
                "minimal": c["minimal"],
                "params": c["params"],
                "info": c["info"],
            },
        )
    return {
        "r": results,
        "summary": summary(results),
        "rows": cell_rows(results),
        "metric_columns": [
            "clean_accuracy",
            "robust_accuracy",
            "balanced_accuracy",
            "auroc",
            "sensitivity",
            "specificity",
            "success_rate",
            "median_linf",
            "median_l2",
            "median_queries",
            "seconds",
        ],
        "attack_params": attack_params,
        "config_yaml": yaml.safe_dump(results["config"], sort_keys=False),
        "environment": environment,
        "flags_warning": [f for f in results["flags"] if f["severity"] == "warning"],
    }


def render_markdown(results: Mapping[str, Any], run_dir: str | Path, plots: list[dict[str, Any]]) -> str:
    """``report.md``: summary tables, flags, gates; plots linked from ``plots/``."""
    ctx = _context(results, Path(run_dir))
    return _env(False).get_template("report.md.j2").render(plots=plots, **ctx)


def render_html(results: Mapping[str, Any], run_dir: str | Path, plots: list[dict[str, Any]]) -> str:
    """``report.html``: self-contained (PNG plots embedded as base64, no external URLs, no scripts)."""
    ctx = _context(results, Path(run_dir))
    return _env(True).get_template("report.html.j2").render(plots=plots, **ctx)


def write_reports(results: Mapping[str, Any], run_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.csv, plots/*.png, report.md and report.html (atomically).

    Returns:
        The written paths by kind.
    """
    from medrobust.reporting.plots import figure_png, report_figures

    run_dir = Path(run_dir)
    paths = {
        "json": atomic_write_json(run_dir / "results.json", results),
        "csv": atomic_write_text(run_dir / "results.csv", results_csv(results)),
    }
    plots = []
    for item in report_figures(results, run_dir):
        png = figure_png(item["figure"])
        rel = f"plots/{item['id']}.png"
        atomic_write_bytes(run_dir / rel, png)
        plots.append(
            {
                "id": item["id"],
                "title": item["title"],
                "section": item["section"],
                "path": rel,
                "b64": base64.b64encode(png).decode("ascii"),
            }
        )
    paths["md"] = atomic_write_text(run_dir / "report.md", render_markdown(results, run_dir, plots))
    paths["html"] = atomic_write_text(run_dir / "report.html", render_html(results, run_dir, plots))
    return paths
