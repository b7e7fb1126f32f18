"""``medrobust card init MODEL``: write a model card by probing the model; ask only what it cannot infer."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Write and check model cards.", no_args_is_help=True, add_completion=False)

#: ``--help`` defaults of what card init asks for and of what it probes.
ASKED = "asked on a terminal"
PROBED = "probed from the model"

#: How each asked field is given on the command line.
FLAGS = {
    "class_names": "--class-names A,B",
    "bounds": "--bounds LOW,HIGH",
    "modality": "--modality M",
    "input_layout": "--layout NCHW|NHWC",
    "in_channels": "--in-channels N",
}


def _class_names(text: str, flag: str = "--class-names") -> list[str]:
    from medrobust.errors import ConfigError

    names = [n.strip() for n in text.split(",")]
    if len(names) < 2 or not all(names):
        raise ConfigError(
            f"The '{flag}' option must list at least two non-empty class names separated by commas "
            f"(e.g. normal,pneumonia). Got {text!r}."
        )
    return names


def _bounds(text: str, flag: str = "--bounds") -> list[float]:
    from medrobust.errors import ConfigError

    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or not values[0] < values[1]:
        raise ConfigError(
            f"The '{flag}' option must be two finite numbers LOW,HIGH with LOW < HIGH (the intensity range "
            f"the model's inputs lie in, e.g. 0,1 or -1024,3071). Got {text!r}."
        )
    return values


def _size(text: str) -> list[int]:
    from medrobust.errors import ConfigError

    parts = [p.strip() for p in text.lower().replace("x", ",").split(",")]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) not in (2, 3) or any(s < 1 for s in sizes):
        raise ConfigError(
            f"The '--size' option must be one side length or 2-3 positive sizes (224, 224,224 or 64x64x64). "
            f"Got {text!r}."
        )
    return sizes


def _ask(field: str, probe: Any) -> Any:
    """Prompt for one field on the terminal."""
    if field == "class_names":
        k = probe.fields.get("num_classes")
        text = typer.prompt(f"class names, comma-separated ({k} outputs)")
        return _class_names(text)
    if field == "bounds":
        return _bounds(typer.prompt("intensity bounds LOW,HIGH of the model's inputs", default="0,1"))
    if field == "modality":
        return typer.prompt("modality (e.g. chest_xray, brain_mri, skin)").strip() or "unknown"
    if field in probe.ambiguous:
        choices = probe.ambiguous[field]
        text = typer.prompt(f"{field} (the model runs with each of {choices})", default=str(choices[0]))
        return int(text) if field == "in_channels" else text.strip().upper()
    raise typer.BadParameter(field)


@app.command("init")
def init_command(
    model: str = typer.Argument(
        ...,
        help="ONNX, TorchScript (.ts) or torch.export (.pt2) file, MONAI bundle folder, or "
        "torchvision:NAME / timm:NAME (with --weights).",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Card to write.",
        show_default="card.json beside the model, in a bundle folder, or here for torchvision:/timm:",
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Local weights for torchvision:/timm: models (never downloaded)."
    ),
    class_names: str | None = typer.Option(
        None, "--class-names", help="Class names in output order: A,B,...", show_default=ASKED
    ),
    bounds: str | None = typer.Option(
        None, "--bounds", help="Intensity range of the inputs: LOW,HIGH.", show_default=ASKED
    ),
    modality: str | None = typer.Option(
        None, "--modality", "-m", help="Modality (e.g. chest_xray).", show_default=ASKED
    ),
    positive_class: str | None = typer.Option(
        None, "--positive-class", help="Class for sensitivity.", show_default="none"
    ),
    size: str | None = typer.Option(
        None, "--size", help="Input size H,W (or D,H,W) when probing cannot tell.", show_default=PROBED
    ),
    in_channels: int | None = typer.Option(
        None, "--in-channels", min=1, help="Input channels.", show_default=PROBED
    ),
    layout: str | None = typer.Option(
        None, "--layout", help="Input layout NCHW or NHWC.", show_default=PROBED
    ),
    format: str | None = typer.Option(
        None,
        "--format",
        help="Read MODEL as this format whatever its suffix.",
        show_default="from the suffix",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing card."),
) -> None:
    """Probe MODEL for input shape, layout, logits vs probabilities and class count, and write its card.

    Class names, intensity bounds and modality cannot be read from a network: give them as
    flags, or answer the prompts (without a terminal, the command fails naming what is missing).
    """
    from medrobust.errors import ConfigError
    from medrobust.models.checkpoint import load_model
    from medrobust.models.hub import parse_model_spec
    from medrobust.models.probe import card_from_probe, missing_fields, probe_model

    given: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    if class_names is not None:
        given["class_names"] = _class_names(class_names)
    if bounds is not None:
        given["bounds"] = _bounds(bounds)
    if modality is not None:
        if not modality.strip():
            raise ConfigError(
                f"The '--modality' option must be a non-empty name (e.g. chest_xray). Got {modality!r}."
            )
        given["modality"] = modality.strip()
    if positive_class is not None:
        given["positive_class"] = positive_class
    if layout is not None:
        if layout.strip().upper() not in ("NCHW", "NHWC"):
            raise ConfigError(f"The '--layout' option must be NCHW or NHWC. Got {layout!r}.")
        fixed["input_layout"] = given["input_layout"] = layout.strip().upper()
    if in_channels is not None:
        fixed["in_channels"] = given["in_channels"] = in_channels
    if size is not None:
        fixed["spatial_size"] = _size(size)
    spec = parse_model_spec(model)
    target = _default_out(model, spec) if out is None else out
    if target.exists() and not force:
        raise ConfigError(
            f"{target}: a card already exists there; pass --force to overwrite it or --out elsewhere."
        )
    probe = probe_model(
        model,
        weights=weights,
        format=format,
        fixed=fixed,
        bounds=tuple(given["bounds"]) if "bounds" in given else None,  # type: ignore[arg-type]
    )
    missing = missing_fields(probe, given)
    if missing and not _interactive():
        flags = " ".join(FLAGS[f] for f in missing)
        raise ConfigError(
            f"card init cannot infer {', '.join(missing)} of {model} and there is no terminal to ask: "
            f"pass {flags}."
        )
    for field in missing:
        given[field] = _ask(field, probe)
    card = card_from_probe(probe, given, str(model))
    # The card must import the model as the audit will (ONNX is converted and checked here).
    kwargs: dict[str, Any] = {"weights": weights} if weights is not None else {}
    loaded = load_model(model, card=card, format=format, **kwargs)
    card.save(target)
    typer.echo(f"wrote {target}")
    for key, how in probe.how.items():
        typer.echo(f"  {key:<13} {how}")
    for key in given:
        typer.echo(f"  {key:<13} {getattr(card, key)}: given")
    typer.echo(f"checked: the model imports with this card ({loaded.import_info.get('format', 'model')}).")
    hint = f" --weights {weights}" if weights is not None else ""
    typer.echo(f"audit it with: medrobust audit --model {model}{hint} --card {target} --data ...")


def _interactive() -> bool:
    """Whether there is a terminal to ask on."""
    return sys.stdin is not None and sys.stdin.isatty()


def _default_out(model: str, spec: Any) -> Path:
    if spec is not None:
        return Path("card.json")
    path = Path(model)
    return path / "card.json" if path.is_dir() else path.with_name("card.json")
