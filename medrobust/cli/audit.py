"""``medrobust audit``: run (or resume) a robustness audit from a YAML config and/or flags.

Sharded over processes with ``torchrun --nproc_per_node N -m medrobust audit --config X --out DIR``
(gloo on CPU, NCCL on CUDA): batches are split over the ranks, results equal a single
process's, and rank 0 alone writes the run folder and prints the summary.

Exit codes: 0 success (all gates pass), 1 a gate failed, 2 invalid config/gate/input.
"""

from __future__ import annotations

from pathlib import Path

import typer


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [s.strip() for s in v.split(",") if s.strip()]
    return out


def _defense_spec(value: str) -> dict:
    """``PATH`` (a denoiser run folder), ``NAME=PATH``, or a registry denoiser ``median``."""
    name, sep, rest = value.partition("=")
    if sep:
        return {"name": name, "path": rest}
    path = Path(value)
    if path.exists() or "/" in value:
        return {"name": path.name or value, "path": value}
    return {"name": value, "denoiser": value}


def _defense_specs(values: list[str]) -> list[dict]:
    """The ``--defense`` values as defense specs; ``none`` alone means no defense at all."""
    from medrobust.errors import ConfigError

    if any(v.strip().lower() == "none" for v in values):
        if len(values) > 1:
            raise ConfigError(
                f"The '--defense' option 'none' removes every defense and cannot be combined with "
                f"other defenses. Got {values}."
            )
        return []
    return [_defense_spec(d) for d in values]


def audit(
    config: Path | None = typer.Option(None, "--config", "-c", help="Audit YAML (pipelines/*.yaml)."),
    model: Path | None = typer.Option(
        None, "--model", help="Classifier run folder, ONNX or TorchScript file."
    ),
    card: Path | None = typer.Option(None, "--card", help="card.json for ONNX/TorchScript models."),
    data: str | None = typer.Option(
        None, "--data", help="Data source path, or 'phantom:MODALITY' for built-in phantom data."
    ),
    split: str | None = typer.Option(None, "--split", help="Split to audit (default: test)."),
    modality: str | None = typer.Option(
        None, "--modality", "--preset", help="Modality preset, e.g. chest_xray."
    ),
    attacks: list[str] | None = typer.Option(
        None, "--attacks", help="Comma-separated attack names, e.g. fgsm,pgd,cw,deepfool,spsa,autoattack."
    ),
    eps: list[str] | None = typer.Option(
        None, "--eps", help="L∞ budgets, comma-separated (e.g. 2/255,8/255)."
    ),
    eps_l2: list[str] | None = typer.Option(None, "--eps-l2", help="L2 budgets, comma-separated."),
    defense: list[str] | None = typer.Option(
        None,
        "--defense",
        help="Denoiser run folder, NAME=PATH, or a registry denoiser name (repeatable); "
        "'none' removes the config's defenses (a folder named none: ./none).",
    ),
    threat: list[str] | None = typer.Option(None, "--threat", help="graybox and/or adaptive (repeatable)."),
    n: int | None = typer.Option(None, "--n", help="Number of samples."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Attack batch size."),
    out: Path = typer.Option(Path("runs/audit"), "--out", "-o", help="Run folder (resumed when it exists)."),
    gate: list[str] | None = typer.Option(
        None, "--gate", help='Pass/fail gate, e.g. "pgd@2/255>=0.60" (repeatable; see docs/flags.md#gates).'
    ),
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="Discard a previous run in --out (needed after a change of data, model, defenses, seed, "
        "sample count or the files behind them; attacks, budgets and threats may change without it).",
    ),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda[:N]."),
    seed: int | None = typer.Option(None, "--seed", help="Run seed."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Audit a classifier (and its defenses) under attacks at several budgets; write a report."""
    from medrobust.errors import ConfigError
    from medrobust.evaluation.config import config_from_dict, merge_overrides, read_config_data

    overrides: dict = {}
    if model is not None or card is not None:
        overrides["model"] = {k: str(v) for k, v in (("path", model), ("card", card)) if v is not None}
    data_over: dict = {}
    if data is not None:
        if data.startswith("phantom:"):
            data_over.update(phantom={"modality": data.split(":", 1)[1]}, source=None)
        else:
            data_over.update(source=data, phantom=None)
    if split is not None:
        data_over["split"] = split
    if modality is not None:
        data_over["preset"] = modality
    if data_over:
        overrides["data"] = data_over
    if attacks:
        overrides["attacks"] = _split(attacks)
    budgets = {}
    if eps:
        budgets["linf"] = _split(eps)
    if eps_l2:
        budgets["l2"] = _split(eps_l2)
    if budgets:
        overrides["budgets"] = budgets
    if defense:
        overrides["defenses"] = _defense_specs(defense)
    if threat:
        overrides["threats"] = _split(threat)
    for key, value in (("n_samples", n), ("batch_size", batch_size), ("device", device), ("seed", seed)):
        if value is not None:
            overrides[key] = value

    if config is not None:
        # Merge the flags into the YAML mapping first and validate once, so paths the
        # flags replace (--model, --data, --defense) need not exist.
        base = read_config_data(config)
        replaces_source = data_over.get("source") is not None or data_over.get("phantom") is not None
        if replaces_source and isinstance(base.get("data"), dict):
            base["data"] = {k: v for k, v in base["data"].items() if k not in ("source", "phantom")}
        if model is not None and isinstance(base.get("model"), dict):
            base["model"] = {k: v for k, v in base["model"].items() if k != "card"}  # --card re-adds it
        merged = merge_overrides(base, overrides)
        merged["gates"] = list(base.get("gates") or []) + list(gate or [])
        cfg = config_from_dict(merged, str(config))
    else:
        if "model" not in overrides or "data" not in overrides:
            raise ConfigError("Give --config FILE, or at least --model and --data (and --attacks, --eps).")
        overrides["gates"] = list(gate or [])
        cfg = config_from_dict(overrides, "(command-line flags)")

    from medrobust.distributed import launch_rank
    from medrobust.evaluation.runner import run_audit

    # Under torchrun every rank runs the audit (sharded); rank 0 alone writes and reports.
    results = run_audit(cfg, out, fresh=fresh, progress=progress)
    main_rank = launch_rank() == 0
    if main_rank:
        _print_summary(results, out)
    failed = [g for g in results["gates"] if not g["passed"]]
    for g in failed if main_rank else []:
        typer.echo(f"GATE FAILED: {g['gate']}", err=True)
        for f in g["failures"]:
            typer.echo(f"  {f['cell']}: {g['metric']} = {f['value']}", err=True)
    if failed:
        raise typer.Exit(1)


def _print_summary(results: dict, out: Path) -> None:
    from medrobust.reporting.tables import fmt

    typer.echo(f"{'target':<14} {'threat':<9} {'attack':<12} {'eps':>8} {'clean':>6} {'robust':>6}")
    for c in results["cells"]:
        m = c["metrics"]
        typer.echo(
            f"{c['target']:<14} {c['threat']:<9} {c['attack']:<12} {c['eps_label']:>8} "
            f"{fmt(m['clean_accuracy']):>6} {fmt(m['robust_accuracy']):>6}"
        )
    warnings = [f for f in results["flags"] if f["severity"] == "warning"]
    if warnings:
        typer.echo(f"{len(warnings)} sanity flag(s) raised; see the report and docs/flags.md.")
    typer.echo(f"report: {Path(out) / 'report.html'}")


def register(app: typer.Typer) -> None:
    """Add the top-level ``audit`` command to the ``medrobust`` app."""
    app.command("audit")(audit)
