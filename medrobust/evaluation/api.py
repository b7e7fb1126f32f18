"""Python API for notebooks: ``medrobust.audit(...)``, ``medrobust.load_results(run_dir)``, ``compare_runs``.

>>> import medrobust
>>> res = medrobust.audit("pipelines/demo.yaml", out="runs/nb", n_samples=16)   # doctest: +SKIP
>>> res.cells[["target", "threat", "attack", "eps_label", "robust_accuracy"]]  # doctest: +SKIP
>>> res.flipped(attack="pgd")                                                  # doctest: +SKIP
>>> res.plot_robust_accuracy("linf")                                           # doctest: +SKIP
>>> from medrobust.evaluation.api import compare_runs
>>> cmp = compare_runs("runs/v1", "runs/v2")                                   # doctest: +SKIP
>>> cmp[["key", "robust_accuracy_a", "robust_accuracy_b", "delta"]]             # doctest: +SKIP

Plots are matplotlib ``Figure`` objects built without pyplot (a notebook shows them with
``display(fig)`` or as a cell's last value).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medrobust.errors import ConfigError
from medrobust.evaluation.results import SCHEMA, AuditDocument, Cell
from medrobust.validation import check_choice, check_int

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from medrobust.evaluation.config import AuditConfig

#: Columns that identify a cell across runs (``eps`` None = unbounded cell of a minimal attack).
CELL_ID = ("target", "threat", "attack", "eps")
#: Columns of :func:`compare_samples`.
SAMPLE_COMPARE_COLUMNS = (
    "key",
    "target",
    "threat",
    "attack",
    "eps",
    "eps_label",
    "index",
    "label",
    "adv_pred_a",
    "adv_pred_b",
    "correct_a",
    "correct_b",
    "change",
)


def _eps_key(eps: float | None) -> float:
    """Join key of a budget: rounded so equal budgets parsed twice match; None (unbounded) → inf."""
    return math.inf if eps is None else round(float(eps), 12)


@dataclass
class AuditResults:
    """An audit's results with pandas views and plotting helpers.

    Attributes:
        raw: The results.json dict (schema ``medrobust.audit/1``), as written.
        run_dir: The run folder (None when built from a dict).
    """

    raw: dict[str, Any]
    run_dir: Path | None = None

    @cached_property
    def document(self) -> AuditDocument:
        """The results, typed (:class:`~medrobust.evaluation.results.AuditDocument`), read by attribute.

        ``res.document.data.labels``, ``res.document.targets[0].clean.accuracy``,
        ``res.document.cells[0].metrics.robust_accuracy``; read once from :attr:`raw`.
        """
        return AuditDocument.from_dict(self.raw)

    @property
    def cells(self) -> pd.DataFrame:
        """One row per cell: target, threat, attack, ε, metrics, seconds."""
        import pandas as pd

        from medrobust.reporting.tables import cell_rows

        return pd.DataFrame(cell_rows(self.document))

    @property
    def intervals(self) -> pd.DataFrame:
        """One row per (cell, metric) with a 95 % interval.

        Columns: ``key``, ``metric``, ``value``, ``ci_low``, ``ci_high``, ``method``, ``n``,
        ``descriptive`` (metrics the attacks do not aim at, kept out of gates).
        """
        import pandas as pd

        from medrobust.evaluation.verdict import ensure_evidence

        doc = ensure_evidence(self.document)
        rows = [
            {
                "key": c.key,
                "metric": metric,
                "value": iv.value,
                "ci_low": iv.low,
                "ci_high": iv.high,
                "method": iv.method,
                "n": iv.n,
                "descriptive": bool(iv.descriptive),
            }
            for c in doc.cells
            for metric, iv in (c.intervals or {}).items()
        ]
        columns = ["key", "metric", "value", "ci_low", "ci_high", "method", "n", "descriptive"]
        return pd.DataFrame(rows, columns=columns)

    @property
    def worst_cases(self) -> pd.DataFrame:
        """Per-sample worst case per target, threat (``all`` = every threat model) and budget, with CI."""
        import pandas as pd

        from medrobust.evaluation.verdict import ensure_evidence

        rows = [
            {
                "key": w.key,
                "target": w.target,
                "threat": w.threat,
                "norm": w.norm,
                "eps_label": w.eps_label,
                "robust_accuracy": w.metrics.robust_accuracy,
                "ci_low": w.interval("robust_accuracy").low,
                "ci_high": w.interval("robust_accuracy").high,
                "attacks": list(w.attacks or []),
            }
            for w in ensure_evidence(self.document).worst_cases or []
        ]
        columns = [
            "key",
            "target",
            "threat",
            "norm",
            "eps_label",
            "robust_accuracy",
            "ci_low",
            "ci_high",
            "attacks",
        ]
        return pd.DataFrame(rows, columns=columns)

    @property
    def samples(self) -> pd.DataFrame:
        """One row per (cell, sample): label, clean/adversarial predictions, success, norms, queries."""
        import pandas as pd

        from medrobust.reporting.tables import sample_rows

        return pd.DataFrame(sample_rows(self.document))

    @property
    def flags(self) -> pd.DataFrame:
        """One row per sanity flag."""
        import pandas as pd

        return pd.DataFrame(
            [f.to_dict() for f in self.document.flags],
            columns=["id", "severity", "message", "target", "threat", "attack", "eps_label", "doc"],
        )

    @property
    def gates(self) -> pd.DataFrame:
        """One row per gate: ``gate``, ``metric``, ``passed``, ``n_checked``, ``failures`` (cell keys)."""
        import pandas as pd

        rows = [
            {
                "gate": g.gate,
                "metric": g.metric,
                "passed": g.passed,
                "n_checked": len(g.checked),
                "failures": [f.cell for f in g.failures],
            }
            for g in self.document.gates
        ]
        return pd.DataFrame(rows, columns=["gate", "metric", "passed", "n_checked", "failures"])

    @property
    def gates_passed(self) -> bool:
        """True when every gate passed (or there are none)."""
        return all(g.passed for g in self.document.gates)

    @property
    def targets(self) -> list[str]:
        """Target names in audit order (``bare`` first, then the defenses)."""
        return self.document.target_names

    def figures(self) -> list[dict[str, Any]]:
        """The report's matplotlib figures (needs ``run_dir`` for the gallery)."""
        from medrobust.reporting.plots import report_figures

        return report_figures(self.document, self.run_dir or Path("."))

    # -- selections ------------------------------------------------------------------------
    def select_cells(
        self,
        target: str | None = None,
        threat: str | None = None,
        attack: str | None = None,
        eps_label: str | None = None,
    ) -> list[Cell]:
        """The cells matching every given filter (None matches all), in audit order.

        Raises:
            ConfigError: when a filter value names no cell (the message lists the valid ones).
        """
        cells = self.document.cells
        for name, value in (
            ("target", target),
            ("threat", threat),
            ("attack", attack),
            ("eps_label", eps_label),
        ):
            if value is None:
                continue
            check_choice(
                value, name, list(dict.fromkeys(str(getattr(c, name)) for c in cells)), "AuditResults"
            )
            cells = [c for c in cells if str(getattr(c, name)) == value]
        return list(cells)

    def flipped(
        self,
        target: str | None = None,
        threat: str | None = None,
        attack: str | None = None,
        eps_label: str | None = None,
    ) -> pd.DataFrame:
        """Samples the attack flipped: clean prediction correct, adversarial prediction wrong.

        One row per (cell, flipped sample) of the cells matching the filters, with the
        class names of the label and of both predictions.
        """
        keys = {c.key for c in self.select_cells(target, threat, attack, eps_label)}
        s = self.samples
        if s.empty:
            return s
        out = s[s["key"].isin(keys) & s["success"].astype(bool)].reset_index(drop=True)
        names = self.document.data.class_names
        for col in ("label", "clean_pred", "adv_pred"):
            out[f"{col}_name"] = [names[int(v)] for v in out[col]]
        return out

    # -- plots -----------------------------------------------------------------------------
    def _subset(self, cells: list[Cell]) -> AuditDocument:
        import copy

        doc = copy.copy(self.document)
        doc.cells = cells
        return doc

    def plot_robust_accuracy(self, norm: str = "linf", targets: list[str] | None = None) -> Figure:
        """Robust accuracy vs ε: one panel per (target, threat), one line per attack of ``norm``.

        Each line starts at ε = 0 with the clean accuracy; unbounded cells (minimal attacks'
        ``inf``) are not drawn.

        Args:
            norm: "linf" or "l2".
            targets: Only these targets (default all).

        Raises:
            ConfigError: unknown norm or target, or no bounded cell of ``norm``.
        """
        from medrobust.reporting.plots import robust_accuracy_figure

        check_choice(norm, "norm", ("linf", "l2"), "plot_robust_accuracy")
        cells = self.document.cells
        if targets is not None:
            for t in targets:
                check_choice(t, "targets", self.targets, "plot_robust_accuracy")
            cells = [c for c in cells if c.target in targets]
        fig = robust_accuracy_figure(self._subset(cells), norm)
        if fig is None:
            raise ConfigError(
                f"No bounded {norm} cell to plot (attacks: {[a.label for a in self.document.attacks]})."
            )
        return fig

    def plot_confusion(self, target: str = "bare") -> Figure:
        """Confusion matrices of ``target``: clean, and under the attack that hurt it most."""
        from medrobust.reporting.plots import confusion_figure

        check_choice(target, "target", self.targets, "plot_confusion")
        return confusion_figure(self.document, target)

    def plot_gallery(
        self,
        target: str = "bare",
        threat: str | None = None,
        attack: str | None = None,
        eps_label: str | None = None,
        n: int = 4,
    ) -> Figure:
        """Clean / adversarial / amplified perturbation (/ denoised) images of one cell.

        The cell is the one with the lowest robust accuracy among those matching the
        filters (the strongest attack by default); each row gives the clean and the
        adversarial prediction with their confidence. The report's gallery shows only
        flipped examples, balanced by class.

        Raises:
            ConfigError: no matching cell, or the cell has no saved examples (``save_examples: 0``
                or a results dict without its run folder).
        """
        from medrobust.reporting.plots import gallery_figure, strongest_cell

        n = check_int(n, "n", "plot_gallery", low=1)
        cells = [c for c in self.select_cells(target, threat, attack, eps_label) if c.eps is not None]
        cell = strongest_cell(self._subset(cells), target) if cells else None
        if cell is None:
            raise ConfigError(
                f"No bounded cell matches target={target!r}, threat={threat!r}, "
                f"attack={attack!r}, eps_label={eps_label!r}."
            )
        fig = gallery_figure(self.document, self.run_dir or Path("."), cell, n=n)
        if fig is None:
            raise ConfigError(
                f"Cell {cell.key!r} has no saved examples under {str(self.run_dir)!r} "
                "(set save_examples > 0 and load the results from their run folder)."
            )
        return fig


