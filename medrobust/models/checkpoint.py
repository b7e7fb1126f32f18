"""Checkpoints: save run folders as safetensors, load them back, import ONNX/TorchScript.

A medrobust run folder holds ``model.safetensors`` (weights; architecture name and
keyword arguments in the safetensors metadata), ``card.json``, ``config.yaml`` (the
resolved training config) and ``environment.json`` (versions, device, seed).

Nothing is ever fully unpickled: ``.pt``/``.pth`` state dicts are read with
``torch.load(weights_only=True)`` and a file that would need arbitrary unpickling
(e.g. a pickled ``nn.Module``) is refused with :class:`~medrobust.errors.CheckpointError`.

TorchScript and ONNX files are programs: loading a TorchScript archive runs its
``__setstate__`` methods and calling either runs its graph, which can read and write
files. They are accepted only by suffix (``.ts``/``.torchscript``/``.jit``, ``.onnx``)
or an explicit ``format=``, never recognised from the content of a ``.pt`` file.
Weights holding NaN or inf are refused on load, naming the first offending tensor.
"""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.errors import CheckpointError, ConfigError
from medrobust.limits import MAX_IMAGE_PIXELS
from medrobust.models.card import ModelCard
from medrobust.models.classifier import MedicalClassifier, build_classifier, wrap_imported
from medrobust.registry import did_you_mean
from medrobust.utils.io import atomic_path, atomic_write_json, atomic_write_text
from medrobust.utils.logging import get_logger
from medrobust.validation import check_choice, check_float, check_int

log = get_logger("models.checkpoint")

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "card.json"
CONFIG_NAME = "config.yaml"
ENVIRONMENT_NAME = "environment.json"
FORMAT_TAG = "medrobust-classifier"

#: Formats ``load_model(format=...)`` accepts.
FORMATS = ("safetensors", "state_dict", "torchscript", "onnx")
#: Suffixes that select a format when ``format`` is not given (the content never does).
SUFFIXES: dict[str, tuple[str, ...]] = {
    "safetensors": (".safetensors",),
    "state_dict": (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"),
    "torchscript": (".ts", ".torchscript", ".jit"),
    "onnx": (".onnx",),
}
#: A zipped state dict may declare at most this many times its file size
#: (PyTorch stores weights uncompressed).
ZIP_MAX_EXPANSION = 4
#: Most samples an import check runs the model on.
MAX_CHECK_SAMPLES = 64
#: Opset an ONNX graph is lowered to when onnx2torch lacks a converter for the original one.
ONNX_FALLBACK_OPSET = 17
_IMPORT_OPTS = ("arch", "arch_kwargs", "tolerance", "n_check", "check_seed")


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


def resolve_card(card: ModelCard | str | Path | dict[str, Any] | None) -> ModelCard | None:
    """Accept a :class:`ModelCard`, a path to ``card.json``, a dict, or None."""
    if card is None or isinstance(card, ModelCard):
        return card
    if isinstance(card, (str, Path)):
        return ModelCard.load(card)
    if isinstance(card, dict):
        return ModelCard.from_mapping(card, "the 'card' parameter")
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


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_summary(exc: BaseException) -> str:
    """The informative line of an exception (TorchScript errors end with it, after a code listing)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if "Traceback" not in ln and "<--- HERE" not in ln and "~~~" not in ln]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    return _one_line(last if ":" in last or len(lines) == 1 else lines[0])


def check_finite_tensors(
    tensors: Mapping[str, torch.Tensor], path: str | Path, what: str = "weights"
) -> None:
    """Refuse NaN or infinite values in floating-point tensors, naming the first offending tensor.

    Args:
        tensors: Name -> tensor (a state dict).
        path: The file the tensors came from (named in the message).
        what: What the tensors are ("weights", "denoiser weights").

    Raises:
        CheckpointError: naming the file, the tensor and how many values are NaN/inf.
    """
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor) or not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        if tensor.device.type == "meta":
            continue
        finite = torch.isfinite(tensor)
        if bool(finite.all()):
            continue
        n_nan = int(torch.isnan(tensor).sum())
        n_inf = int((~finite).sum()) - n_nan
        kinds = ", ".join(f"{n} {k}" for n, k in ((n_nan, "NaN"), (n_inf, "inf")) if n)
        raise CheckpointError(
            f"{path}: the {what} hold non-finite values: tensor {name!r} {tuple(tensor.shape)} has {kinds} "
            "(the file is corrupt or training diverged); retrain or re-export the model."
        )


def _load_state_into(model: MedicalClassifier, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load a full MedicalClassifier state dict, or a bare backbone state dict; name what differs."""
    candidates = [model, model.backbone]
    expected_by = [m.state_dict() for m in candidates]
    keys = set(state)

    def distance(expected: dict[str, torch.Tensor]) -> int:
        return len(keys ^ set(expected))

    best = min(range(len(candidates)), key=lambda i: distance(expected_by[i]))
    target, expected = candidates[best], expected_by[best]
    missing = sorted(set(expected) - keys)
    unexpected = sorted(keys - set(expected))
    shapes = [
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in sorted(keys & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}" + (f" ({len(missing)} in all)" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(
                f"unexpected {unexpected[:3]}"
                + (f" ({len(unexpected)} in all)" if len(unexpected) > 3 else "")
            )
        if shapes:
            k, got, want = shapes[0]
            parts.append(f"tensor {k!r} is {got} in the file but {want} in the model")
        card = model.card
        raise CheckpointError(
            f"{path}: the weights do not match architecture {card.arch!r} with arch_kwargs "
            f"{model.arch_kwargs} and the card's sizes (in_channels {card.in_channels}, "
            f"{card.num_classes} classes): {'; '.join(parts)}."
        )
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: cannot load the weights: {_error_summary(exc)}") from None


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
        raise CheckpointError(f"{path}: not a readable safetensors file: {_error_summary(exc)}") from None
    if card is None:
        card = ModelCard.load(path.parent / CARD_NAME)
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
                f"{path}: malformed arch_kwargs metadata (not JSON): {_one_line(exc)}"
            ) from None
    check_finite_tensors(state, path)
    model = _build_recorded(arch, card, arch_kwargs, path, f"architecture from {arch_origin}, {kw_origin}")
    _load_state_into(model, state, path)
    return model


