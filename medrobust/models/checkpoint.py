"""Checkpoints: save run folders as safetensors, load them back, import models from elsewhere.

A medrobust run folder holds ``model.safetensors`` (weights; architecture name and
keyword arguments in the safetensors metadata), ``card.json``, ``config.yaml`` (the
resolved training config) and ``environment.json`` (versions, device, seed).

Nothing is ever fully unpickled: ``.pt``/``.pth`` state dicts are read with
``torch.load(weights_only=True)`` and a file that would need arbitrary unpickling
(e.g. a pickled ``nn.Module``) is refused with :class:`~medrobust.errors.CheckpointError`.

TorchScript, ``torch.export`` and ONNX files are programs: loading a TorchScript archive
runs its ``__setstate__`` methods, :func:`torch.export.load` unpickles parts of a ``.pt2``
archive, and calling any of them runs its graph, which can read and write files. They are
accepted only by suffix (``.ts``/``.torchscript``/``.jit``, ``.pt2``, ``.onnx``) or an
explicit ``format=``, never recognised from the content of a ``.pt`` file.
Weights holding NaN or inf are refused on load, naming the first offending tensor.

Models from elsewhere (:func:`load_model` resolves them all): ``torchvision:NAME`` and
``timm:NAME`` with local weights (``weights=FILE``; never downloaded), a MONAI bundle folder
(``configs/metadata.json``; :mod:`medrobust.models.bundle`), and live modules handed to
:func:`medrobust.audit` (``module:DIGEST``; :mod:`medrobust.models.live`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.errors import CheckpointError, ConfigError
from medrobust.models.card import ModelCard
from medrobust.models.classifier import MedicalClassifier, build_classifier, wrap_imported
from medrobust.models.imports import (  # noqa: F401  (re-exported: the names checkpoint always had)
    FORMATS,
    MAX_CHECK_SAMPLES,
    SUFFIXES,
    ZIP_MAX_EXPANSION,
    check_finite_tensors,
    detect_format,
    error_summary,
    load_exported_program,
    load_state_into,
    load_torchscript,
    one_line,
    read_torch_state_dict,
    read_weights_file,
    require_card,
    resolve_card,
    run_check,
    sample_input,
    sample_text,
)
from medrobust.registry import did_you_mean
from medrobust.utils.io import atomic_path, atomic_write_json, atomic_write_text
from medrobust.utils.logging import get_logger
from medrobust.validation import check_float, check_int

log = get_logger("models.checkpoint")

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "card.json"
CONFIG_NAME = "config.yaml"
ENVIRONMENT_NAME = "environment.json"
FORMAT_TAG = "medrobust-classifier"

#: Opset an ONNX graph is lowered to when onnx2torch lacks a converter for the original one.
ONNX_FALLBACK_OPSET = 17
_IMPORT_OPTS = ("arch", "arch_kwargs", "tolerance", "n_check", "check_seed", "weights")


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the module inside a ``DistributedDataParallel``/``DataParallel`` wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def save_checkpoint(
    model: nn.Module,
    run_dir: str | Path,
    config: dict[str, Any] | None = None,
    environment: dict[str, Any] | None = None,
) -> Path:
    """Write a run folder: ``model.safetensors``, ``card.json`` and optionally config/environment.

    Args:
        model: A :class:`MedicalClassifier` (possibly wrapped in DDP).
        run_dir: Output folder (created).
        config: Resolved config written as ``config.yaml`` (plain YAML types only).
        environment: Written as ``environment.json`` (see :func:`medrobust.run.environment.environment`).

    Returns:
        The run folder.
    """
    from safetensors.torch import save_file

    model = unwrap_model(model)
    if not isinstance(model, MedicalClassifier):
        raise ConfigError(
            f"save_checkpoint needs a MedicalClassifier (with a model card). Got {type(model).__name__}."
        )
    card = model.card
    if card.arch is None:
        raise ConfigError("save_checkpoint needs card.arch (build the model with build_classifier).")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT_TAG,
        "arch": card.arch,
        "arch_kwargs": json.dumps(model.arch_kwargs, sort_keys=True),
    }
    with atomic_path(run_dir / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    card.save(run_dir / CARD_NAME)
    if config is not None:
        import yaml

        atomic_write_text(run_dir / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))
    if environment is not None:
        atomic_write_json(run_dir / ENVIRONMENT_NAME, environment)
    return run_dir


def _build_recorded(
    arch: Any, card: ModelCard, arch_kwargs: Any, path: Path, origin: str
) -> MedicalClassifier:
    """Build ``arch`` with ``arch_kwargs`` (validated: names, types, size) for the weights in ``path``."""
    from medrobust.models.registry import check_arch_kwargs

    if not isinstance(arch, str) or not arch.strip():
        raise CheckpointError(
            f"{path}: the architecture name ({origin}) must be a non-empty string. Got {arch!r}."
        )
    try:
        kwargs = check_arch_kwargs(arch, arch_kwargs)
        return build_classifier(arch, card, **kwargs)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: cannot build the model ({origin}): {exc}") from None


def _load_safetensors(path: Path, card: ModelCard | None, opts: dict[str, Any]) -> MedicalClassifier:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {error_summary(exc)}") from None
    image_card = None
    if card is None:
        image_card = ModelCard.load(path.parent / CARD_NAME)
        card = image_card.network_card()
    if opts.get("arch"):
        arch, arch_origin = opts["arch"], "the 'arch' option"
    elif metadata.get("arch"):
        arch, arch_origin = metadata["arch"], "the file's metadata"
    else:
        arch, arch_origin = card.arch, "the card's arch"
    if not arch:
        raise CheckpointError(f"{path}: no architecture recorded; pass arch='small_cnn' (or similar).")
    if opts.get("arch_kwargs") is not None:
        arch_kwargs, kw_origin = opts["arch_kwargs"], "arch_kwargs from the 'arch_kwargs' option"
    else:
        kw_origin = "arch_kwargs from the file's metadata"
        try:
            arch_kwargs = json.loads(metadata.get("arch_kwargs", "{}"))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise CheckpointError(
                f"{path}: malformed arch_kwargs metadata (not JSON): {one_line(exc)}"
            ) from None
    check_finite_tensors(state, path)
    model = _build_recorded(arch, card, arch_kwargs, path, f"architecture from {arch_origin}, {kw_origin}")
    load_state_into(model, state, path)
    if image_card is not None and image_card.channels != "as_is":
        from medrobust.models.channels import with_channel_policy

        model = with_channel_policy(model, image_card)
    return model


def _load_torch_state(path: Path, card: ModelCard | None, opts: dict[str, Any]) -> MedicalClassifier:
    state = read_torch_state_dict(path)
    card = require_card(card, path, "PyTorch state-dict")
    if opts.get("arch"):
        arch, origin = opts["arch"], "the 'arch' option"
    else:
        arch, origin = card.arch, "the card's arch"
    if not arch:
        raise CheckpointError(
            f"{path}: a state dict does not say which network it belongs to; pass arch='densenet121' "
            "(or similar) or set card.arch."
        )
    model = _build_recorded(arch, card, opts.get("arch_kwargs") or {}, path, f"architecture from {origin}")
    load_state_into(model, state, path)
    return model


def _inline_identity_initializers(proto: Any) -> int:
    """Rewire ``Identity(initializer)`` nodes to the initializer itself (in place); returns how many.

    The torch exporter deduplicates equal weights (e.g. zero biases) through Identity
    nodes, which onnx2torch's Conv/Gemm converters cannot follow. The rewrite is exact.
    """
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {
        n.output[0]: n.input[0]
        for n in graph.node
        if n.op_type == "Identity" and n.input and n.input[0] in inits and n.output[0] not in outputs
    }
    if not alias:
        return 0
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output and n.output[0] in alias)]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)
    return len(alias)


def _convert_lowered(
    proto: Any, convert: Any, first: Exception, path: Path, opset: int | None
) -> tuple[Any, str]:
    """Convert a graph whose opset onnx2torch does not cover yet.

    First the official ONNX version converter; when that fails (it does on many
    exporter outputs), the opset number alone is relabelled, which is exact for the
    many operators whose newer versions only added data types (Identity, Constant,
    Shape, Reshape...). Either way the result is then checked against onnxruntime
    on the *original* file, so a relabelling that changed semantics is refused.
    """
    import copy

    from onnx import version_converter

    try:
        return convert(version_converter.convert_version(proto, ONNX_FALLBACK_OPSET)), "converted"
    except Exception as conv_exc:  # the version converter raises many exception types
        relabelled = copy.deepcopy(proto)
        for imp in relabelled.opset_import:
            if imp.domain in ("", "ai.onnx"):
                imp.version = ONNX_FALLBACK_OPSET
        try:
            return convert(relabelled), "relabelled (operators unchanged)"
        except Exception as exc:  # onnx2torch raises many exception types
            raise CheckpointError(
                f"{path}: could not convert the ONNX graph to torch: {first} (lowering opset {opset} to "
                f"{ONNX_FALLBACK_OPSET} failed too: {conv_exc}; relabelling failed: {exc})"
            ) from exc


def _load_onnx_external_data(proto: Any, path: Path) -> None:
    """Load external tensor data that lies in the model's folder; refuse locations outside it."""
    from onnx import external_data_helper

    base = path.resolve().parent
    external = [
        t for t in external_data_helper._get_all_tensors(proto) if external_data_helper.uses_external_data(t)
    ]
    for tensor in external:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if not location or Path(location).is_absolute() or base not in target.parents or not target.is_file():
            raise CheckpointError(
                f"{path}: tensor {tensor.name!r} keeps its data in {location!r}, which is not a file inside "
                f"the model's folder {base}; external data must sit beside the .onnx file."
            )
    if external:
        try:
            external_data_helper.load_external_data_for_model(proto, str(base))
        except Exception as exc:  # onnx raises several exception types for bad external data
            raise CheckpointError(
                f"{path}: cannot read the external tensor data: {error_summary(exc)}"
            ) from None


