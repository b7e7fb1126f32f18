"""Class-per-folder image trees (Kaggle style), with or without split folders.

Accepted layouts (PNG/JPEG/BMP/TIFF/DICOM/NIfTI files, searched recursively per class)::

    ROOT/glioma/*.jpg  ROOT/meningioma/*.jpg ...            (no split: a seeded stratified split)
    ROOT/Training/glioma/*.jpg  ROOT/Testing/glioma/*.jpg   (the dataset's own split)
    ROOT/train/NORMAL/*.jpeg  ROOT/val/...  ROOT/test/...

A single wrapper folder (``chest_xray/chest_xray/train/...``) is descended into.
Class names are the folder names (sorted, case kept); labels index them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medrobust.data.base import ALL_IMAGE_SUFFIXES, SPLIT_ALIASES, Record, register_source
from medrobust.data.sources._files import FileSource, list_files
from medrobust.errors import DataError


@dataclass
class ClassLayout:
    """A detected class-folder layout: files with their class name and split (or ``None``)."""

    root: Path
    class_names: list[str]
    entries: list[tuple[Path, str, str | None]]


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _class_entries(folder: Path, split: str | None) -> list[tuple[Path, str, str | None]]:
    entries = []
    for cdir in _visible_dirs(folder):
        for f in list_files(cdir, ALL_IMAGE_SUFFIXES):
            entries.append((f, cdir.name, split))
    return entries


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
        entries = []
        for d in split_dirs:
            entries.extend(_class_entries(d, SPLIT_ALIASES[d.name.lower()]))
    elif not split_dirs:
        entries = _class_entries(root, None)
    else:
        return None
    if not entries:
        return None
    names = sorted({c for _, c, _ in entries})
    return ClassLayout(root=root, class_names=names, entries=entries)


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
        records = [Record(id=self.relpath(p), label=index[c], split=s, path=p) for p, c, s in layout.entries]
        return self.expand(records), names
