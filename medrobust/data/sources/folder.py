"""Class-per-folder image trees (Kaggle style), with or without split folders.

Accepted layouts (PNG/JPEG/BMP/TIFF/DICOM/NIfTI files, searched recursively per class)::

    ROOT/glioma/*.jpg  ROOT/meningioma/*.jpg ...            (no split: a seeded stratified split)
    ROOT/Training/glioma/*.jpg  ROOT/Testing/glioma/*.jpg   (the dataset's own split)
    ROOT/train/NORMAL/*.jpeg  ROOT/val/...  ROOT/test/...

A single wrapper folder (``chest_xray/chest_xray/train/...``) is descended into.
Class names are the folder names (sorted, case kept); labels index them.

Listing never opens an image file: files are found with ``os.scandir`` by name
(hidden entries skipped, symlinked folders not followed) and the records' ids are
their paths relative to the root, so 100 000 files list in about a second. An entry
with an image name that is not a usable file (a symlink to itself or in a loop, a broken
link, a device) is refused naming it, or with ``on_error="skip"`` listed in ``skipped``.
A tree with a single class folder is refused ("found 1 class ..., need ≥ 2"). Files are
opened only by :meth:`~medrobust.data.base.Source.load` (and, for DICOM/NIfTI with
``frame="all"``/``slice="all"``, to count frames/slices).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medrobust.data.base import SPLIT_ALIASES, Record, register_source
from medrobust.data.sources._files import FileSource
from medrobust.data.suffixes import ALL_IMAGE_SUFFIXES
from medrobust.errors import DataError


@dataclass
class ClassLayout:
    """A detected class-folder layout: files with their class name and split (or ``None``).

    Detection only checks that each class folder holds an image file; the full file
    list (:attr:`entries`) is scanned on first access.
    """

    root: Path
    class_names: list[str]
    class_dirs: list[tuple[Path, str, str | None]]
    _entries: list[tuple[Path, str, str | None]] | None = field(default=None, repr=False)

    problems: list[tuple[str, str]] = field(default_factory=list, repr=False)

    @property
    def entries(self) -> list[tuple[Path, str, str | None]]:
        """``(file, class name, split)`` for every image file, in split, class and path order.

        Entries with image names that are not usable files are listed in :attr:`problems`.
        """
        if self._entries is None:
            self.problems.clear()
            self._entries = [
                (f, c, s) for d, c, s in self.class_dirs for f in scan_image_files(d, problems=self.problems)
            ]
        return self._entries


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _iter_image_files(
    folder: Path, ends: tuple[str, ...], problems: list[tuple[str, str]] | None = None
) -> Iterator[tuple[tuple[str, ...], str]]:
    """Yield ``(path components below folder, path)`` of matching files, in no particular order.

    A matching name that cannot be used as a file (a symbolic link to itself or in a loop,
    a broken link, a device) is not yielded; it is appended to ``problems`` as
    ``(path, reason)`` when a list is given.
    """
    stack: list[tuple[tuple[str, ...], str]] = [((), os.fspath(folder))]
    while stack:
        parts, directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except OSError:  # unreadable folder: skipped, as pathlib's rglob does
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(((*parts, name), entry.path))
                    continue
                if not name.lower().endswith(ends):
                    continue
                reason = _file_problem(entry)
                if reason is None:
                    yield (*parts, name), entry.path
                elif problems is not None:
                    problems.append((entry.path, reason))


def _file_problem(entry: os.DirEntry[str]) -> str | None:
    """Why a directory entry with an image name is not a readable regular file (``None``: it is)."""
    try:
        if entry.is_file():
            return None
        if entry.is_symlink() and not os.path.exists(entry.path):
            return "is a broken symbolic link (its target does not exist)"
        if entry.is_dir():
            return "is a symbolic link to a folder, not an image file"
        return "is not a regular file (a device, pipe or socket)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link that points to itself or into a loop of links"
        return f"cannot be opened ({exc.strerror or type(exc).__name__})"


def scan_image_files(
    folder: Path,
    suffixes: tuple[str, ...] = ALL_IMAGE_SUFFIXES,
    problems: list[tuple[str, str]] | None = None,
) -> list[Path]:
    """Files under ``folder`` whose names end with one of ``suffixes`` (any case), without opening them.

    Hidden files and folders are skipped and symlinked folders are not followed
    (symlinked files are kept). The result is sorted as ``sorted(folder.rglob("*"))``
    would sort it (by path components), so record order, and thus seeded splits, do
    not depend on the file system's listing order. Entries with an image name that are
    not usable files (a self-referencing symlink, a broken link) are left out and, when
    ``problems`` is a list, appended to it as ``(path, reason)``.
    """
    found = sorted(
        _iter_image_files(folder, tuple(s.lower() for s in suffixes), problems), key=lambda item: item[0]
    )
    return [Path(path) for _, path in found]


def _has_image_file(folder: Path) -> bool:
    """True when ``folder`` holds a file with an image name (usable or not: problems are listed later)."""
    ends = tuple(s.lower() for s in ALL_IMAGE_SUFFIXES)
    problems: list[tuple[str, str]] = []
    return next(_iter_image_files(folder, ends, problems), None) is not None or bool(problems)


def _class_dirs(folder: Path, split: str | None) -> list[tuple[Path, str, str | None]]:
    return [(cdir, cdir.name, split) for cdir in _visible_dirs(folder) if _has_image_file(cdir)]


def find_class_layout(root: Path, _depth: int = 0) -> ClassLayout | None:
    """Detect a class-folder layout under ``root`` (``None`` when there is none)."""
    if not root.is_dir():
        return None
    dirs = _visible_dirs(root)
    if not dirs:
        return None
    top_files = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    if len(dirs) == 1 and not top_files and _depth < 2 and dirs[0].name.lower() not in SPLIT_ALIASES:
        inner = find_class_layout(dirs[0], _depth + 1)  # a wrapper folder (chest_xray/chest_xray/...)
        if inner is not None and len(inner.class_names) >= 2:
            return inner
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_ALIASES]
    if split_dirs and len(split_dirs) == len(dirs):
        class_dirs = []
        for d in split_dirs:
            class_dirs.extend(_class_dirs(d, SPLIT_ALIASES[d.name.lower()]))
    elif not split_dirs:
        class_dirs = _class_dirs(root, None)
    else:
        return None
    if not class_dirs:
        return None
    names = sorted({c for _, c, _ in class_dirs})
    return ClassLayout(root=root, class_names=names, class_dirs=class_dirs)


@register_source("folder", "imagefolder")
class FolderSource(FileSource):
    """Class-per-folder images; the folder names are the classes. See the module docstring."""

    def _index(self) -> tuple[list[Record], list[str]]:
        layout = find_class_layout(self.root)
        if layout is None:
            raise DataError(
                self.root,
                "no class folders with images found (expected ROOT/<class>/*.png or "
                "ROOT/<split>/<class>/*.png with split in train/val/test)",
            )
        names = layout.class_names
        if self._given_class_names is not None:
            unknown = sorted(set(names) - set(self._given_class_names))
            if unknown:
                raise DataError(self.root, f"class folders {unknown} are not in the given class_names")
            names = self._given_class_names
        index = {n: i for i, n in enumerate(names)}
        records = [Record(id=self._relid(p), label=index[c], split=s, path=p) for p, c, s in layout.entries]
        for path, reason in layout.problems:
            self._skip_or_raise(path, reason)
        if "all" in (self.frame_choice, self.slice_choice):  # only then does a file become many records
            records = self.expand(records)
        return records, names

    def _relid(self, path: Path) -> str:
        """``path`` relative to the root, by string (the scan built every path by joining onto the root)."""
        root = os.fspath(self.root)
        text = os.fspath(path)
        if text.startswith(root + os.sep):
            return text[len(root) + 1 :].replace(os.sep, "/")
        return self.relpath(path)