def _onnx_packages_missing(path: Path, exc: ImportError) -> CheckpointError:
    return CheckpointError(
        f"{path}: ONNX import needs onnx, onnxruntime and onnx2torch (pip install 'medrobust[onnx]'): {exc}"
    )


def onnx_to_torch(path: Path) -> tuple[nn.Module, str, list[int | None], list[str]]:
    """Convert an ONNX file's graph to torch with onnx2torch (classifiers and segmenters alike).

    External data is read only from beside the file, identity initializers are inlined, and a graph
    whose opset onnx2torch does not know yet is lowered to :data:`ONNX_FALLBACK_OPSET` first.

    Args:
        path: The ``.onnx`` file.

    Returns:
        ``(module, input name, input dims (None where dynamic), notes)``.

    Raises:
        CheckpointError: naming the file, for missing packages, an unreadable file, a graph that
            does not convert or not exactly one image input.
    """
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as exc:
        raise _onnx_packages_missing(path, exc) from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several exception types for unreadable files
        raise CheckpointError(f"{path}: not a readable ONNX file: {error_summary(exc)}") from None
    _load_onnx_external_data(proto, path)
    notes: list[str] = []
    _inline_identity_initializers(proto)
    try:
        module = convert(proto)
    except NotImplementedError as first:
        # onnx2torch lags behind recent opsets (e.g. Constant-19); the ONNX version converter
        # can often lower the graph. The onnxruntime check still runs on the original file.
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        module, how = _convert_lowered(proto, convert, first, path, opset)
        notes.append(f"ONNX opset {opset} {how} to {ONNX_FALLBACK_OPSET} for onnx2torch ({first}).")
    except Exception as exc:  # onnx2torch raises many exception types for bad graphs
        raise CheckpointError(
            f"{path}: could not convert the ONNX graph to torch: {error_summary(exc)}"
        ) from None
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise CheckpointError(f"{path}: expected one image input, found {[i.name for i in inputs]}.")
    dims = [d.dim_value if d.dim_value > 0 else None for d in inputs[0].type.tensor_type.shape.dim]
    return module, inputs[0].name, dims, notes


