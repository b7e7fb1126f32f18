"""Device selection (``--device auto`` picks CUDA when present)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medrobust.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(spec: str | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a ``torch.device``.

    Raises:
        ConfigError: for an unknown spec or CUDA asked for where none is present.
    """
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"The 'device' parameter asks for {spec!r}, but no CUDA device is available.")
        return torch.device(spec)
    raise ConfigError(f"The 'device' parameter must be 'auto', 'cpu' or 'cuda[:N]'. Got {spec!r}.")
