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

from medrobust.evaluation.results import AuditDocument, Cell, Interval, as_document
from medrobust.evaluation.statistics import fmt_interval
from medrobust.evaluation.verdict import ensure_evidence
from medrobust.reporting.tables import CELL_COLUMNS, CI_COLUMNS, METRIC_COLUMNS, cell_rows, fmt
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
    env.filters["ci"] = fmt_interval
    env.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.0f}"
    return env


def results_csv(results: AuditDocument | Mapping[str, Any]) -> str:
    """One row per cell (identification columns, then metrics)."""
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=[*CELL_COLUMNS, *METRIC_COLUMNS, *CI_COLUMNS], lineterminator="\n"
    )
    writer.writeheader()
    for row in cell_rows(results, intervals=True):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def summary(results: AuditDocument | Mapping[str, Any]) -> dict[str, Any]:
    """Robust accuracy pivot: per norm, rows target · threat · attack, columns budgets (floats).

    A ``worst`` row per target · threat holds the *per-sample* worst case over the attacks
    at each budget (a sample counts as robust only if no attack fooled it), which can be
    lower than every single attack's value. :func:`interval_summary` gives the same pivot
    with 95 % intervals.
    """
    out = interval_summary(results)
    for table in out.values():
        for row in table["rows"]:
            row["clean"] = row["clean"].value
            row["values"] = {k: v.value for k, v in row["values"].items()}
    return out


def interval_summary(results: AuditDocument | Mapping[str, Any]) -> dict[str, Any]:
    """:func:`summary` with :class:`~medrobust.evaluation.results.Interval` values."""
    results = ensure_evidence(results)
    worst_by = {(w.target, w.threat, w.norm, w.eps_label): w for w in results.worst_cases or []}
    out: dict[str, Any] = {}
    for norm in ("linf", "l2"):
        cells = [c for c in results.cells if c.norm == norm]
        if not cells:
            continue
        labels = []
        for c in sorted(cells, key=lambda c: float("inf") if c.eps is None else c.eps):
            if c.eps_label not in labels:
                labels.append(c.eps_label)
        rows = []
        for target, threat in dict.fromkeys((c.target, c.threat) for c in cells):
            group = [c for c in cells if c.target == target and c.threat == threat]
            clean = _iv(group[0], "clean_accuracy")
            for attack in dict.fromkeys(c.attack for c in group):
                values = {c.eps_label: _iv(c, "robust_accuracy") for c in group if c.attack == attack}
                bpda = any(c.bpda for c in group if c.attack == attack)
                rows.append(
                    {
                        "target": target,
                        "threat": threat,
                        "attack": attack,
                        "clean": clean,
                        "values": values,
                        "worst": False,
                        "bpda": bpda,
                    }
                )
            worst = {
                label: worst_by[key].interval("robust_accuracy")
                for label in labels
                if (key := (target, threat, norm, label)) in worst_by
            }
            rows.append(
                {
                    "target": target,
                    "threat": threat,
                    "attack": "worst case",
                    "clean": clean,
                    "values": worst,
                    "worst": True,
                    "bpda": False,
                }
            )
        out[norm] = {"labels": labels, "rows": rows}
    return out


def _iv(cell: Cell, metric: str) -> Interval:
    """A cell's interval for ``metric`` (the bare value when the cell has no intervals)."""
    iv = cell.interval(metric)
    return iv if iv is not None else Interval(value=cell.metrics.get(metric))


def _verdict_table(results: AuditDocument) -> dict[str, Any]:
    """Headline rows per target: clean accuracy and worst-case robust accuracy per budget (with CIs)."""
    heads = results.verdict.headline if results.verdict is not None else []
    columns = list(dict.fromkeys((h.norm, h.eps_label) for h in heads))
    rows = []
    for t in results.targets:
        cells = {(h.norm, h.eps_label): h.robust_accuracy for h in heads if h.target == t.name}
        threats = sorted({th for h in heads if h.target == t.name for th in h.threats})
        rows.append(
            {
                "target": t.name,
                "defense": (t.denoiser or {}).get("name") if t.denoiser else None,
                "threats": threats,
                "clean": (t.clean.intervals or {}).get("accuracy") or Interval(value=t.clean.accuracy),
                "values": cells,
            }
        )
    return {"columns": columns, "rows": rows}


