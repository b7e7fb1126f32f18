"""``medrobust demo`` (what ``make demo`` runs): phantom data → classifier + defenses → audit → report."""

from __future__ import annotations

from pathlib import Path

import typer

from medrobust.cli.options import progress_option


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Demo folder (data, models, audit)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda[:N]."),
    progress: bool = progress_option("Show progress bars."),
) -> None:
    """Train a small CNN, a Siamese-DAE and a DAE on phantom chest X-rays, audit all three, write a report."""
    import time

    from medrobust.evaluation.demo import run_demo
    from medrobust.reporting.tables import fmt
    from medrobust.reporting.writers import summary

    t0 = time.perf_counter()
    results = run_demo(out, device=device, progress=progress)
    typer.echo("\nWorst-case robust accuracy over the six attacks (clean accuracy first):")
    for norm, table in summary(results).items():
        labels = table["labels"]
        typer.echo(
            f"  {norm:<5} {'target':<12} {'threat':<9} {'clean':>6} "
            + " ".join(f"{'ε=' + x:>9}" for x in labels)
        )
        for row in table["rows"]:
            if row["worst"]:
                values = " ".join(f"{fmt(row['values'].get(x)):>9}" for x in labels)
                typer.echo(
                    f"  {'':<5} {row['target']:<12} {row['threat']:<9} {fmt(row['clean']):>6} {values}"
                )
    n_flags = sum(f["severity"] == "warning" for f in results["flags"])
    typer.echo(f"\n{n_flags} sanity flag(s) raised (see the report and docs/flags.md).")
    typer.echo(f"Report: {Path(out) / 'audit' / 'report.html'}  ({time.perf_counter() - t0:.0f} s)")


def register(app: typer.Typer) -> None:
    """Add the top-level ``demo`` command to the ``medrobust`` app."""
    app.command("demo")(demo)
