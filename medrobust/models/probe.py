"""Probe a model for its card: input shape and layout, logits or probabilities, number of classes.

``medrobust card init MODEL`` calls :func:`probe_model` and asks only for what it leaves
open. What comes from where:

* **input shape** -- ONNX input dims, a ``.pt2`` program's input shape, a MONAI bundle's
  metadata or a library's defaults (``torchvision:``/``timm:``); otherwise (TorchScript, dynamic
  dims) a trial of common shapes: NCHW then NHWC, 1 then 3 channels, sizes
  :data:`TRIAL_SIZES` (2D, then :data:`TRIAL_SIZES_3D` for volumes). A model that also runs on a
  second size gets no ``spatial_size`` (the data's preset decides).
* **layout** -- the one shape interpretation that runs (for a fully static input, the one
  whose channel axis is small and spatial axes are not, e.g. ``(N, 32, 32, 3)`` is NHWC).
* **outputs** -- ``probabilities`` when every output is >= 0 and each row sums to 1 on random
  inputs within the bounds, ``log_probabilities`` when ``exp`` of them does, else ``logits``.
* **number of classes** -- the output's width.

Class names, intensity bounds and modality cannot be read from a network: they come from
the caller (or a bundle's metadata). Ambiguities (a model that runs on 1 and 3 channels, or
in both layouts) are reported in :attr:`Probe.ambiguous` instead of being guessed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medrobust.errors import CheckpointError
from medrobust.limits import MAX_CLASSES, MAX_IMAGE_PIXELS
from medrobust.utils.logging import get_logger

log = get_logger("models.probe")

#: 2D side lengths tried when the model does not state its input size (common first).
TRIAL_SIZES = (224, 256, 299, 512, 384, 128, 96, 64, 32, 28)
#: 3D side lengths tried after every 2D shape failed.
TRIAL_SIZES_3D = (96, 64, 128, 32)
#: Channel counts tried when the model does not state them.
TRIAL_CHANNELS = (1, 3)
#: Random inputs the output kind is decided on.
N_PROBE = 4
#: Tolerance on "each row sums to 1".
SUM_TOLERANCE = 1e-3
#: Channels a static axis may have to be read as the channel axis (multi-sequence stacks included).
MAX_PLAUSIBLE_CHANNELS = 16
#: Smallest side a static axis must have to be read as spatial.
MIN_PLAUSIBLE_SIDE = 8

Runner = Callable[[torch.Tensor], Any]


@dataclass
class Probe:
    """What probing found.

    Attributes:
        fields: Card fields inferred (``in_channels``, ``spatial_size``, ``spatial_dims``,
            ``input_layout``, ``outputs``, ``num_classes`` and, from bundle metadata or a
            library, ``class_names``, ``bounds``, ``modality``, ``mean``/``std``).
        how: Field name → how it was inferred (shown by ``card init``).
        notes: Notes for the card.
        ambiguous: Fields the model left open (it ran under several values), with the values.
    """

    fields: dict[str, Any] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[Any]] = field(default_factory=dict)


def classify_outputs(out: torch.Tensor) -> str:
    """``"probabilities"``, ``"log_probabilities"`` or ``"logits"`` for a batch of outputs ``(N, K)``."""
    out = out.detach().double().flatten(1)
    if bool((out >= -1e-6).all()) and bool(((out.sum(1) - 1).abs() < SUM_TOLERANCE).all()):
        return "probabilities"
    if bool((out <= 1e-6).all()) and bool((torch.logsumexp(out, 1).abs() < SUM_TOLERANCE).all()):
        return "log_probabilities"
    return "logits"


def _first_tensor(out: Any) -> Any:
    if isinstance(out, dict) and out:
        out = next(iter(out.values()))
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    return out


def _to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.permute(0, *range(2, x.dim()), 1).contiguous() if layout == "NHWC" else x


def _model_shape(n: int, c: int, spatial: tuple[int, ...], layout: str) -> tuple[int, ...]:
    return (n, *spatial, c) if layout == "NHWC" else (n, c, *spatial)


def _runs(
    run: Runner, n: int, c: int, spatial: tuple[int, ...], layout: str, bounds: tuple[float, float]
) -> Any:
    """The model's output on a random input of that shape, or None when it fails or is not (N, K>=2)."""
    if math.prod(spatial) * c > 3 * MAX_IMAGE_PIXELS:
        return None
    gen = torch.Generator().manual_seed(0)
    x = bounds[0] + (bounds[1] - bounds[0]) * torch.rand((n, c, *spatial), generator=gen)
    try:
        with torch.no_grad():
            out = _first_tensor(run(_to_layout(x, layout)))
    except Exception as exc:  # a wrong trial shape raises whatever the model raises
        log.debug("probe %s %s failed: %s", layout, (n, c, *spatial), " ".join(str(exc).split())[:200])
        return None
    if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.dim() < 2 or out.shape[0] != n:
        return None
    out = out.flatten(1)
    return out if out.shape[1] >= 2 else None


