"""Loading typed (pydantic) configs from YAML with medrobust's one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from medrobust.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def validation_message(exc: ValidationError) -> str:
    """Flatten a pydantic ``ValidationError`` into "field.path: message; ..."."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "config"
        msg = str(err.get("msg", "invalid value"))
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def validate_config(cls: type[M], data: Any, origin: str = "config") -> M:
    """``cls.model_validate(data)`` raising :class:`ConfigError` with readable messages."""
    if isinstance(data, cls):
        return data
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: invalid {cls.__name__}: {validation_message(exc)}") from None


def load_yaml_config(cls: type[M], path: str | Path, overrides: dict[str, Any] | None = None) -> M:
    """Read YAML with ``yaml.safe_load`` (no code execution) and validate it as ``cls``."""
    from medrobust.utils.yaml_io import read_yaml_mapping

    data = read_yaml_mapping(path, f"{cls.__name__} config")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate_config(cls, data, str(path))
