"""What was audited, said plainly: the split and why, per-class counts, patients, how the model was imported.

``data.split`` in an audit config:

* ``auto`` (default): the source's own ``test`` split when it has split folders/columns
  (MedMNIST npz, ``train/ test/`` folders, a CSV split column); a source *without* a split
  of its own (a plain class-per-folder tree, a CSV without split column) is audited whole,
  unless the audited model was trained by medrobust on that same source, in which case
  its held-out ``test`` part of the seeded split is audited (the rest trained the model);
* ``all`` (or YAML ``null``): every record;
* ``train`` / ``val`` / ``test`` (aliases such as ``Testing`` accepted): that split.

The chosen split, the reason and the per-class counts go into ``results.json`` (``data``),
the report's first lines and the CLI output.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medrobust.utils.logging import get_logger

log = get_logger("evaluation")

#: ``data.split`` values meaning "every record".
ALL_SPLITS = ("all", "none")
AUTO = "auto"


def _same_path(a: Any, b: Any) -> bool:
    try:
        return os.path.realpath(str(a)) == os.path.realpath(str(b))
    except (OSError, ValueError):
        return False


def trained_on(model_path: Path | None, source_path: Path) -> bool:
    """Whether a medrobust classifier run folder says it was trained on ``source_path``."""
    if model_path is None or not Path(model_path).is_dir():
        return False
    cfg = Path(model_path) / "config.yaml"
    if not cfg.is_file():
        return False
    from medrobust.errors import ConfigError
    from medrobust.utils.yaml_io import read_yaml_mapping

    try:
        data = read_yaml_mapping(cfg, "classifier run config")
    except ConfigError:
        return False
    return isinstance(data, dict) and data.get("data") is not None and _same_path(data["data"], source_path)


def resolve_split(
    requested: str | None, source: Any, source_path: Path, model_path: Path | None
) -> tuple[str | None, dict[str, Any]]:
    """The split to audit and how it was chosen.

    Args:
        requested: ``data.split`` (``auto``, ``all``, ``None`` or a split name).
        source: The open :class:`~medrobust.data.base.Source`.
        source_path: Its path (compared with the model's training data).
        model_path: The audited model (a run folder records its training data).

    Returns:
        ``(split, info)``: the split for :func:`~medrobust.data.make_dataset` (``None`` =
        every record) and ``{"split": label, "split_requested", "split_reason",
        "split_origin", "n_records"}`` for results.json.
    """
    own = (getattr(source, "split_info", {}) or {}).get("kind") == "own"
    origin = "own" if own else "generated"
    splits = list(source.splits()) if hasattr(source, "splits") else []
    req = None if requested is None else str(requested)
    if req is None or req.lower() in ALL_SPLITS:
        split, reason = None, "every record, as configured"
    elif req.lower() == AUTO:
        if own and "test" in splits:
            split, reason = "test", "the source's own test split"
        elif own:
            split, reason = None, f"every record: the source's own splits {splits} have no test split"
        elif trained_on(model_path, source_path):
            split, reason = (
                "test",
                "held-out test part of the seeded split (the model was trained on this source's train part)",
            )
        else:
            split, reason = None, "every record: the source has no split of its own"
    else:
        split, reason = req, "as configured"
    info = {
        "split": "all" if split is None else split,
        "split_requested": req if req is not None else "all",
        "split_reason": reason,
        "split_origin": origin,
        "n_records": len(source) if hasattr(source, "__len__") else None,
    }
    return split, info


def record_groups(dataset: Any, indices: Sequence[int]) -> list[Any] | None:
    """Patient/group key of each audited record (``None`` when the source has none).

    The keys stay in memory only: :func:`audited_data_summary` turns them into anonymous
    cluster numbers.
    """
    records = getattr(dataset, "data", None)
    inner = getattr(dataset, "dataset", None)
    if records is None and inner is not None:
        records = getattr(inner, "data", None)
    if not isinstance(records, list):
        return None
    groups = [getattr(records[i], "group", None) for i in indices]
    return groups if any(g is not None for g in groups) else None


def audited_data_summary(samples: Any, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class counts and anonymous patient clusters of the audited samples (results.json ``data``).

    ``clusters`` numbers patients by first appearance (which samples share a patient, never
    who the patient is); absent when the data has no patient column.
    """
    from medrobust.evaluation.statistics import cluster_ids

    counts = Counter(int(v) for v in labels)
    out: dict[str, Any] = {"class_counts": {name: counts.get(i, 0) for i, name in enumerate(class_names)}}
    groups = getattr(samples, "groups", None)
    if groups is not None:
        ids = cluster_ids(groups)
        if ids is not None:
            out["clusters"] = ids.tolist()
        out["n_patients"] = len({("g", g) if g is not None else ("s", i) for i, g in enumerate(groups)})
    return out


#: How each import format turns a file into a torch module (the report's "converted with").
#: ``None``: nothing is converted (medrobust run folders and plain state dicts load into a
#: registered architecture).
CONVERTERS: dict[str, str | None] = {
    "medrobust": None,
    "state_dict": None,
    "onnx": "onnx2torch",
    "torchscript": "torch.jit.load",
    "pt2": "torch.export.load",
    "torchvision": "torchvision.models builder (weights=None) + local weights",
    "timm": "timm.create_model (pretrained=False) + local weights",
    "monai_bundle": "MONAI network_def from configs/inference.json (no expressions run) + models/model.pt",
    "module": "the live nn.Module as given (no conversion)",
}
#: MONAI bundles read from their TorchScript ``models/model.ts`` instead of ``network_def``.
BUNDLE_TORCHSCRIPT = "torch.jit.load of the bundle's models/model.ts"


def import_summary(model: Any, card: Any) -> dict[str, Any]:
    """How the model was loaded: format, converter and its check, input layout, output wrapping.

    ``converter`` names what turned the file into a torch module for every format
    :func:`medrobust.models.load_model` reads (:data:`CONVERTERS`); ``source`` names the
    weights file, network or module class the format records; ``channels`` says when grey
    images are repeated inside the model (card ``channels: replicate``).
    """
    info = dict(getattr(model, "import_info", {}) or {})
    fmt = info.get("format", "medrobust")
    outputs = getattr(card, "outputs", "logits")
    wrapping = {
        "logits": "none (the model returns logits)",
        "probabilities": "probabilities → clamped log-probabilities used as logits",
        "log_probabilities": "log-probabilities used as logits",
    }.get(outputs, str(outputs))
    converter = CONVERTERS.get(fmt)
    source = None
    if fmt in ("torchvision", "timm"):
        source = f"{fmt}:{info.get('name')} with weights {info.get('weights')}"
    elif fmt == "monai_bundle":
        network = info.get("network")
        if network == "torchscript":
            converter = BUNDLE_TORCHSCRIPT
        source = f"network {network}"
    elif fmt == "module":
        source = f"class {info.get('class')}"
    channels = None
    if getattr(card, "channels", "as_is") == "replicate":
        n = getattr(card, "model_channels", None)
        channels = f"grey images repeated to {n} channels inside the model"
    out: dict[str, Any] = {
        "format": fmt,
        "converter": converter,
        "source": source,
        "reference": "onnxruntime" if fmt == "onnx" else None,
        "max_abs_diff": info.get("max_abs_diff"),
        "tolerance": info.get("tolerance"),
        "n_check": info.get("n_check"),
        "input_layout": getattr(card, "input_layout", "NCHW"),
        "outputs": outputs,
        "wrapping": wrapping,
        "channels": channels,
    }
    return out


def describe_audited(data: dict[str, Any]) -> str:
    """One line: ``split test (…): 40 of the split's 40 images audited, 216 in the source; per class: …``."""
    counts = data.get("class_counts") or {}
    per_class = ", ".join(f"{k} {v}" for k, v in counts.items())
    total = data.get("n_records")
    of = f", {total} in the source" if total else ""
    avail = data.get("n_available")
    sel = (
        f"{data.get('n')} of the split's {avail} images audited"
        if avail is not None
        else f"{data.get('n')} audited"
    )
    patients = f"; {data['n_patients']} patient(s)" if data.get("n_patients") else ""
    return (
        f"split {data.get('split')} ({data.get('split_reason', 'as configured')}): {sel}{of}; "
        f"per class: {per_class or '—'}{patients}"
    )