def _plausible(c: int | None, spatial: list[int | None]) -> bool:
    if c is not None and c > MAX_PLAUSIBLE_CHANNELS:
        return False
    sides = [s for s in spatial if s is not None]
    return not sides or (min(sides) >= MIN_PLAUSIBLE_SIDE and (c is None or c < min(sides)))


def _candidates(
    static: list[int | None] | None, fixed: dict[str, Any]
) -> Iterator[tuple[str, int, tuple[int, ...]]]:
    """(layout, channels, spatial) shapes to try, most likely first, honouring what the caller fixed."""
    layouts = [fixed["input_layout"]] if fixed.get("input_layout") else ["NCHW", "NHWC"]
    if static is not None:
        rank = len(static)
        if rank not in (4, 5):
            return
        order = []
        for layout in layouts:
            c = static[1] if layout == "NCHW" else static[-1]
            spatial = static[2:] if layout == "NCHW" else static[1:-1]
            order.append((not _plausible(c, spatial), layout, c, spatial))
        for _, layout, c, spatial in sorted(order, key=lambda t: t[0]):
            if c is not None and fixed.get("in_channels") not in (None, c):
                continue
            chans = (
                [c]
                if c is not None
                else [fixed["in_channels"]]
                if fixed.get("in_channels")
                else TRIAL_CHANNELS
            )
            if all(s is not None for s in spatial):
                sizes: list[tuple[int, ...]] = [tuple(int(s) for s in spatial)]  # type: ignore[arg-type]
            elif fixed.get("spatial_size"):
                sizes = [tuple(fixed["spatial_size"])]
            else:
                trial = TRIAL_SIZES if rank == 4 else TRIAL_SIZES_3D
                sizes = [tuple(int(s) if s is not None else t for s in spatial) for t in trial]  # type: ignore[misc]
            for ch in chans:
                for size in sizes:
                    yield layout, int(ch), size
        return
    chans = [fixed["in_channels"]] if fixed.get("in_channels") else list(TRIAL_CHANNELS)
    if fixed.get("spatial_size"):
        size = tuple(fixed["spatial_size"])
        for layout in layouts:
            for ch in chans:
                yield layout, ch, size
        return
    for dims, trial in ((2, TRIAL_SIZES), (3, TRIAL_SIZES_3D)):
        for layout in layouts:
            for ch in chans:
                for t in trial:
                    yield layout, ch, (t,) * dims


