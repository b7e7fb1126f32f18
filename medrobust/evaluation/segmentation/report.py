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
    """A 2-D (H, W) or RGB (H, W, 3) picture of a ``(C, H, W)`` image in [0, 1]."""
    low, high = bounds
    x = np.clip((image - low) / max(high - low, 1e-12), 0, 1)
    return x[0] if x.shape[0] == 1 else np.moveaxis(x[:3], 0, -1)


def axial(volume: np.ndarray, index: int) -> np.ndarray:
    """Axial slice ``index`` of a volume ``(..., X, Y, Z)`` in RAS voxel order, shown radiologically.

    medrobust reads volumes in RAS order (NIfTI is reoriented on reading), so the last axis runs
    inferior → superior and an axial slice fixes it. The slice is drawn the radiological way:
    anterior at the top and the patient's right on the viewer's left.
    """
    plane = np.swapaxes(volume[..., index], -1, -2)  # (..., Y, X)
    return plane[..., ::-1, ::-1]


def lesion_slice(truth: np.ndarray, predictions: list[np.ndarray], lesion_values: list[int]) -> int:
    """The axial index (last axis) of a label volume to show: the one with the most lesion voxels.

    The true mask decides; when it holds no lesion, the predictions (clean, then adversarial) do,
    so a lesion the model invents is shown; without any, the volume's middle slice.
    """
    for labels in (truth, *predictions):
        counts = np.isin(labels, lesion_values).sum(axis=(0, 1)) if lesion_values else np.zeros(1)
        if counts.max() > 0:
            return int(np.argmax(counts))
    return int(truth.shape[-1] // 2)


def _panels(
    data: dict[str, np.ndarray], i: int, lesion_values: list[int], bounds: tuple[float, float]
) -> tuple[list[tuple[np.ndarray, np.ndarray | None]], str]:
    """The five pictures of example ``i`` (2D as is, 3D at its lesion slice) and a label for its row."""
    image, adv = data["image"][i], data["adv"][i]
    maps = [data["truth"][i], data["clean_pred"][i], data["adv_pred"][i]]
    where = ""
    if image.ndim == 4:  # (C, X, Y, Z) volume: one axial slice through the lesion
        z = lesion_slice(maps[0], maps[1:], lesion_values)
        image, adv = axial(image, z), axial(adv, z)
        maps = [axial(m, z) for m in maps]
        where = f"\naxial z={z}/{data['image'][i].shape[-1]}"
    delta = adv - image
    scale = float(np.abs(delta).max()) or 1.0
    picture = _grey(image, bounds)
    panels = [
        (picture, None),
        (picture, maps[0]),
        (picture, maps[1]),
        (_grey(adv, bounds), maps[2]),
        (np.clip(0.5 + 0.5 * delta.mean(0) / scale, 0, 1), None),
    ]
    return panels, where


def overlay_png(
    examples: Path,
    cell: dict[str, Any],
    names: list[str],
    bounds: tuple[float, float],
    lesions: list[str] | None = None,
) -> bytes | None:
    """One PNG, a row per worst case: image, true mask, clean and adversarial prediction, perturbation.

    Volumes are shown at one axial slice per row, the one with the most lesion voxels
    (:func:`lesion_slice`; every foreground label counts when ``lesions`` is empty), and the row
    says which.
    """
    if not examples.is_file():
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with np.load(examples, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    n = len(data["positions"])
    if n == 0:
        return None
    k = len(names)
    lesion_values = [names.index(n) for n in (lesions or []) if n in names] or list(range(1, k))
    cols = ("image", "true mask", "clean prediction", "adversarial prediction", "perturbation (amplified)")
    fig = Figure(figsize=(2.2 * len(cols), 2.3 * n), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, len(cols), squeeze=False)
    volumes = data["image"].ndim == 5
    for i in range(n):
        panels, where = _panels(data, i, lesion_values, bounds)
        for j, (img, labels) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            if labels is not None:
                ax.imshow(_label_rgba(labels, k))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
        dice = float(data["dice"][i])
        axes[i, 0].set_ylabel(
            f"#{int(data['indices'][i])}" + ("" if np.isnan(dice) else f" Dice {dice:.2f}") + where,
            fontsize=8,
        )
    title = f"{cell['target']} · {cell['threat']} · {cell['attack']}@{cell['eps_label']}"
    if volumes:
        title += " · axial slice with the most lesion voxels (R on the left)"
    fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def report_context(results: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What the templates show (the overlays as PNG bytes, also written under ``plots/``)."""
    names = list(results["data"]["label_names"])
    bounds = (float(results["bounds"][0]), float(results["bounds"][1]))
    lesions = list(results["data"].get("lesion_labels") or [])
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
        png = overlay_png(run_dir / cell["examples"], cell, names, bounds, lesions)
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