def certified_table(results: AuditDocument) -> list[dict[str, Any]]:
    """Rows of the report's certified table: target, radius, σ, certified and smoothed clean accuracy.

    ``per_pixel`` says what the radius means per pixel: an L2 radius ``r`` spread evenly over the
    ``D = C·H·W`` values of the image is ``r / sqrt(D)`` per value, given in 8-bit grey levels of
    the card's range (a radius of 0.5 on 224×224×3 in [0, 1] is ~0.33/255 per pixel). ``note``
    says when a number is no evidence of robustness: a radius beyond the largest that CERTIFY
    can give with these draws (``σ·Φ⁻¹(α^(1/n))``, all ``n`` draws on one class), or a smoothed
    classifier that predicts one class for every sample (its certified accuracy is that class's
    share).
    """
    import math

    low, high = (results.bounds or [0.0, 1.0])[:2]
    size = list(results.data.spatial_size or [])
    channels = int((results.model.card or {}).get("in_channels") or 1)
    dims = channels * math.prod(int(v) for v in size) if size else 0
    rows = []
    for c in results.certified or []:
        per_pixel = None
        if dims and c.eps is not None and high > low:
            per_pixel = (
                f"{float(c.eps) / math.sqrt(dims) / (high - low) * 255:.2g}/255 per pixel "
                f"if spread evenly over {dims} values"
            )
        rows.append(
            {
                "target": c.target,
                "radius": c.eps_label,
                "sigma": c.sigma,
                "certified": c.interval("robust_accuracy"),
                "clean": c.interval("clean_accuracy"),
                "abstained": c.n_abstained,
                "n": c.metrics.n,
                "draws": f"n0={c.n0}, n={c.n_draws}, alpha={c.alpha}",
                "per_pixel": per_pixel,
                "note": _certified_note(c, list(results.data.class_names or [])),
            }
        )
    return rows


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY gives with ``n`` draws at level ``alpha``: ``σ·Φ⁻¹(α^(1/n))``.

    All ``n`` draws on one class give the one-sided Clopper–Pearson bound ``α^(1/n)``; 0.0 when
    even that bound is at most 1/2 (every sample abstains).
    """
    from statistics import NormalDist

    p_lower = alpha ** (1.0 / n)
    return 0.0 if p_lower <= 0.5 else sigma * NormalDist().inv_cdf(p_lower)


def _certified_note(cell: Any, class_names: list[str]) -> str:
    """Why a certified cell's number is no evidence of robustness ("" when there is no such reason)."""
    notes = []
    if cell.sigma and cell.n_draws and cell.alpha and cell.eps is not None:
        top = max_certifiable_radius(float(cell.sigma), int(cell.n_draws), float(cell.alpha))
        if float(cell.eps) > top:
            notes.append(f"beyond the largest radius {cell.n_draws} draws can certify ({top:.3g})")
    only = cell.only_class
    if only is not None:
        name = class_names[only] if 0 <= only < len(class_names) else str(only)
        where = "for every sample" if not cell.n_abstained else "whenever it does not abstain"
        notes.append(f"predicts {name} {where}: the accuracy is at most that class's share")
    return "; ".join(notes)


def _settings_rows(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested settings into ``(name, value)`` rows for a readable table."""
    if isinstance(value, Mapping):
        out: list[tuple[str, str]] = []
        for k, v in value.items():
            out += _settings_rows(v, f"{prefix}{k}." if isinstance(v, Mapping) and v else f"{prefix}{k}")
        return out
    if isinstance(value, list):
        return [(prefix.rstrip("."), ", ".join(str(v) for v in value) if value else "—")]
    return [(prefix.rstrip("."), "—" if value is None else str(value))]


def _context(results: AuditDocument | Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    from medrobust.evaluation.audited import describe_audited
    from medrobust.evaluation.flags import FLAG_CHECKS
    from medrobust.reporting.regulatory import evidence_map

    results = ensure_evidence(results)
    env_file = run_dir / "environment.json"
    environment = json.loads(env_file.read_text(encoding="utf-8")) if env_file.exists() else {}
    attack_params: dict[str, Any] = {}
    for c in results.cells:
        attack_params.setdefault(
            c.attack,
            {
                "name": c.attack_name,
                "norm": c.norm,
                "minimal": c.minimal,
                "params": c.params,
                "param_rows": _settings_rows(c.params or {}),
                "info_rows": _settings_rows(c.info or {}),
                "info": c.info,
            },
        )
    reference = []
    for fid in dict.fromkeys(f.id for f in results.flags):
        check = FLAG_CHECKS.get(fid) if fid in FLAG_CHECKS.names() else None
        reference.append(
            {
                "id": fid,
                "title": getattr(check, "title", fid) or fid,
                "advice": getattr(check, "advice", ""),
                "doc": f"docs/flags.md#{fid}",
            }
        )
    stats = results.statistics
    descriptive = set(stats.descriptive if stats is not None else [])
    return {
        "r": results,
        "summary": interval_summary(results),
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
        "descriptive": descriptive,
        "attack_params": attack_params,
        "config_yaml": yaml.safe_dump(results.config, sort_keys=False),
        "environment": environment,
        "environment_rows": _settings_rows(environment),
        "flags_warning": [f for f in results.flags if f.severity == "warning"],
        "verdict": results.verdict,
        "verdict_table": _verdict_table(results),
        "certified_rows": certified_table(results),
        "audited_line": describe_audited(results.data.to_dict()),
        "model_import": results.model.import_info,
        "stats": stats,
        "flag_reference": reference,
        "regulatory": evidence_map(results),
    }


def render_markdown(
    results: AuditDocument | Mapping[str, Any], run_dir: str | Path, plots: list[dict[str, Any]]
) -> str:
    """``report.md``: summary tables, flags, gates; plots linked from ``plots/``."""
    ctx = _context(results, Path(run_dir))
    return _env(False).get_template("report.md.j2").render(plots=plots, **ctx)


def render_html(
    results: AuditDocument | Mapping[str, Any], run_dir: str | Path, plots: list[dict[str, Any]]
) -> str:
    """``report.html``: self-contained (PNG plots embedded as base64, no external URLs, no scripts)."""
    ctx = _context(results, Path(run_dir))
    return _env(True).get_template("report.html.j2").render(plots=plots, **ctx)


def write_reports(results: AuditDocument | Mapping[str, Any], run_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.csv, plots/*.png, report.md and report.html (atomically).

    Returns:
        The written paths by kind.
    """
    from medrobust.reporting.plots import figure_png, report_figures

    run_dir = Path(run_dir)
    results = as_document(results)
    paths = {
        "json": atomic_write_json(run_dir / "results.json", results.to_dict()),
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
                "caption": item.get("caption", ""),
                "rows": item.get("rows", []),
                "section": item["section"],
                "path": rel,
                "b64": base64.b64encode(png).decode("ascii"),
            }
        )
    paths["md"] = atomic_write_text(run_dir / "report.md", render_markdown(results, run_dir, plots))
    paths["html"] = atomic_write_text(run_dir / "report.html", render_html(results, run_dir, plots))
    return paths
