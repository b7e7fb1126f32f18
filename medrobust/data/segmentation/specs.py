"""``phantom:MODALITY[@SIZE][?n=N&seed=S]`` for segmentation data: written once, then opened as files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from medrobust.data.specs import phantom_cache_root, phantom_options, phantom_set_name

#: Layout segmentation phantoms are cached in: Decathlon for grey phantoms, mask folders for RGB ones.
_CACHE_SUBDIR = "segmentation"


def segmentation_data_path(data: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder ``data`` names: a path as given, or a ``phantom:`` spec written once into the cache.

    ``phantom:brain_mri@32?n=40`` writes 40 volumes of 32³ voxels (Decathlon layout) into
    ``<cache>/segmentation/brain_mri-n40-s32-seed0-g{tag}/`` (``tag`` names the generator code) the
    first time and reuses them after
    (``<cache>`` as for classification phantoms: ``$MEDROBUST_CACHE/phantoms`` or ``runs/cache/phantoms``).

    Raises:
        ConfigError: for a malformed spec, an unknown modality or options out of range.
    """
    if not data.strip().lower().startswith("phantom:"):
        return Path(data)
    from medrobust.data.segmentation.phantoms import get_segmentation_phantom, write_segmentation_phantom

    opts = phantom_options(data)
    gen = get_segmentation_phantom(opts["modality"], size=opts["size"], seed=opts["seed"])
    root = phantom_cache_root(cache_dir) / _CACHE_SUBDIR
    final = root / phantom_set_name(gen.modality, opts["n"], gen.size, gen.seed, type(gen))
    if (final / "dataset.json").is_file():
        return final
    private = root / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(private, ignore_errors=True)
    fmt = "decathlon" if gen.channels == 1 else "png"
    write_segmentation_phantom(gen.modality, opts["n"], gen.size, fmt, private, seed=gen.seed)
    try:
        private.rename(final)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(private, ignore_errors=True)
    return final
