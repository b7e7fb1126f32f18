"""The one YAML reader for configs: plain values only, no anchors or aliases, bounded size.

``yaml.safe_load`` never runs code, but it does expand aliases: a 616-byte "billion laughs"
config can ask for gigabytes. Configs here are written by hand and need neither anchors nor
aliases, so both are refused with an error that names the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medrobust.errors import ConfigError
from medrobust.limits import MAX_CONFIG_BYTES


def _refuse_aliases(text: str, source: str) -> None:
    import yaml

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            anchor = getattr(event, "anchor", None)
            if isinstance(event, yaml.AliasEvent) or anchor is not None:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise ConfigError(
                    f"{source}: line {line}: YAML anchors and aliases ('&{anchor}' / '*{anchor}') are not "
                    "accepted in medrobust configs; write the values out."
                )
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None


def parse_yaml(text: str, source: str = "<config>") -> Any:
    """Parse YAML text with ``yaml.safe_load`` after refusing anchors/aliases."""
    import yaml

    _refuse_aliases(text, source)
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file is ``{}``).

    Args:
        path: The file.
        what: What the file is, for messages ("audit config", "training config").

    Raises:
        ConfigError: naming the file when it is missing, a folder, too large, not UTF-8,
            not valid YAML, uses anchors/aliases, or is not a mapping.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} not found: {str(path)!r}")
    if path.is_dir():
        raise ConfigError(f"{path}: the {what} must be a YAML file, but this is a folder.")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: the {what} is {size} bytes; configs of at most {MAX_CONFIG_BYTES} bytes are read."
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: the {what} must be UTF-8 text; byte {exc.start} is {raw[exc.start : exc.start + 1]!r}."
        ) from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the {what} must be a mapping at the top level. Got {type(data).__name__}."
        )
    return data
