"""Reports of the denoiser study: figures (PNG), then the HTML/Markdown templates of medrobust.reporting.

Everything here reads ``results.json``-shaped dicts; the galleries additionally run the
denoisers once on a few stored inputs. Matplotlib is used through ``Figure`` objects
only (no pyplot global state).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.utils.io import atomic_write_bytes, atomic_write_text


def _fig_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def heatmap_png(matrix: list[list[float | None]], names: list[str], title: str, vmax: float = 1.0) -> bytes:
    """An annotated heatmap (rows: source A, columns: target B) as PNG bytes."""
    from matplotlib.figure import Figure

    m = np.array(matrix, dtype=float)
    n = len(names)
    size = max(4.0, 0.55 * n + 2.0)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(m), vmin=0.0, vmax=vmax, cmap="viridis")
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("target B (evaluated)")
    ax.set_ylabel("source A (attacked)")
    ax.set_title(title, fontsize=10)
    for i in range(n):
        for j in range(n):
            v = m[i, j]
            txt = "–" if not np.isfinite(v) else f"{v:.2f}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=6, color="w" if v < 0.6 * vmax else "k")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _fig_png(fig)


def whitebox_png(wb: dict[str, dict], title: str) -> bytes:
    """Grouped bars: PSNR of D(y), D(y + random), D(y + δ) per member."""
    from matplotlib.figure import Figure

    names = list(wb)
    clean = np.array([wb[n]["psnr_clean"]["mean"] for n in names])
    rand = clean - np.array([wb[n]["random_psnr_drop"]["mean"] for n in names])
    adv = np.array([wb[n]["psnr_adv"]["mean"] for n in names])
    fig = Figure(figsize=(max(5.0, 0.7 * len(names) + 2), 3.6))
    ax = fig.add_subplot(1, 1, 1)
    pos = np.arange(len(names))
    ax.bar(pos - 0.27, clean, 0.27, label="D(y)")
    ax.bar(pos, rand, 0.27, label="D(y + random δ)")
    ax.bar(pos + 0.27, adv, 0.27, label="D(y + adversarial δ)")
    ax.set_xticks(pos, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("PSNR (dB)")
    lo = float(np.nanmin(adv)) if len(adv) else 0.0
    ax.set_ylim(max(0.0, lo - 3), float(np.nanmax(clean)) + 2 if len(clean) else 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    return _fig_png(fig)


def gallery_png(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    adv: torch.Tensor,
    d_clean: torch.Tensor,
    d_adv: torch.Tensor,
    bounds: tuple[float, float],
) -> bytes:
    """Rows: images; columns: x, y, y + δ, δ (amplified), D(y), D(y + δ)."""
    from matplotlib.figure import Figure

    rows = x.shape[0]
    fig = Figure(figsize=(9.0, 1.6 * rows + 0.4))
    titles = ["x (clean)", "y (noisy)", "y + δ", "δ (scaled)", "D(y)", "D(y + δ)"]
    low, high = bounds

    def show(ax: Any, t: torch.Tensor, vmin: float, vmax: float, cmap: str = "gray") -> None:
        img = t.detach().cpu().float().numpy()
        img = img[0] if img.shape[0] == 1 else np.clip((np.moveaxis(img, 0, -1) - vmin) / (vmax - vmin), 0, 1)
        ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])

    for r in range(rows):
        delta = adv[r] - y[r]
        m = float(delta.abs().max()) or 1.0
        panels = [
            (x[r], low, high),
            (y[r], low, high),
            (adv[r], low, high),
            (delta, -m, m),
            (d_clean[r], low, high),
            (d_adv[r], low, high),
        ]
        for c, (t, vmin, vmax) in enumerate(panels):
            ax = fig.add_subplot(rows, 6, r * 6 + c + 1)
            show(ax, t[:1] if c == 3 else t, vmin, vmax, "RdBu" if c == 3 else "gray")
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
    fig.suptitle(name, fontsize=10)
    return _fig_png(fig)


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """All report tables as ``(title, header, rows)``."""
    out = []
    models = results["models"]
    out.append(
        (
            "Denoisers",
            ["member", "arch", "kind", "noise model", "gradient", "val PSNR (train)"],
            [
                [
                    n,
                    m["arch"],
                    m["kind"],
                    m["noise_model"],
                    "exact" if m["differentiable"] else "BPDA",
                    (m.get("training") or {}).get("val_psnr_denoised"),
                ]
                for n, m in models.items()
            ],
        )
    )
    for norm, wb in results["whitebox"].items():
        out.append(
            (
                f"White-box denoising attack ({norm})",
                [
                    "member",
                    "attack",
                    "method",
                    "PSNR D(y)",
                    "PSNR D(y+δ)",
                    "drop (dB)",
                    "random drop",
                    "SSIM D(y)",
                    "SSIM D(y+δ)",
                    "‖δ‖∞ (range)",
                    "‖δ‖₂ (range)",
                    "normaltest reject",
                    "KS reject",
                    "KS reject (clean noise)",
                ],
                [
                    [
                        n,
                        r["attack"],
                        r["method"],
                        r["psnr_clean"]["mean"],
                        r["psnr_adv"]["mean"],
                        r["psnr_drop"]["mean"],
                        r["random_psnr_drop"]["mean"],
                        r["ssim_clean"]["mean"],
                        r["ssim_adv"]["mean"],
                        r["perturbation"]["linf_rel"]["max"],
                        r["perturbation"]["l2_rel"]["mean"],
                        r["normality"]["adversarial"]["normaltest_reject_rate"],
                        r["normality"]["adversarial"]["ks_reject_rate"],
                        r["normality"]["clean_noise"]["ks_reject_rate"],
                    ]
                    for n, r in wb.items()
                ],
            )
        )
    for norm, t in results["transfer"].items():
        names = t["members"]
        for key, title in (
            ("raw_psnr_drop", "raw PSNR drop (dB) of B on inputs crafted on A"),
            ("relative", "relative transfer T[A][B]"),
            ("similitude", "transfer similitude S(A,B)"),
            ("cosine", "perturbation cosine C(A,B)"),
        ):
            out.append(
                (
                    f"Transfer ({norm}): {title}",
                    ["A \\ B", *names],
                    [[a, *t[key][i]] for i, a in enumerate(names)],
                )
            )
        out.append(
            (
                f"Transfer ({norm}): worst case per target",
                ["target B", "own white-box drop", "worst drop over all sources", "worst source"],
                [
                    [b, t["raw_psnr_drop"][j][j], t["worst_case_psnr_drop"][j], t["worst_case_source"][j]]
                    for j, b in enumerate(names)
                ],
            )
        )
    for h in results["hybrids"]:
        norms = list(results["whitebox"])
        header = ["role", "member"] + [
            f"{k} {norm}" for norm in norms for k in ("PSNR D(y)", "PSNR adv", "drop")
        ]
        rows = []
        for role in ("hybrid", "classical", "deep"):
            r = h["rows"][role]
            rows.append(
                [role, r["member"]]
                + [
                    v
                    for norm in norms
                    for v in (r[norm]["psnr_clean"], r[norm]["psnr_adv"], r[norm]["psnr_drop"])
                ]
            )
        for norm, tr in h["transfer_from_deep"].items():
            rows.append(
                [f"transfer {norm}", f"{tr['source']} → {h['name']}", None, tr["psnr_adv"], tr["psnr_drop"]]
                + [None] * (len(header) - 5)
            )
        out.append((f"Hybrid {h['name']} ({h['mode']})", header, rows))
    return out


def write_reports(
    results: dict[str, Any],
    out: Path,
    members: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    advs: dict[str, dict[str, torch.Tensor]],
    gallery: int = 2,
    batch_size: int = 16,
) -> dict[str, Path]:
    """Write ``figures/*.png``, ``report.html`` (self-contained) and ``report.md`` into ``out``."""
    from medrobust.denoising.metrics import denoise

    out = Path(out)
    figs: dict[str, bytes] = {}
    for norm, wb in results["whitebox"].items():
        figs[f"whitebox_{norm}.png"] = whitebox_png(wb, f"PSNR under denoising attack ({norm})")
    for norm, t in results["transfer"].items():
        figs[f"transfer_{norm}.png"] = heatmap_png(
            t["relative"], t["members"], f"Relative transfer T[A][B] ({norm})", vmax=1.2
        )
        figs[f"similitude_{norm}.png"] = heatmap_png(
            t["similitude"], t["members"], f"Similitude S(A,B) ({norm})"
        )
    bounds = tuple(results["data"]["bounds"])
    if gallery > 0:
        k = min(gallery, x.shape[0])
        for name, m in members.items():
            adv = advs["linf"][name][:k].cpu()
            dev = next((p.device for p in m.denoiser.parameters()), torch.device("cpu"))
            d_clean = denoise(m.denoiser, y[:k].to(dev), batch_size).cpu()
            d_adv = denoise(m.denoiser, adv.to(dev), batch_size).cpu()
            figs[f"gallery_{name}.png"] = gallery_png(name, x[:k], y[:k], adv, d_clean, d_adv, bounds)  # type: ignore[arg-type]
    paths = {}
    for fname, data in figs.items():
        paths[fname] = atomic_write_bytes(out / "figures" / fname, data)
    from medrobust.reporting.templating import render

    data = results["data"]
    context = {
        "intro": (
            f"Data: {data['description']}; {data['n_test']} test images {data['image_shape']}, "
            f"bounds {data['bounds']}, σ = {data['sigma']:.4f} of the range (noisy PSNR "
            f"{data['noisy_psnr']['mean']:.2f} dB). Attack settings: {results['config']['attack']}."
        ),
        "tables": tables(results),
        "figures": figs,
        "findings": results["findings"],
    }
    atomic_write_text(out / "report.md", render("study.md.j2", **context))
    atomic_write_text(out / "report.html", render("study.html.j2", **context))
    return {"html": out / "report.html", "md": out / "report.md", **paths}
