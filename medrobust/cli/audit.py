"""``medrobust audit``: run (or resume) a robustness audit from a YAML config and/or flags.

Sharded over processes with ``torchrun --nproc_per_node N -m medrobust audit --config X --out DIR``
(gloo on CPU, NCCL on CUDA): batches are split over the ranks, results equal a single
process's, and rank 0 alone writes the run folder and prints the summary. No audit option is a
prefix of a torchrun option (the sample count is ``--samples``/``-n``), so every flag reaches the
audit through torchrun.

Exit codes: 0 success (all gates pass), 1 a gate failed (a gate on a target with an
error-level flag fails too), 2 invalid config/gate/input. ``--json`` prints one summary
document, ``--junit FILE`` writes JUnit XML, ``-q`` prints only the verdict.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medrobust.cli.options import (
    from_config,
    progress_option,
    samples_option,
)


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
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Audit YAML (pipelines/*.yaml); the flags below replace its values."
    ),
    model: Path | None = typer.Option(
        None,
        "--model",
        help="Classifier: run folder, ONNX / TorchScript / .pt2 / state-dict file, MONAI bundle folder, "
        "or torchvision:NAME / timm:NAME (with --weights).",
        show_default=from_config(),
    ),
    card: Path | None = typer.Option(
        None,
        "--card",
        help="card.json for imported models.",
        show_default=from_config("a run folder's or bundle's own card"),
    ),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        help="Local weights (safetensors or a state dict) for torchvision:NAME / timm:NAME models; "
        "nothing is downloaded.",
        show_default=from_config(),
    ),
    model_format: str | None = typer.Option(
        None,
        "--model-format",
        help="Read the --model file as safetensors, state_dict, torchscript, pt2 or onnx whatever its "
        "suffix (TorchScript is never inferred from .pt/.pth/.bin/.ckpt).",
        show_default=from_config("from the suffix"),
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Data source path, or phantom:MODALITY for built-in phantom data (size and options as in "
        "phantom:chest_xray@64?n=600&seed=1).",
        show_default=from_config(),
    ),
    split: str | None = typer.Option(
        None,
        "--split",
        help="Split to audit: auto (the source's own test split; a folder without splits is audited "
        "whole), all, train, val or test.",
        show_default=from_config("auto"),
    ),
    modality: str | None = typer.Option(
        None,
        "--modality",
        "--preset",
        help="Modality preset, e.g. chest_xray.",
        show_default=from_config("the phantom's modality"),
    ),
    attacks: list[str] | None = typer.Option(
        None,
        "--attacks",
        help="Comma-separated attack names, e.g. fgsm,pgd,cw,deepfool,spsa,autoattack.",
        show_default=from_config(),
    ),
    eps: list[str] | None = typer.Option(
        None, "--eps", help="L∞ budgets, comma-separated (e.g. 2/255,8/255).", show_default=from_config()
    ),
    eps_l2: list[str] | None = typer.Option(
        None, "--eps-l2", help="L2 budgets, comma-separated.", show_default=from_config()
    ),
    defense: list[str] | None = typer.Option(
        None,
        "--defense",
        help="Denoiser run folder, NAME=PATH, or a registry denoiser name (repeatable); "
        "'none' removes the config's defenses (a folder named none: ./none).",
        show_default=from_config("none"),
    ),
    threat: list[str] | None = typer.Option(
        None,
        "--threat",
        help="graybox and/or adaptive (repeatable).",
        show_default=from_config("graybox,adaptive"),
    ),
    samples: int | None = samples_option(
        "Samples audited: a seeded subset of the split (also -n; safe under torchrun).",
        show_default=from_config("100"),
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Attack batch size.", show_default=from_config("32")
    ),
    out: Path = typer.Option(Path("runs/audit"), "--out", "-o", help="Run folder (resumed when it exists)."),
    gate: list[str] | None = typer.Option(
        None,
        "--gate",
        help='Pass/fail gate, e.g. "pgd@2/255>=0.60" (repeatable, added to the config\'s; see '
        "docs/flags.md#gates).",
        show_default=from_config("none"),
    ),
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="Discard a previous run in --out (needed after a change of data, model, defenses, seed, "
        "sample count or the files behind them; attacks, budgets and threats may change without it).",
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto (CUDA when present), cpu or cuda[:N].", show_default=from_config("auto")
    ),
    seed: int | None = typer.Option(None, "--seed", help="Run seed.", show_default=from_config("0")),
    progress: bool = progress_option(),
    json_out: bool = typer.Option(
        False,
        "--json",
        help="Print one JSON summary (verdict, gates, worst cases with intervals, flags with levels) "
        "instead of the tables; schema: medrobust/evaluation/schemas/summary.schema.json.",
    ),
    junit: Path | None = typer.Option(
        None, "--junit", help="Write a JUnit XML report: one testcase per gate and per error-level flag."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Print only the verdict, failed gates and error-level flags."
    ),
) -> None:
    """Audit a classifier (and its defenses) under attacks at several budgets; write a report."""
    from medrobust.evaluation.segmentation.dispatch import segmentation_command, wants_segmentation

    if wants_segmentation(config, model, card):  # task: segmentation in the config or the card
        return segmentation_command(**locals())
    from medrobust.errors import ConfigError
    from medrobust.evaluation.config import config_from_dict, merge_overrides, read_config_data

    overrides: dict = {}
    model_flags = (("path", model), ("card", card), ("weights", weights), ("format", model_format))
    if any(v is not None for _, v in model_flags):
        overrides["model"] = {k: str(v) for k, v in model_flags if v is not None}
    data_over: dict = {}
    if data is not None:
        if data.strip().lower().startswith("phantom:"):
            from medrobust.data.specs import phantom_options

            # phantom:MODALITY[@SIZE][?n=..&seed=..]: the same set (file, class names) as in training
            data_over.update(phantom=phantom_options(data.strip()), source=None)
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
    for key, value in (
        ("n_samples", samples),
        ("batch_size", batch_size),
        ("device", device),
        ("seed", seed),
    ):
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
            # card, weights and format belong to the replaced model (--card/--weights/--model-format re-add)
            base["model"] = {k: v for k, v in base["model"].items() if k not in ("card", "weights", "format")}
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

    if junit is not None:
        from medrobust.evaluation.machine_output import check_junit_path

        check_junit_path(junit)
    # Under torchrun every rank runs the audit (sharded); rank 0 alone writes and reports.
    results = run_audit(cfg, out, fresh=fresh, progress=progress and not (quiet or json_out))
    main_rank = launch_rank() == 0
    failed = [g for g in results["gates"] if not g["passed"]]
    if main_rank:
        if junit is not None:
            from medrobust.evaluation.machine_output import junit_xml
            from medrobust.utils.io import atomic_write_text

            atomic_write_text(junit, junit_xml(results))
        if json_out:
            from medrobust.evaluation.machine_output import summary_json

            typer.echo(summary_json(results, out))
        else:
            _print_summary(results, out, quiet=quiet)
        for g in failed:
            typer.echo(f"GATE FAILED: {g['gate']}", err=True)
            for f in g["failures"]:
                reason = f" ({f['reason']})" if f.get("reason") else ""
                bound = "" if g.get("bound", "value") == "value" else f" ({g['bound']} 95% bound)"
                typer.echo(f"  {f['cell']}: {g['metric']}{bound} = {f['value']}{reason}", err=True)
    if failed:
        raise typer.Exit(1)


def _print_summary(results: dict, out: Path, quiet: bool = False) -> None:
    from medrobust.evaluation.audited import describe_audited
    from medrobust.evaluation.statistics import fmt_interval

    verdict = results.get("verdict") or {}
    status = verdict.get("status", "no-gates")
    gates = verdict.get("gates") or {}
    counts = verdict.get("flags") or {}
    line = {
        "pass": f"verdict: PASS ({gates.get('passed', 0)} of {gates.get('total', 0)} gate(s) passed)",
        "fail": f"verdict: FAIL ({gates.get('failed', 0)} of {gates.get('total', 0)} gate(s) failed)",
        "no-gates": "verdict: no gates set (add --gate to make this a pass/fail check)",
    }[status]
    flags_line = (
        f"flags: {counts.get('error', 0)} error(s), {counts.get('warning', 0)} warning(s), "
        f"{counts.get('info', 0)} info"
    )
    if quiet:
        typer.echo(f"{line}; {flags_line}")
        for f in results["flags"]:
            if f["severity"] == "error":
                typer.echo(f"  error {f['id']}: {f['message']}")
        return
    typer.echo(f"audited: {describe_audited(results['data'])}")
    head = f"{'target':<14} {'threat':<9} {'attack':<12} {'eps':>8}"
    typer.echo(f"{head} {'clean [95% CI]':>20} {'robust [95% CI]':>20}")
    for c in results["cells"]:
        iv = c.get("intervals") or {}
        m = c["metrics"]
        clean = iv.get("clean_accuracy") or {"value": m.get("clean_accuracy")}
        robust = iv.get("robust_accuracy") or {"value": m.get("robust_accuracy")}
        typer.echo(
            f"{c['target']:<14} {c['threat']:<9} {c['attack']:<12} {c['eps_label']:>8} "
            f"{fmt_interval(clean):>20} {fmt_interval(robust):>20}"
        )
    headline = verdict.get("headline") or []
    if headline:
        typer.echo("worst case per sample (robust only if no attack under any threat model fooled it):")
        for h in headline:
            ra = fmt_interval(h["robust_accuracy"])
            typer.echo(f"  {h['target']:<14} {h['norm']:<4} ε={h['eps_label']:<8} {ra}")
    stats = results.get("statistics") or {}
    if stats.get("half_width_at_0.5") is not None:
        need = (stats.get("samples_needed") or {}).get("0.05")
        typer.echo(
            f"intervals: 95% ({stats.get('proportions')}); with n={stats.get('n')} a rate near 0.5 is "
            f"±{stats['half_width_at_0.5'] * 100:.0f} points"
            + (f", ±5 points needs ~{need} samples" if need else "")
        )
    typer.echo(flags_line + ("" if not results["flags"] else " (docs/flags.md)"))
    for f in results["flags"]:
        where = " · ".join(str(f[k]) for k in ("target", "threat", "attack", "eps_label") if f.get(k))
        typer.echo(f"  {f['severity']:<7} {f['id']}{f' ({where})' if where else ''}: {f['message']}")
    typer.echo(line)
    typer.echo(f"report: {Path(out) / 'report.html'}")


def register(app: typer.Typer) -> None:
    """Add the top-level ``audit`` command to the ``medrobust`` app."""
    app.command("audit")(audit)