# --------------------------------------------------------------------------- comparing runs


def _as_results(run: AuditResults | str | Path | Mapping[str, Any]) -> AuditResults:
    if isinstance(run, AuditResults):
        return run
    if isinstance(run, Mapping):
        return AuditResults(dict(run))
    return load_results(run)


def compare_samples(
    a: AuditResults | str | Path | Mapping[str, Any],
    b: AuditResults | str | Path | Mapping[str, Any],
    *,
    changed_only: bool = True,
) -> pd.DataFrame:
    """Per-sample comparison of two audits over the cells and images both contain.

    Samples are matched on the cell identity (target, threat, attack, ε) and the dataset
    ``index``. A sample is correct in a run when its effective adversarial prediction
    (``adv_pred``: the worst case of the clean input and the in-budget adversarial
    example) equals its label. ``change`` is ``"became_wrong"`` (correct in ``a``, wrong
    in ``b``), ``"became_right"`` or ``"same"``.

    Args:
        a: The reference run (``AuditResults``, run folder or results dict).
        b: The run compared with it.
        changed_only: Keep only samples whose correctness changed.

    Raises:
        ConfigError: when an image index has different labels in the two runs (different data).
    """
    import pandas as pd

    ra, rb = _as_results(a), _as_results(b)
    index_b: dict[tuple, Cell] = {}
    for c in rb.document.cells:
        index_b[(c.target, c.threat, c.attack, _eps_key(c.eps))] = c
    rows = []
    for ca in ra.document.cells:
        cb = index_b.get((ca.target, ca.threat, ca.attack, _eps_key(ca.eps)))
        if cb is None:
            continue
        sb = cb.samples
        pos_b = {int(i): p for p, i in enumerate(sb.index or [])}
        sa = ca.samples
        for p, idx in enumerate(sa.index or []):
            q = pos_b.get(int(idx))
            if q is None:
                continue
            label = int(sa.label[p])
            if int(sb.label[q]) != label:
                raise ConfigError(
                    f"The runs audited different images: index {idx} has label {label} in a and "
                    f"{sb.label[q]} in b."
                )
            pa, pb = int(sa.adv_pred[p]), int(sb.adv_pred[q])
            ok_a, ok_b = pa == label, pb == label
            change = "same" if ok_a == ok_b else ("became_wrong" if ok_a else "became_right")
            if changed_only and change == "same":
                continue
            rows.append(
                {
                    "key": ca.key,
                    "target": ca.target,
                    "threat": ca.threat,
                    "attack": ca.attack,
                    "eps": ca.eps,
                    "eps_label": ca.eps_label,
                    "index": int(idx),
                    "label": label,
                    "adv_pred_a": pa,
                    "adv_pred_b": pb,
                    "correct_a": ok_a,
                    "correct_b": ok_b,
                    "change": change,
                }
            )
    return pd.DataFrame(rows, columns=list(SAMPLE_COMPARE_COLUMNS))


