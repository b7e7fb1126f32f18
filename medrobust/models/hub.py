"""Models named by a library: ``torchvision:NAME`` and ``timm:NAME`` with local weights, never downloaded.

The network is built by its library with every pretrained flag off (torchvision
``weights=None``, timm ``pretrained=False``), inside :func:`no_downloads`, which turns any
attempt to fetch a file (``torch.hub``, torchvision's weight URLs, the Hugging Face hub) into a
:class:`~medrobust.errors.CheckpointError`. The weights come from a local file: safetensors or
a ``torch.save``-d state dict read with ``weights_only=True``.

>>> model = load_model("torchvision:resnet18", card="card.json", weights="r18.safetensors")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medrobust.errors import CheckpointError
from medrobust.limits import MAX_CLASSES
from medrobust.models.card import ModelCard
from medrobust.registry import did_you_mean
from medrobust.utils.logging import get_logger

log = get_logger("models.hub")

#: Libraries a model may be named from (``SCHEME:NAME``).
HUB_SCHEMES = ("torchvision", "timm")
#: Every model spelling that is not a path (``module:`` = a live module, :mod:`medrobust.models.live`).
MODEL_SCHEMES = (*HUB_SCHEMES, "module")
_SPEC_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(.+)$")
#: Module attributes that fetch files, replaced by a refusal while a network is built.
_DOWNLOADERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torchvision.models._api", ("load_state_dict_from_url",)),
    ("torchvision._internally_replaced_utils", ("load_state_dict_from_url",)),
    ("huggingface_hub", ("hf_hub_download", "snapshot_download")),
    ("timm.models._hub", ("download_cached_file", "hf_hub_download", "load_state_dict_from_url")),
    ("timm.models._builder", ("download_cached_file", "load_state_dict_from_url", "load_state_dict_from_hf")),
)
#: Input side length assumed for a hub model whose card and library give none.
DEFAULT_HUB_SIZE = 224


def parse_model_spec(path: str | Path) -> tuple[str, str] | None:
    """``("torchvision", "resnet18")`` for ``"torchvision:resnet18"``; None for a plain path.

    A spelling with an unknown scheme that is not an existing file is refused with the
    known schemes (a Windows drive letter is a path).

    Raises:
        CheckpointError: for ``"tourchvision:resnet18"`` and the like.
    """
    text = str(path)
    match = _SPEC_RE.match(text)
    if match is None or len(match.group(1)) == 1:
        return None
    scheme, name = match.group(1), match.group(2).strip()
    if scheme in MODEL_SCHEMES:
        if not name:
            raise CheckpointError(f"{text}: the model name after {scheme + ':'!r} is empty.")
        return scheme, name
    if Path(text).exists():
        return None
    hint = did_you_mean(scheme, list(MODEL_SCHEMES))
    raise CheckpointError(
        f"{text}: no such file or folder, and {scheme + ':'!r} is not a model library.{hint} "
        "Models are named torchvision:NAME or timm:NAME (with weights=FILE)."
    )


def is_model_spec(path: str | Path) -> bool:
    """Whether ``path`` names a model by library or live module rather than by file."""
    try:
        return parse_model_spec(path) is not None
    except CheckpointError:
        return False


@contextlib.contextmanager
def no_downloads(what: str) -> Iterator[None]:
    """Refuse every download while building ``what`` (torch.hub, torchvision URLs, the Hugging Face hub).

    Raises:
        CheckpointError: when the library tries to fetch a file.
    """

    def refuse(*args: Any, **kwargs: Any) -> Any:
        url = next((a for a in args if isinstance(a, str)), kwargs.get("url", "a remote file"))
        raise CheckpointError(
            f"{what}: building the network tried to download {url}; medrobust never downloads at run "
            "time. Pass the weights as a local file (weights=FILE / --weights FILE)."
        )

    import torch.hub

    targets: list[tuple[Any, str]] = [
        (torch.hub, "load_state_dict_from_url"),
        (torch.hub, "download_url_to_file"),
    ]
    for module_name, attrs in _DOWNLOADERS:
        module = sys.modules.get(module_name)  # a library not imported yet has nothing to patch
        if module is not None:
            targets += [(module, a) for a in attrs if hasattr(module, a)]
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr in targets]
    try:
        for obj, attr, _ in saved:
            setattr(obj, attr, refuse)
        yield
    finally:
        for obj, attr, original in saved:
            setattr(obj, attr, original)


def _spec_text(scheme: str, name: str) -> str:
    return f"{scheme}:{name}"


def _torchvision_builder(name: str) -> Any:
    import torchvision.models as tvm

    names = tvm.list_models(module=tvm)
    if name not in names:
        raise CheckpointError(
            f"torchvision:{name}: not a torchvision classification model.{did_you_mean(name, names)} "
            f"Valid names: {', '.join(names[:12])}, ... ({len(names)} in all: "
            "torchvision.models.list_models())."
        )
    return tvm.get_model_builder(name)


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise CheckpointError(
            "timm: models named timm:NAME need the timm package, which is not installed: "
            "pip install timm (or use torchvision:NAME, a .pt2, ONNX or TorchScript file)."
        ) from None
    return timm


def build_hub_network(scheme: str, name: str, num_classes: int, in_channels: int, **extra: Any) -> nn.Module:
    """Build ``scheme:name`` with random weights (pretrained flags off, downloads refused).

    Args:
        scheme: "torchvision" or "timm".
        name: The library's model name.
        num_classes: Output logits.
        in_channels: Input channels (torchvision networks take 3).
        **extra: Further constructor arguments (e.g. ``aux_logits`` for inception_v3).

    Raises:
        CheckpointError: unknown name, a channel count the library cannot build, timm missing,
            a download attempt, or a constructor error.
    """
    spec = _spec_text(scheme, name)
    if scheme == "torchvision":
        builder = _torchvision_builder(name)
        if in_channels != 3:
            raise CheckpointError(
                f"{spec}: torchvision networks take 3-channel images, but the card's network has "
                f"{in_channels}; for grey data set channels: 'replicate' in the card."
            )
        params = inspect.signature(builder).parameters
        kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes, **extra}
        if "weights_backbone" in params:
            kwargs["weights_backbone"] = None
        call = lambda: builder(**kwargs)  # noqa: E731
    elif scheme == "timm":
        timm = _timm()
        if not timm.is_model(name):
            names = list(timm.list_models())
            raise CheckpointError(
                f"timm:{name}: not a timm model.{did_you_mean(name, names)} (timm.list_models() lists them)."
            )
        call = lambda: timm.create_model(  # noqa: E731
            name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **extra
        )
    else:
        raise CheckpointError(
            f"{spec}: unknown model library {scheme!r}; expected one of {list(HUB_SCHEMES)}."
        )
    with no_downloads(spec):
        try:
            return call()
        except CheckpointError:
            raise
        except (TypeError, ValueError, RuntimeError, KeyError, AssertionError) as exc:
            raise CheckpointError(
                f"{spec}: cannot build the network ({num_classes} classes, {in_channels} channels): "
                f"{' '.join(str(exc).split())[:200]}"
            ) from None


def hub_defaults(scheme: str, name: str) -> dict[str, Any]:
    """What the library says about the network's input (no download): size, mean/std, channels.

    Returns:
        Card fields: ``in_channels``, ``spatial_size`` and, when the library publishes them for
        its pretrained weights, ``mean``/``std`` (a note says where they came from).
    """
    out: dict[str, Any] = {"in_channels": 3, "spatial_size": [DEFAULT_HUB_SIZE, DEFAULT_HUB_SIZE]}
    if scheme == "torchvision":
        import torchvision.models as tvm

        _torchvision_builder(name)
        try:
            weights = tvm.get_model_weights(name).DEFAULT
            tf = weights.transforms()
        except (ValueError, KeyError, AttributeError, TypeError):
            return out
        crop = list(getattr(tf, "crop_size", []) or [])
        if crop:
            out["spatial_size"] = [int(crop[0]), int(crop[-1])]
        if getattr(tf, "mean", None) and getattr(tf, "std", None):
            out["mean"], out["std"] = [float(v) for v in tf.mean], [float(v) for v in tf.std]
            out["note"] = (
                f"mean/std and spatial_size are those of torchvision's {weights} recipe; change them if "
                "your weights were trained with other preprocessing."
            )
    elif scheme == "timm":
        timm = _timm()
        cfg = getattr(timm.models, "get_pretrained_cfg", lambda n: None)(name)
        size = getattr(cfg, "input_size", None)
        if size:
            out["in_channels"] = int(size[0])
            out["spatial_size"] = [int(s) for s in size[1:]]
        if getattr(cfg, "mean", None) and getattr(cfg, "std", None):
            out["mean"], out["std"] = list(cfg.mean), list(cfg.std)
            out["note"] = f"mean/std and spatial_size are timm's pretrained config for {name}."
    return out


def classes_from_weights(scheme: str, name: str, state: dict[str, torch.Tensor], in_channels: int = 3) -> int:
    """Number of classes the weights were trained for (the head whose rows differ from 1000).

    The network is built on the ``meta`` device with 1000 classes and its tensor shapes are
    compared with the file's: the head's first dimension is the class count.

    Raises:
        CheckpointError: when the weights do not fit the architecture apart from the head.
    """
    spec = _spec_text(scheme, name)
    with torch.device("meta"):
        net = build_hub_network(scheme, name, 1000, in_channels, **_aux_kwargs(scheme, name, state))
    expected = net.state_dict()
    counts = {
        int(v.shape[0])
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape) and expected[k].shape[:1] == (1000,)
    }
    if not counts:
        return 1000
    if len(counts) > 1:
        raise CheckpointError(
            f"{spec}: the weights' output layers disagree on the number of classes: {sorted(counts)}."
        )
    n = counts.pop()
    if not 2 <= n <= MAX_CLASSES:
        raise CheckpointError(
            f"{spec}: the weights have {n} outputs; medrobust needs 2 to {MAX_CLASSES} classes."
        )
    return n


def _aux_kwargs(scheme: str, name: str, state: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """``aux_logits`` for torchvision's inception_v3/googlenet: on when the weights carry the aux heads."""
    if scheme != "torchvision" or state is None:
        return {}
    builder = _torchvision_builder(name)
    if name not in ("inception_v3", "googlenet") or "weights" not in inspect.signature(builder).parameters:
        return {}
    has_aux = any(k.startswith(("AuxLogits.", "aux1.", "aux2.")) for k in state)
    return {"aux_logits": has_aux, "init_weights": False}


