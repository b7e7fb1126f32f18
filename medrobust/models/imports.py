"""Reading third-party model files and checking imported models against their cards.

The pieces every importer shares (:mod:`~medrobust.models.checkpoint` for run folders, ONNX,
TorchScript and ``.pt2`` files; :mod:`~medrobust.models.hub`, :mod:`~medrobust.models.bundle`,
:mod:`~medrobust.models.live` and :mod:`~medrobust.models.probe`): weights read without
unpickling objects (``torch.load(weights_only=True)``, safetensors), NaN/inf refused, zip bombs
refused, state dicts matched to a network with a message naming what differs, the format
chosen by suffix (never by content), and the import check that runs a model once on a random
sample inside the card's bounds.
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medrobust.errors import CheckpointError, ConfigError
from medrobust.limits import MAX_IMAGE_PIXELS
from medrobust.models.card import ModelCard
from medrobust.models.classifier import MedicalClassifier, wrap_imported
from medrobust.validation import check_choice

#: Formats ``load_model(format=...)`` accepts.
FORMATS = ("safetensors", "state_dict", "torchscript", "pt2", "onnx")


#: Suffixes that select a format when ``format`` is not given (the content never does).
SUFFIXES: dict[str, tuple[str, ...]] = {
    "safetensors": (".safetensors",),
    "state_dict": (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"),
    "torchscript": (".ts", ".torchscript", ".jit"),
    "pt2": (".pt2",),
    "onnx": (".onnx",),
}


#: A zipped state dict may declare at most this many times its file size
#: (PyTorch stores weights uncompressed).
ZIP_MAX_EXPANSION = 4


#: Most samples an import check runs the model on.
MAX_CHECK_SAMPLES = 64


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


def require_card(card: ModelCard | None, path: Path, fmt: str) -> ModelCard:
    """``card``, or a one-line error saying an imported ``fmt`` model needs one (and how to write it)."""
    if card is None:
        raise CheckpointError(
            f"{path}: importing a {fmt} model needs a model card that you supply or confirm: pass "
            "card=ModelCard(...) or card='card.json' giving in_channels, class_names, bounds, "
            "spatial_size, input_layout ('NCHW' or 'NHWC') and outputs ('logits', 'probabilities' "
            "or 'log_probabilities'); `medrobust card init` writes one by probing the model."
        )
    return card


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_summary(exc: BaseException) -> str:
    """The informative line of an exception (TorchScript errors end with it, after a code listing)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if "Traceback" not in ln and "<--- HERE" not in ln and "~~~" not in ln]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    return one_line(last if ":" in last or len(lines) == 1 else lines[0])


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


def load_state_into(model: MedicalClassifier, state: dict[str, torch.Tensor], path: Path) -> None:
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
        raise CheckpointError(f"{path}: cannot load the weights: {error_summary(exc)}") from None


def zip_names(path: Path) -> list[str] | None:
    """Member names of a zip file (None when ``path`` is not a readable zip). Nothing is extracted."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


def is_torchscript_archive(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (used only to *refuse* it under a weights suffix)."""
    names = zip_names(path) or []
    return any(n.endswith("constants.pkl") or "/code/" in n or n.startswith("code/") for n in names)


def check_zip_sizes(path: Path) -> None:
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


def read_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``torch.save``-d state dict with ``weights_only=True`` (never a full unpickle).

    The tensors are checked for NaN/inf; a ``module.`` prefix (DDP) is removed and a dict
    nesting the weights under ``state_dict``/``model_state_dict``/``model`` is unwrapped.

    Raises:
        CheckpointError: a TorchScript archive under a weights suffix, a decompression bomb,
            a pickled object that needs full unpickling, an unreadable file, non-finite weights.
    """
    if is_torchscript_archive(path):
        raise CheckpointError(
            f"{path}: this is a TorchScript archive, i.e. a program: loading and running it executes its "
            f"code. A {path.suffix or 'suffix-less'} file is read as weights only (torch.load with "
            "weights_only=True). If you trust the file, rename it to .ts (or .torchscript/.jit) or pass "
            "format='torchscript'."
        )
    if zip_names(path) is not None:
        check_zip_sizes(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()]
        detail = next((ln for ln in lines if "GLOBAL" in ln), "")
        if not detail and not _starts_like_pickle(path):  # e.g. safetensors or random bytes under .pt
            other = next((ln for ln in lines if ln.startswith("Unsupported")), error_summary(exc))
            raise CheckpointError(
                f"{path}: not a readable PyTorch file (torch.load with weights_only=True: "
                f"{one_line(other)}); expected a state dict saved with torch.save(model.state_dict(), ...)."
            ) from None
        raise CheckpointError(
            f"{path}: refused to load: the file holds a pickled Python object that would need full "
            "unpickling, which can run arbitrary code. Only plain state dicts (torch.load with "
            "weights_only=True), safetensors, ONNX and TorchScript are accepted; re-save the weights "
            f"with torch.save(model.state_dict(), ...) or safetensors. {one_line(detail)}".strip()
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
        raise CheckpointError(f"{path}: not a readable PyTorch file: {error_summary(exc)}") from None
    except (MemoryError, RecursionError):
        raise CheckpointError(
            f"{path}: not a readable PyTorch file (its contents are too large or deep)."
        ) from None
    state = _find_state_dict(obj, path)
    check_finite_tensors(state, path)
    return state


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``weights_only`` PyTorch file (chosen by suffix).

    Raises:
        CheckpointError: an unsupported suffix, an unreadable or unsafe file, non-finite weights.
    """
    suffix = path.suffix.lower()
    if suffix in SUFFIXES["safetensors"]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file: {error_summary(exc)}") from None
        check_finite_tensors(state, path)
        return {k.removeprefix("module."): v for k, v in state.items()}
    if suffix in SUFFIXES["state_dict"]:
        return read_torch_state_dict(path)
    known = ", ".join((*SUFFIXES["safetensors"], *SUFFIXES["state_dict"]))
    raise CheckpointError(
        f"{path}: weights must be a safetensors file or a PyTorch state dict ({known}). "
        f"Got {suffix or 'no suffix'!r}."
    )