def compare_runs(
    a: AuditResults | str | Path | Mapping[str, Any],
    b: AuditResults | str | Path | Mapping[str, Any],
    *,
    how: str = "inner",
) -> pd.DataFrame:
    """Join two audits' cells on (target, threat, attack, ε) and give the robust-accuracy change.

    Columns: ``key``, ``target``, ``threat``, ``attack``, ``norm``, ``eps``, ``eps_label``;
    ``clean_accuracy_a/_b``, ``robust_accuracy_a/_b``, ``success_rate_a/_b``;
    ``delta`` = ``robust_accuracy_b − robust_accuracy_a`` and ``clean_delta`` likewise;
    ``n_common`` (images audited in both), ``n_became_wrong`` / ``n_became_right`` and
    ``became_wrong`` / ``became_right`` (sorted dataset indices whose adversarial
    prediction turned wrong / right from ``a`` to ``b``, see :func:`compare_samples`).

    Args:
        a: The reference run (``AuditResults``, run folder or results dict), e.g. model v1.
        b: The run compared with it, e.g. model v2.
        how: "inner" (cells in both runs) or "outer" (also cells of one run only; the
            other side's columns are NaN).

    Raises:
        ConfigError: bad ``how``, or runs that audited different images under the same index.
    """
    import pandas as pd

    check_choice(how, "how", ("inner", "outer"), "compare_runs")
    ra, rb = _as_results(a), _as_results(b)
    keep = ["key", "target", "threat", "attack", "norm", "eps", "eps_label"]
    metrics = ["clean_accuracy", "robust_accuracy", "success_rate"]

    def frame(res: AuditResults) -> pd.DataFrame:
        df = res.cells
        if df.empty:
            df = pd.DataFrame(columns=keep + metrics)
        df = df[keep + metrics].copy()
        df["_eps"] = [_eps_key(None if pd.isna(e) else e) for e in df["eps"]]
        return df

    fa, fb = frame(ra), frame(rb)
    on = ["target", "threat", "attack", "_eps"]
    merged = fa.merge(fb, on=on, how=how, suffixes=("_a", "_b"), sort=False)
    for col in ("key", "norm", "eps", "eps_label"):
        merged[col] = merged[f"{col}_a"].where(merged[f"{col}_a"].notna(), merged[f"{col}_b"])
    for m in metrics:
        merged[f"{m}_a"] = pd.to_numeric(merged[f"{m}_a"], errors="coerce")
        merged[f"{m}_b"] = pd.to_numeric(merged[f"{m}_b"], errors="coerce")
    merged["delta"] = merged["robust_accuracy_b"] - merged["robust_accuracy_a"]
    merged["clean_delta"] = merged["clean_accuracy_b"] - merged["clean_accuracy_a"]

    changes = compare_samples(ra, rb, changed_only=False)
    ids = list(
        zip(
            changes["target"],
            changes["threat"],
            changes["attack"],
            (_eps_key(None if pd.isna(e) else e) for e in changes["eps"]),
            strict=True,
        )
    )
    per_cell: dict[tuple, dict[str, list[int]]] = {}
    for ident, idx, change in zip(ids, changes["index"], changes["change"], strict=True):
        entry = per_cell.setdefault(ident, {"n": [], "became_wrong": [], "became_right": []})
        entry["n"].append(int(idx))
        if change != "same":
            entry[change].append(int(idx))
    empty: dict[str, list[int]] = {"n": [], "became_wrong": [], "became_right": []}
    cell_changes = [per_cell.get(tuple(r), empty) for r in merged[on].itertuples(index=False, name=None)]
    merged["n_common"] = [len(c["n"]) for c in cell_changes]
    merged["n_became_wrong"] = [len(c["became_wrong"]) for c in cell_changes]
    merged["n_became_right"] = [len(c["became_right"]) for c in cell_changes]
    merged["became_wrong"] = [sorted(c["became_wrong"]) for c in cell_changes]
    merged["became_right"] = [sorted(c["became_right"]) for c in cell_changes]
    columns = [
        *keep,
        *(f"{m}_{s}" for m in metrics for s in ("a", "b")),
        "delta",
        "clean_delta",
        "n_common",
        "n_became_wrong",
        "n_became_right",
        "became_wrong",
        "became_right",
    ]
    return merged[columns].reset_index(drop=True)


