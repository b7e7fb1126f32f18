"""Memory-mapped access to the arrays of a ``.npz`` file, through an on-disk cache.

Members of a compressed ``.npz`` cannot be memory-mapped. :func:`open_npz_member`
maps one anyway:

* a member stored uncompressed (``np.savez``) is mapped in place, at its offset inside
  the ``.npz`` (no copy, no cache file);
* a compressed member (``np.savez_compressed``, as MedMNIST ships) is streamed once,
  in chunks, into ``<cache>/<fingerprint>/<key>.npy`` (a verbatim copy of the member,
  which is itself a ``.npy`` file), written atomically (temporary file + rename, via
  :mod:`medrobust.utils.io`) and checked against the zip CRC-32 as it is written; the
  copy is then opened with ``np.load(path, mmap_mode="r", allow_pickle=False)``.

The fingerprint hashes the ``.npz``'s first and last MiB, its size and its mtime, so an
edited file gets a fresh cache folder. A cache file is reused only when its ``.npy``
header matches the member's (shape, dtype, order) and its size is exactly header +
data; anything else (a truncated or foreign file) is rebuilt, never trusted. Arrays with
Python objects are refused before anything is copied. The cache root is
``$MEDROBUST_CACHE/npz``, else ``$XDG_CACHE_HOME/medrobust/npz``, else
``~/.cache/medrobust/npz``; any of it may be deleted at any time.

>>> from medrobust.data.cache import open_npz_member
>>> images = open_npz_member("organamnist_224.npz", "train_images")   # doctest: +SKIP
>>> type(images).__name__, images.flags.writeable                     # doctest: +SKIP
('memmap', False)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from medrobust.errors import DataError
from medrobust.utils.io import atomic_path

log = logging.getLogger(__name__)

#: Environment variable naming medrobust's cache root (``<root>/npz/...`` holds the arrays).
CACHE_ENV = "MEDROBUST_CACHE"

_CHUNK = 16 * 2**20
_FINGERPRINT_BYTES = 2**20
_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class CacheWriteError(DataError):
    """The array cache could not be written (full disk, read-only folder); names the cache file."""


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header says: shape, dtype, memory order and where the data starts."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def nbytes(self) -> int:
        """Size of the data section in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def same_array(self, other: NpyHeader) -> bool:
        """True when both headers describe the same array layout."""
        return (self.shape, self.dtype, self.fortran_order, self.offset) == (
            other.shape,
            other.dtype,
            other.fortran_order,
            other.offset,
        )


def cache_root() -> Path:
    """Folder holding the ``.npy`` copies of ``.npz`` members (see the module docstring)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "npz"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "medrobust" / "npz"


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's first and last MiB, size and mtime (cheap for files of any size)."""
    path = Path(path)
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_FINGERPRINT_BYTES))
        if st.st_size > 2 * _FINGERPRINT_BYTES:
            fh.seek(-_FINGERPRINT_BYTES, os.SEEK_END)
            h.update(fh.read(_FINGERPRINT_BYTES))
    return h.hexdigest()


def npz_cache_dir(npz_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder of one ``.npz``: ``<cache_dir or cache_root()>/<fingerprint>``."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return base / file_fingerprint(npz_path)


def read_npy_header(fh: IO[bytes], where: object) -> NpyHeader:
    """Parse a ``.npy`` header from ``fh`` (positioned at the magic string).

    Raises:
        DataError: naming ``where`` for a malformed header or an array of Python objects.
    """
    start = fh.tell()
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f".npy format version {version} is not supported")
    except (OSError, EOFError, ValueError, SyntaxError) as exc:
        raise DataError(where, f"unreadable .npy header ({type(exc).__name__}: {exc})") from None
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.kind not in "biuf":
        raise DataError(
            where, f"has dtype {dtype}; expected numbers (Python objects are refused: allow_pickle=False)"
        )
    return NpyHeader(tuple(int(s) for s in shape), dtype, bool(fortran_order), fh.tell() - start)


def _member_info(zf: zipfile.ZipFile, npz_path: Path, key: str) -> zipfile.ZipInfo:
    if not _KEY_RE.match(key):
        raise DataError(npz_path, f"array name {key!r} is not a plain name")
    try:
        return zf.getinfo(f"{key}.npy")
    except KeyError:
        names = sorted(n.removesuffix(".npy") for n in zf.namelist())
        raise DataError(npz_path, f"has no {key!r} array; arrays are {names}") from None


