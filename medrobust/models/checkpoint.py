"""Checkpoints: save run folders as safetensors, load them back, import ONNX/TorchScript.

A medrobust run folder holds ``model.safetensors`` (weights; architecture name and
keyword arguments in the safetensors metadata), ``card.json``, ``config.yaml`` (the
resolved training config) and ``environment.json`` (versions, device, seed).

Nothing is ever fully unpickled: ``.pt``/``.pth`` state dicts are read with
``torch.load(weights_only=True)`` and a file that would need arbitrary unpickling
(e.g. a pickled ``nn.Module``) is refused with :class:`~medrobust.errors.CheckpointError`.
"""

from __future__ import annotations

import json
import pickle
import platform
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.errors import CheckpointError, ConfigError
from medrobust.models.card import ModelCard
from medrobust.models.classifier import MedicalClassifier, build_classifier, wrap_imported
from medrobust.utils.io import atomic_path, atomic_write_json, atomic_write_text
from medrobust.utils.logging import get_logger

log = get_logger("models.checkpoint")

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "card.json"
CONFIG_NAME = "config.yaml"
ENVIRONMENT_NAME = "environment.json"
FORMAT_TAG = "medrobust-classifier"

_TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript", ".bin", ".ckpt", ".pkl", ".pickle")
#: Opset an ONNX graph is lowered to when onnx2torch lacks a converter for the original one.
ONNX_FALLBACK_OPSET = 17
_IMPORT_OPTS = ("arch", "arch_kwargs", "tolerance", "n_check", "check_seed")


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the module inside a ``DistributedDataParallel``/``DataParallel`` wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def environment_info(device: str | torch.device | None = None, seed: int | None = None) -> dict[str, Any]:
    """Versions and runtime facts recorded beside every checkpoint."""
    import medrobust

    try:
        import monai

        monai_version = monai.__version__
    except ImportError:  # pragma: no cover - monai is a hard dependency
        monai_version = None
    from medrobust.distributed import world_size

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "monai": monai_version,
        "medrobust": medrobust.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "device": None if device is None else str(device),
        "seed": seed,
        "world_size": world_size(),
    }


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
        environment: Written as ``environment.json`` (see :func:`environment_info`).

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


def resolve_card(card: ModelCard | str | Path | dict[str, Any] | None) -> ModelCard | None:
    """Accept a :class:`ModelCard`, a path to ``card.json``, a dict, or None."""
    if card is None or isinstance(card, ModelCard):
        return card
    if isinstance(card, (str, Path)):
        return ModelCard.load(card)
    if isinstance(card, dict):
        try:
            return ModelCard.model_validate(card)
        except ValueError as exc:
            raise ConfigError(f"The 'card' parameter is not a valid model card: {exc}") from None
    raise ConfigError(
        f"The 'card' parameter must be a ModelCard, a path to card.json or a dict. Got {type(card).__name__}."
    )


def _require_card(card: ModelCard | None, path: Path, fmt: str) -> ModelCard:
    if card is None:
        raise CheckpointError(
            f"{path}: importing a {fmt} model needs a model card that you supply or confirm: pass "
            "card=ModelCard(...) or card='card.json' giving in_channels, class_names, bounds, "
            "spatial_size, input_layout ('NCHW' or 'NHWC') and outputs ('logits', 'probabilities' "
            "or 'log_probabilities')."
        )
    return card