def plot_comparison(comparison: pd.DataFrame, labels: tuple[str, str] = ("a", "b")) -> Figure:
    """Horizontal bars of the robust-accuracy change per cell (a :func:`compare_runs` frame).

    One bar per row (green: ``b`` better, red: worse), labelled ``target · threat ·
    attack@ε``; rows with an undefined change are drawn as empty bars.

    Args:
        comparison: The :func:`compare_runs` DataFrame (optionally filtered).
        labels: Names of the two runs for the axis title, e.g. ``("v1", "v2")``.
    """
    from matplotlib.figure import Figure

    n = len(comparison)
    if n == 0:
        raise ConfigError("Nothing to plot: the comparison has no rows (no cell common to both runs?).")
    deltas = [0.0 if v is None or math.isnan(float(v)) else float(v) for v in comparison["delta"]]
    names = [
        f"{t} · {th} · {at}@{e}"
        for t, th, at, e in zip(
            comparison["target"],
            comparison["threat"],
            comparison["attack"],
            comparison["eps_label"],
            strict=True,
        )
    ]
    fig = Figure(figsize=(7.0, 0.8 + 0.32 * n), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    colors = ["tab:green" if d > 0 else "tab:red" if d < 0 else "tab:gray" for d in deltas]
    ax.barh(range(n), deltas, color=colors)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=0.8)
    lim = max(0.05, max(abs(d) for d in deltas) * 1.1)
    ax.set_xlim(-lim, lim)
    ax.set_xlabel(f"robust accuracy {labels[1]} − {labels[0]}")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Robust-accuracy change per cell ({labels[0]} → {labels[1]})", fontsize=10)
    return fig