def member_header(npz_path: str | os.PathLike[str], key: str) -> tuple[NpyHeader, zipfile.ZipInfo]:
    """Header and zip entry of the member ``key`` of a ``.npz``, without reading its data.

    Raises:
        DataError: naming the ``.npz`` for a missing member, a bad zip or an object array.
    """
    npz_path = Path(npz_path)
    where = f"{npz_path}[{key}]"
    try:
        with zipfile.ZipFile(npz_path) as zf:
            info = _member_info(zf, npz_path, key)
            with zf.open(info) as fh:
                header = read_npy_header(fh, where)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(npz_path, f"unreadable .npz ({type(exc).__name__}: {exc})") from None
    if info.file_size != header.offset + header.nbytes:
        raise DataError(
            where,
            f"member holds {info.file_size} bytes but its header describes {header.offset + header.nbytes}",
        )
    return header, info


def _stored_data_offset(npz_path: Path, info: zipfile.ZipInfo) -> int | None:
    """Byte offset of an uncompressed, unencrypted member's data inside the zip (else ``None``)."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(npz_path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if start + info.file_size > os.fstat(fh.fileno()).st_size:
            return None
        return start


def _map_stored(npz_path: Path, key: str, header: NpyHeader, info: zipfile.ZipInfo) -> np.memmap | None:
    """Map an uncompressed member in place; ``None`` when it is compressed or not mappable."""
    start = _stored_data_offset(npz_path, info)
    if start is None:
        return None
    with open(npz_path, "rb") as fh:
        fh.seek(start)
        in_place = read_npy_header(fh, f"{npz_path}[{key}]")
    if not in_place.same_array(header):
        return None
    return np.memmap(
        npz_path,
        dtype=header.dtype,
        mode="r",
        offset=start + header.offset,
        shape=header.shape,
        order="F" if header.fortran_order else "C",
    )


def _cache_is_valid(path: Path, header: NpyHeader) -> bool:
    """True when ``path`` is a complete ``.npy`` of exactly the member's layout."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            cached = read_npy_header(fh, path)
    except (OSError, DataError):
        return False
    return cached.same_array(header) and size == header.offset + header.nbytes


def extract_member(npz_path: str | os.PathLike[str], key: str, dest: str | os.PathLike[str]) -> Path:
    """Stream the member ``key`` of a ``.npz`` into the ``.npy`` file ``dest``, atomically.

    The member is copied in chunks (never loaded whole); the zip CRC-32 is checked as
    the copy ends and the size of the result against the header.

    Raises:
        DataError: naming the ``.npz`` for a corrupt member.
        CacheWriteError: naming ``dest`` when it cannot be written (e.g. a full disk).
    """
    npz_path, dest = Path(npz_path), Path(dest)
    header, info = member_header(npz_path, key)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheWriteError(
            dest.parent, f"cannot create the array cache ({type(exc).__name__}: {exc})"
        ) from None
    free = shutil.disk_usage(dest.parent).free
    if free < info.file_size:
        raise CacheWriteError(
            dest, f"needs {info.file_size / 2**20:.1f} MiB for the cache but {free / 2**20:.1f} MiB are free"
        )
    log.info("caching %s[%s] (%.1f MiB) as %s", npz_path, key, info.file_size / 2**20, dest)
    try:
        with atomic_path(dest) as tmp:
            with zipfile.ZipFile(npz_path) as zf, zf.open(info) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)  # zipfile checks the CRC-32 at the end
                out.flush()
                os.fsync(out.fileno())
            if not _cache_is_valid(tmp, header):
                raise DataError(npz_path, f"member {key!r} did not decompress to the size its header gives")
    except zipfile.BadZipFile as exc:
        raise DataError(npz_path, f"corrupt member {key!r} ({exc})") from None
    except (EOFError, zlib.error) as exc:
        raise DataError(npz_path, f"corrupt member {key!r} ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise CacheWriteError(dest, f"cannot write the array cache ({type(exc).__name__}: {exc})") from None
    return dest


def open_npz_member(
    npz_path: str | os.PathLike[str], key: str, cache_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Memory-map the member ``key`` of a ``.npz`` read-only (see the module docstring).

    Args:
        npz_path: The ``.npz`` file.
        key: Array name (``"train_images"``).
        cache_dir: Cache folder (default :func:`cache_root`); a per-file fingerprint
            folder is made inside it.

    Returns:
        A read-only ``np.memmap`` (an empty member is returned as an ordinary empty array).

    Raises:
        DataError: naming the file for a missing, corrupt or object member, or an unwritable cache.
    """
    npz_path = Path(npz_path)
    header, info = member_header(npz_path, key)
    if header.nbytes == 0:  # an empty file cannot be mapped
        return np.empty(header.shape, header.dtype)
    mapped = _map_stored(npz_path, key, header, info)
    if mapped is not None:
        return mapped
    dest = npz_cache_dir(npz_path, cache_dir) / f"{key}.npy"
    if not _cache_is_valid(dest, header):
        if dest.exists():
            log.warning("rebuilding the array cache %s: it does not match %s[%s]", dest, npz_path, key)
        extract_member(npz_path, key, dest)
    try:
        arr = np.load(dest, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(dest, f"unreadable array cache ({type(exc).__name__}: {exc})") from None
    return arr