def _load_onnx(path: Path, card: ModelCard | None, opts: dict[str, Any]) -> MedicalClassifier:
    card = require_card(card, path, "ONNX")
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise _onnx_packages_missing(path, exc) from None
    module, input_name, dims, notes = onnx_to_torch(path)
    tol = float(opts.get("tolerance", 1e-4))
    x = sample_input(card, path, int(opts.get("n_check", 4)), int(opts.get("check_seed", 0)), dims)
    if len(dims) not in (0, x.dim()):
        raise CheckpointError(
            f"{path}: the model's input {input_name!r} has {len(dims)} dimensions {dims}, but the card "
            f"describes {x.dim()}-dimensional input (N, C + {card.spatial_dims} spatial, layout "
            f"{card.input_layout!r}); check the card's spatial_dims and input_layout."
        )
    x_model = x.permute(0, *range(2, x.dim()), 1).contiguous() if card.input_layout == "NHWC" else x
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ref = session.run(None, {input_name: x_model.numpy()})[0]
    except Exception as exc:  # onnxruntime raises its own exception hierarchy
        raise CheckpointError(
            f"{path}: onnxruntime could not run the model on {sample_text(card, x_model)}: "
            f"{error_summary(exc)}. Check the card's input_layout, in_channels and spatial_size."
        ) from None
    module.eval()
    check_finite_tensors(module.state_dict(), path)
    out = run_check(module, x_model, card, path, "ONNX")
    ref_t = torch.as_tensor(ref).float()
    if tuple(ref_t.shape) != tuple(out.shape):
        raise CheckpointError(
            f"{path}: the torch conversion returns shape {tuple(out.shape)} but onnxruntime "
            f"{tuple(ref_t.shape)}."
        )
    diff = float((out - ref_t).abs().max())
    msg = (
        f"Imported from ONNX file {path.name} via onnx2torch; max |output difference| against "
        f"onnxruntime on {x.shape[0]} random inputs within bounds {tuple(card.bounds)}: {diff:.3g} "
        f"(tolerance {tol:g})."
    )
    log.info("%s: %s", path, msg)
    if not diff <= tol:
        raise CheckpointError(
            f"{path}: the torch conversion disagrees with onnxruntime: max |output difference| "
            f"{diff:.3g} > tolerance {tol:g}."
        )
    card = card.model_copy(update={"source": str(path), "notes": [*card.notes, *notes, msg]})
    model = wrap_imported(module, card)
    model.import_info = {"format": "onnx", "max_abs_diff": diff, "tolerance": tol, "n_check": int(x.shape[0])}
    return model


