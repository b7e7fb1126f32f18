"""Report plots as matplotlib ``Figure`` objects (no pyplot, no global backend changes).

The same helpers serve the HTML report (PNG, base64-embedded) and notebooks.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Amplification of perturbations in the gallery (around mid-grey).
AMPLIFY = 10.0


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """Render ``fig`` to PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _ra(cell: Mapping[str, Any]) -> float:
    v = cell["metrics"].get("robust_accuracy")
    return math.nan if v is None else float(v)


def _groups(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((c["target"], c["threat"]) for c in results["cells"]))


def robust_accuracy_figure(results: Mapping[str, Any], norm: str) -> Figure | None:
    """Robust accuracy vs ε (one panel per target × threat, one line per attack) for ``norm``."""
    cells = [c for c in results["cells"] if c["norm"] == norm and c["eps"] is not None]
    if not cells:
        return None
    groups = [g for g in _groups(results) if any((c["target"], c["threat"]) == g for c in cells)]
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    attacks = list(dict.fromkeys(c["attack"] for c in cells))
    for i, (target, threat) in enumerate(groups):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for attack in attacks:
            pts = sorted(
                (c["eps"], _ra(c), c["metrics"].get("clean_accuracy"))
                for c in cells
                if c["target"] == target and c["threat"] == threat and c["attack"] == attack
            )
            if not pts:
                continue
            xs = [0.0] + [p[0] for p in pts]
            ys = [pts[0][2] if pts[0][2] is not None else math.nan] + [p[1] for p in pts]
            ax.plot(xs, ys, marker="o", label=attack)
        ax.set_title(f"{target} · {threat}", fontsize=10)
        ax.set_xlabel(f"ε ({norm})")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Robust accuracy vs ε ({norm}); ε = 0 is clean accuracy", fontsize=11)
    return fig


def strongest_cell(
    results: Mapping[str, Any], target: str, threat: str | None = None
) -> Mapping[str, Any] | None:
    """The bounded cell of ``target`` with the lowest robust accuracy (ties: larger ε, then order)."""
    cands = [
        c
        for c in results["cells"]
        if c["target"] == target and c["eps"] is not None and (threat is None or c["threat"] == threat)
    ]
    if not cands:
        return None
    return min(enumerate(cands), key=lambda ic: (_ra(ic[1]), -ic[1]["eps"], ic[0]))[1]


def confusion_matrix(labels: list[int], preds: list[int], k: int) -> np.ndarray:
    """``k × k`` counts, rows = true class, columns = prediction."""
    cm = np.zeros((k, k), dtype=np.int64)
    for y, p in zip(labels, preds, strict=True):
        cm[int(y), int(p)] += 1
    return cm


def confusion_figure(results: Mapping[str, Any], target: str) -> Figure:
    """Confusion matrices of ``target``: clean and under its strongest attack."""
    names = results["data"]["class_names"]
    labels = results["data"]["labels"]
    tinfo = next(t for t in results["targets"] if t["name"] == target)
    panels = [("clean", confusion_matrix(labels, tinfo["clean"]["pred"], len(names)))]
    cell = strongest_cell(results, target)
    if cell is not None:
        panels.append(
            (
                f"{cell['attack']}@{cell['eps_label']} ({cell['threat']})",
                confusion_matrix(labels, cell["samples"]["adv_pred"], len(names)),
            )
        )
    fig = Figure(figsize=(3.6 * len(panels), 3.4), layout="constrained")
    for i, (title, cm) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, int(cm.max())))
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", color="black" if v < cm.max() * 0.6 else "white")
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"Confusion matrices · {target}", fontsize=10)
    return fig


def _to_display(img: np.ndarray, bounds: tuple[float, float]) -> tuple[np.ndarray, dict[str, Any]]:
    if img.ndim == 4:  # (C, D, H, W): middle slice
        img = img[:, img.shape[1] // 2]
    low, high = bounds
    if img.shape[0] == 1:
        return img[0], {"cmap": "gray", "vmin": low, "vmax": high}
    rgb = np.clip((np.moveaxis(img[:3], 0, -1) - low) / (high - low), 0.0, 1.0)
    return rgb, {}


def gallery_figure(
    results: Mapping[str, Any], run_dir: str | Path, cell: Mapping[str, Any], n: int = 4
) -> Figure | None:
    """Clean / adversarial / perturbation (×10 around mid-grey) / denoised images of a cell."""
    if not cell.get("examples"):
        return None
    path = Path(run_dir) / cell["examples"]
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    low, high = results["bounds"]
    mid = 0.5 * (low + high)
    k = min(n, len(arrays["positions"]))
    if k == 0:
        return None
    pert = np.clip(mid + AMPLIFY * (arrays["adv"] - arrays["clean"]), low, high)
    cols = [("clean", arrays["clean"]), ("adversarial", arrays["adv"]), (f"perturbation ×{AMPLIFY:g}", pert)]
    if "denoised_adv" in arrays:
        cols.append(("denoised adversarial", arrays["denoised_adv"]))
    samples = cell["samples"]
    names = results["data"]["class_names"]
    fig = Figure(figsize=(2.1 * len(cols), 2.2 * k), layout="constrained")
    for r in range(k):
        pos = int(arrays["positions"][r])
        for c, (title, arr) in enumerate(cols):
            ax = fig.add_subplot(k, len(cols), r * len(cols) + c + 1)
            img, kw = _to_display(arr[r], (low, high))
            ax.imshow(img, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"#{pos} {names[samples['label'][pos]]}", fontsize=8)
            if c == 1:
                ax.set_xlabel(f"pred: {names[samples['adv_raw_pred'][pos]]}", fontsize=8)
    fig.suptitle(f"{cell['target']} · {cell['threat']} · {cell['attack']}@{cell['eps_label']}", fontsize=10)
    return fig


def report_figures(results: Mapping[str, Any], run_dir: str | Path) -> list[dict[str, Any]]:
    """All report figures: ``[{"id", "title", "section", "figure"}]`` in display order."""
    figs: list[dict[str, Any]] = []
    for norm in ("linf", "l2"):
        fig = robust_accuracy_figure(results, norm)
        if fig is not None:
            figs.append(
                {
                    "id": f"robust_accuracy_{norm}",
                    "title": f"Robust accuracy vs ε ({norm})",
                    "section": "curves",
                    "figure": fig,
                }
            )
    for target, threat in _groups(results):
        cell = strongest_cell(results, target, threat)
        fig = None if cell is None else gallery_figure(results, run_dir, cell)
        if fig is not None:
            figs.append(
                {
                    "id": f"gallery_{target}_{threat}",
                    "title": f"Gallery · {target} · {threat}",
                    "section": "gallery",
                    "figure": fig,
                }
            )
    for t in results["targets"]:
        figs.append(
            {
                "id": f"confusion_{t['name']}",
                "title": f"Confusion matrices · {t['name']}",
                "section": "confusion",
                "figure": confusion_figure(results, t["name"]),
            }
        )
    return figs