def sample_input(
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
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind} ({one_line(repr(out), 60)})"


def sample_text(card: ModelCard, x_model: torch.Tensor) -> str:
    """How the import-check sample was built, for messages."""
    size = list(card.spatial_size) if card.spatial_size is not None else "from the model"
    return (
        f"a {tuple(x_model.shape)} sample built from the card (input_layout {card.input_layout!r}, "
        f"in_channels {card.in_channels}, spatial_size {size})"
    )


def run_check(module: Any, x_model: torch.Tensor, card: ModelCard, path: Path, fmt: str) -> torch.Tensor:
    """Run the imported model once on ``x_model``; errors name the file, the card's layout and the output."""
    try:
        with torch.no_grad():
            out = _first_output(module(x_model))
    except Exception as exc:  # third-party models raise anything; the message says what was fed
        raise CheckpointError(
            f"{path}: the {fmt} model failed on {sample_text(card, x_model)}: {error_summary(exc)}. "
            "Check the card's input_layout, in_channels and spatial_size."
        ) from None
    check_outputs(out, card, path, x_model)
    return out.float()


def check_outputs(out: Any, card: ModelCard, path: Path, x_model: torch.Tensor | None = None) -> None:
    """Refuse outputs that are not floating-point ``(N, num_classes)`` or not finite, naming the file."""
    fed = "" if x_model is None else f"on {sample_text(card, x_model)} "
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


def load_torchscript(path: Path, card: ModelCard | None, opts: dict[str, Any]) -> MedicalClassifier:
    """Load a TorchScript program (only ever by suffix or an explicit format: it runs code)."""
    card = require_card(card, path, "TorchScript")
    x = sample_input(card, path, int(opts.get("n_check", 2)), int(opts.get("check_seed", 0)), None)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch.jit.load raises RuntimeError, ValueError, and the archive's own errors
        raise CheckpointError(f"{path}: not a loadable TorchScript file: {error_summary(exc)}") from None
    module.eval()
    check_finite_tensors(module.state_dict(), path)
    x_model = x.permute(0, *range(2, x.dim()), 1).contiguous() if card.input_layout == "NHWC" else x
    run_check(module, x_model, card, path, "TorchScript")
    msg = f"Imported from TorchScript file {path.name}."
    card = card.model_copy(update={"source": str(path), "notes": [*card.notes, msg]})
    model = wrap_imported(module, card)
    model.import_info = {"format": "torchscript"}
    return model


def load_exported_program(path: Path) -> Any:
    """``torch.export.load`` with one-line errors (a ``.pt2`` is a program: call only for trusted files).

    Raises:
        CheckpointError: not a zip archive, a decompression bomb, or an archive that does not
            deserialize (the reason torch.export logged is given instead of its traceback).
    """
    from medrobust.models.exported import held_back_export_logs

    if zip_names(path) is None:
        raise CheckpointError(
            f"{path}: not a torch.export (.pt2) archive (not a readable zip file); save programs with "
            "torch.export.save(torch.export.export(model, (example,), dynamic_shapes=...), 'model.pt2')."
        )
    check_zip_sizes(path)
    with held_back_export_logs() as reasons:
        try:
            return torch.export.load(str(path))
        except Exception as exc:  # torch.export.load raises many exception types for foreign files
            first = reasons[0] if reasons else exc
            reason = error_summary(first) if isinstance(first, BaseException) else one_line(first)
            reason = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", reason)  # PyTorch's C++ prefix
            raise CheckpointError(f"{path}: not a loadable torch.export (.pt2) file: {reason}") from None


def detect_format(path: Path, fmt: str | None) -> str:
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
