"""MONAI bundles: a folder with ``configs/metadata.json`` and ``models/model.pt`` (or ``model.ts``).

The model card comes from the metadata's ``network_data_format`` (input channels and spatial
shape, the output's channel count and ``channel_def`` class names, the input's
``value_range`` as intensity bounds, its ``modality``) unless the folder holds a ``card.json``
(``medrobust card init BUNDLE`` writes one) or a card is given.

The network comes from ``configs/inference.json`` (or ``.yaml``) ``network_def``, built
*without* MONAI's ``ConfigParser``: that parser evaluates ``$`` expressions, which are Python
code. medrobust accepts a ``_target_`` among ``monai.networks.nets`` (``"DenseNet121"`` or
``"monai.networks.nets.DenseNet121"``) with literal arguments and ``@key`` references to other
literal entries of the same file; anything else is refused with a message naming the entry.
The weights in ``models/model.pt`` are read with ``torch.load(weights_only=True)``. A bundle
whose network cannot be built that way is read from ``models/model.ts`` (TorchScript, a
program) when the bundle ships one.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any

import torch

from medrobust.errors import CheckpointError, ConfigError
from medrobust.limits import MAX_CLASSES
from medrobust.models.card import MAX_CARD_BYTES, ModelCard
from medrobust.utils.logging import get_logger

log = get_logger("models.bundle")

METADATA = Path("configs") / "metadata.json"
INFERENCE_NAMES = ("inference.json", "inference.yaml", "inference.yml")
WEIGHTS = Path("models") / "model.pt"
TORCHSCRIPT = Path("models") / "model.ts"
#: How deep ``@key`` references may chain before the bundle is refused.
MAX_REFERENCE_DEPTH = 16
_NETS = "monai.networks.nets."
#: Side length of the import check's sample when the bundle fixes no input size.
CHECK_SIZE = 64


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a folder with ``configs/metadata.json``."""
    path = Path(path)
    return path.is_dir() and (path / METADATA).is_file()


