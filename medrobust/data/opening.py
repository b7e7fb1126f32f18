"""Opening a data source: checking the path, telling its kind and building the registered source.

Above the sources (it fills the registry by importing :mod:`medrobust.data.sources`); the
sources themselves import only :mod:`medrobust.data.base` and :mod:`medrobust.data.suffixes`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from medrobust.data.base import SOURCES, Source, check_class_count
from medrobust.data.specs import is_spec, resolve_spec
from medrobust.data.suffixes import DICOM_SUFFIXES, NIFTI_SUFFIXES, file_suffix, is_dicom_file
from medrobust.errors import ConfigError, DataError


def list_sources() -> list[str]:
    """Names of the registered source kinds."""
    _ensure_registered()
    return SOURCES.names()


def _ensure_registered() -> None:
    import medrobust.data.sources  # noqa: F401  (fills SOURCES)


def open_source(spec: str | os.PathLike[str] | Source, kind: str | None = None, **options: Any) -> Source:
    """Open a data source, detecting its kind from the path when ``kind`` is not given.

    Detection: ``.npz`` -> ``npz``; ``.csv`` -> ``csv``; ``.dcm`` -> ``dicom``;
    ``.nii``/``.nii.gz`` -> ``nifti``; a folder with exactly one ``.csv`` manifest at its top
    -> ``csv``; a folder of two or more class folders (optionally under train/val/test
    folders) -> ``folder``; a folder with one ``.npz`` -> ``npz``; a folder of DICOM files ->
    ``dicom``; a folder of NIfTI files -> ``nifti``.

    A string starting with ``phantom:`` or ``medmnist:`` is a data spec, not a path (see
    :mod:`medrobust.data.specs`): ``phantom:chest_xray`` (generated once into the phantom
    cache), ``phantom:skin?n=400&size=128&seed=1``, ``medmnist:pneumoniamnist@64`` (from the
    ``medmnist`` package's folder, ``~/.medmnist``; never downloaded). Both open as ``npz``
    sources with the data's class names; ``source.spec`` records the spec.

    Args:
        spec: Path to a file or folder, a data spec (or an already open :class:`Source`,
            returned as is).
        kind: Source kind (see :func:`list_sources`); detected when ``None``.
        **options: Passed to the source class (e.g. ``split_seed``, ``channels``, ``window``).

    Raises:
        DataError: naming the path when it does not exist, is not a regular file or folder
            (``/dev/null``, a named pipe, a symlink loop), its kind cannot be told, or a
            labelled source has fewer than two classes ("found 1 class (NAME), need ≥ 2");
            naming the file a ``medmnist:`` spec expects when it is missing.
        ConfigError: for an unknown ``kind`` or option, or a malformed data spec.
    """
    if isinstance(spec, Source):
        return spec
    _ensure_registered()
    if is_spec(spec):
        return _open_spec(str(spec), kind, options)
    path = Path(spec).expanduser()
    check_file_or_folder(path)
    name = kind if kind is not None else detect_kind(path)
    return _build(SOURCES.get(name), path, options)


def _build(cls: type[Source], path: Path, options: dict[str, Any]) -> Source:
    try:
        return cls(path, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise ConfigError(f"{cls.__name__} does not accept that option: {exc}") from None
        raise


def _open_spec(text: str, kind: str | None, options: dict[str, Any]) -> Source:
    """Open a ``phantom:``/``medmnist:`` spec as the ``npz`` source of the file it names."""
    npz = SOURCES.get("npz")
    if kind is not None and SOURCES.get(kind) is not npz:
        raise ConfigError(
            f"The data spec {text!r} names an .npz file; the 'kind' parameter must be 'npz' or omitted. "
            f"Got {kind!r}."
        )
    resolved = resolve_spec(text)
    for key, value in resolved.source_options.items():
        options.setdefault(key, value)
    source = _build(npz, resolved.path, options)
    source.spec = resolved.spec
    return source


def check_file_or_folder(path: Path) -> None:
    """Refuse a path that is missing, a symlink loop, or neither a regular file nor a folder.

    Raises:
        DataError: naming ``path`` ("is a character device, not a data file or folder", ...).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise DataError(path, "is a broken symbolic link (its target does not exist)") from None
        raise DataError(path, "no such file or directory") from None
    except OSError as exc:
        raise DataError(path, f"cannot be opened ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kinds = (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
    )
    what = next((name for test, name in kinds if test(mode)), "not a regular file")
    raise DataError(path, f"is {what}, not a data file or folder; pass an image file, manifest or folder")


def detect_kind(path: Path) -> str:
    """Tell the source kind of ``path`` (see :func:`open_source`)."""
    if path.is_file():
        suffix = file_suffix(path)
        if suffix == ".npz":
            return "npz"
        if suffix in (".csv", ".tsv"):
            return "csv"
        if suffix in NIFTI_SUFFIXES:
            return "nifti"
        if is_dicom_file(path):
            return "dicom"
        raise DataError(path, "cannot tell the source kind from this file; pass kind= (see list_sources())")
    from medrobust.data.sources.folder import find_class_layout

    top = [p for p in path.iterdir() if not p.name.startswith(".")]
    csvs = [p for p in top if p.is_file() and file_suffix(p) == ".csv"]
    if len(csvs) == 1:
        return "csv"
    layout = find_class_layout(path)
    if layout is not None and len(layout.class_names) >= 2:
        return "folder"
    one_class = layout is not None and len(layout.class_names) == 1
    npzs = [p for p in top if p.is_file() and file_suffix(p) == ".npz"]
    if len(npzs) == 1 and not csvs:
        return "npz"
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    if any(file_suffix(p) in DICOM_SUFFIXES for p in files):
        return "dicom"
    if any(file_suffix(p) in NIFTI_SUFFIXES for p in files):
        return "nifti"
    if one_class:
        assert layout is not None
        check_class_count([f"folder {layout.class_names[0]!r}"], path)
    raise DataError(
        path,
        "cannot tell the source kind of this folder (no class folders with images, no single CSV "
        "manifest, no .npz, DICOM or NIfTI files); pass kind=",
    )
