"""An on-disk cache of preprocessed images, so repeated audits skip decoding (DICOM, JPEG 2000).

:class:`CachedImages` wraps a dataset built by :func:`~medrobust.data.make_dataset`
without augmentation. The first read of an item runs the full pipeline (reader,
rescale/VOI LUT, preset, resize) and stores the resulting float32 image as a ``.npy``
file; later reads (a resumed audit, the next model version, another rank) load that
file with ``np.load(allow_pickle=False)``: no pickles, unlike a torch-saved cache.

Cache files live in ``<cache_dir>/<namespace>/<key>.npy``. The namespace hashes what
decides the pipeline's output (source kind and root, preset, spatial size, split,
medrobust version); the key hashes the record's id and index and the file's size and
modification time, so an edited file is read afresh. Files are written atomically
(temporary file + rename); a file that cannot be read back is recomputed, never
trusted, and so is a file holding NaN or Inf values (a cache written by something
else, or bit rot). Only pixels are stored: labels and ids come from the source's records, and no
DICOM header field (patient data included) is written. The cache may be deleted at any
time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from medrobust.errors import DataError
from medrobust.utils.io import atomic_path

log = logging.getLogger("medrobust.data")


def _sha(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _file_stamp(path: Any) -> list[int] | None:
    try:
        st = os.stat(path)
    except (OSError, TypeError):
        return None
    return [st.st_size, st.st_mtime_ns]


class CachedImages(TorchDataset):
    """Items of ``dataset`` with their images cached as ``.npy`` files under ``cache_dir``.

    Args:
        dataset: A :class:`~medrobust.data.dataset.SourceDataset` built without
            augmentation (random transforms would be frozen by a cache).
        cache_dir: Root folder of the cache (created when missing).
        settings: What else decides the pipeline's output (e.g. preset name and spatial
            size as given to ``make_dataset``); part of the namespace hash.

    Items are ``{"image": float32 tensor, "label": int64 tensor, "meta": {"id": ...}}``;
    the full ``meta`` of the uncached pipeline is only returned on a cache miss.

    Raises:
        DataError: when ``cache_dir`` exists but is not a folder, or cannot be created.
    """

    def __init__(
        self, dataset: Any, cache_dir: str | os.PathLike[str], settings: dict[str, Any] | None = None
    ) -> None:
        from medrobust import __version__

        self.dataset = dataset
        source = dataset.source
        preset = getattr(dataset, "preset", None)
        spec = {
            "source": [type(source).__name__, str(getattr(source, "root", ""))],
            "settings": settings or {},
            # the preset object itself, so options (channels, scaling, ...) get their own entries
            "preset": None
            if preset is None
            else {
                "name": getattr(preset, "name", type(preset).__name__),
                "channels": getattr(preset, "channels", None),
                "bounds": list(getattr(preset, "bounds", ())),
                "options": dict(getattr(preset, "options", {}) or {}),
            },
            "split": dataset.split,
            "medrobust": __version__,
        }
        root = Path(cache_dir).expanduser()
        if root.exists() and not root.is_dir():
            raise DataError(root, "is not a folder; 'cache_dir' must name a folder for cached images")
        self.dir = root / _sha(spec)[:20]
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(self.dir, f"cannot create the image cache folder ({exc.strerror})") from None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def path(self, index: int) -> Path:
        """The cache file of item ``index``."""
        rec = self.dataset.data[index]
        files = getattr(rec, "files", None) or [rec.path]
        key = _sha([rec.id, rec.index, [[str(f), _file_stamp(f)] for f in files]])
        return self.dir / f"{key[:40]}.npy"

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.dataset.data[index]
        label = torch.as_tensor(int(rec.label), dtype=torch.int64)
        path = self.path(index)
        if path.exists():
            try:
                image = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                log.warning("unreadable cache file %s (%s); recomputing it", path, type(exc).__name__)
            else:
                if image.dtype == np.float32 and np.isfinite(image).all():
                    self.hits += 1
                    return {"image": torch.from_numpy(image), "label": label, "meta": {"id": rec.id}}
                log.warning(
                    "corrupt cache file %s (%s); recomputing it",
                    path,
                    "non-finite values" if image.dtype == np.float32 else f"dtype {image.dtype}",
                )
        item = self.dataset[index]
        image = item["image"]
        array = (image.as_tensor() if hasattr(image, "as_tensor") else image).detach().cpu().numpy()
        if not np.isfinite(array).all():  # never cache (or hand on) NaN/Inf made by preprocessing
            where = self.dataset.source.describe_location(rec)
            n_bad = int((~np.isfinite(array)).sum())
            raise DataError(where, f"preprocessing produced {n_bad} NaN/Inf pixel value(s); refused")
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
        except OSError as exc:  # a full or read-only cache never stops the audit
            log.warning("could not write cache file %s (%s); continuing without it", path, exc.strerror)
        self.misses += 1
        return item
