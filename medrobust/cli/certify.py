"""``medrobust certify``: certified L2 robustness by denoised smoothing (classifier, optional denoiser).

Only typer is imported at module level; torch, the model and the data load inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer


def _radii(text: str) -> list[str]:
    """``"0,0.25,0.5"`` or ``"0,64/255"`` -> the items as written (converted with the card's bounds)."""
    from medrobust.errors import ConfigError

    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(
            f"The '--radii' option must list radii separated by commas (e.g. 0,0.25,0.5). Got {text!r}."
        )
    return items


def certify(
    model: str = typer.Option(..., "--model", help="Classifier run folder (or any --model of the audit)."),
    data: str = typer.Option(..., "--data", help="Data source (path or phantom:MODALITY)."),
    defense: str | None = typer.Option(
        None, "--defense", help="Denoiser run folder (e.g. a DAE at this sigma)."
    ),
    sigma: str = typer.Option(
        "0.25", "--sigma", help="Noise std in image units, or k/255 of the card's range."
    ),
    # Not "--n": a prefix of torchrun's --nnodes/--nproc-per-node (see the audit's --samples).
    n: int = typer.Option(1000, "--noise-samples", help="Estimation noise samples per image (CERTIFY's n)."),
    n0: int = typer.Option(100, "--n0", help="Selection noise samples per image (CERTIFY's n0)."),
    alpha: float = typer.Option(0.001, "--alpha", help="Failure probability of each certificate."),
    radii: str = typer.Option(
        "0,0.25,0.5", "--radii", help="L2 radii for certified accuracy (image units or k/255)."
    ),
    split: str | None = typer.Option(None, "--split", help="Data split (train, val, test; default all)."),
    limit: int | None = typer.Option(None, "--limit", help="Certify at most this many images."),
    batch_size: int = typer.Option(400, "--batch-size", help="Noisy images per forward pass."),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the noise (per batch: derive_seed(seed, 'certify', i))."
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda[:N]."),
    out: Path = typer.Option(Path("certify.json"), "--out", help="JSON file to write."),
) -> None:
    """Certify each image (Cohen et al.'s CERTIFY); write per-sample radii, certified accuracy at --radii."""
    import torch

    from medrobust.data.dataset import make_dataset
    from medrobust.defenses import load_denoiser
    from medrobust.defenses.certify import certified_accuracy, check_counts_settings
    from medrobust.defenses.smoothing import smooth
    from medrobust.models.checkpoint import load_model
    from medrobust.run.seeds import derive_seed
    from medrobust.utils.device import resolve_device
    from medrobust.utils.io import atomic_write_json
    from medrobust.validation import budget_to_image_units, check_int

    n0, n, alpha = check_counts_settings(n0, n, alpha, "certify")
    limit = None if limit is None else check_int(limit, "limit", "certify", low=1)
    dev = resolve_device(device)
    clf = load_model(model, device=dev).eval()
    card = clf.card
    bounds = (float(card.bounds[0]), float(card.bounds[1]))
    at = [budget_to_image_units(r, bounds, "radii", "certify") for r in _radii(radii)]
    denoiser = None if defense is None else load_denoiser(defense, device=dev).eval()
    g = smooth(clf, sigma, denoiser, seed=seed, batch_size=batch_size)
    preset = card.modality if card.modality != "unknown" else None
    ds = make_dataset(data, split=split, preset=preset, spatial_size=card.spatial_size)
    total = len(ds) if limit is None else min(limit, len(ds))
    chunk = max(1, min(32, batch_size))
    samples, preds, rads, labels = [], [], [], []
    for b, start in enumerate(range(0, total, chunk)):
        items = [ds[i] for i in range(start, min(start + chunk, total))]
        x = torch.stack([torch.as_tensor(it["image"]).float() for it in items]).to(dev)
        y = [int(it["label"]) for it in items]
        certs = g.certify(x, n0=n0, n=n, alpha=alpha, seed=derive_seed(seed, "certify", b))
        for i, (c, label) in enumerate(zip(certs, y, strict=True)):
            samples.append({"index": start + i, "label": label, **c.to_dict()})
            preds.append(c.prediction)
            rads.append(c.radius)
            labels.append(label)
    rows = certified_accuracy(preds, rads, labels, at)
    result = {
        "schema": "medrobust.certify/1",
        "model": str(model),
        "defense": defense,
        "data": str(data),
        "sigma": g.sigma,
        "sigma_as_given": sigma,
        "bounds": list(bounds),
        "n0": n0,
        "n": n,
        "alpha": alpha,
        "seed": seed,
        "norm": "l2",
        "certified_accuracy": rows,
        "samples": samples,
    }
    atomic_write_json(out, result)
    for row in rows:
        typer.echo(
            f"certified accuracy at L2 radius {row['radius']:.4g}: {row['accuracy']:.3f} "
            f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}] ({row['certified']}/{row['n']}, "
            f"{row['abstained']} abstained)"
        )
    typer.echo(f"Wrote {out}")


def register(app: typer.Typer) -> None:
    """Add the top-level ``certify`` command to the ``medrobust`` app."""
    app.command("certify")(certify)