def _load_state_into(model: MedicalClassifier, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load a full MedicalClassifier state dict, or a bare backbone state dict."""
    keys = set(state)
    try:
        if keys == set(model.state_dict()):
            model.load_state_dict(state, strict=True)
        else:
            model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: the weights do not match architecture {model.card.arch!r} "
            f"with the card's sizes: {str(exc).splitlines()[0]}"
        ) from None


def _load_safetensors(path: Path, card: ModelCard | None, opts: dict[str, Any]) -> MedicalClassifier:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from None
    if card is None:
        card = ModelCard.load(path.parent / CARD_NAME)
    arch = opts.get("arch") or metadata.get("arch") or card.arch
    if not arch:
        raise CheckpointError(f"{path}: no architecture recorded; pass arch='small_cnn' (or similar).")
    try:
        arch_kwargs = opts.get("arch_kwargs") or json.loads(metadata.get("arch_kwargs", "{}"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: malformed arch_kwargs metadata: {exc}") from None
    model = build_classifier(arch, card, **arch_kwargs)
    _load_state_into(model, state, path)
    return model


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _find_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return {k.removeprefix("module."): v for k, v in obj.items()}
    raise CheckpointError(
        f"{path}: expected a state dict (str -> tensor) but found {type(obj).__name__}; "
        "save model.state_dict() or use safetensors."
    )


def _load_torch_state(path: Path, card: ModelCard | None, opts: dict[str, Any]) -> MedicalClassifier:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).split("\n\n")[-1].strip().splitlines()
        detail = next((ln for ln in first if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise CheckpointError(
            f"{path}: refused to load: the file holds a pickled Python object that would need full "
            "unpickling, which can run arbitrary code. Only plain state dicts (torch.load with "
            "weights_only=True), safetensors, ONNX and TorchScript are accepted; re-save the weights "
            f"with torch.save(model.state_dict(), ...) or safetensors. {detail}".strip()
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch file: {exc}") from None
    state = _find_state_dict(obj, path)
    card = _require_card(card, path, "PyTorch state-dict")
    arch = opts.get("arch") or card.arch
    if not arch:
        raise CheckpointError(
            f"{path}: a state dict does not say which network it belongs to; pass arch='densenet121' "
            "(or similar) or set card.arch."
        )
    model = build_classifier(arch, card, **(opts.get("arch_kwargs") or {}))
    _load_state_into(model, state, path)
    return model


def _sample_input(
    card: ModelCard, path: Path, n: int, seed: int, static: list[int | None] | None
) -> torch.Tensor:
    """Random NCHW sample inside the card's bounds, sized by the card or the model's static shape."""
    spatial = card.spatial_size
    if spatial is None and static is not None and len(static) == 2 + card.spatial_dims:
        dims = static[2:] if card.input_layout == "NCHW" else static[1:-1]
        if all(d is not None for d in dims):
            spatial = tuple(int(d) for d in dims)  # type: ignore[arg-type]
    if spatial is None:
        raise CheckpointError(
            f"{path}: cannot check the imported model without an input size; set card.spatial_size."
        )
    if static is not None and static and static[0] is not None:
        n = int(static[0])
    gen = torch.Generator().manual_seed(int(seed))
    low, high = card.bounds
    x = torch.rand((n, card.in_channels, *spatial), generator=gen)
    return low + (high - low) * x


def _first_output(out: Any) -> torch.Tensor:
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out


def _check_outputs(out: torch.Tensor, card: ModelCard, path: Path) -> None:
    if out.dim() < 2 or out.flatten(1).shape[1] != card.num_classes:
        raise CheckpointError(
            f"{path}: the model returns shape {tuple(out.shape)} but the card lists "
            f"{card.num_classes} classes {card.class_names}."
        )


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


def _load_onnx(path: Path, card: ModelCard | None, opts: dict[str, Any]) -> MedicalClassifier:
    card = _require_card(card, path, "ONNX")
    try:
        import onnx
        import onnxruntime as ort
        from onnx2torch import convert
    except ImportError as exc:
        raise CheckpointError(
            f"{path}: ONNX import needs onnx, onnxruntime and onnx2torch "
            f"(pip install 'medrobust[onnx]'): {exc}"
        ) from None
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises several exception types for unreadable files
        raise CheckpointError(f"{path}: not a readable ONNX file: {exc}") from exc
    notes: list[str] = []
    _inline_identity_initializers(proto)
    try:
        module = convert(proto)
    except NotImplementedError as first:
        # onnx2torch lags behind recent opsets (e.g. Constant-19); the ONNX version converter
        # can often lower the graph. The onnxruntime check below still runs on the original file.
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        module, how = _convert_lowered(proto, convert, first, path, opset)
        notes.append(f"ONNX opset {opset} {how} to {ONNX_FALLBACK_OPSET} for onnx2torch ({first}).")
    except Exception as exc:  # onnx2torch raises many exception types for bad graphs
        raise CheckpointError(f"{path}: could not convert the ONNX graph to torch: {exc}") from exc
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise CheckpointError(f"{path}: expected one image input, found {[i.name for i in inputs]}.")
    dims = [d.dim_value if d.dim_value > 0 else None for d in inputs[0].type.tensor_type.shape.dim]
    tol = float(opts.get("tolerance", 1e-4))
    x = _sample_input(card, path, int(opts.get("n_check", 4)), int(opts.get("check_seed", 0)), dims)
    x_model = x.permute(0, *range(2, x.dim()), 1).contiguous() if card.input_layout == "NHWC" else x
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ref = session.run(None, {inputs[0].name: x_model.numpy()})[0]
    except Exception as exc:  # onnxruntime raises its own exception hierarchy
        raise CheckpointError(
            f"{path}: onnxruntime could not run the model on a {tuple(x_model.shape)} "
            f"sample (check card.input_layout and spatial_size): {exc}"
        ) from exc
    module.eval()
    with torch.no_grad():
        out = _first_output(module(x_model)).float()
    _check_outputs(out, card, path)
    diff = float((out - torch.from_numpy(ref).float()).abs().max())
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


def _load_torchscript(path: Path, card: ModelCard | None, opts: dict[str, Any]) -> MedicalClassifier:
    card = _require_card(card, path, "TorchScript")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: not a loadable TorchScript file: {exc}") from None
    module.eval()
    x = _sample_input(card, path, int(opts.get("n_check", 2)), int(opts.get("check_seed", 0)), None)
    x_model = x.permute(0, *range(2, x.dim()), 1).contiguous() if card.input_layout == "NHWC" else x
    with torch.no_grad():
        _check_outputs(_first_output(module(x_model)), card, path)
    msg = f"Imported from TorchScript file {path.name}."
    card = card.model_copy(update={"source": str(path), "notes": [*card.notes, msg]})
    model = wrap_imported(module, card)
    model.import_info = {"format": "torchscript"}
    return model


def load_model(
    path: str | Path,
    card: ModelCard | str | Path | dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    **import_opts: Any,
) -> MedicalClassifier:
    """Load a classifier for training or auditing, always as a :class:`MedicalClassifier`.

    Args:
        path: A medrobust run folder (or its ``model.safetensors``), an ``.onnx`` file,
            a TorchScript file, or a ``.pt``/``.pth`` state dict.
        card: Model card (object, ``card.json`` path or dict). Required for imported
            models (ONNX, TorchScript, bare state dicts): it states the input layout,
            bounds, class names and whether the model outputs probabilities. Optional
            for run folders (their ``card.json`` is used).
        device: Where to put the model (``"auto"`` picks CUDA when present).
        **import_opts: ``arch``/``arch_kwargs`` (bare state dicts), ``tolerance``
            (ONNX vs onnxruntime, default 1e-4), ``n_check`` and ``check_seed`` (sample
            used for the import check).

    Returns:
        The model in eval mode on ``device``; ``model.import_info`` records how it was
        loaded (e.g. the ONNX max |output difference|), also noted in ``model.card.notes``.

    Raises:
        CheckpointError: missing/malformed files, an unsafe pickle payload, a missing card
            for an imported model, or an ONNX conversion that disagrees with onnxruntime.
    """
    from medrobust.utils.device import resolve_device

    unknown = sorted(set(import_opts) - set(_IMPORT_OPTS))
    if unknown:
        raise ConfigError(
            f"load_model got unexpected option(s) {unknown}. Valid options: {sorted(_IMPORT_OPTS)}."
        )
    path = Path(path)
    card_obj = resolve_card(card)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder.")
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{path}: not a medrobust run folder (no {WEIGHTS_NAME} inside).")
        model = _load_safetensors(weights, card_obj, import_opts)
        model.import_info = {"format": "medrobust"}
    else:
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            model = _load_safetensors(path, card_obj, import_opts)
            model.import_info = {"format": "medrobust"}
        elif suffix == ".onnx":
            model = _load_onnx(path, card_obj, import_opts)
        elif suffix in _TORCH_SUFFIXES:
            if _is_torchscript_archive(path):
                model = _load_torchscript(path, card_obj, import_opts)
            else:
                model = _load_torch_state(path, card_obj, import_opts)
                model.import_info = {"format": "state_dict"}
        else:
            raise CheckpointError(
                f"{path}: unsupported model format {suffix!r}. Expected a run folder, .safetensors, "
                f".onnx, or a TorchScript/state-dict file ({', '.join(_TORCH_SUFFIXES)})."
            )
    return model.to(resolve_device(str(device))).eval()