def find_input(
    run: Runner,
    static: list[int | None] | None,
    what: str,
    fixed: dict[str, Any] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Probe:
    """Find the input shape and layout ``run`` accepts, then its output kind and class count.

    Args:
        run: Calls the model on a tensor in the model's own layout.
        static: The model's declared input shape (None per dynamic axis), or None when unknown.
        what: The model, for messages.
        fixed: Values the caller already knows (``input_layout``, ``in_channels``, ``spatial_size``).
        bounds: Intensity interval the random inputs are drawn from.

    Raises:
        CheckpointError: when no tried shape runs, or the model returns non-finite outputs,
            fewer than 2 or more than :data:`MAX_CLASSES` outputs per image.
    """
    fixed = dict(fixed or {})
    probe = Probe()
    n = 2 if static is None or static[0] is None else int(static[0])
    tried = 0
    hit = None
    for layout, c, spatial in _candidates(static, fixed):
        tried += 1
        if _runs(run, n, c, spatial, layout, bounds) is not None:
            hit = (layout, c, spatial)
            break
    if hit is None:
        shown = f"its declared input {static}" if static is not None else f"{tried} common shapes"
        raise CheckpointError(
            f"{what}: the model ran on none of {shown} (NCHW/NHWC, {'/'.join(map(str, TRIAL_CHANNELS))} "
            f"channels, sizes {list(TRIAL_SIZES)}); pass --size, --in-channels and --layout."
        )
    layout, c, spatial = hit
    shape = _model_shape(n, c, spatial, layout)
    probe.fields.update({"input_layout": layout, "in_channels": c, "spatial_dims": len(spatial)})
    declared = static is not None and all(d is not None for d in static[1:])
    source = "the model's declared input" if declared else "a trial of common shapes"
    probe.how["input_layout"] = f"{layout}: from {source}, the model ran on {shape}"
    probe.how["in_channels"] = f"{c}: from {source}"
    # Ambiguities: another layout / channel count / size that also runs.
    if not fixed.get("input_layout") and not declared:
        other = "NHWC" if layout == "NCHW" else "NCHW"
        if (
            len(set(spatial)) == 1
            and spatial[0] != c
            and _runs(run, n, c, spatial, other, bounds) is not None
        ):
            probe.ambiguous["input_layout"] = [layout, other]
    if not fixed.get("in_channels") and (
        static is None or (static[1] if layout == "NCHW" else static[-1]) is None
    ):
        for other_c in TRIAL_CHANNELS:
            if other_c != c and _runs(run, n, other_c, spatial, layout, bounds) is not None:
                probe.ambiguous["in_channels"] = [c, other_c]
    spatial_static = static is not None and all(
        d is not None for d in (static[2:] if layout == "NCHW" else static[1:-1])
    )
    if fixed.get("spatial_size"):
        probe.fields["spatial_size"] = list(spatial)
        probe.how["spatial_size"] = f"{list(spatial)}: given"
    elif spatial_static:
        probe.fields["spatial_size"] = list(spatial)
        probe.how["spatial_size"] = f"{list(spatial)}: the model's declared input"
    else:
        alt = tuple(s * 2 if s <= 256 else s // 2 for s in spatial)
        if _runs(run, n, c, alt, layout, bounds) is None:
            probe.fields["spatial_size"] = list(spatial)
            probe.how["spatial_size"] = f"{list(spatial)}: the only tried size the model accepts"
        else:
            probe.how["spatial_size"] = (
                f"not set: the model runs on {list(spatial)} and {list(alt)} (any size; the data preset "
                "decides, or pass --size)"
            )
    describe_outputs(run, probe, n, c, spatial, layout, bounds, what)
    return probe


def describe_outputs(
    run: Runner,
    probe: Probe,
    n: int,
    c: int,
    spatial: tuple[int, ...],
    layout: str,
    bounds: tuple[float, float],
    what: str,
) -> None:
    """Fill ``outputs`` and ``num_classes`` from the model's outputs on random inputs (in place).

    Raises:
        CheckpointError: non-finite outputs, or an output width outside [2, MAX_CLASSES].
    """
    batch = max(n, N_PROBE) if n == 2 else n
    out = _runs(run, batch, c, spatial, layout, bounds)
    if out is None:
        out = _runs(run, n, c, spatial, layout, bounds)
    if out is None:
        raise CheckpointError(f"{what}: the model stopped running on {_model_shape(n, c, spatial, layout)}.")
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(
            f"{what}: the model returned NaN/inf on random inputs within {list(bounds)}; its weights are "
            "broken or the bounds are wrong (--bounds)."
        )
    k = int(out.shape[1])
    if not 2 <= k <= MAX_CLASSES:
        raise CheckpointError(
            f"{what}: the model returns {k} outputs per image; a classifier needs 2 to {MAX_CLASSES}."
        )
    kind = classify_outputs(out)
    probe.fields["num_classes"] = k
    probe.how["num_classes"] = f"{k}: the output's width"
    probe.fields["outputs"] = kind
    reason = {
        "probabilities": "every output >= 0 and each row sums to 1",
        "log_probabilities": "every output <= 0 and each row's exp sums to 1",
        "logits": "outputs are not normalised per row",
    }[kind]
    probe.how["outputs"] = f"{kind}: {reason} on {out.shape[0]} random inputs"


# -- per format -------------------------------------------------------------------------------------


def _onnx_runner(path: Path) -> tuple[Runner, list[int | None]]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise CheckpointError(
            f"{path}: probing an ONNX model needs onnxruntime (pip install 'medrobust[onnx]'): {exc}"
        ) from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception hierarchy
        raise CheckpointError(
            f"{path}: onnxruntime cannot open the model: {' '.join(str(exc).split())[:200]}"
        ) from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise CheckpointError(f"{path}: expected one image input, found {[i.name for i in inputs]}.")
    name = inputs[0].name
    static = [d if isinstance(d, int) and d > 0 else None for d in inputs[0].shape]

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(session.run(None, {name: x.numpy()})[0])

    return run, static


def _module_runner(module: Any) -> Runner:
    def run(x: torch.Tensor) -> Any:
        return module(x)

    return run


def probe_model(
    model: str | Path,
    *,
    weights: str | Path | None = None,
    format: str | None = None,
    fixed: dict[str, Any] | None = None,
    bounds: tuple[float, float] | None = None,
) -> Probe:
    """Probe a model file, bundle or library name for the card fields it reveals.

    Args:
        model: An ``.onnx``, TorchScript (``.ts``/``.torchscript``/``.jit``), ``.pt2`` file, a
            MONAI bundle folder, or ``torchvision:NAME``/``timm:NAME``.
        weights: Local weights for ``torchvision:``/``timm:`` names.
        format: Read ``model`` as this format whatever its suffix (as :func:`load_model`).
        fixed: Values the caller knows (``input_layout``, ``in_channels``, ``spatial_size``).
        bounds: Intensity interval for the random inputs (default ``[0, 1]``; outputs are judged
            on random inputs, so the kind rarely depends on it).

    Raises:
        CheckpointError: a file that cannot be probed (a run folder already has its card; a
            bare state dict does not say its network), or a model that runs on no tried shape.
    """
    from medrobust.models.hub import parse_model_spec
    from medrobust.models.imports import check_finite_tensors, detect_format

    fixed = dict(fixed or {})
    box = bounds or (0.0, 1.0)
    spec = parse_model_spec(model)
    if spec is not None:
        if spec[0] == "module":
            raise CheckpointError(
                f"{model}: a live module's card is given in Python (medrobust.audit(card=...))."
            )
        return _probe_hub(spec[0], spec[1], weights, fixed, box)
    path = Path(model)
    if weights is not None:
        raise CheckpointError(f"{path}: --weights applies to torchvision:NAME and timm:NAME models only.")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder.")
    from medrobust.models.bundle import is_bundle

    if path.is_dir() and is_bundle(path):
        return _probe_bundle(path, fixed, box)
    fmt = detect_format(path, format)
    if path.is_dir() or fmt == "safetensors":
        raise CheckpointError(
            f"{path}: a medrobust run folder already has its card.json (card init is for ONNX, TorchScript, "
            ".pt2 files, MONAI bundles and torchvision:/timm: models)."
        )
    if fmt == "state_dict":
        raise CheckpointError(
            f"{path}: a state dict does not say which network it belongs to; probe it as "
            f"torchvision:NAME or timm:NAME with --weights {path}, or export the model (ONNX, .pt2)."
        )
    if fmt == "onnx":
        run, static = _onnx_runner(path)
        probe = find_input(run, static, str(path), fixed, box)
        probe.notes.append(f"Card written by `medrobust card init` from ONNX file {path.name}.")
        return probe
    if fmt == "pt2":
        from medrobust.models.exported import exported_input_shape
        from medrobust.models.imports import load_exported_program

        program = load_exported_program(path)
        module = program.module()
        check_finite_tensors(module.state_dict(), path)
        probe = find_input(_module_runner(module), exported_input_shape(program), str(path), fixed, box)
        probe.notes.append(f"Card written by `medrobust card init` from torch.export program {path.name}.")
        return probe
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch.jit.load raises RuntimeError, ValueError and the archive's own errors
        raise CheckpointError(
            f"{path}: not a loadable TorchScript file: {' '.join(str(exc).split())[:200]}"
        ) from None
    module.eval()
    check_finite_tensors(module.state_dict(), path)
    probe = find_input(_module_runner(module), None, str(path), fixed, box)
    probe.notes.append(f"Card written by `medrobust card init` from TorchScript file {path.name}.")
    return probe


def _probe_hub(
    scheme: str, name: str, weights: Any, fixed: dict[str, Any], box: tuple[float, float]
) -> Probe:
    from medrobust.models.classifier import MedicalClassifier
    from medrobust.models.hub import _aux_kwargs, build_hub_network, classes_from_weights, hub_defaults
    from medrobust.models.imports import load_state_into, read_weights_file

    spec = f"{scheme}:{name}"
    if weights is None:
        raise CheckpointError(
            f"{spec}: card init needs the weights you will audit (--weights FILE) to read the class count; "
            "nothing is downloaded."
        )
    wpath = Path(weights)
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: the weights file for {spec} was not found.")
    defaults = hub_defaults(scheme, name)
    c = int(fixed.get("in_channels") or defaults["in_channels"])
    state = read_weights_file(wpath)
    k = classes_from_weights(scheme, name, state, c)
    net = build_hub_network(scheme, name, k, c, **_aux_kwargs(scheme, name, state))
    from medrobust.models.card import ModelCard

    staged = MedicalClassifier(
        net, ModelCard(in_channels=c, class_names=[str(i) for i in range(k)], arch=spec)
    )
    load_state_into(staged, state, wpath)
    net.eval()
    size = tuple(fixed.get("spatial_size") or defaults["spatial_size"])
    probe = Probe()
    probe.fields.update(
        {"input_layout": "NCHW", "in_channels": c, "spatial_dims": len(size), "spatial_size": list(size)}
    )
    probe.how["input_layout"] = f"NCHW: {scheme} networks take channels-first input"
    probe.how["in_channels"] = f"{c}: {scheme}'s {name}"
    probe.how["spatial_size"] = f"{list(size)}: " + (
        "given" if fixed.get("spatial_size") else f"{scheme}'s recipe"
    )
    for key in ("mean", "std"):
        if key in defaults:
            probe.fields[key] = defaults[key]
            probe.how[key] = f"{defaults[key]}: {scheme}'s recipe for {name}"
    if "note" in defaults:
        probe.notes.append(defaults["note"])
    from medrobust.models.classifier import Normalize

    norm = Normalize(defaults.get("mean"), defaults.get("std"))
    describe_outputs(lambda x: net(norm(x)), probe, 2, c, size, "NCHW", box, spec)
    probe.notes.append(f"Card written by `medrobust card init` for {spec} with weights {wpath.name}.")
    return probe


def _probe_bundle(path: Path, fixed: dict[str, Any], box: tuple[float, float]) -> Probe:
    from medrobust.models.bundle import TORCHSCRIPT, WEIGHTS, build_bundle_network, bundle_card_fields
    from medrobust.models.classifier import MedicalClassifier
    from medrobust.models.imports import load_state_into, read_torch_state_dict

    meta, notes = bundle_card_fields(path)
    weights, script = path / WEIGHTS, path / TORCHSCRIPT
    module: Any = None
    if weights.is_file():
        try:
            net, _ = build_bundle_network(path)
        except CheckpointError:
            if not script.is_file():
                raise
        else:
            from medrobust.models.card import ModelCard

            k = int(meta.get("num_classes", 2))
            c = int(meta.get("in_channels", 1))
            staged = MedicalClassifier(net, ModelCard(in_channels=c, class_names=[str(i) for i in range(k)]))
            load_state_into(staged, read_torch_state_dict(weights), weights)
            module = net.eval()
    if module is None and script.is_file():
        module = torch.jit.load(str(script), map_location="cpu").eval()
    if module is None:
        raise CheckpointError(f"{path}: the bundle has neither {WEIGHTS} nor {TORCHSCRIPT}.")
    c = fixed.get("in_channels") or meta.get("in_channels")
    size = fixed.get("spatial_size") or meta.get("spatial_size")
    dims = meta.get("spatial_dims", 2)
    static: list[int | None] = [None, c, *(size or [None] * dims)]
    bounds = tuple(meta["bounds"]) if "bounds" in meta and box == (0.0, 1.0) else box
    probe = find_input(_module_runner(module), static, str(path), {**fixed, "input_layout": "NCHW"}, bounds)  # type: ignore[arg-type]
    for key in ("class_names", "bounds", "modality"):
        if key in meta:
            probe.fields[key] = meta[key]
            probe.how[key] = f"{meta[key]}: the bundle's metadata"
    if "num_classes" in meta and meta["num_classes"] != probe.fields["num_classes"]:
        raise CheckpointError(
            f"{path}: the bundle's metadata state {meta['num_classes']} output channels but the network "
            f"returns {probe.fields['num_classes']}."
        )
    probe.how["input_layout"] = "NCHW: MONAI networks take channels-first input"
    probe.notes += [*notes, f"Card written by `medrobust card init` from MONAI bundle {path.name}."]
    return probe


#: Card fields no network reveals: asked for (or given as flags) unless a bundle's metadata state them.
ASKED_FIELDS = ("class_names", "bounds", "modality")


def missing_fields(probe: Probe, given: dict[str, Any]) -> list[str]:
    """Fields still open after probing: :data:`ASKED_FIELDS` not inferred, and ambiguous ones, not given."""
    open_ = [f for f in ASKED_FIELDS if f not in given and f not in probe.fields]
    return open_ + [f for f in probe.ambiguous if f not in given]


def card_from_probe(probe: Probe, given: dict[str, Any], what: str) -> Any:
    """The :class:`~medrobust.models.card.ModelCard` from probed fields overridden by ``given``.

    Raises:
        ConfigError: ``class_names`` whose count differs from the model's outputs.
        CheckpointError: a card that does not validate (names ``what``).
    """
    from medrobust.errors import ConfigError
    from medrobust.models.card import ModelCard

    fields = {**probe.fields, **given}
    k = fields.pop("num_classes", None)
    names = fields.get("class_names")
    if k is not None and isinstance(names, list) and len(names) != k:
        raise ConfigError(
            f"The '--class-names' option lists {len(names)} names but {what} returns {k} outputs per image. "
            f"Got {','.join(map(str, names))!r}."
        )
    fields["notes"] = list(dict.fromkeys([*probe.notes, *fields.get("notes", [])]))
    return ModelCard.from_mapping(fields, f"the card for {what}")


__all__ = [
    "ASKED_FIELDS",
    "Probe",
    "card_from_probe",
    "classify_outputs",
    "describe_outputs",
    "find_input",
    "missing_fields",
    "probe_model",
]
