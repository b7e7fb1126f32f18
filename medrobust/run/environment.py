"""The one ``environment.json`` record written beside every result (one schema everywhere)."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any

#: Schema name of the record; bump when a key changes meaning.
ENVIRONMENT_SCHEMA = "medrobust.environment/1"
_PACKAGES = ("torch", "torchvision", "monai", "numpy", "scipy", "scikit-image", "pydicom", "nibabel")
_MODULES = {"scikit-image": "skimage"}


def package_versions(names: tuple[str, ...] = _PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` when missing), read without importing them."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def environment(device: Any = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """Versions and machine facts; ``extra`` adds run-specific keys (world size, AMP, ...).

    Keys (always present): ``schema``, ``medrobust``, ``python``, ``platform``, ``cpu_count``,
    one key per package (``torch``, ``torchvision``, ``monai``, ``numpy``, ``scipy``,
    ``scikit-image``, ``pydicom``, ``nibabel``: version or None), ``cuda`` (the CUDA version
    torch was built with, or None),
    ``cuda_available`` (bool), ``gpu`` (device name or None), ``device``, ``torch_threads``,
    ``seed``, ``created`` (UTC ISO time).
    """
    import torch

    import medrobust

    dev = None if device is None else torch.device(device)
    gpu = None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(dev)
    record: dict[str, Any] = {
        "schema": ENVIRONMENT_SCHEMA,
        "medrobust": medrobust.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **package_versions(),
        "torch": torch.__version__,  # with the build tag (+cpu, +cu130) the metadata lacks
        "cuda": torch.version.cuda,
        "cuda_available": bool(torch.cuda.is_available()),
        "gpu": gpu,
        "device": None if dev is None else str(dev),
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
        "world_size": _world_size(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(extra)
    return record