def load_hub_model(scheme: str, name: str, card: ModelCard | None, weights: str | Path | None) -> Any:
    """Build ``scheme:name`` for ``card`` and load ``weights`` into it.

    Args:
        scheme: "torchvision" or "timm".
        name: The library's model name.
        card: The model card *as the network sees it* (``card.network_card()``); required.
        weights: Local safetensors or state-dict file; required (nothing is downloaded).

    Returns:
        A :class:`~medrobust.models.classifier.MedicalClassifier` (eval mode, CPU).

    Raises:
        CheckpointError: missing card or weights, unknown name, weights that do not fit.
    """
    from medrobust.models.classifier import MedicalClassifier
    from medrobust.models.imports import load_state_into, read_weights_file

    spec = _spec_text(scheme, name)
    if scheme == "timm":
        _timm()
    if card is None:
        raise CheckpointError(
            f"{spec}: needs a model card (card=... / --card card.json) giving class_names, bounds and, "
            f"if the weights expect it, mean/std; `medrobust card init {spec} --weights FILE` writes one."
        )
    if weights is None:
        raise CheckpointError(
            f"{spec}: needs local weights (weights=FILE, --weights FILE: safetensors or a state dict); "
            "pretrained weights are never downloaded at run time."
        )
    wpath = Path(weights)
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: the weights file for {spec} was not found.")
    state = read_weights_file(wpath)
    net = build_hub_network(
        scheme, name, card.num_classes, card.in_channels, **_aux_kwargs(scheme, name, state)
    )
    card = card.model_copy(update={"arch": spec, "source": str(wpath)})
    model = MedicalClassifier(net, card)
    load_state_into(model, state, wpath)
    model.import_info = {"format": scheme, "name": name, "weights": str(wpath)}
    return model.eval()


__all__ = [
    "DEFAULT_HUB_SIZE",
    "HUB_SCHEMES",
    "MODEL_SCHEMES",
    "build_hub_network",
    "classes_from_weights",
    "hub_defaults",
    "is_model_spec",
    "load_hub_model",
    "no_downloads",
    "parse_model_spec",
]
