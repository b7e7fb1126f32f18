"""Medical image data: sources (npz, folders, CSV, DICOM, NIfTI), modality presets, phantoms.

Everything is resolved lazily (PEP 562), so ``import medrobust.data`` stays light and
names from sub-packages written later (presets, phantoms) resolve once they exist.

>>> from medrobust.data import open_source, make_dataset, load_arrays
>>> ds = make_dataset("phantom/", split="test", preset="chest_xray")  # doctest: +SKIP
>>> images, labels = load_arrays(ds, limit=32)                          # doctest: +SKIP
>>> src = open_source("phantom:chest_xray?n=200&size=64")                # doctest: +SKIP
>>> src = open_source("medmnist:pneumoniamnist@64")                      # doctest: +SKIP
"""

from __future__ import annotations

from medrobust.utils.lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "SOURCES": "medrobust.data.base",
    "Source": "medrobust.data.base",
    "Record": "medrobust.data.base",
    "open_source": "medrobust.data.opening",
    "list_sources": "medrobust.data.opening",
    "register_source": "medrobust.data.base",
    "SAFE_META_KEYS": "medrobust.data.base",
    "assign_splits": "medrobust.data.splits",
    "make_dataset": "medrobust.data.dataset",
    "load_arrays": "medrobust.data.dataset",
    "SourceDataset": "medrobust.data.dataset",
    "collate_samples": "medrobust.data.dataset",
    "inspect_source": "medrobust.data.inspect",
    "get_preset": "medrobust.data.presets",
    "list_presets": "medrobust.data.presets",
    "Preset": "medrobust.data.presets",
    "make_phantom": "medrobust.data.phantoms",
    "write_phantom": "medrobust.data.phantoms",
    "list_phantoms": "medrobust.data.phantoms",
    "resolve_spec": "medrobust.data.specs",
    "phantom_npz": "medrobust.data.specs",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
