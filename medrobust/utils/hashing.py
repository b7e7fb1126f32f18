"""Content hashes for provenance: SHA-256 of files (streamed), folders and JSON-able values.

Every hash is of the *content*: a file's bytes, a folder's sorted manifest of relative
paths, sizes and file hashes, or a value's canonical JSON. Files are read in 1 MiB chunks
(memory stays flat for any size), and a :class:`FileHasher` hashes each file at most once.

>>> sha256_json({"b": 1, "a": [2, 3]}) == sha256_json({"a": [2, 3], "b": 1})
True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Bytes read per chunk while hashing a file.
CHUNK_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of a file, read in chunks.

    Raises:
        OSError: when the file cannot be read (the caller names it in its own error).
    """
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(chunk_bytes)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def sha256_json(value: Any) -> str:
    """SHA-256 (hex) of ``value``'s canonical JSON (sorted keys, no spaces; non-JSON values as str)."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class FileDigest:
    """One hashed file.

    Attributes:
        path: The file's path as given (absolute where the caller resolved it).
        sha256: Hex SHA-256 of its bytes.
        size: Its size in bytes.
    """

    path: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        """``{"path", "sha256", "size"}``."""
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


class FileHasher:
    """Hashes files, each at most once (by resolved path) over the hasher's lifetime.

    One hasher per run: a file named twice (a card shared by two inputs, the same ``.npz``
    behind every record of a split) is read once.
    """

    def __init__(self) -> None:
        self._done: dict[str, tuple[str, int]] = {}

    def file(self, path: str | os.PathLike[str]) -> FileDigest:
        """The digest of one file (``path`` recorded resolved, absolute).

        Raises:
            OSError: when the file cannot be read.
        """
        resolved = str(Path(path).resolve())
        if resolved not in self._done:
            self._done[resolved] = sha256_file(resolved)
        digest, size = self._done[resolved]
        return FileDigest(resolved, digest, size)

    def manifest(self, files: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str]) -> list[dict]:
        """Sorted ``[{"path": relative path, "size", "sha256"}]`` of ``files``.

        Paths are relative to ``root`` (POSIX form); a file outside ``root`` keeps its
        absolute path. Duplicates are listed once.
        """
        rows: dict[str, dict] = {}
        for f in files:
            d = self.file(f)
            rel = _relative(Path(f), Path(root)) or d.path
            rows[rel] = {"path": rel, "size": d.size, "sha256": d.sha256}
        return [rows[k] for k in sorted(rows)]

    def folder(self, folder: str | os.PathLike[str]) -> list[dict]:
        """The sorted manifest of every file under ``folder`` (recursively; linked files are read)."""
        root = Path(folder)
        files = [p for p in root.rglob("*") if p.is_file()]
        return self.manifest(files, root)


def _relative(path: Path, root: Path) -> str | None:
    """``path`` relative to ``root`` as written (a linked file keeps its link's name), else resolved."""
    for p, r in ((path.absolute(), root.absolute()), (path.resolve(), root.resolve())):
        try:
            return p.relative_to(r).as_posix()
        except ValueError:
            continue
    return None


def manifest_sha256(entries: list[dict], extra: Any = None) -> str:
    """SHA-256 of a manifest (relative paths, sizes, file hashes) and optional extra JSON-able data."""
    rows = [[e["path"], int(e["size"]), e["sha256"]] for e in sorted(entries, key=lambda e: e["path"])]
    return sha256_json({"files": rows, "extra": extra})


def short(digest: str | None, n: int = 6) -> str:
    """The first ``n`` hex digits of a digest followed by an ellipsis (``"3f2a91…"``); ``"none"`` for None."""
    return "none" if not digest else f"{digest[:n]}…"
