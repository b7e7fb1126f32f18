"""The entry points: ``medrobust audit`` and :func:`medrobust.audit` hand segmentation audits over to here.

An audit is a segmentation audit when its config says ``task: segmentation`` or its model's card
does (``"task": "segmentation"`` in ``card.json``). :func:`wants_segmentation` decides from the
config file and the command-line flags without loading anything but YAML and JSON;
:func:`segmentation_command` runs the command-line audit (flags over the YAML, the summary, the
exit code); :func:`segmentation_audit` is the Python API's branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medrobust.evaluation.segmentation.config import TASK


def _task_of(data: Mapping[str, Any], model: Any = None, card: Any = None) -> bool:
    """Whether a config mapping (plus an overriding model path / card) selects the segmentation audit."""
    from medrobust.evaluation.segmentation.targets import card_task

    if data.get("task") is not None:
        return data.get("task") == TASK
    spec = data.get("model") if isinstance(data.get("model"), Mapping) else {}
    path = model if model is not None else spec.get("path")
    card_path = card if card is not None else (spec.get("card") if model is None else None)
    if path is None and card_path is None:
        return False
    return card_task(path, card_path) == TASK


def wants_segmentation(config: Path | None, model: Any = None, card: Any = None) -> bool:
    """Whether ``medrobust audit --config CONFIG [--model M] [--card C]`` is a segmentation audit."""
    from medrobust.run.config import read_config

    data = read_config(config, "audit config") if config is not None else {}
    return _task_of(data, model, card)


def _split(values: list[str] | None) -> list[str]:
    return [s.strip() for v in values or [] for s in v.split(",") if s.strip()]


def _defense_specs(values: list[str]) -> list[dict[str, Any]]:
    """``--defense`` values as defense specs (``PATH``, ``NAME=PATH``, a registry denoiser; ``none``)."""
    from medrobust.errors import ConfigError

    if any(v.strip().lower() == "none" for v in values):
        if len(values) > 1:
            raise ConfigError(
                f"The '--defense' option 'none' removes every defense and cannot be combined with others. "
                f"Got {values}."
            )
        return []
    out = []
    for value in values:
        name, sep, rest = value.partition("=")
        path = Path(value)
        if sep:
            out.append({"name": name, "path": rest})
        elif path.exists() or "/" in value:
            out.append({"name": path.name or value, "path": value})
        else:
            out.append({"name": value, "denoiser": value})
    return out


def segmentation_command(**flags: Any) -> None:
    """``medrobust audit`` for a segmentation config: the command's flags (its parameters by name).

    Flags replace the YAML's values as for classifier audits (``--model``, ``--data``, ``--split``,
    ``--modality``, ``--attacks``, ``--eps``, ``--eps-l2``, ``--defense``, ``--threat``,
    ``--samples``, ``--batch-size``, ``--device``, ``--seed``; ``--gate`` adds gates). Prints the
    cells and the verdict (``--json``: the results' verdict and gates; ``-q``: the verdict line);
    ``--junit FILE`` writes one JUnit testcase per gate.

    Raises:
        typer.Exit: with code 1 when a gate fails.
        ConfigError: for an invalid config, flag or gate (the CLI prints one ``error:`` line, exit 2).
    """
    import json

    import typer

    from medrobust.errors import ConfigError
    from medrobust.evaluation.segmentation.config import segmentation_config_from_dict
    from medrobust.evaluation.segmentation.runner import run_segmentation_audit
    from medrobust.run.config import merge_overrides, read_config

    for unsupported in ("weights",):
        if flags.get(unsupported) is not None:
            raise ConfigError(
                f"The '--{unsupported.replace('_', '-')}' option does not apply to a segmentation audit "
                f"(task: {TASK}). Got {flags[unsupported]!r}."
            )
    over: dict[str, Any] = {"task": TASK}
    if flags.get("model") is not None or flags.get("card") is not None:
        over["model"] = {"path": str(flags.get("model"))} if flags.get("model") is not None else {}
        if flags.get("card") is not None:
            over["model"]["card"] = str(flags["card"])
    if flags.get("model_format") is not None:
        over.setdefault("model", {})["format"] = flags["model_format"]
    data: dict[str, Any] = {}
    for key, flag in (("source", "data"), ("split", "split"), ("preset", "modality")):
        if flags.get(flag) is not None:
            data[key] = flags[flag]
    if data:
        over["data"] = data
    if flags.get("attacks"):
        over["attacks"] = _split(flags["attacks"])
    budgets = {n: _split(flags[f]) for n, f in (("linf", "eps"), ("l2", "eps_l2")) if flags.get(f)}
    if budgets:
        over["budgets"] = budgets
    if flags.get("defense"):
        over["defenses"] = _defense_specs(flags["defense"])
    if flags.get("threat"):
        over["threats"] = _split(flags["threat"])
    for key, value in (
        ("n_samples", flags.get("samples")),
        ("batch_size", flags.get("batch_size")),
        ("device", flags.get("device")),
    ):
        if value is not None:
            over[key] = value
    if flags.get("seed") is not None:
        over["seed"] = flags["seed"]
    config = flags.get("config")
    base = read_config(config, "audit config") if config is not None else {}
    if flags.get("model") is not None and isinstance(base.get("model"), Mapping):
        base["model"] = {}
    if data.get("source") is not None and isinstance(base.get("data"), Mapping):
        base["data"] = {k: v for k, v in base["data"].items() if k != "source"}
    merged = merge_overrides(base, over)
    merged["gates"] = list(base.get("gates") or []) + list(flags.get("gate") or [])
    cfg = segmentation_config_from_dict(merged, str(config) if config is not None else "(command-line flags)")
    out = Path(flags.get("out") or "runs/audit")
    quiet, json_out = bool(flags.get("quiet")), bool(flags.get("json_out"))
    junit = flags.get("junit")
    if junit is not None:
        from medrobust.evaluation.machine_output import check_junit_path

        check_junit_path(Path(junit))
    results = run_segmentation_audit(
        cfg, out, fresh=bool(flags.get("fresh")), progress=bool(flags.get("progress"))
    )
    if junit is not None:
        from medrobust.evaluation.machine_output import gates_junit_xml
        from medrobust.utils.io import atomic_write_text

        name = f"medrobust segmentation audit: {results.get('name') or 'audit'}"
        atomic_write_text(Path(junit), gates_junit_xml(name, results["gates"]))
    verdict = results["verdict"]
    if json_out:
        typer.echo(
            json.dumps({"schema": results["schema"], "verdict": verdict, "gates": results["gates"]}, indent=2)
        )
    else:
        print_segmentation_summary(results, out, quiet)
    failed = [g for g in results["gates"] if not g["passed"]]
    for g in failed:
        typer.echo(f"GATE FAILED: {g['gate']}", err=True)
        for f in g["failures"]:
            typer.echo(f"  {f['cell']}: {g['metric']} = {f['value']}", err=True)
    if failed:
        raise typer.Exit(1)


def print_segmentation_summary(results: dict[str, Any], out: Path, quiet: bool = False) -> None:
    """The cells (mean Dice clean and under attack, detection) and the verdict line."""
    import typer

    from medrobust.evaluation.statistics import fmt_interval

    verdict = results["verdict"]
    gates = verdict["gates"]
    line = {
        "pass": f"verdict: PASS ({gates['passed']} of {gates['total']} gate(s) passed)",
        "fail": f"verdict: FAIL ({gates['failed']} of {gates['total']} gate(s) failed)",
        "no-gates": "verdict: no gates set (add --gate to make this a pass/fail check)",
    }[verdict["status"]]
    if not quiet:
        data = results["data"]
        typer.echo(f"audited: {data['n']} image(s) of {data['source']} (split {data['split'] or 'all'})")
        head = f"{'target':<12} {'threat':<9} {'attack':<10} {'eps':>7}"
        typer.echo(f"{head} {'clean Dice':>20} {'Dice [95% CI]':>20} {'detection [95% CI]':>22}")
        for c in results["cells"]:
            typer.echo(
                f"{c['target']:<12} {c['threat']:<9} {c['attack']:<10} {c['eps_label']:>7} "
                f"{fmt_interval(c['clean']['mean_dice']):>20} {fmt_interval(c['metrics']['mean_dice']):>20} "
                f"{fmt_interval(c['metrics']['detection']):>22}"
            )
    typer.echo(line)
    if not quiet:
        typer.echo(f"report: {Path(out) / 'report.html'}")


def segmentation_audit(
    config: Any, out: str | Path, fresh: bool, progress: bool, overrides: dict[str, Any]
) -> Any:
    """:func:`medrobust.audit`'s branch: SegmentationAuditResults, or None for a classifier audit.

    ``config`` is what ``audit()`` was given (a YAML path, a mapping or an ``AuditConfig``);
    ``overrides`` its keyword overrides (``model``, ``n_samples``, ...).
    """
    from medrobust.run.config import merge_overrides, read_config

    if not isinstance(config, (str, Path, Mapping)):
        return None
    data = merge_overrides(read_config(config, "audit config"), overrides)
    model = data.get("model") if isinstance(data.get("model"), Mapping) else {}
    if str(model.get("path", "")).startswith("module:") or not _task_of(data):
        return None
    from medrobust.evaluation.segmentation.config import segmentation_config_from_dict
    from medrobust.evaluation.segmentation.results import SegmentationAuditResults
    from medrobust.evaluation.segmentation.runner import run_segmentation_audit

    data = {**data, "task": TASK, "model": {k: v for k, v in model.items() if v is not None}}
    origin = str(config) if isinstance(config, (str, Path)) else "segmentation audit config"
    cfg = segmentation_config_from_dict(data, origin)
    return SegmentationAuditResults(
        run_segmentation_audit(cfg, out, fresh=fresh, progress=progress), Path(out)
    )
