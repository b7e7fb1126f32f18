"""Atomic file writes: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file keeps ``path``'s suffix, so writers that infer the format
    from the extension (safetensors, PIL, nibabel) still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            # mkstemp creates 0600 files; give results the mode a normal open() would.
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], writer: Callable[[IO[Any]], None], mode: str = "w") -> Path:
    """Call ``writer(fileobj)`` on a temporary file, then rename it to ``path``."""
    kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8"}
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        writer(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data), mode="wb")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def finite_or_none(obj: Any) -> Any:
    """The JSON policy for non-finite numbers, applied recursively: NaN and ±inf become ``None``.

    Every JSON file medrobust writes is strict JSON (RFC 8259 has no NaN or Infinity, and
    browsers, ``jq`` and JSON-schema validators reject them): a number that is not finite is
    written as ``null``. Readers treat ``null`` as "not defined" (an unbounded budget, an AUROC
    with one class present). numpy scalars and arrays become Python numbers and lists.
    """
    if isinstance(obj, float) or type(obj).__name__.startswith("float"):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return finite_or_none(obj.tolist())
    return obj


def dumps_json(obj: Any) -> str:
    """Serialize ``obj`` as stable, indented, strict JSON (see :func:`finite_or_none`)."""
    clean = finite_or_none(json.loads(json.dumps(obj, default=_json_default, allow_nan=True)))
    return json.dumps(clean, indent=2, sort_keys=False, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, dumps_json(obj))