def _load_exported(path: Path, card: ModelCard | None, opts: dict[str, Any]) -> MedicalClassifier:
    """Load a ``torch.export`` program (``.pt2``; only by suffix or format: it unpickles and runs code)."""
    card = require_card(card, path, "torch.export (.pt2)")
    program = load_exported_program(path)
    from medrobust.models.exported import ExportedModule, exported_input_shape

    static = exported_input_shape(program)
    if static is None:
        raise CheckpointError(
            f"{path}: the exported program must take one image tensor; it takes "
            f"{list(program.graph_signature.user_inputs)}."
        )
    if static and static[0] is not None:
        raise CheckpointError(
            f"{path}: the program was exported with a fixed batch size of {static[0]}; the audit runs "
            "batches of any size: export with dynamic_shapes={'x': {0: torch.export.Dim('batch')}}."
        )
    x = sample_input(card, path, int(opts.get("n_check", 2)), int(opts.get("check_seed", 0)), static)
    if len(static) != x.dim():
        raise CheckpointError(
            f"{path}: the program's input has {len(static)} dimensions {static}, but the card describes "
            f"{x.dim()}-dimensional input (N, C + {card.spatial_dims} spatial, layout "
            f"{card.input_layout!r}); check the card's spatial_dims and input_layout."
        )
    module = ExportedModule(program.module())
    check_finite_tensors(module.state_dict(), path)
    x_model = x.permute(0, *range(2, x.dim()), 1).contiguous() if card.input_layout == "NHWC" else x
    run_check(module, x_model, card, path, "torch.export")
    msg = f"Imported from torch.export program {path.name} (runs as exported: train/eval mode fixed)."
    card = card.model_copy(update={"source": str(path), "notes": [*card.notes, msg]})
    model = wrap_imported(module, card)
    model.import_info = {"format": "pt2"}
    return model


