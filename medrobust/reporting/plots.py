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

from medrobust.evaluation.results import AuditDocument, Cell, as_document

#: Amplification of perturbations in the gallery (around mid-grey).
AMPLIFY = 10.0


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """Render ``fig`` to PNG bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


Results = AuditDocument | Mapping[str, Any]


def _ra(cell: Cell) -> float:
    return cell.robust_accuracy


def _groups(results: AuditDocument) -> list[tuple[str, str]]:
    return list(dict.fromkeys((c.target, c.threat) for c in results.cells))


def _ci(cell: Any, metric: str = "robust_accuracy") -> tuple[float, float]:
    iv = cell.interval(metric)
    return (math.nan, math.nan) if iv is None or not iv.ci else (float(iv.low), float(iv.high))


def _eps_axis(
    ax: Any, norm: str, labels: Mapping[float, str], bounds: Any = (0.0, 1.0), unit: str = ""
) -> None:
    """ε ticks at the audited budgets (image units), labelled as the config writes them ("2/255")."""
    ticks = sorted({0.0, *labels})
    ax.set_xticks(ticks, ["0" if e == 0 else labels[e] for e in ticks], fontsize=8)
    low, high = float(bounds[0]), float(bounds[1])
    if (low, high) == (0.0, 1.0) and not unit:
        ax.set_xlabel("ε (L∞, in k/255 of the intensity range)" if norm == "linf" else "ε (L2)")
        return
    span = f"[{low:g}, {high:g}]" + (f" {unit}" if unit else "")
    name = "L∞" if norm == "linf" else "L2"
    ax.set_xlabel(f"ε ({name}, {unit or 'image units'}; k/255 of the range {span})")


def _worst_curve(
    results: AuditDocument, target: str, threat: str, norm: str
) -> list[tuple[float, float, float, float]]:
    pts = []
    for w in results.worst_cases or []:
        if w.target == target and w.threat == threat and w.norm == norm and w.eps is not None:
            if isinstance(w.eps, str) or math.isinf(float(w.eps)):
                continue
            lo, hi = _ci(w)
            ra = w.metrics.robust_accuracy
            pts.append((float(w.eps), math.nan if ra is None else float(ra), lo, hi))
    return sorted(pts)


def robust_accuracy_figure(results: Results, norm: str, references: bool = False) -> Figure | None:
    """Robust accuracy vs ε for ``norm``: one panel per target × threat, one line per attack.

    Shaded bands are 95 % intervals; ε = 0 is the clean accuracy. With ``references`` (the
    report), each panel also shows the per-sample worst case over all attacks (black), chance
    (1/K, dotted) and, on defended panels, the bare model's worst case (grey dashed).
    """
    from medrobust.evaluation.budgets import intensity_unit
    from medrobust.evaluation.verdict import ensure_evidence

    results = ensure_evidence(results)
    cells = [c for c in results.cells if c.norm == norm and c.eps is not None]
    if not cells:
        return None
    groups = [g for g in _groups(results) if any((c.target, c.threat) == g for c in cells)]
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(4.4 * ncols, 3.4 * nrows), layout="constrained")
    attacks = list(dict.fromkeys(c.attack for c in cells))
    colors = {a: f"C{i % 10}" for i, a in enumerate(attacks)}
    eps_labels = {float(c.eps): c.eps_label for c in cells}
    bounds = results.bounds or (0.0, 1.0)
    unit = intensity_unit(bounds, results.model.modality)
    chance = 1.0 / max(len(results.data.class_names), 1)
    bare_name = results.bare.name if results.bare is not None else "bare"
    for i, (target, threat) in enumerate(groups):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        clean_iv = None
        for attack in attacks:
            group = sorted(
                (c for c in cells if c.target == target and c.threat == threat and c.attack == attack),
                key=lambda c: c.eps,
            )
            if not group:
                continue
            clean = group[0].metrics.clean_accuracy
            clean_iv = _ci(group[0], "clean_accuracy")
            xs = [0.0] + [float(c.eps) for c in group]
            ys = [math.nan if clean is None else clean] + [_ra(c) for c in group]
            lows = [clean_iv[0]] + [_ci(c)[0] for c in group]
            highs = [clean_iv[1]] + [_ci(c)[1] for c in group]
            ax.plot(xs, ys, marker="o", markersize=3, color=colors[attack], label=attack)
            ax.fill_between(xs, lows, highs, color=colors[attack], alpha=0.12, linewidth=0)
        worst = _worst_curve(results, target, threat, norm) if references else []
        if worst and clean_iv is not None:
            first = next(c for c in cells if c.target == target and c.threat == threat)
            clean = first.metrics.clean_accuracy
            xs = [0.0] + [p[0] for p in worst]
            ax.plot(
                xs,
                [math.nan if clean is None else clean] + [p[1] for p in worst],
                color="black",
                linewidth=2,
                label="worst case (per sample)",
            )
            ax.fill_between(
                xs,
                [clean_iv[0]] + [p[2] for p in worst],
                [clean_iv[1]] + [p[3] for p in worst],
                color="black",
                alpha=0.10,
                linewidth=0,
            )
        if references and target != bare_name:
            ref = _worst_curve(results, bare_name, "whitebox", norm)
            bare = results.target(bare_name)
            bare_clean = None if bare is None else bare.clean.accuracy
            if ref and bare_clean is not None:
                ax.plot(
                    [0.0] + [p[0] for p in ref],
                    [bare_clean] + [p[1] for p in ref],
                    color="grey",
                    linestyle="--",
                    linewidth=1.2,
                    label="bare model, worst case",
                )
        if references:
            ax.axhline(
                chance, color="grey", linestyle=":", linewidth=1, label=f"chance (1/{round(1 / chance)})"
            )
        ax.set_title(f"{target} · {threat}", fontsize=10)
        _eps_axis(ax, norm, eps_labels, bounds, unit)
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5)
    return fig


def strongest_cell(results: Results, target: str, threat: str | None = None) -> Cell | None:
    """The bounded cell of ``target`` with the lowest robust accuracy (ties: larger ε, then order)."""
    cands = [
        c
        for c in as_document(results).cells
        if c.target == target and c.eps is not None and (threat is None or c.threat == threat)
    ]
    if not cands:
        return None
    return min(enumerate(cands), key=lambda ic: (_ra(ic[1]), -ic[1].eps, ic[0]))[1]


def confusion_matrix(labels: list[int], preds: list[int], k: int) -> np.ndarray:
    """``k × k`` counts, rows = true class, columns = prediction."""
    cm = np.zeros((k, k), dtype=np.int64)
    for y, p in zip(labels, preds, strict=True):
        cm[int(y), int(p)] += 1
    return cm


def confusion_figure(results: Results, target: str) -> Figure:
    """Confusion matrices of ``target``: clean and under its strongest attack."""
    results = as_document(results)
    names = results.data.class_names
    labels = results.data.labels
    tinfo = results.target(target)
    assert tinfo is not None, target
    panels = [("clean", confusion_matrix(labels, tinfo.clean.pred or [], len(names)))]
    cell = strongest_cell(results, target)
    if cell is not None:
        panels.append(
            (
                f"{cell.attack}@{cell.eps_label} ({cell.threat})",
                confusion_matrix(labels, cell.samples.adv_pred or [], len(names)),
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


def flipped_positions(results: Results, cell: Cell, candidates: list[int], n: int) -> list[int]:
    """Up to ``n`` of ``candidates`` the cell's attack flipped (clean right, adversarial wrong).

    Balanced by class: classes take turns (in class order), each contributing its flipped samples in
    position order.
    """
    success = cell.samples.success or []
    labels = cell.samples.label or []
    by_class: dict[int, list[int]] = {}
    for pos in candidates:
        if pos < len(success) and success[pos]:
            by_class.setdefault(int(labels[pos]), []).append(pos)
    out: list[int] = []
    queues = [by_class[c] for c in sorted(by_class)]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def _clean_probs(results: AuditDocument, cell: Cell) -> list[list[float]] | None:
    target = results.target(cell.target or "")
    return None if target is None else target.clean.probs


def gallery_rows(results: Results, cell: Cell, saved: list[int], n: int = 4) -> list[dict]:
    """Gallery rows: flipped saved examples, true class, clean and adversarial prediction with confidence."""
    results = as_document(results)
    names = results.data.class_names
    samples = cell.samples
    clean_probs = _clean_probs(results, cell)
    adv_probs = samples.adv_probs
    rows = []
    for pos in flipped_positions(results, cell, saved, n):
        cp, ap = int(samples.clean_pred[pos]), int(samples.adv_pred[pos])
        rows.append(
            {
                "position": pos,
                "label": names[int(samples.label[pos])],
                "clean": names[cp],
                "clean_confidence": float(clean_probs[pos][cp]) if clean_probs else None,
                "adversarial": names[ap],
                "adversarial_confidence": float(adv_probs[pos][ap]) if adv_probs else None,
            }
        )
    return rows


def _prediction_text(names: list[str], pred: int, probs: Any) -> str:
    conf = ""
    if probs is not None and len(probs) > pred:
        conf = f" ({float(probs[pred]):.2f})"
    return f"{names[pred]}{conf}"


def gallery_figure(
    results: Results,
    run_dir: str | Path,
    cell: Cell,
    n: int = 4,
    flipped_only: bool = False,
) -> Figure | None:
    """Clean / adversarial / perturbation (×10 around mid-grey) / denoised images of a cell.

    Each row shows the true class, the clean prediction and the adversarial prediction with
    their confidence (softmax probability). Rows are the first ``n`` saved examples, or with
    ``flipped_only`` (the report) saved examples the attack flipped, balanced by class; the
    figure is ``None`` when there is nothing to show.
    """
    results = as_document(results)
    if not cell.examples:
        return None
    path = Path(run_dir) / cell.examples
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    low, high = results.bounds
    mid = 0.5 * (low + high)
    saved = [int(p) for p in arrays["positions"]]
    rows = flipped_positions(results, cell, saved, n) if flipped_only else saved[:n]
    if not rows:
        return None
    row_of = {p: i for i, p in enumerate(saved)}
    pert = np.clip(mid + AMPLIFY * (arrays["adv"] - arrays["clean"]), low, high)
    cols = [("clean", arrays["clean"]), ("adversarial", arrays["adv"]), (f"perturbation ×{AMPLIFY:g}", pert)]
    if "denoised_adv" in arrays:
        cols.append(("denoised adversarial", arrays["denoised_adv"]))
    samples = cell.samples
    names = results.data.class_names
    clean_probs = _clean_probs(results, cell)
    adv_probs = samples.adv_probs
    k = len(rows)
    fig = Figure(figsize=(2.2 * len(cols), 2.45 * k), layout="constrained")
    for r, pos in enumerate(rows):
        i = row_of[pos]
        for c, (title, arr) in enumerate(cols):
            ax = fig.add_subplot(k, len(cols), r * len(cols) + c + 1)
            img, kw = _to_display(arr[i], (low, high))
            ax.imshow(img, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"#{pos} true: {names[samples.label[pos]]}", fontsize=8)
                cp = int(samples.clean_pred[pos])
                ax.set_xlabel(
                    f"clean: {_prediction_text(names, cp, clean_probs[pos] if clean_probs else None)}",
                    fontsize=8,
                )
            if c == 1:
                ap = int(samples.adv_pred[pos])
                ax.set_xlabel(
                    f"adv: {_prediction_text(names, ap, adv_probs[pos] if adv_probs else None)}",
                    fontsize=8,
                    color="#8a1f11" if ap != int(samples.label[pos]) else "black",
                )
    fig.suptitle(f"{cell.target} · {cell.threat} · {cell.attack}@{cell.eps_label}", fontsize=10)
    return fig


def report_figures(results: Results, run_dir: str | Path) -> list[dict[str, Any]]:
    """All report figures: ``[{"id", "title", "section", "figure"}]`` in display order."""
    results = as_document(results)
    figs: list[dict[str, Any]] = []
    for norm in ("linf", "l2"):
        fig = robust_accuracy_figure(results, norm, references=True)
        if fig is not None:
            figs.append(
                {
                    "id": f"robust_accuracy_{norm}",
                    "title": f"Robust accuracy vs ε ({norm})",
                    "caption": "one panel per target and threat model; bands are 95% intervals, the black "
                    "line the per-sample worst case over all attacks, the dotted line chance, the grey "
                    "dashed line (defended panels) the bare model's worst case; ε = 0 is clean accuracy",
                    "section": "curves",
                    "figure": fig,
                }
            )
    for target, threat in _groups(results):
        cell = strongest_cell(results, target, threat)
        fig = None if cell is None else gallery_figure(results, run_dir, cell, flipped_only=True)
        if fig is not None:
            with np.load(Path(run_dir) / cell.examples, allow_pickle=False) as z:
                saved = [int(p) for p in z["positions"]]
            figs.append(
                {
                    "rows": gallery_rows(results, cell, saved),
                    "id": f"gallery_{target}_{threat}",
                    "title": f"Gallery · {target} · {threat} · {cell.attack}@{cell.eps_label}",
                    "caption": "images the attack flipped (clean prediction right, adversarial wrong), "
                    "balanced by class, with the prediction's confidence; perturbation amplified "
                    f"×{AMPLIFY:g} around mid-grey",
                    "section": "gallery",
                    "figure": fig,
                }
            )
    for t in results.targets:
        figs.append(
            {
                "id": f"confusion_{t.name}",
                "title": f"Confusion matrices · {t.name}",
                "caption": "rows true class, columns prediction; clean, and under the attack that hurt "
                "this target most",
                "section": "confusion",
                "figure": confusion_figure(results, t.name),
            }
        )
    return figs