def _read_config(path: Path) -> dict[str, Any]:
    """A bundle config file as a dict (JSON, or YAML read safely), size-capped; errors name the file."""
    try:
        size = path.stat().st_size
        if size > MAX_CARD_BYTES:
            raise CheckpointError(
                f"{path}: {size} bytes; bundle configs of at most {MAX_CARD_BYTES} are read."
            )
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not UTF-8 text (byte {exc.start}).") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            from medrobust.utils.yaml_io import parse_yaml

            data = parse_yaml(text, str(path))
    except ConfigError as exc:  # the one YAML reader names the file already
        raise CheckpointError(str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not valid JSON: {' '.join(str(exc).split())[:160]}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON/YAML object (mapping). Got {type(data).__name__}.")
    return data


def _first(mapping: Any, preferred: str) -> dict[str, Any]:
    if not isinstance(mapping, dict) or not mapping:
        return {}
    value = mapping.get(preferred, next(iter(mapping.values())))
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def bundle_card_fields(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Card fields the bundle's ``metadata.json`` states, and notes on where they came from.

    Returns:
        ``(fields, notes)``: any of ``in_channels``, ``spatial_size``, ``spatial_dims``,
        ``class_names``, ``num_classes``, ``bounds``, ``modality``; absent when the metadata do
        not say (or say it in a form that is not a plain value, e.g. ``"16*n"`` sizes).

    Raises:
        CheckpointError: an unreadable or malformed ``metadata.json``.
    """
    path = Path(path)
    meta_path = path / METADATA
    meta = _read_config(meta_path)
    fmt = meta.get("network_data_format")
    if not isinstance(fmt, dict):
        raise CheckpointError(
            f"{meta_path}: no 'network_data_format' object (inputs/outputs); a MONAI bundle's metadata "
            "describes its network's input and output there."
        )
    image = _first(fmt.get("inputs"), "image")
    pred = _first(fmt.get("outputs"), "pred")
    fields: dict[str, Any] = {}
    notes = [f"Card fields from MONAI bundle metadata {meta_path}."]
    channels = _int(image.get("num_channels"))
    if channels is not None and channels >= 1:
        fields["in_channels"] = channels
    shape = image.get("spatial_shape")
    if isinstance(shape, list) and len(shape) in (2, 3) and all(_int(s) and s > 0 for s in shape):
        fields["spatial_size"] = [int(s) for s in shape]
        fields["spatial_dims"] = len(shape)
    elif isinstance(shape, list) and len(shape) in (2, 3):
        fields["spatial_dims"] = len(shape)
        notes.append(f"The bundle's input spatial_shape {shape} is not fixed; spatial_size left to the data.")
    n_out = _int(pred.get("num_channels"))
    if n_out is not None and 2 <= n_out <= MAX_CLASSES:
        fields["num_classes"] = n_out
    channel_def = pred.get("channel_def")
    if isinstance(channel_def, dict) and channel_def:
        try:
            ordered = sorted(channel_def.items(), key=lambda kv: int(kv[0]))
        except (TypeError, ValueError):
            ordered = []
        names = [str(v).strip() for _, v in ordered]
        if names and all(names) and (n_out is None or len(names) == n_out):
            fields["class_names"] = names
    value_range = image.get("value_range")
    if (
        isinstance(value_range, list)
        and len(value_range) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value_range)
        and all(math.isfinite(v) for v in value_range)
        and value_range[0] < value_range[1]
    ):
        fields["bounds"] = [float(value_range[0]), float(value_range[1])]
        kind = image.get("format")
        notes.append(
            f"Intensity bounds {fields['bounds']} from the bundle's input value_range"
            + (f" (format {kind!r})." if isinstance(kind, str) else ".")
        )
    modality = image.get("modality")
    if isinstance(modality, str) and modality.strip():
        fields["modality"] = modality.strip()
    kind = pred.get("type")
    if isinstance(kind, str):
        notes.append(f"The bundle's metadata call the output {kind!r}.")
    return fields, notes


def _inference_config(path: Path) -> tuple[Path, dict[str, Any]] | None:
    for name in INFERENCE_NAMES:
        cfg = path / "configs" / name
        if cfg.is_file():
            return cfg, _read_config(cfg)
    return None


def _node(config: dict[str, Any], ref: str, where: Path) -> Any:
    """The raw entry ``@a#b`` names in ``config``."""
    node: Any = config
    for part in ref.split("#"):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise CheckpointError(f"{where}: network_def refers to '@{ref}', which the file does not define.")
    return node


def _lookup(config: dict[str, Any], ref: str, where: Path, depth: int) -> Any:
    """Resolve ``@a#b`` against ``config`` (literal values only)."""
    return _literal(_node(config, ref, where), config, where, f"@{ref}", depth + 1)


def _literal(value: Any, config: dict[str, Any], where: Path, key: str, depth: int) -> Any:
    """``value`` with ``@`` references resolved; expressions, macros and nested targets refused."""
    if depth > MAX_REFERENCE_DEPTH:
        raise CheckpointError(
            f"{where}: network_def references chain deeper than {MAX_REFERENCE_DEPTH} ({key})."
        )
    if isinstance(value, str):
        if value.startswith("$") or value.startswith("%"):
            raise CheckpointError(
                f"{where}: network_def entry {key!r} is {value[:60]!r}, an expression or macro (Python "
                "code); medrobust builds bundle networks from literal arguments only. Write the value "
                "out, or audit the bundle's models/model.ts."
            )
        if value.startswith("@"):
            return _lookup(config, value[1:], where, depth)
        return value
    if isinstance(value, list):
        return [_literal(v, config, where, f"{key}[{i}]", depth) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if "_target_" in value:
            raise CheckpointError(
                f"{where}: network_def entry {key!r} builds another object ({value['_target_']!r}); only the "
                "network itself may have a _target_."
            )
        return {k: _literal(v, config, where, f"{key}.{k}", depth) for k, v in value.items()}
    return value


def build_bundle_network(path: str | Path) -> tuple[torch.nn.Module, str]:
    """The bundle's network from ``network_def`` (random weights), and its class name.

    Raises:
        CheckpointError: no inference config or ``network_def``, a target outside
            ``monai.networks.nets``, expressions, unknown arguments, or a network larger than
            :data:`medrobust.models.registry.MAX_PARAMETERS`.
    """
    import monai.networks.nets as nets

    from medrobust.models.registry import MAX_PARAMETERS

    path = Path(path)
    found = _inference_config(path)
    if found is None:
        raise CheckpointError(
            f"{path}: the bundle has no configs/inference.json (or .yaml) to build its network from."
        )
    where, config = found
    net_def = config.get("network_def")
    if isinstance(net_def, str) and net_def.startswith("@"):
        net_def = _node(config, net_def[1:], where)
    if not isinstance(net_def, dict) or not isinstance(net_def.get("_target_"), str):
        raise CheckpointError(
            f"{where}: expected 'network_def' to be an object with a '_target_' (a monai.networks.nets "
            f"class). Got {type(net_def).__name__}."
        )
    target = net_def["_target_"].strip()
    short = target.removeprefix(_NETS)
    factory = getattr(nets, short, None) if short.isidentifier() else None
    if factory is None or not callable(factory):
        raise CheckpointError(
            f"{where}: network_def _target_ {target!r} is not a network of monai.networks.nets; medrobust "
            "builds only those (other targets run arbitrary code). Audit the bundle's models/model.ts."
        )
    disabled = net_def.get("_disabled_")
    if disabled not in (None, False, "false", "False"):
        raise CheckpointError(f"{where}: network_def is disabled (_disabled_: {disabled!r}).")
    if net_def.get("_mode_", "default") != "default":
        raise CheckpointError(
            f"{where}: network_def _mode_ {net_def['_mode_']!r} is not supported (only 'default')."
        )
    kwargs = {
        k: _literal(v, config, where, f"network_def.{k}", 0)
        for k, v in net_def.items()
        if not k.startswith("_")
    }
    params = inspect.signature(factory).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown and not takes_kwargs:
        from medrobust.registry import did_you_mean

        raise CheckpointError(
            f"{where}: network_def argument {unknown[0]!r} is not a parameter of {short}."
            f"{did_you_mean(unknown[0], list(params))}"
        )
    try:
        with torch.device("meta"):
            probe = factory(**kwargs)
        n_params = sum(t.numel() for t in probe.parameters()) + sum(t.numel() for t in probe.buffers())
        if n_params > MAX_PARAMETERS:
            raise CheckpointError(
                f"{where}: network_def builds {short} with {n_params:.3g} parameters; at most "
                f"{MAX_PARAMETERS:.3g} are built."
            )
        return factory(**kwargs), short
    except CheckpointError:
        raise
    except Exception as exc:  # network constructors raise anything for bad arguments
        raise CheckpointError(
            f"{where}: cannot build {short} from network_def: {' '.join(str(exc).split())[:200]}"
        ) from None


def resolve_bundle_card(path: Path, card: ModelCard | None) -> ModelCard:
    """The given card, else ``BUNDLE/card.json``, else one built from the metadata (all fields needed).

    Raises:
        CheckpointError: when the metadata lack class names or bounds (names them and says how to fix).
    """
    if card is not None:
        return card
    if (path / "card.json").is_file():
        return ModelCard.load(path / "card.json")
    fields, notes = bundle_card_fields(path)
    missing = [f for f in ("class_names", "bounds") if f not in fields]
    if missing:
        raise CheckpointError(
            f"{path / METADATA}: the bundle's metadata do not state {' or '.join(missing)} "
            "(outputs.pred.channel_def, inputs.image.value_range); run `medrobust card init "
            f"{path}` or pass a card."
        )
    fields.pop("num_classes", None)
    return ModelCard.from_mapping({**fields, "notes": notes}, str(path / METADATA))


def load_bundle(path: str | Path, card: ModelCard | None, opts: dict[str, Any]) -> Any:
    """Load a MONAI bundle as a :class:`~medrobust.models.classifier.MedicalClassifier`.

    Args:
        path: The bundle folder.
        card: The card as the network sees it (None: ``card.json`` in the bundle, else the metadata).
        opts: ``load_model`` import options (``n_check``, ``check_seed``).

    Raises:
        CheckpointError: see :func:`build_bundle_network`, :func:`resolve_bundle_card`; weights
            that do not fit; a bundle with neither ``models/model.pt`` nor ``models/model.ts``.
    """
    from medrobust.models.channels import with_channel_policy
    from medrobust.models.classifier import MedicalClassifier, wrap_imported
    from medrobust.models.imports import (
        load_state_into,
        load_torchscript,
        read_torch_state_dict,
        run_check,
        sample_input,
    )

    path = Path(path)
    image_card = resolve_bundle_card(path, card)
    card = image_card.network_card()
    weights, script = path / WEIGHTS, path / TORCHSCRIPT
    if weights.is_file():
        try:
            net, name = build_bundle_network(path)
        except CheckpointError as exc:
            if not script.is_file():
                raise
            log.warning("%s; reading the bundle's TorchScript %s instead", exc, script)
        else:
            state = read_torch_state_dict(weights)
            staged = MedicalClassifier(net, card.model_copy(update={"arch": f"{_NETS}{name}"}))
            load_state_into(staged, state, weights)
            net.eval()
            static = [None, card.in_channels, *([CHECK_SIZE] * card.spatial_dims)]
            x = sample_input(
                card, weights, int(opts.get("n_check", 2)), int(opts.get("check_seed", 0)), static
            )
            run_check(net, x, card, weights, "MONAI bundle")
            note = f"Imported from MONAI bundle {path.name}: {_NETS}{name} with weights {WEIGHTS}."
            card = card.model_copy(update={"source": str(path), "notes": [*card.notes, note]})
            model = wrap_imported(net, card)
            model.import_info = {"format": "monai_bundle", "network": name}
            return with_channel_policy(model, image_card)
    if script.is_file():
        model = load_torchscript(script, card, opts)
        model.import_info = {"format": "monai_bundle", "network": "torchscript"}
        return with_channel_policy(model, image_card)
    raise CheckpointError(f"{path}: the bundle has neither {WEIGHTS} nor {TORCHSCRIPT}.")


__all__ = [
    "METADATA",
    "build_bundle_network",
    "bundle_card_fields",
    "is_bundle",
    "load_bundle",
    "resolve_bundle_card",
]
