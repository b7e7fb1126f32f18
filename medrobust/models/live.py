"""Live modules: audit an ``nn.Module`` you hold in Python, with its model card.

:func:`medrobust.audit` (``model=net, card=...``) wraps the module as a
:class:`~medrobust.models.classifier.MedicalClassifier` (the card's layout, output kind,
normalisation and channel policy; the module's own preprocessing stays inside it) and
registers it in this process under ``module:<digest>``. The audit config then names that
spelling as its model path, :func:`~medrobust.models.checkpoint.load_model` resolves it here,
and the provenance records :func:`state_dict_sha256` (there is no weights file to hash).

>>> spec = register_live_model(net, card)   # doctest: +SKIP
>>> load_model(spec) is live_model(spec)     # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import torch
from torch import nn

from medrobust.errors import CheckpointError, ConfigError
from medrobust.models.card import ModelCard
from medrobust.models.classifier import MedicalClassifier, wrap_imported
from medrobust.utils.hashing import sha256_json

#: Scheme of a live module's model path.
LIVE_SCHEME = "module"
#: Hex digits of the digest in a live module's name.
LIVE_DIGEST_CHARS = 16

_LOCK = threading.Lock()
_LIVE: dict[str, tuple[MedicalClassifier, str, int]] = {}


def state_dict_sha256(module: nn.Module) -> tuple[str, int]:
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes, in sorted name order).

    The same weights give the same digest whatever the device or the order the module
    registered them in; any changed value, shape, dtype or name changes it.

    Returns:
        ``(hex digest, total bytes hashed)``.

    Raises:
        CheckpointError: when a tensor lives on the ``meta`` device (no values to hash).
    """
    digest = hashlib.sha256()
    total = 0
    state = module.state_dict()
    for name in sorted(state):
        value = state[name]
        if not isinstance(value, torch.Tensor):
            digest.update(f"{name}\0{type(value).__name__}\0{value!r}\n".encode())
            continue
        if value.device.type == "meta":
            raise CheckpointError(
                f"the module's state dict entry {name!r} is on the meta device (no values); load its "
                "weights before auditing it."
            )
        header = f"{name}\0{str(value.dtype).removeprefix('torch.')}\0{list(value.shape)}\n"
        digest.update(header.encode())
        data = value.detach().to("cpu").contiguous().reshape(-1)
        if data.numel():
            raw = data.view(torch.uint8) if data.dtype != torch.bool else data.to(torch.uint8)
            digest.update(memoryview(raw.numpy()))
            total += int(raw.numel())
    return digest.hexdigest(), total


def as_classifier(
    model: nn.Module, card: ModelCard | str | Any | None = None, check: bool = True
) -> MedicalClassifier:
    """Wrap a live module with its card (a :class:`MedicalClassifier` with no card given is kept).

    Args:
        model: The network (image-space input in the card's layout; logits or probabilities out)
            or a :class:`MedicalClassifier`.
        card: A :class:`ModelCard`, a ``card.json`` path or a dict. Required unless ``model`` is a
            :class:`MedicalClassifier`.
        check: Run the module once on a random input within the card's bounds (needs the card's
            ``spatial_size``) and check its output against the card.

    Raises:
        ConfigError: ``model`` is not an ``nn.Module``, or a card is missing / given twice.
        CheckpointError: an invalid card, non-finite weights, or outputs that do not fit the card.
    """
    from medrobust.models.channels import with_channel_policy
    from medrobust.models.imports import check_finite_tensors, resolve_card

    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"The 'model' parameter must be a torch.nn.Module (or a path). Got {type(model).__name__}."
        )
    card_obj = resolve_card(card)
    if isinstance(model, MedicalClassifier):
        if card_obj is not None:
            raise ConfigError(
                "The 'model' parameter is already a MedicalClassifier with its own card; pass card=None "
                "(or pass its backbone with the new card)."
            )
        return model
    if card_obj is None:
        raise ConfigError(
            f"The 'card' parameter is required with a {type(model).__name__} module: give a ModelCard, a "
            "card.json path or a dict with in_channels, class_names, bounds, spatial_size, input_layout "
            "and outputs."
        )
    where = f"the {type(model).__name__} module"
    check_finite_tensors(model.state_dict(), where)
    net_card = card_obj.network_card()
    if check and net_card.spatial_size is not None:
        from pathlib import Path

        from medrobust.models.imports import run_check, sample_input

        x = sample_input(net_card, Path(where), 2, 0, None)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        x_model = x.permute(0, *range(2, x.dim()), 1).contiguous() if net_card.input_layout == "NHWC" else x
        was_training = model.training
        try:
            run_check(model.eval(), x_model.to(device), net_card, Path(where), "live")
        finally:
            model.train(was_training)
    note = f"Audited as a live {type(model).__name__} module (weights hashed from its state dict)."
    net_card = net_card.model_copy(update={"notes": [*net_card.notes, note], "source": "python module"})
    wrapped = wrap_imported(model, net_card)
    wrapped.import_info = {"format": "module", "class": type(model).__name__}
    return with_channel_policy(wrapped, card_obj)


def register_live_model(model: nn.Module, card: Any = None) -> str:
    """Wrap ``model`` with ``card`` and register it; returns its model path ``module:<digest>``.

    The digest covers the state dict and the card, so a changed weight or card gives a new
    name (and a resumed audit of another model is refused by its provenance check).
    """
    classifier = as_classifier(model, card)
    weights_sha, size = state_dict_sha256(classifier)
    name = sha256_json({"weights": weights_sha, "card": classifier.card.model_dump(mode="json")})
    spec = f"{LIVE_SCHEME}:{name[:LIVE_DIGEST_CHARS]}"
    with _LOCK:
        _LIVE[spec] = (classifier, weights_sha, size)
    return spec


def live_model(spec: str) -> MedicalClassifier:
    """The classifier registered under ``spec``.

    Raises:
        CheckpointError: when no module is registered under that name in this process.
    """
    with _LOCK:
        entry = _LIVE.get(str(spec))
    if entry is None:
        raise CheckpointError(
            f"{spec}: no live module with this name in this process; a module:... model path only works "
            "inside medrobust.audit(model=module, card=...) (save the model as a .pt2, ONNX or run "
            "folder to audit it from the command line)."
        )
    return entry[0]


def unregister_live_model(spec: str) -> None:
    """Forget the module registered under ``spec`` (no error when absent)."""
    with _LOCK:
        _LIVE.pop(str(spec), None)


def live_provenance(spec: str) -> dict[str, Any]:
    """``{"weights": {path, sha256, size}, "card": {path, sha256, size}}`` of a registered module.

    The weights digest is :func:`state_dict_sha256` computed when the module was registered;
    the card's is the SHA-256 of its JSON.
    """
    with _LOCK:
        entry = _LIVE.get(str(spec))
    if entry is None:
        live_model(spec)  # raises with the explanation
    classifier, weights_sha, size = entry  # type: ignore[misc]
    card_json = classifier.card.model_dump(mode="json")
    return {
        "weights": {"path": str(spec), "sha256": weights_sha, "size": size},
        "card": {"path": None, "sha256": sha256_json(card_json), "size": None},
    }


__all__ = [
    "LIVE_SCHEME",
    "as_classifier",
    "live_model",
    "live_provenance",
    "register_live_model",
    "state_dict_sha256",
    "unregister_live_model",
]
