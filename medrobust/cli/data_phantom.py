"""``medrobust data phantom``: write a labelled synthetic data set as real files.

Registered by ``medrobust/cli/data.py`` with ``app.command("phantom")(phantom)``.
Only typer is imported at module level; the generators load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medrobust.cli.options import (
    progress_option,
    samples_option,
)


def phantom(
    modality: str = typer.Option(
        ..., "--modality", "-m", help="chest_xray, brain_mri, retina_fundus, retina_oct or skin."
    ),
    samples: int = samples_option("Number of images (1..1000000; also -n).", default=600),
    size: int = typer.Option(64, "--size", help="Image height and width in pixels (28..512)."),
    fmt: str = typer.Option("png", "--format", "-f", help="png, jpeg, dicom, nifti (grey only) or npz."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder (created; must be empty or a phantom set)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed writes identical files."),
    progress: bool = progress_option("Show a progress bar (for more than 200 images)."),
) -> None:
    """Write phantom images of a modality (with labels and train/val/test splits) in a file format."""
    import json

    from medrobust.data.phantoms import write_phantom

    path = write_phantom(modality, samples, size, fmt, out, seed=seed, progress=progress)
    record = json.loads((Path(out) / "phantom.json").read_text(encoding="utf-8"))
    parts = []
    for split, per_class in record["counts"].items():
        total = sum(per_class.values())
        detail = ", ".join(f"{name} {count}" for name, count in per_class.items())
        parts.append(f"{split} {total} ({detail})")
    typer.echo(
        f"wrote {record['n']} {record['modality']} phantoms ({record['size']}x{record['size']}, "
        f"{record['format']}, seed {record['seed']}): {'; '.join(parts)} -> {path}"
    )
