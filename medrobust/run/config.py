"""The one config loader: YAML or a mapping → a typed pydantic model, flags merged, one-line errors.

Every command's config (audit, classifier/defense/denoiser training, denoiser study) is a
pydantic model with unknown keys refused (``extra="forbid"``). :func:`load_config` reads the
YAML with :func:`medrobust.utils.yaml_io.read_yaml_mapping` (no code, no aliases, bounded
size), merges command-line flags over it and validates it; a failure is one
:class:`~medrobust.errors.ConfigError` naming the file and every bad field.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from medrobust.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def merge_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``overrides`` into ``data``: mappings merge recursively, other values (``None`` too) replace."""
    out = dict(data)
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
    return out


def _fields_at(cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at ``loc[:-1]``, for "did you mean" hints."""
    model: Any = cls
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part) if isinstance(part, str) else None
        if field is None:
            return list(getattr(model, "model_fields", {})) if not isinstance(part, str) else []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or (ann,)
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def validation_message(exc: ValidationError, cls: type[BaseModel] | None = None) -> str:
    """Flatten a pydantic ``ValidationError`` into ``"field.path: message. Got X.; ..."`` (one line).

    A model's ``flag_names`` (field → command-line flag) are shown beside the field: ``lr (--lr)``.
    """
    flags: dict[str, str] = getattr(cls, "flag_names", {}) or {}
    parts = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = ".".join(str(p) for p in loc) or "(top level)"
        if loc and loc[0] in flags:
            where += f" ({flags[loc[0]]})"
        msg = str(err.get("msg", "invalid value"))
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        kind = err.get("type")
        if kind == "extra_forbidden":
            msg = "unknown field (check the spelling)"
            if cls is not None and loc and isinstance(loc[-1], str):
                close = difflib.get_close_matches(loc[-1], _fields_at(cls, loc), n=1)
                if close:
                    msg = f"unknown field; did you mean {close[0]!r}?"
        elif kind == "missing":
            msg = "required field is missing"
        got = err.get("input")
        skip = kind in ("missing", "extra_forbidden") or isinstance(got, (dict, list)) or str(got) in msg
        tail = "" if skip else f" Got {got!r}."
        parts.append(f"{where}: {msg.rstrip('.')}.{tail}".replace("?.", "?"))
    return " ".join("; ".join(parts).split())


def validate_config(cls: type[M], data: Any, origin: str = "config") -> M:
    """``cls.model_validate(data)`` raising one :class:`ConfigError` that names ``origin``."""
    if isinstance(data, cls):
        return data
    name = getattr(cls, "config_name", None) or cls.__name__
    where = f"invalid {name}" if origin in (name, "config") else f"invalid {name} {origin}"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping at the top level. Got {type(data).__name__}.")
    try:
        return cls.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"{where}: {validation_message(exc, cls)}") from None


def read_config(source: str | Path | Mapping[str, Any] | None, what: str = "config") -> dict[str, Any]:
    """A config as a plain mapping: read from a YAML file, copied from a mapping, ``{}`` for None."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return dict(source)
    from medrobust.utils.yaml_io import read_yaml_mapping

    return read_yaml_mapping(source, what)


def load_config(
    cls: type[M],
    source: str | Path | Mapping[str, Any] | BaseModel | None,
    overrides: Mapping[str, Any] | None = None,
    what: str = "config",
) -> M:
    """Read ``source`` (YAML path, mapping, model or None), merge ``overrides`` and validate as ``cls``.

    Args:
        cls: The pydantic model.
        source: Where the config comes from.
        overrides: Values merged over the file's (mappings merge recursively; ``None`` replaces).
        what: What the config is, for messages ("audit config").
    """
    if isinstance(source, BaseModel):
        if not overrides:
            return validate_config(cls, source, what)
        source = source.model_dump()
    origin = str(source) if isinstance(source, (str, Path)) else what
    data = merge_overrides(read_config(source, what), overrides)
    return validate_config(cls, data, origin)


class ConfigModel(BaseModel):
    """Base of every typed config: unknown keys refused; ``from_dict``/``from_yaml`` defined once here.

    Subclasses set ``config_name`` ("audit config", "classifier training config"), used in messages.
    """

    model_config = ConfigDict(extra="forbid")
    config_name: ClassVar[str] = "config"
    #: Command-line flag of each field, named in error messages.
    flag_names: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_dict(cls: type[M], values: Any, origin: str | None = None) -> M:
        """Validate a mapping (one :class:`ConfigError` naming every bad field)."""
        return validate_config(cls, values, origin or getattr(cls, "config_name", "config"))

    @classmethod
    def from_yaml(cls: type[M], path: str | Path, **overrides: Any) -> M:
        """Read a YAML file, merge ``overrides`` (flags: ``None`` means "not given") and validate."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return load_config(cls, path, given, getattr(cls, "config_name", "config"))