def _zip_names(path: Path) -> list[str] | None:
    """Member names of a zip file (None when ``path`` is not a readable zip). Nothing is extracted."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


def _is_torchscript_archive(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (used only to *refuse* it under a weights suffix)."""
    names = _zip_names(path) or []
    return any(n.endswith("constants.pkl") or "/code/" in n or n.startswith("code/") for n in names)


def _check_zip_sizes(path: Path) -> None:
    """Refuse a zip whose members declare far more bytes than the file holds (a decompression bomb)."""
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(max(info.file_size, 0) for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # torch.load reports unreadable files itself
    size = path.stat().st_size
    if declared > ZIP_MAX_EXPANSION * size + 2**20:
        raise CheckpointError(
            f"{path}: the archive declares {declared} bytes of content in a {size}-byte file; PyTorch "
            f"saves weights uncompressed, so more than {ZIP_MAX_EXPANSION}x expansion is refused."
        )


def _starts_like_pickle(path: Path) -> bool:
    """Whether the file begins with a pickle protocol header (byte 0x80, then 2-5), or is a zip."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head == b"PK"


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
    if _is_torchscript_archive(path):
        raise CheckpointError(
            f"{path}: this is a TorchScript archive, i.e. a program: loading and running it executes its "
            f"code. A {path.suffix or 'suffix-less'} file is read as weights only (torch.load with "
            "weights_only=True). If you trust the file, rename it to .ts (or .torchscript/.jit) or pass "
            "format='torchscript'."
        )
    if _zip_names(path) is not None:
        _check_zip_sizes(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()]
        detail = next((ln for ln in lines if "GLOBAL" in ln), "")
        if not detail and not _starts_like_pickle(path):  # e.g. safetensors or random bytes under .pt
            other = next((ln for ln in lines if ln.startswith("Unsupported")), _error_summary(exc))
            raise CheckpointError(
                f"{path}: not a readable PyTorch file (torch.load with weights_only=True: "
                f"{_one_line(other)}); expected a state dict saved with torch.save(model.state_dict(), ...)."
            ) from None
        raise CheckpointError(
            f"{path}: refused to load: the file holds a pickled Python object that would need full "
            "unpickling, which can run arbitrary code. Only plain state dicts (torch.load with "
            "weights_only=True), safetensors, ONNX and TorchScript are accepted; re-save the weights "
            f"with torch.save(model.state_dict(), ...) or safetensors. {_one_line(detail)}".strip()
        ) from None
    except (
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
    ) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch file: {_error_summary(exc)}") from None
    except (MemoryError, RecursionError):
        raise CheckpointError(
            f"{path}: not a readable PyTorch file (its contents are too large or deep)."
        ) from None
    state = _find_state_dict(obj, path)
    check_finite_tensors(state, path)
    card = _require_card(card, path, "PyTorch state-dict")
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
            if math.prod(spatial) > MAX_IMAGE_PIXELS:
                raise CheckpointError(
                    f"{path}: the model's input shape {static} asks for {math.prod(spatial)} pixels per "
                    f"image; at most {MAX_IMAGE_PIXELS} are accepted (set card.spatial_size)."
                )
    if spatial is None:
        raise CheckpointError(
            f"{path}: cannot check the imported model without an input size; set card.spatial_size."
        )
    if static is not None and static and static[0] is not None:
        n = int(static[0])
        if not 1 <= n <= MAX_CHECK_SAMPLES:
            raise CheckpointError(
                f"{path}: the model's input has a fixed batch size of {n}; medrobust checks imports on "
                f"1 to {MAX_CHECK_SAMPLES} samples (export it with a dynamic batch axis)."
            )
    gen = torch.Generator().manual_seed(int(seed))
    low, high = card.bounds
    x = torch.rand((n, card.in_channels, *spatial), generator=gen)
    return low + (high - low) * x


def _first_output(out: Any) -> Any:
    if isinstance(out, dict) and out:
        out = next(iter(out.values()))
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    return out


def _describe_output(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    kind = type(out).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind} ({_one_line(repr(out), 60)})"


def _sample_text(card: ModelCard, x_model: torch.Tensor) -> str:
    size = list(card.spatial_size) if card.spatial_size is not None else "from the model"
    return (
        f"a {tuple(x_model.shape)} sample built from the card (input_layout {card.input_layout!r}, "
        f"in_channels {card.in_channels}, spatial_size {size})"
    )


def _run_check(module: Any, x_model: torch.Tensor, card: ModelCard, path: Path, fmt: str) -> torch.Tensor:
    """Run the imported model once on ``x_model``; errors name the file, the card's layout and the output."""
    try:
        with torch.no_grad():
            out = _first_output(module(x_model))
    except Exception as exc:  # third-party models raise anything; the message says what was fed
        raise CheckpointError(
            f"{path}: the {fmt} model failed on {_sample_text(card, x_model)}: {_error_summary(exc)}. "
            "Check the card's input_layout, in_channels and spatial_size."
        ) from None
    _check_outputs(out, card, path, x_model)
    return out.float()


def _check_outputs(out: Any, card: ModelCard, path: Path, x_model: torch.Tensor | None = None) -> None:
    fed = "" if x_model is None else f"on {_sample_text(card, x_model)} "
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise CheckpointError(
            f"{path}: {fed}the model returned {_describe_output(out)}; expected floating-point "
            f"{card.outputs} of shape (N, {card.num_classes})."
        )
    n = None if x_model is None else x_model.shape[0]
    if out.dim() < 2 or out.flatten(1).shape[1] != card.num_classes or (n is not None and out.shape[0] != n):
        raise CheckpointError(
            f"{path}: {fed}the model returns shape {tuple(out.shape)} but the card lists "
            f"{card.num_classes} classes {card.class_names[:10]}"
            + (f" (expected ({n}, {card.num_classes}))." if n is not None else ".")
        )
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(
            f"{path}: {fed}the model returned non-finite outputs (NaN/inf) on inputs inside the card's "
            f"bounds {list(card.bounds)}; its weights or the card's bounds are wrong."
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
                f"{path}: cannot read the external tensor data: {_error_summary(exc)}"
            ) from None


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
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several exception types for unreadable files
        raise CheckpointError(f"{path}: not a readable ONNX file: {_error_summary(exc)}") from None
    _load_onnx_external_data(proto, path)
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
        raise CheckpointError(
            f"{path}: could not convert the ONNX graph to torch: {_error_summary(exc)}"
        ) from None
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise CheckpointError(f"{path}: expected one image input, found {[i.name for i in inputs]}.")
    dims = [d.dim_value if d.dim_value > 0 else None for d in inputs[0].type.tensor_type.shape.dim]
    tol = float(opts.get("tolerance", 1e-4))
    x = _sample_input(card, path, int(opts.get("n_check", 4)), int(opts.get("check_seed", 0)), dims)
    if len(dims) not in (0, x.dim()):
        raise CheckpointError(
            f"{path}: the model's input {inputs[0].name!r} has {len(dims)} dimensions {dims}, but the card "
            f"describes {x.dim()}-dimensional input (N, C + {card.spatial_dims} spatial, layout "
            f"{card.input_layout!r}); check the card's spatial_dims and input_layout."
        )
    x_model = x.permute(0, *range(2, x.dim()), 1).contiguous() if card.input_layout == "NHWC" else x
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ref = session.run(None, {inputs[0].name: x_model.numpy()})[0]
    except Exception as exc:  # onnxruntime raises its own exception hierarchy
        raise CheckpointError(
            f"{path}: onnxruntime could not run the model on {_sample_text(card, x_model)}: "
            f"{_error_summary(exc)}. Check the card's input_layout, in_channels and spatial_size."
        ) from None
    module.eval()
    check_finite_tensors(module.state_dict(), path)
    out = _run_check(module, x_model, card, path, "ONNX")
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


def _load_torchscript(path: Path, card: ModelCard | None, opts: dict[str, Any]) -> MedicalClassifier:
    """Load a TorchScript program (only ever by suffix or an explicit format: it runs code)."""
    card = _require_card(card, path, "TorchScript")
    x = _sample_input(card, path, int(opts.get("n_check", 2)), int(opts.get("check_seed", 0)), None)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch.jit.load raises RuntimeError, ValueError, and the archive's own errors
        raise CheckpointError(f"{path}: not a loadable TorchScript file: {_error_summary(exc)}") from None
    module.eval()
    check_finite_tensors(module.state_dict(), path)
    x_model = x.permute(0, *range(2, x.dim()), 1).contiguous() if card.input_layout == "NHWC" else x
    _run_check(module, x_model, card, path, "TorchScript")
    msg = f"Imported from TorchScript file {path.name}."
    card = card.model_copy(update={"source": str(path), "notes": [*card.notes, msg]})
    model = wrap_imported(module, card)
    model.import_info = {"format": "torchscript"}
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


def _detect_format(path: Path, fmt: str | None) -> str:
    """The format to read ``path`` as: the explicit ``fmt``, else the suffix. Never sniffed from content."""
    if fmt is not None:
        if not isinstance(fmt, str):
            raise ConfigError(f"The 'format' parameter of load_model must be a string. Got {fmt!r}.")
        fmt = check_choice(fmt.strip().lower().replace("-", "_"), "format", FORMATS, owner="load_model")
        if path.is_dir() and fmt != "safetensors":
            raise ConfigError(
                f"The 'format' parameter of load_model is {fmt!r}, but {path} is a folder (a medrobust run "
                "folder holds safetensors weights); pass the model file itself."
            )
        return fmt
    if path.is_dir():
        return "safetensors"
    suffix = path.suffix.lower()
    for name, suffixes in SUFFIXES.items():
        if suffix in suffixes:
            return name
    known = ", ".join(s for group in SUFFIXES.values() for s in group)
    raise CheckpointError(
        f"{path}: unsupported model format {suffix or '(no suffix)'!r}. Expected a run folder or one of "
        f"{known}; or pass format= one of {list(FORMATS)}."
    )


def load_model(
    path: str | Path,
    card: ModelCard | str | Path | dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    format: str | None = None,
    **import_opts: Any,
) -> MedicalClassifier:
    """Load a classifier for training or auditing, always as a :class:`MedicalClassifier`.

    The format comes from the suffix or from ``format``, never from the file's content:
    TorchScript and ONNX files are programs (loading or running them executes their code),
    so they are read only as ``.ts``/``.torchscript``/``.jit`` and ``.onnx`` files or with
    ``format="torchscript"``/``"onnx"``. ``.pt``/``.pth``/``.bin``/``.ckpt``/``.pkl`` files are
    read as state dicts with ``torch.load(weights_only=True)``; a TorchScript archive under such
    a suffix is refused. Weights with NaN or inf values are refused whatever the format.

    Args:
        path: A medrobust run folder (or its ``model.safetensors``), an ``.onnx`` file,
            a TorchScript file, or a ``.pt``/``.pth`` state dict.
        card: Model card (object, ``card.json`` path or dict). Required for imported
            models (ONNX, TorchScript, bare state dicts): it states the input layout,
            bounds, class names and whether the model outputs probabilities. Optional
            for run folders (their ``card.json`` is used).
        device: Where to put the model (``"auto"`` picks CUDA when present).
        format: Read ``path`` as ``"safetensors"``, ``"state_dict"``, ``"torchscript"`` or
            ``"onnx"`` whatever its suffix (None: from the suffix).
        **import_opts: ``arch``/``arch_kwargs`` (bare state dicts), ``tolerance``
            (ONNX vs onnxruntime, default 1e-4), ``n_check`` and ``check_seed`` (sample
            used for the import check).

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
    from medrobust.utils.device import resolve_device

    import_opts = dict(import_opts)
    _check_import_opts(import_opts)
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder.")
    fmt = _detect_format(path, format)
    card_obj = resolve_card(card)
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
        model = _load_safetensors(weights, card_obj, import_opts)
        model.import_info = {"format": "medrobust"}
    elif fmt == "safetensors":
        model = _load_safetensors(path, card_obj, import_opts)
        model.import_info = {"format": "medrobust"}
    elif fmt == "onnx":
        model = _load_onnx(path, card_obj, import_opts)
    elif fmt == "torchscript":
        model = _load_torchscript(path, card_obj, import_opts)
    else:
        model = _load_torch_state(path, card_obj, import_opts)
        model.import_info = {"format": "state_dict"}
    return model.to(resolve_device(str(device))).eval()
