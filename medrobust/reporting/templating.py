"""The one Jinja environment for every report (audit, denoiser study): templates over results data."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"


def fmt_value(value: Any, digits: int = 2) -> str:
    """A table cell: numbers with ``digits`` decimals, ``–`` for missing or non-finite values."""
    import math

    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "–"
    return str(value)


def jinja_environment(autoescape: bool, **filters: Any) -> Any:
    """A strict Jinja environment over ``reporting/templates`` (HTML autoescaped, Markdown not)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["value"] = fmt_value
    env.filters["b64"] = lambda data: base64.b64encode(data).decode()
    env.filters["pretty_json"] = lambda obj: json.dumps(obj, indent=2)
    env.filters.update(filters)
    return env


def render(template: str, **context: Any) -> str:
    """Render ``template`` (``.html.j2`` autoescaped, anything else as plain text)."""
    return jinja_environment(template.endswith(".html.j2")).get_template(template).render(**context)