def load_results(run_dir: str | Path) -> AuditResults:
    """Read ``run_dir/results.json`` (or a results.json path).

    Raises:
        ConfigError: when the file is missing or has another schema.
    """
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
    config: str | Path | dict[str, Any] | AuditConfig | None = None,
    out: str | Path = "runs/audit",
    *,
    fresh: bool = False,
    progress: bool = True,
    model: Any = None,
    card: Any = None,
    weights: str | Path | None = None,
    **overrides: Any,
) -> AuditResults:
    """Run (or resume) an audit and return its results.

    >>> res = medrobust.audit(model=net, card={"in_channels": 1, "class_names": ["a", "b"]},
    ...                       data={"phantom": {"modality": "chest_xray"}}, attacks=["fgsm"],
    ...                       budgets={"linf": ["2/255"]}, out="runs/mine")   # doctest: +SKIP

    Args:
        config: A YAML path, a config dict or an :class:`AuditConfig` (None: built from the
            keyword arguments alone).
        out: Run folder.
        fresh: Discard a previous run state in ``out``.
        progress: Show a progress bar.
        model: The model to audit, replacing the config's: a live ``torch.nn.Module`` (audited
            as it is, with ``card``; its state dict is hashed for the provenance, it is put in
            eval mode on the audit's device during the audit and restored after), or a path /
            ``"torchvision:NAME"`` / ``"timm:NAME"`` as in the config's ``model.path``.
        card: The model card: a ``ModelCard``, dict or ``card.json`` path for a live module; a
            ``card.json`` path for a model given by path.
        weights: Local weights file for ``torchvision:NAME`` / ``timm:NAME``.
        **overrides: Top-level config fields to override (e.g. ``n_samples=16``).

    Raises:
        ConfigError: no config and no model, or a card given without a model.
    """
    live = None
    if model is not None:
        import torch

        if isinstance(model, torch.nn.Module):
            from medrobust.models.live import register_live_model

            if weights is not None:
                raise ConfigError(
                    "The 'weights' parameter applies to torchvision:/timm: model names, not modules."
                )
            live = (model, register_live_model(model, card), model.training, _module_device(model))
            overrides["model"] = {"path": live[1], "card": None, "weights": None}
        elif isinstance(model, (str, Path)):
            if card is not None and not isinstance(card, (str, Path)):
                raise ConfigError(
                    "The 'card' parameter must be a path to card.json when 'model' is a path or name "
                    f"(a ModelCard or dict goes with a live module). Got {type(card).__name__}."
                )
            overrides["model"] = {
                "path": str(model),
                "card": None if card is None else str(card),
                "weights": None if weights is None else str(weights),
            }
        else:
            raise ConfigError(
                "The 'model' parameter must be a torch.nn.Module, a path or a name such as "
                f"'torchvision:resnet18'. Got {type(model).__name__}."
            )
    elif card is not None or weights is not None:
        raise ConfigError(
            "The 'card' and 'weights' parameters of audit() go with 'model'; pass model=... too."
        )
    if config is None:
        if model is None:
            raise ConfigError(
                "audit() needs a config (YAML path, dict or AuditConfig) or model=... with data=...."
            )
        config = {}
    try:
        return _audit(config, out, fresh, progress, overrides)
    finally:
        if live is not None:
            from medrobust.models.live import unregister_live_model

            unregister_live_model(live[1])
            live[0].train(live[2])
            if live[3] is not None:
                live[0].to(live[3])


def _module_device(module: Any) -> Any:
    """The device of a module's first parameter or buffer (None when it has neither)."""
    tensors = [*module.parameters(), *module.buffers()]
    return tensors[0].device if tensors else None


def _audit(
    config: str | Path | dict[str, Any] | AuditConfig,
    out: str | Path,
    fresh: bool,
    progress: bool,
    overrides: dict[str, Any],
) -> AuditResults:
    from medrobust.evaluation.config import AuditConfig, config_from_dict, load_config, merge_overrides
    from medrobust.evaluation.runner import run_audit
    from medrobust.evaluation.segmentation.dispatch import segmentation_audit

    seg = segmentation_audit(config, out, fresh, progress, overrides)  # task: segmentation (config or card)
    if seg is not None:
        return seg
    if isinstance(config, AuditConfig):
        cfg = config_from_dict(merge_overrides(config.resolved(), overrides)) if overrides else config
    elif isinstance(config, dict):
        cfg = config_from_dict(merge_overrides(config, overrides))
    else:
        cfg = load_config(config, overrides)
    results = run_audit(cfg, out, fresh=fresh, progress=progress)
    return AuditResults(results, Path(out))
