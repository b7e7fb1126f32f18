"""``medrobust denoisers ...``: the denoiser robustness and similitude study.

Only typer is imported at module level; torch and friends load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medrobust.cli.options import from_config, progress_option

app = typer.Typer(
    help="Attack denoisers: robustness, similitude (transfer) and hybrid defenses.", no_args_is_help=True
)


@app.command("study")
def study(
    config: Path = typer.Option(..., "--config", help="Study YAML, e.g. pipelines/denoiser_study.yaml."),
    out: Path = typer.Option(
        Path("runs/denoiser_study"), "--out", help="Output folder (results, reports, state)."
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Discard the state of a previous run in --out."),
    device: str | None = typer.Option(
        None,
        "--device",
        help="Override the config's device (auto, cpu, cuda).",
        show_default=from_config("auto"),
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="torch intra-op threads.", show_default="torch's choice"
    ),
    progress: bool = progress_option("Show progress bars."),
) -> None:
    """Train/load the denoiser zoo, attack every member, transfer attacks, write results and reports."""
    import json

    from medrobust.denoising.config import DenoiserStudyConfig
    from medrobust.denoising.study import run_study

    cfg = DenoiserStudyConfig.from_yaml(config, device=device)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)  # the command owns the process; the library never does this
    results_path = run_study(cfg, out, fresh=fresh, progress=progress)
    results = json.loads(results_path.read_text(encoding="utf-8"))
    typer.echo(f"results: {results_path}")
    typer.echo(f"report:  {results_path.parent / 'report.html'}")
    for row in results["findings"]["robustness_linf"]:
        typer.echo(
            f"  {row['member']:<18} {row['noise_model']:<28} PSNR {row['psnr_clean']:6.2f} -> "
            f"{row['psnr_adv']:6.2f} dB (drop {row['psnr_drop']:.2f}, random {row['random_psnr_drop']:.2f})"
        )
