"""The segmentation audit's report: ``report.html`` (self-contained), ``report.md`` (plots under ``plots/``).

The verdict box comes first (gates passed or failed, the worst mean Dice per target with its
95 % interval), then every cell (Dice per label, HD95, lesion detection, changed predictions)
and, per target, overlays of the worst cases of its most damaging cell: the image, the true
mask, the clean prediction, the adversarial prediction and the amplified perturbation.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.evaluation.segmentation.planning import safe_id

#: Colours of labels 1, 2, ... in the overlays (background is transparent).
LABEL_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _ci(entry: Any, digits: int = 2) -> str:
    from medrobust.evaluation.statistics import fmt_interval

    return fmt_interval(entry, digits)


def _worst_cells(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per target, the cell with the lowest mean foreground Dice under attack (None values last)."""
    out: dict[str, dict[str, Any]] = {}
    for cell in results["cells"]:
        value = (cell["metrics"].get("mean_dice") or {}).get("value")
        best = out.get(cell["target"])
        best_value = None if best is None else (best["metrics"].get("mean_dice") or {}).get("value")
        if best is None or (value is not None and (best_value is None or value < best_value)):
            out[cell["target"]] = cell
    return list(out.values())


def _label_rgba(labels: np.ndarray, k: int) -> np.ndarray:
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*labels.shape, 4))
    for value in range(1, k):
        rgba[labels == value] = (*to_rgba(LABEL_COLOURS[(value - 1) % len(LABEL_COLOURS)])[:3], 0.55)
    return rgba


def _grey(image: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """A 2-D (H, W) or RGB (H, W, 3) picture of a ``(C, H, W)`` or ``(C, D, H, W)`` image in [0, 1]."""
    low, high = bounds
    x = (image - low) / max(high - low, 1e-12)
    if x.ndim == 4:  # volume: the middle slice
        x = x[:, x.shape[1] // 2]
    return np.clip(x[0] if x.shape[0] == 1 else np.moveaxis(x[:3], 0, -1), 0, 1)


def _slice(labels: np.ndarray) -> np.ndarray:
    return labels[labels.shape[0] // 2] if labels.ndim == 3 else labels


def overlay_png(
    examples: Path, cell: dict[str, Any], names: list[str], bounds: tuple[float, float]
) -> bytes | None:
    """One PNG, a row per worst case: image, true mask, clean and adversarial prediction, perturbation."""
    if not examples.is_file():
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with np.load(examples, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    n = len(data["positions"])
    if n == 0:
        return None
    cols = ("image", "true mask", "clean prediction", "adversarial prediction", "perturbation (amplified)")
    fig = Figure(figsize=(2.2 * len(cols), 2.3 * n), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, len(cols), squeeze=False)
    k = len(names)
    for i in range(n):
        picture = _grey(data["image"][i], bounds)
        delta = data["adv"][i] - data["image"][i]
        delta = delta[:, delta.shape[1] // 2] if delta.ndim == 4 else delta
        scale = float(np.abs(delta).max()) or 1.0
        panels = [
            (picture, None),
            (picture, data["truth"][i]),
            (picture, data["clean_pred"][i]),
            (_grey(data["adv"][i], bounds), data["adv_pred"][i]),
            (np.clip(0.5 + 0.5 * delta.mean(0) / scale, 0, 1), None),
        ]
        for j, (img, labels) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            if labels is not None:
                ax.imshow(_label_rgba(_slice(labels), k))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
        dice = float(data["dice"][i])
        axes[i, 0].set_ylabel(
            f"#{int(data['indices'][i])}" + ("" if np.isnan(dice) else f" Dice {dice:.2f}"), fontsize=8
        )
    fig.suptitle(f"{cell['target']} · {cell['threat']} · {cell['attack']}@{cell['eps_label']}", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def report_context(results: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What the templates show (the overlays as PNG bytes, also written under ``plots/``)."""
    names = list(results["data"]["label_names"])
    bounds = (float(results["bounds"][0]), float(results["bounds"][1]))
    rows = []
    for cell in results["cells"]:
        m = cell["metrics"]
        hd = [iv for iv in m["hd95"].values() if iv.get("value") is not None]
        rows.append(
            {
                "target": cell["target"],
                "threat": cell["threat"],
                "attack": cell["attack"],
                "goal": cell["goal"],
                "eps_label": cell["eps_label"],
                "eps": cell["eps"],
                "clean_dice": _ci(cell["clean"]["mean_dice"]),
                "dice": _ci(m["mean_dice"]),
                "per_label": {n: _ci(m["dice"][n]) for n in names[1:]},
                "hd95": _ci(max(hd, key=lambda iv: iv["value"]), 1) if hd else "—",
                "detection": _ci(m["detection"]),
                "changed": _ci(m.get("changed")),
                "bpda": cell.get("uses_bpda", False),
            }
        )
    verdict_rows = []
    for t in results["targets"]:
        cells = [c for c in results["cells"] if c["target"] == t["name"]]
        worst = min(
            cells,
            key=lambda c: (
                c["metrics"]["mean_dice"].get("value") is None,
                c["metrics"]["mean_dice"].get("value") or 0,
            ),
        )
        verdict_rows.append(
            {
                "target": t["name"],
                "clean": _ci(t["clean"]["mean_dice"]),
                "worst": _ci(worst["metrics"]["mean_dice"]),
                "worst_cell": f"{worst['threat']} · {worst['attack']}@{worst['eps_label']}",
                "detection": _ci(worst["metrics"]["detection"]),
            }
        )
    overlays = []
    plots = run_dir / "plots"
    for cell in _worst_cells(results):
        if not cell.get("examples"):
            continue
        png = overlay_png(run_dir / cell["examples"], cell, names, bounds)
        if png is None:
            continue
        plots.mkdir(parents=True, exist_ok=True)
        name = f"overlay-{safe_id(cell['target'])}.png"
        (plots / name).write_bytes(png)
        overlays.append({"cell": cell, "png": png, "file": f"plots/{name}"})
    return {
        "r": results,
        "verdict": results["verdict"],
        "verdict_rows": verdict_rows,
        "rows": rows,
        "labels": names[1:],
        "overlays": overlays,
        "colours": {n: LABEL_COLOURS[i % len(LABEL_COLOURS)] for i, n in enumerate(names[1:])},
    }


def write_segmentation_reports(results: dict[str, Any], run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into ``run_dir``; returns their paths."""
    from medrobust.reporting.templating import render
    from medrobust.utils.io import atomic_write_text

    run_dir = Path(run_dir)
    context = report_context(results, run_dir)
    html = run_dir / "report.html"
    md = run_dir / "report.md"
    atomic_write_text(html, render("segmentation_report.html.j2", **context))
    atomic_write_text(md, render("segmentation_report.md.j2", **context))
    return html, md