def _check_import_opts(opts: dict[str, Any]) -> None:
    unknown = sorted(set(opts) - set(_IMPORT_OPTS))
    if unknown:
        hint = did_you_mean(str(unknown[0]), list(_IMPORT_OPTS))
        raise ConfigError(
            f"load_model got unexpected option(s) {unknown}.{hint} Valid options: {sorted(_IMPORT_OPTS)}."
        )
    if "tolerance" in opts:
        opts["tolerance"] = check_float(opts["tolerance"], "tolerance", "load_model", low=0)
    if "n_check" in opts:
        opts["n_check"] = check_int(opts["n_check"], "n_check", "load_model", low=1, high=MAX_CHECK_SAMPLES)
    if "check_seed" in opts:
        opts["check_seed"] = check_int(opts["check_seed"], "check_seed", "load_model", low=0, high=2**63 - 1)
    if opts.get("arch") is not None and not isinstance(opts["arch"], str):
        raise ConfigError(f"The 'arch' parameter of load_model must be a string. Got {opts['arch']!r}.")


def load_model(
    path: str | Path,
    card: ModelCard | str | Path | dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    format: str | None = None,
    **import_opts: Any,
) -> MedicalClassifier:
    """Load a classifier for training or auditing, always as a :class:`MedicalClassifier`.

    The format comes from the suffix or from ``format``, never from the file's content:
    TorchScript, ``torch.export`` and ONNX files are programs (loading or running them executes
    their code), so they are read only as ``.ts``/``.torchscript``/``.jit``, ``.pt2`` and ``.onnx``
    files or with ``format="torchscript"``/``"pt2"``/``"onnx"``. ``.pt``/``.pth``/``.bin``/
    ``.ckpt``/``.pkl`` files are read as state dicts with ``torch.load(weights_only=True)``; a
    TorchScript archive under such a suffix is refused. Weights with NaN or inf values are
    refused whatever the format.

    Args:
        path: A medrobust run folder (or its ``model.safetensors``), an ``.onnx`` file,
            a TorchScript file, a ``torch.export`` ``.pt2`` file, a ``.pt``/``.pth`` state dict,
            a MONAI bundle folder (``configs/metadata.json``), ``"torchvision:NAME"`` or
            ``"timm:NAME"`` (with ``weights=``), or a live module's ``"module:..."`` name
            (:mod:`medrobust.models.live`).
        card: Model card (object, ``card.json`` path or dict). Required for imported
            models (ONNX, TorchScript, bare state dicts): it states the input layout,
            bounds, class names and whether the model outputs probabilities. Optional
            for run folders (their ``card.json`` is used).
        device: Where to put the model (``"auto"`` picks CUDA when present).
        format: Read ``path`` as ``"safetensors"``, ``"state_dict"``, ``"torchscript"``,
            ``"pt2"`` or ``"onnx"`` whatever its suffix (None: from the suffix).
        **import_opts: ``arch``/``arch_kwargs`` (bare state dicts), ``weights`` (local
            safetensors/state-dict file for ``torchvision:``/``timm:`` models; nothing is ever
            downloaded), ``tolerance`` (ONNX vs onnxruntime, default 1e-4), ``n_check`` and
            ``check_seed`` (sample used for the import check).

    A card with ``channels: "replicate"`` describes grey images fed to a multi-channel network:
    the network is loaded and checked with ``card.network_card()`` and the returned classifier
    repeats the image's channel inside (:mod:`medrobust.models.channels`).

    Returns:
        The model in eval mode on ``device``; ``model.import_info`` records how it was
        loaded (e.g. the ONNX max |output difference|), also noted in ``model.card.notes``.

    Raises:
        CheckpointError: missing/malformed files, an unsafe pickle payload, a TorchScript
            archive under a weights suffix, non-finite weights, a missing or invalid card for
            an imported model, a model whose outputs do not fit the card, or an ONNX
            conversion that disagrees with onnxruntime.
        ConfigError: an unknown ``format`` or import option, or invalid architecture arguments.
    """
    from medrobust.models.channels import with_channel_policy
    from medrobust.models.hub import parse_model_spec
    from medrobust.utils.device import resolve_device

    import_opts = dict(import_opts)
    _check_import_opts(import_opts)
    weights_file = import_opts.pop("weights", None)
    spec = parse_model_spec(path) if isinstance(path, (str, Path)) else None
    if spec is None and not isinstance(path, (str, Path)):
        raise ConfigError(
            "The 'path' parameter of load_model must be a path or a model name such as "
            f"'torchvision:resnet18'. Got {type(path).__name__}."
        )
    if spec is not None and spec[0] == "module":
        from medrobust.models.live import live_model

        if card is not None or weights_file is not None or format is not None:
            raise ConfigError(f"{path}: a live module carries its own card and weights; pass only the name.")
        model = live_model(str(path))
        return model.to(resolve_device(str(device))).eval()
    card_obj = resolve_card(card)
    net_card = card_obj.network_card() if card_obj is not None else None
    if spec is not None:
        from medrobust.models.hub import load_hub_model

        if format is not None:
            raise ConfigError(
                f"The 'format' parameter of load_model does not apply to {path}. Got {format!r}."
            )
        model = load_hub_model(spec[0], spec[1], net_card, weights_file)
        return with_channel_policy(model, card_obj).to(resolve_device(str(device))).eval()
    path = Path(path)
    if weights_file is not None:
        raise ConfigError(
            f"The 'weights' option of load_model applies to torchvision:NAME and timm:NAME models; {path} "
            "carries its own weights. Got weights="
            f"{str(weights_file)!r}."
        )
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder.")
    from medrobust.models.bundle import is_bundle, load_bundle

    if path.is_dir() and format is None and is_bundle(path):
        model = load_bundle(path, net_card, import_opts)
        return with_channel_policy(model, card_obj).to(resolve_device(str(device))).eval()
    fmt = detect_format(path, format)
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            others = sorted(
                p.name
                for p in path.iterdir()
                if p.suffix.lower() in {s for g in SUFFIXES.values() for s in g}
            )
            found = f"; it holds {others[:5]}: pass the model file itself (with --card)" if others else ""
            raise CheckpointError(f"{path}: not a medrobust run folder (no {WEIGHTS_NAME} inside){found}.")
        model = _load_safetensors(weights, net_card, import_opts)
        model.import_info = {"format": "medrobust"}
    elif fmt == "safetensors":
        model = _load_safetensors(path, net_card, import_opts)
        model.import_info = {"format": "medrobust"}
    elif fmt == "onnx":
        model = _load_onnx(path, net_card, import_opts)
    elif fmt == "torchscript":
        model = load_torchscript(path, net_card, import_opts)
    elif fmt == "pt2":
        model = _load_exported(path, net_card, import_opts)
    else:
        model = _load_torch_state(path, net_card, import_opts)
        model.import_info = {"format": "state_dict"}
    return with_channel_policy(model, card_obj).to(resolve_device(str(device))).eval()
